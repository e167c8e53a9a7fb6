//! The process-level keys: `workers`, `worker_cpu_affinity`, `user`,
//! `worker_timeout`, `pid_file` and `control_socket`.

use super::Validator;
use crate::config::locate::KeyPath;
use crate::config::model::{default_control_socket, SigtermMode};
use crate::config::raw::{RawAffinity, RawWorkers};
use crate::cpus;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `worker_timeout` when a config names none.
pub const DEFAULT_WORKER_TIMEOUT: Duration = Duration::from_secs(30);
/// Pid file used when a config names none, run as an ordinary user.
pub const DEFAULT_PID_FILE: &str = "/tmp/prefork.pid";
/// Pid file used when a config names none, run as root: never in a
/// directory every user may write to (nginx's `/run/nginx.pid`).
pub const DEFAULT_ROOT_PID_FILE: &str = "/run/prefork.pid";

/// The pid file a config without `pid_file` gets, for whoever runs it (the
/// control socket defaults to the same place).
pub fn default_pid_file() -> PathBuf {
    PathBuf::from(if nix::unistd::geteuid().is_root() {
        DEFAULT_ROOT_PID_FILE
    } else {
        DEFAULT_PID_FILE
    })
}
/// Shortest `worker_timeout`: workers beat every quarter of it but at most
/// every 50 ms, so a shorter one has healthy workers killed as hung.
pub const MIN_WORKER_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest control socket path: a Unix socket path has at most 107 bytes
/// (`sun_path` and its NUL), and a binary upgrade binds the new master's
/// socket beside it with `.PID` added (at most 8 bytes, pid_max being 2^22).
const MAX_CONTROL_SOCKET: usize = 107 - 8;

