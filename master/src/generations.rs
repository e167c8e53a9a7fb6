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
