//! Reloading the configuration (SIGHUP, `prefork -s reload`, the control
//! socket's `reload`): re-read and check the file, choose the path it takes,
//! move the pid file and the listeners to it, then stage it for a new
//! generation or give it to the running workers, and record the outcome
//! for the control socket and `/metrics`. A configuration that fails any
//! step changes nothing.

use crate::generations::{GenerationSetup, Generations};
use crate::listeners::Listeners;
use crate::metrics::{Observed, ReloadOutcome};
use crate::os::Credentials;
use crate::pidfile;
use crate::start_checks::{expiry_warnings, start_checks};
use crate::supervisor::{Event, Supervisor};
use prefork_shared::config::{self, Loaded};
use prefork_shared::Config;
use slog::{error, info, warn, Logger};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// What a reload reads before it changes anything: the file, checked, and
/// everything the start checks read (certificates, CA files, the workers'
/// user) and resolve (upstream host names). Slow work, done off the master
/// loop's thread by [`read`].
pub struct ReadConfig {
    /// The configuration, with the certificates it names.
    pub config: Config,
    /// The identity its workers run as, when the master is root.
    pub credentials: Option<Credentials>,
    /// Warnings about certificates close to their expiry.
    pub warnings: Vec<String>,
}

/// Reads and checks the file at `path` as a start would: the part of a
/// reload that may block (file systems, DNS), so that a slow one never
/// stalls the master loop (heartbeats, signals, the watchdog).
pub fn read(path: &Path) -> Result<ReadConfig, String> {
    let Loaded {
        mut config,
        locator,
    } = config::load(path).map_err(|e| e.to_string())?;
    let credentials = start_checks(&mut config, &locator).map_err(|e| e.to_string())?;
    let warnings = expiry_warnings(&config);
    Ok(ReadConfig {
        config,
        credentials,
        warnings,
    })
}

/// One reload, over the parts of the master it changes.
pub struct Reload<'a> {
    /// The error log.
    pub log: &'a Logger,
    /// The config file to re-read.
    pub config_path: &'a Path,
    /// Where the new configuration goes.
    pub generations: &'a mut Generations,
    /// Moved to the new configuration's addresses.
    pub listeners: &'a mut Listeners,
    /// Which generation runs, how many slots, whether it stops.
    pub supervisor: &'a Supervisor,
    /// Where the outcome is recorded.
    pub observed: &'a mut Observed,
}