impl Validator<'_> {
    pub(super) fn workers(&mut self, path: KeyPath, raw: Option<&RawWorkers>) -> usize {
        let auto = || std::thread::available_parallelism().map_or(1, |n| n.get());
        match raw {
            None => auto(),
            Some(RawWorkers::Named(s)) if s == "auto" => auto(),
            Some(RawWorkers::Named(s)) => {
                self.problem(&path, format!("expected a number or \"auto\", found {s:?}"));
                1
            }
            Some(&RawWorkers::Count(n)) if n < 1 => {
                self.problem(&path, format!("must be at least 1 (found {n})"));
                1
            }
            Some(&RawWorkers::Count(n)) if n > 1024 => {
                self.problem(&path, format!("at most 1024 workers (found {n})"));
                1
            }
            Some(&RawWorkers::Count(n)) => n as usize,
        }
    }

    /// The CPUs workers are pinned to, in slot order: `"auto"` takes every
    /// CPU this process may run on, as nginx's `worker_cpu_affinity auto`.
    pub(super) fn cpu_affinity(&mut self, path: KeyPath, raw: Option<&RawAffinity>) -> Vec<usize> {
        let cpus = match raw {
            None => return Vec::new(),
            Some(RawAffinity::Named(s)) if s == "off" => return Vec::new(),
            Some(RawAffinity::Named(s)) if s == "auto" => return cpus::allowed(),
            Some(RawAffinity::Named(s)) => {
                self.problem(
                    &path,
                    format!("expected \"off\", \"auto\" or a list of CPU numbers, found {s:?}"),
                );
                return Vec::new();
            }
            Some(RawAffinity::Cpus(cpus)) => cpus,
        };
        if cpus.is_empty() {
            self.problem(&path, "list at least one CPU, or write \"off\"");
            return Vec::new();
        }
        let allowed = cpus::allowed();
        let mut valid = Vec::with_capacity(cpus.len());
        for &cpu in cpus {
            match usize::try_from(cpu) {
                Ok(n) if allowed.contains(&n) => valid.push(n),
                _ => self.problem(
                    &path,
                    format!(
                        "CPU {cpu} is not one prefork may run on (it may run on {})",
                        cpus::list(&allowed)
                    ),
                ),
            }
        }
        valid
    }

    pub(super) fn worker_timeout(&mut self, path: KeyPath, raw: Option<&str>) -> Duration {
        let worker_timeout = self.duration(path.clone(), raw, DEFAULT_WORKER_TIMEOUT);
        if worker_timeout < MIN_WORKER_TIMEOUT {
            self.problem(
                &path,
                "must be at least 1s: healthy workers would be killed as hung",
            );
            return DEFAULT_WORKER_TIMEOUT;
        }
        worker_timeout
    }

    /// `sigterm = "fast" | "graceful"`.
    pub(super) fn sigterm(&mut self, path: KeyPath, raw: Option<&str>) -> SigtermMode {
        match raw {
            None | Some("fast") => SigtermMode::Fast,
            Some("graceful") => SigtermMode::Graceful,
            Some(other) => {
                self.problem(
                    &path,
                    format!("expected \"fast\" or \"graceful\", found {other:?}"),
                );
                SigtermMode::Fast
            }
        }
    }

    /// `shutdown_delay`: a duration, zero (the default) allowed.
    pub(super) fn shutdown_delay(&mut self, path: KeyPath, raw: Option<&str>) -> Duration {
        match raw.map(humantime::parse_duration) {
            None => Duration::ZERO,
            Some(Ok(d)) if d.is_zero() => d,
            Some(_) => self.duration(path, raw, Duration::ZERO),
        }
    }

    pub(super) fn user(&mut self, path: KeyPath, raw: Option<String>) -> Option<String> {
        match raw {
            Some(u) if u.trim().is_empty() => {
                self.problem(&path, "must not be empty");
                None
            }
            other => other,
        }
    }

    pub(super) fn pid_file(&mut self, path: KeyPath, raw: Option<PathBuf>) -> PathBuf {
        match raw {
            // A start could never write it (nor find the control socket
            // beside it): refused here rather than by the start alone.
            Some(file) if file.as_os_str().is_empty() => {
                self.problem(&path, "must not be empty");
                default_pid_file()
            }
            Some(file) => file,
            None => default_pid_file(),
        }
    }

    pub(super) fn control_socket(&mut self, raw: Option<PathBuf>, pid_file: &Path) -> PathBuf {
        let explicit = raw.is_some();
        let path = match raw {
            Some(path) if path.as_os_str().is_empty() => {
                self.problem(
                    &KeyPath::default().key("control_socket"),
                    "must not be empty",
                );
                return default_control_socket(pid_file);
            }
            Some(path) => path,
            None => default_control_socket(pid_file),
        };
        let len = path.as_os_str().len();
        if len > MAX_CONTROL_SOCKET {
            let (key, what) = if explicit {
                ("control_socket", "this path")
            } else {
                ("pid_file", "the control socket beside it")
            };
            self.problem(
                &KeyPath::default().key(key),
                format!(
                    "{what} ({}) is {len} bytes long; a control socket path may have at most \
                     {MAX_CONTROL_SOCKET} (a Unix socket path has at most 107, and a binary upgrade \
                     adds `.PID`): set a shorter control_socket",
                    path.display()
                ),
            );
        }
        path
    }
}

#[cfg(test)]
mod tests {
    use crate::config::load::parse;
    use crate::config::testing::{parse_err, parse_ok};
    use crate::cpus;
    use std::path::Path;

    #[test]
    fn sigterm_is_fast_unless_graceful_is_asked() {
        use crate::config::model::SigtermMode;
        assert_eq!(parse_ok("workers = 1").sigterm, SigtermMode::Fast);
        assert_eq!(parse_ok("sigterm = \"fast\"").sigterm, SigtermMode::Fast);
        assert_eq!(
            parse_ok("sigterm = \"graceful\"").sigterm,
            SigtermMode::Graceful
        );
        assert_eq!(
            parse_err("workers = 1\nsigterm = \"gentle\"\n"),
            "t.toml:2: sigterm: expected \"fast\" or \"graceful\", found \"gentle\""
        );
    }

