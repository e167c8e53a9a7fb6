//! The configuration each generation of workers runs.
//!
//! A reload stages the configuration of the next generation; the supervisor
//! gives it its generation ([`Action::AdoptConfig`]) and says when the
//! configurations of older generations are no longer needed
//! ([`Action::ForgetConfigs`]).
//!
//! [`Action::AdoptConfig`]: crate::supervisor::Action::AdoptConfig
//! [`Action::ForgetConfigs`]: crate::supervisor::Action::ForgetConfigs

use crate::log_files;
use crate::os::Credentials;
use crate::supervisor::Generation;
use prefork_shared::Config;
use slog::{error, Logger};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What one generation of workers is started with.
pub struct GenerationSetup {
    /// Its configuration.
    pub config: Arc<Config>,
    /// The identity its workers run as, when the master is root.
    pub credentials: Option<Credentials>,
}

impl GenerationSetup {
    /// Creates the log files the workers write and gives them to the
    /// workers' user, when they run as one.
    pub fn give_logs_to_workers(&self, log: &Logger) {
        let Some(creds) = &self.credentials else {
            return;
        };
        for e in log_files::give_to(&self.config, creds) {
            error!(log, "cannot prepare a log file for the workers"; "user" => &creds.name, "error" => %e);
        }
    }
}

/// The setups of the generations still needed, and one a reload staged for
/// the next generation.
pub struct Generations {
    by_generation: BTreeMap<Generation, GenerationSetup>,
    staged: Option<GenerationSetup>,
}

impl Generations {
    /// Holds `first`'s setup.
    pub fn new(first: Generation, setup: GenerationSetup) -> Self {
        Generations {
            by_generation: BTreeMap::from([(first, setup)]),
            staged: None,
        }
    }

    /// The setup of `generation`, if still held.
    pub fn get(&self, generation: Generation) -> Option<&GenerationSetup> {
        self.by_generation.get(&generation)
    }

    /// Every setup held, oldest first.
    pub fn all(&self) -> impl Iterator<Item = &GenerationSetup> {
        self.by_generation.values()
    }

    /// The configuration of `newest`, the supervisor's newest generation.
    pub fn newest_config(&self, newest: Generation) -> &Config {
        self.by_generation
            .get(&newest)
            .or_else(|| self.by_generation.values().next_back())
            .map(|s| s.config.as_ref())
            .expect("the master always holds at least one configuration")
    }

    /// Gives `generation` a new setup that its running workers take in
    /// place (a hot reload).
    pub fn replace(&mut self, generation: Generation, setup: GenerationSetup) {
        self.by_generation.insert(generation, setup);
    }

    /// Keeps `setup` until the supervisor adopts it for a new generation.
    /// It replaces one staged before and never adopted (the master was
    /// stopping, so it started no generation).
    pub fn stage(&mut self, setup: GenerationSetup) {
        self.staged = Some(setup);
    }

    /// Makes the staged setup `generation`'s; false if none was staged.
    pub fn adopt(&mut self, generation: Generation) -> bool {
        match self.staged.take() {
            Some(setup) => {
                self.by_generation.insert(generation, setup);
                true
            }
            None => false,
        }
    }

    /// Drops the setups of generations older than `older_than`.
    pub fn forget_older_than(&mut self, older_than: Generation) {
        self.by_generation.retain(|g, _| *g >= older_than);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A setup whose config runs `workers` workers, to tell setups apart.
    fn setup(workers: usize) -> GenerationSetup {
        let text = format!("workers = {workers}\n");
        let config = prefork_shared::config::parse(Path::new("t.toml"), &text).expect("config");
        GenerationSetup {
            config: Arc::new(config),
            credentials: None,
        }
    }

    /// The worker count of the setup held for `generation`.
    fn held(g: &Generations, generation: u64) -> Option<usize> {
        g.get(Generation(generation)).map(|s| s.config.workers)
    }

    /// Every setup held, oldest first, by worker count.
    fn all(g: &Generations) -> Vec<usize> {
        g.all().map(|s| s.config.workers).collect()
    }

    #[test]
    fn a_staged_setup_belongs_to_a_generation_only_once_adopted() {
        let mut g = Generations::new(Generation(1), setup(1));
        g.stage(setup(2));
        assert_eq!(held(&g, 2), None, "staged is not adopted");
        assert_eq!(all(&g), vec![1]);
        assert!(g.adopt(Generation(2)));
        assert_eq!((held(&g, 1), held(&g, 2)), (Some(1), Some(2)));
        assert_eq!(g.newest_config(Generation(2)).workers, 2);
        // Adopted once: nothing is left staged for the next generation.
        assert!(!g.adopt(Generation(3)));
        assert_eq!(all(&g), vec![1, 2]);
    }

    #[test]
    fn adopting_with_nothing_staged_changes_nothing() {
        let mut g = Generations::new(Generation(1), setup(1));
        assert!(!g.adopt(Generation(2)));
        assert_eq!(held(&g, 2), None);
        assert_eq!(all(&g), vec![1]);
        // The newest generation has no setup of its own: the newest held
        // stands for it.
        assert_eq!(g.newest_config(Generation(2)).workers, 1);
    }

    #[test]
    fn a_setup_staged_again_before_adoption_replaces_the_first() {
        // The master was stopping: the first reload started no generation.
        let mut g = Generations::new(Generation(1), setup(1));
        g.stage(setup(2));
        g.stage(setup(3));
        assert!(g.adopt(Generation(2)));
        assert_eq!(held(&g, 2), Some(3));
        assert!(!g.adopt(Generation(3)));
    }

    #[test]
    fn replacing_gives_a_generation_its_new_setup_in_place() {
        let mut g = Generations::new(Generation(1), setup(1));
        g.stage(setup(2));
        g.replace(Generation(1), setup(4));
        assert_eq!(all(&g), vec![4]);
        assert_eq!(g.newest_config(Generation(1)).workers, 4);
        // What was staged stays staged.
        assert!(g.adopt(Generation(2)));
        assert_eq!(all(&g), vec![4, 2]);
    }

    #[test]
    fn forgetting_drops_only_the_older_setups_and_keeps_the_one_still_needed() {
        let mut g = Generations::new(Generation(1), setup(1));
        for n in 2..=4 {
            g.stage(setup(n));
            assert!(g.adopt(Generation(n as u64)));
        }
        // Generation 3 still has a worker: it and the newer stay.
        g.forget_older_than(Generation(3));
        assert_eq!((held(&g, 1), held(&g, 2)), (None, None));
        assert_eq!(all(&g), vec![3, 4]);
        // Forgetting what is gone already changes nothing.
        g.forget_older_than(Generation(2));
        assert_eq!(all(&g), vec![3, 4]);
        // A staged setup belongs to no generation yet: it is kept.
        g.stage(setup(5));
        g.forget_older_than(Generation(4));
        assert_eq!(all(&g), vec![4]);
        assert!(g.adopt(Generation(5)));
        assert_eq!(all(&g), vec![4, 5]);
        assert_eq!(g.newest_config(Generation(5)).workers, 5);
    }
}