impl Reload<'_> {
    /// Takes the config [`read`] gave. A valid one is staged for the next
    /// generation, or given to the running workers in place; an invalid one
    /// changes nothing. Returns what the supervisor must hear about it.
    pub fn run(mut self, read: Result<ReadConfig, String>) -> Option<Event> {
        info!(self.log, "reloading the configuration"; "file" => %self.config_path.display());
        let (path, setup) = match read.and_then(|read| self.prepare(read)) {
            Ok(prepared) => prepared,
            Err(why) => {
                self.failed(why);
                return None;
            }
        };
        setup.give_logs_to_workers(self.log);
        let (shutdown_timeout, worker_timeout, shutdown_delay) = (
            setup.config.shutdown_timeout,
            setup.config.worker_timeout,
            setup.config.shutdown_delay,
        );
        let current = self.supervisor.generation();
        match path {
            ReloadPath::Hot => {
                info!(
                    self.log,
                    "reload: only settings the workers can swap in changed; reconfiguring them"
                );
                self.succeeded(format!(
                    "configuration reloaded: the workers of generation {} took it in place",
                    current.0
                ));
                self.generations.replace(current, setup);
                Some(Event::Reconfigure {
                    shutdown_timeout,
                    worker_timeout,
                    shutdown_delay,
                })
            }
            ReloadPath::NewGeneration(why) => {
                info!(self.log, "reload: starting new workers"; "changed" => why.join(" "));
                self.succeeded(format!(
                    "configuration reloaded: starting generation {} ({} changed)",
                    current.0 + 1,
                    why.join(", ")
                ));
                let workers = setup.config.workers;
                self.generations.stage(setup);
                Some(Event::Reload {
                    workers,
                    shutdown_timeout,
                    worker_timeout,
                    shutdown_delay,
                })
            }
        }
    }

    /// Moves the pid file and the listeners to the config read: all or
    /// nothing.
    fn prepare(&mut self, read: ReadConfig) -> Result<(ReloadPath, GenerationSetup), String> {
        let ReadConfig {
            config,
            credentials,
            warnings,
        } = read;
        for why in warnings {
            warn!(self.log, "{why}");
        }
        let current = self.generations.newest_config(self.supervisor.generation());
        let path = reload_path(current, &config);
        // A pid file the master cannot write would leave `prefork -s` unable
        // to find it: refuse the reload, before anything changed.
        let old_pid_file = current.pid_file.clone();
        // Removed again if the reload fails after it was written.
        let moved = (config.pid_file != old_pid_file)
            .then(|| pidfile::Guard::write(&config.pid_file))
            .transpose()
            .map_err(|e| format!("pid_file: {e}"))?;
        // Per-slot sockets only for the slots that will run.
        let slots = self.supervisor.slots_for_reload(match &path {
            ReloadPath::NewGeneration(_) => Some(config.workers),
            ReloadPath::Hot => None,
        });
        match self.listeners.reconcile(&config.listen, slots) {
            Ok(closed) => {
                for addr in closed {
                    info!(self.log, "listener removed"; "addr" => %addr);
                }
            }
            Err(e) => return Err(e.to_string()),
        }
        if let Some(new_pid_file) = moved {
            new_pid_file.disarm();
            pidfile::remove(&old_pid_file);
        }
        let setup = GenerationSetup {
            config: Arc::new(config),
            credentials,
        };
        Ok((path, setup))
    }

    /// Logs and records a rejected reload; the old configuration stays.
    fn failed(&mut self, why: String) {
        error!(self.log, "reload failed, still serving with the previous configuration"; "error" => %why);
        self.observed.on_reload(ReloadOutcome {
            at: SystemTime::now(),
            ok: false,
            message: why,
        });
    }

    /// Records a reload whose configuration was taken (`message` says
    /// which path it took).
    fn succeeded(&mut self, message: String) {
        let message = if self.supervisor.shutting_down() {
            "configuration valid, but the master is shutting down".to_owned()
        } else {
            message
        };
        self.observed.on_reload(ReloadOutcome {
            at: SystemTime::now(),
            ok: true,
            message,
        });
    }
}

/// How a reload is carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadPath {
    /// The running workers take the new configuration over IPC, between
    /// requests: only routes, upstreams, timeouts, logs (or master-only keys
    /// such as the pid file) changed.
    Hot,
    /// A new generation of workers starts and the old one drains; the
    /// strings name the keys that require it.
    NewGeneration(Vec<&'static str>),
}