    #[test]
    fn shutdown_delay_defaults_to_none_and_takes_zero() {
        use std::time::Duration;
        assert_eq!(parse_ok("workers = 1").shutdown_delay, Duration::ZERO);
        assert_eq!(
            parse_ok("shutdown_delay = \"0s\"").shutdown_delay,
            Duration::ZERO
        );
        assert_eq!(
            parse_ok("shutdown_delay = \"5s\"").shutdown_delay,
            Duration::from_secs(5)
        );
        let e = parse_err("workers = 1\nshutdown_delay = \"soon\"\n");
        assert!(
            e.starts_with("t.toml:2: shutdown_delay: invalid duration \"soon\""),
            "{e}"
        );
    }

    #[test]
    fn an_empty_pid_file_is_refused() {
        let e = parse_err("workers = 1\npid_file = \"\"\n");
        assert_eq!(e, "t.toml:2: pid_file: must not be empty");
    }

    #[test]
    fn worker_cpu_affinity_off_auto_and_lists() {
        let allowed = cpus::allowed();
        assert!(parse_ok("workers = 2").worker_cpu_affinity.is_empty());
        assert!(parse_ok("worker_cpu_affinity = \"off\"")
            .worker_cpu_affinity
            .is_empty());
        let auto = parse_ok("workers = 3\nworker_cpu_affinity = \"auto\"");
        assert_eq!(auto.worker_cpu_affinity, allowed);
        // Slots beyond the list wrap around it.
        assert_eq!(auto.cpu_for_slot(0), Some(allowed[0]));
        assert_eq!(auto.cpu_for_slot(allowed.len() as u32), Some(allowed[0]));
        let last = *allowed.last().expect("one CPU at least");
        let listed = parse_ok(&format!("worker_cpu_affinity = [{last}, {}]", allowed[0]));
        assert_eq!(listed.worker_cpu_affinity, vec![last, allowed[0]]);
        assert_eq!(listed.cpu_for_slot(1), Some(allowed[0]));
        assert_eq!(parse_ok("workers = 2").cpu_for_slot(0), None);
    }

    #[test]
    fn worker_cpu_affinity_errors_name_the_key() {
        let e = parse_err("workers = 2\nworker_cpu_affinity = [0, 4096]\n");
        assert!(
            e.starts_with("t.toml:2: worker_cpu_affinity: CPU 4096 is not one prefork may run on (it may run on "),
            "{e}"
        );
        assert!(parse_err("worker_cpu_affinity = [-1]").contains("CPU -1 is not one"));
        assert!(parse_err("worker_cpu_affinity = []").contains("list at least one CPU"));
        assert!(parse_err("worker_cpu_affinity = \"all\"")
            .contains("expected \"off\", \"auto\" or a list of CPU numbers, found \"all\""));
    }

    #[test]
    fn workers_auto_and_bad_names() {
        assert!(parse_ok("workers = \"auto\"").workers >= 1);
        assert!(parse_err("workers = \"many\"").contains("expected a number or \"auto\""));
    }

    /// A control socket path no master could bind (over 107 bytes), or one
    /// that a binary upgrade could not bind beside with `.PID` added.
    #[test]
    fn a_control_socket_path_too_long_to_bind_is_refused() {
        let dir = format!("/tmp/{}", "d".repeat(80));
        let ok = format!("control_socket = \"{dir}/c.sock\"\n");
        assert!(parse(Path::new("t.toml"), &ok).is_ok());
        let long = format!("workers = 1\ncontrol_socket = \"{dir}/control-socket.sock\"\n");
        let err = parse(Path::new("t.toml"), &long).unwrap_err().to_string();
        assert!(err.contains("t.toml:2: control_socket:"), "{err}");
        // The default, derived from the pid file, is checked too.
        let derived = format!("pid_file = \"{dir}/prefork-master.pid\"\n");
        let err = parse(Path::new("t.toml"), &derived)
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.toml:1: pid_file:"), "{err}");
    }
}