/// Compares the running configuration with a new, valid one.
///
/// Listeners (their addresses, `reuseport`, `tls`, `proxy_protocol` and
/// `http2`; a
/// backlog or `defer_accept` change is applied to the open sockets), the
/// worker count, the user and the CPU pinning need new processes;
/// everything else a running worker can swap in.
pub fn reload_path(old: &Config, new: &Config) -> ReloadPath {
    // A listener's `tls`, `proxy_protocol` and `http2` are read by workers
    // as they start.
    let sockets = |c: &Config| -> Vec<_> {
        c.listen
            .iter()
            .map(|l| (l.addr, l.reuseport, l.tls, l.proxy_protocol, l.http2))
            .collect()
    };
    let mut why = Vec::new();
    if sockets(old) != sockets(new) {
        why.push("listen");
    }
    if old.workers != new.workers {
        why.push("workers");
    }
    if old.user != new.user {
        why.push("user");
    }
    // A worker pins itself (and the threads it starts) as it starts.
    if old.worker_cpu_affinity != new.worker_cpu_affinity {
        why.push("worker_cpu_affinity");
    }
    if why.is_empty() {
        ReloadPath::Hot
    } else {
        ReloadPath::NewGeneration(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefork_shared::config::{parse, LogTarget};
    use std::path::Path;
    use std::time::Duration;

    fn config(text: &str) -> Config {
        parse(Path::new("t.toml"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    const BASE: &str = "workers = 2\n[[listen]]\naddr = \"127.0.0.1:8080\"\n\
        [upstreams.a]\nservers = [\"127.0.0.1:9000\"]\n\
        [[routes]]\nhost = \"a.test\"\nupstream = \"a\"\n";

    #[test]
    fn routes_upstreams_timeouts_and_logs_are_hot() {
        let old = config(BASE);
        let mut new = old.clone();
        new.routes.clear();
        new.upstreams.clear();
        new.shutdown_timeout = Duration::from_secs(1);
        new.worker_timeout = Duration::from_secs(1);
        new.http.keepalive_timeout = Duration::from_secs(1);
        new.log.access_log = Some(LogTarget::Stdout);
        new.pid_file = "/elsewhere.pid".into();
        new.listen[0].backlog = 7;
        assert_eq!(reload_path(&old, &new), ReloadPath::Hot);
        assert_eq!(reload_path(&old, &old), ReloadPath::Hot);
    }

    #[test]
    fn listeners_workers_user_and_cpu_pinning_need_a_new_generation() {
        let old = config(BASE);
        let changed = |edit: &dyn Fn(&mut Config)| {
            let mut new = old.clone();
            edit(&mut new);
            reload_path(&old, &new)
        };
        assert_eq!(
            changed(&|c| c.listen[0].addr = "127.0.0.1:8081".parse().unwrap()),
            ReloadPath::NewGeneration(vec!["listen"])
        );
        assert_eq!(
            changed(&|c| c.listen.push(c.listen[0].clone())),
            ReloadPath::NewGeneration(vec!["listen"])
        );
        assert_eq!(
            changed(&|c| c.listen[0].reuseport = true),
            ReloadPath::NewGeneration(vec!["listen"])
        );
        assert_eq!(
            changed(&|c| c.listen[0].proxy_protocol = true),
            ReloadPath::NewGeneration(vec!["listen"])
        );
        assert_eq!(
            changed(&|c| c.listen[0].http2 = true),
            ReloadPath::NewGeneration(vec!["listen"])
        );
        assert_eq!(
            changed(&|c| c.workers = 3),
            ReloadPath::NewGeneration(vec!["workers"])
        );
        assert_eq!(
            changed(&|c| {
                c.user = Some("nobody".into());
                c.workers = 1;
            }),
            ReloadPath::NewGeneration(vec!["workers", "user"])
        );
        assert_eq!(
            changed(&|c| c.worker_cpu_affinity = vec![0]),
            ReloadPath::NewGeneration(vec!["worker_cpu_affinity"])
        );
    }

    #[test]
    fn a_reuseport_listener_rolls_a_generation_for_slots_not_for_its_backlog() {
        let mut old = config(BASE);
        old.listen[0].reuseport = true;
        let mut new = old.clone();
        new.listen[0].backlog = 7;
        assert_eq!(reload_path(&old, &new), ReloadPath::Hot);
        // One socket per slot: a new worker count means new sockets.
        new.workers = 3;
        assert_eq!(
            reload_path(&old, &new),
            ReloadPath::NewGeneration(vec!["workers"])
        );
        let mut off = old.clone();
        off.listen[0].reuseport = false;
        assert_eq!(
            reload_path(&old, &off),
            ReloadPath::NewGeneration(vec!["listen"])
        );
    }
}
