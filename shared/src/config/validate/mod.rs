//! Checking the raw config key by key, one validator per section. Each
//! problem is recorded with the key it concerns and located on its line;
//! checking goes on after a problem, so that one run reports them all.
//!
//! - [`process`] checks `workers`, `worker_cpu_affinity`, `user`,
//!   `worker_timeout`, `pid_file` and `control_socket`;
//! - [`http`] the client limits and timeouts, `via` and `splice`;
//! - [`log`] `[log]` and a route's `access_log`;
//! - [`listen`] `[[listen]]` and `[admin]`;
//! - [`upstreams`] `[upstreams.NAME]` ([`upstream_tls`] its TLS keys);
//! - [`routes`] `[[routes]]`;
//! - [`tls`] `[[certificates]]`, `tls_handshake_timeout`, `tls_protocols`
//!   and the TLS listeners' need of a certificate.

use super::locate::{KeyPath, Locator, Problem};
use super::model::Config;
use super::raw::{RawConfig, RawSize};
use std::time::Duration;

mod http;
mod listen;
mod log;
mod process;
mod routes;
mod tickets;
mod tls;
mod upstream_tls;
mod upstreams;

pub use http::MAX_REQUEST_HEADERS;
pub use listen::DEFAULT_LISTEN;
pub use process::{
    default_pid_file, DEFAULT_PID_FILE, DEFAULT_ROOT_PID_FILE, DEFAULT_WORKER_TIMEOUT,
    MIN_WORKER_TIMEOUT,
};
pub use upstream_tls::server_host;
pub use upstreams::{resolve_server, DEFAULT_RESOLVE, MAX_WEIGHT};

/// Longest duration any key takes: longer ones are absurd, and one far
/// longer overflows the clock arithmetic of the timers it arms.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Checks `raw`, deserialized from the text `locator` holds: the validated
/// config, or every problem found, in file order where known.
pub(super) fn config(locator: &Locator, raw: RawConfig) -> Result<Config, Vec<Problem>> {
    let mut v = Validator {
        locator,
        problems: Vec::new(),
    };
    let config = v.config(raw);
    if v.problems.is_empty() {
        Ok(config)
    } else {
        v.problems.sort_by_key(|p| p.line);
        Err(v.problems)
    }
}

/// The problems found so far, and where to locate them.
struct Validator<'a> {
    locator: &'a Locator,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    /// Records a problem with the value at `path`, located on its line.
    fn problem(&mut self, path: &KeyPath, message: impl Into<String>) {
        self.problems.push(self.locator.problem(path, message));
    }

    /// A duration such as `"30s"`; `default` when absent or invalid.
    fn duration(&mut self, path: KeyPath, raw: Option<&str>, default: Duration) -> Duration {
        let Some(text) = raw else { return default };
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.problem(&path, "must be longer than zero");
                default
            }
            Ok(d) if d > MAX_DURATION => {
                self.problem(&path, format!("must be at most 365 days (found {text:?})"));
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.problem(
                    &path,
                    format!(
                        "invalid duration {text:?} ({e}); write e.g. \"500ms\", \"30s\", \"2m\""
                    ),
                );
                default
            }
        }
    }

    /// Every section, checked in turn.
    fn config(&mut self, raw: RawConfig) -> Config {
        let root = KeyPath::default();
        let workers = self.workers(root.key("workers"), raw.workers.as_ref());
        let worker_cpu_affinity = self.cpu_affinity(
            root.key("worker_cpu_affinity"),
            raw.worker_cpu_affinity.as_ref(),
        );
        let http = self.http(&raw);
        let http2 = self.http2(&raw, &http);
        let shutdown_timeout = self.duration(
            root.key("shutdown_timeout"),
            raw.shutdown_timeout.as_deref(),
            Duration::from_secs(30),
        );
        let worker_timeout =
            self.worker_timeout(root.key("worker_timeout"), raw.worker_timeout.as_deref());
        let sigterm = self.sigterm(root.key("sigterm"), raw.sigterm.as_deref());
        let shutdown_delay =
            self.shutdown_delay(root.key("shutdown_delay"), raw.shutdown_delay.as_deref());
        let tls_session_timeout = self.tls_session_timeout(
            root.key("tls_session_timeout"),
            raw.tls_session_timeout.as_deref(),
        );
        let max_connections = match raw.max_connections {
            Some(0) => {
                self.problem(&root.key("max_connections"), "must be at least 1");
                None
            }
            n => n,
        };
        let user = self.user(root.key("user"), raw.user);
        let log = self.log(root.key("log"), raw.log);
        let listen = self.listen(root.key("listen"), raw.listen);
        let upstreams = self.upstreams(root.key("upstreams"), raw.upstreams);
        let routes = self.routes(root.key("routes"), raw.routes, &upstreams);
        let pid_file = self.pid_file(root.key("pid_file"), raw.pid_file);
        let control_socket = self.control_socket(raw.control_socket, &pid_file);
        let admin = self.admin(root.key("admin"), raw.admin, &listen);
        let tls = self.tls(
            raw.tls_handshake_timeout.as_deref(),
            (
                raw.tls_protocols,
                raw.tls_ciphers,
                raw.tls_prefer_server_ciphers,
            ),
            raw.certificates,
            &listen,
        );
        Config {
            source: self.locator.file().to_owned(),
            workers,
            worker_cpu_affinity,
            pid_file,
            user,
            shutdown_timeout,
            sigterm,
            shutdown_delay,
            worker_timeout,
            tls_session_timeout,
            max_connections,
            log,
            listen,
            http,
            http2,
            upstreams,
            routes,
            control_socket,
            admin,
            tls,
        }
    }

    /// A byte size; `None` (with a problem recorded) when invalid.
    fn size(&mut self, path: KeyPath, raw: &RawSize) -> Option<u64> {
        match raw {
            RawSize::Bytes(n) => match u64::try_from(*n) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.problem(&path, "must not be negative");
                    None
                }
            },
            RawSize::Text(text) => {
                let parsed = parse_size(text);
                if parsed.is_none() {
                    self.problem(
                        &path,
                        format!(
                            "invalid size {text:?}; write e.g. 1048576, \"512k\", \"10m\", \"1g\""
                        ),
                    );
                }
                parsed
            }
        }
    }

    /// A count of at least 1; `default` when absent or 0.
    fn positive(&mut self, path: KeyPath, raw: Option<u64>, default: u64) -> u64 {
        match raw {
            Some(0) => {
                self.problem(&path, "must be at least 1");
                default
            }
            Some(n) => n,
            None => default,
        }
    }

    /// A number of at least `min`; `default` when absent or below it.
    fn at_least(&mut self, path: KeyPath, raw: Option<usize>, min: usize, default: usize) -> usize {
        match raw {
            Some(n) if n < min => {
                self.problem(&path, format!("must be at least {min}"));
                default
            }
            Some(n) => n,
            None => default,
        }
    }
}

/// Parses `"123"`, `"64k"`, `"10m"`, `"1g"` (binary multiples) into bytes.
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_lowercase()),
        _ => (text, 'b'),
    };
    let shift = match unit {
        'b' => 0,
        'k' => 10,
        'm' => 20,
        'g' => 30,
        _ => return None,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::access_format::AccessFormat;
    use crate::config::load::parse;
    use crate::config::model::{HostMatch, LogTarget, RouteAccessLog};
    use crate::config::testing::{parse_err, parse_ok};
    use std::path::{Path, PathBuf};

    const FULL: &str = r#"
workers = 4
pid_file = "/tmp/x.pid"
user = "nobody"
shutdown_timeout = "30s"

[log]
error_log = "stderr"
access_log = "off"

[[listen]]
addr = "127.0.0.1:8080"

[[listen]]
addr = "[::1]:8080"

[upstreams.app]
servers = ["127.0.0.1:3000", "127.0.0.1:3001"]
connect_timeout = "2s"
read_timeout = "60s"

[[routes]]
host = "app.local"
path = "/"
upstream = "app"

[[routes]]
host = "*.example.com"
path = "/api"
upstream = "app"

[[routes]]
host = "status.local"
respond = { status = 200, body = "ok\n" }
"#;

    #[test]
    fn full_example_parses() {
        let c = parse_ok(FULL);
        assert_eq!(c.workers, 4);
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.log.access_log, None);
        assert_eq!(c.upstreams["app"].servers.len(), 2);
        assert_eq!(c.upstreams["app"].connect_timeout, Duration::from_secs(2));
        assert_eq!(c.routes[1].host, HostMatch::Suffix(".example.com".into()));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(c.worker_timeout, DEFAULT_WORKER_TIMEOUT);
        assert!(c.listen.iter().all(|l| !l.reuseport));
    }

    #[test]
    fn worker_timeout_and_reuseport() {
        let c = parse_ok(
            "worker_timeout = \"5s\"\n[[listen]]\naddr = \"127.0.0.1:1\"\nreuseport = true\n",
        );
        assert_eq!(c.worker_timeout, Duration::from_secs(5));
        assert!(c.listen[0].reuseport);
        assert!(c.listen[0].defer_accept, "on unless turned off");
        let c = parse_ok("[[listen]]\naddr = \"127.0.0.1:1\"\ndefer_accept = false\n");
        assert!(!c.listen[0].defer_accept);
        let e = parse_err("worker_timeout = \"0s\"\n");
        assert!(
            e.starts_with("t.toml:1: worker_timeout: must be longer than zero"),
            "{e}"
        );
    }

    #[test]
    fn defaults_apply() {
        let c = parse_ok("");
        assert!(c.workers >= 1);
        assert_eq!(c.listen[0].addr, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(c.log.error_log, LogTarget::Stderr);
        assert_eq!(c.log.access_log, Some(LogTarget::Stdout));
        assert_eq!(c.pid_file, default_pid_file());
        let expected = if nix::unistd::geteuid().is_root() {
            DEFAULT_ROOT_PID_FILE
        } else {
            DEFAULT_PID_FILE
        };
        assert_eq!(c.pid_file, PathBuf::from(expected));
    }

    #[test]
    fn bad_values_are_reported_each_with_its_line() {
        let e = parse_err(
            "workers = 0\nshutdown_timeout = \"soon\"\n[[listen]]\naddr = \"localhost\"\n[[listen]]\naddr = \"127.0.0.1:1\"\n[[listen]]\naddr = \"127.0.0.1:1\"\n",
        );
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 4, "{e}");
        assert!(
            lines[0].starts_with("t.toml:1: workers: must be at least 1"),
            "{e}"
        );
        assert!(
            lines[1].starts_with("t.toml:2: shutdown_timeout: invalid duration"),
            "{e}"
        );
        assert!(
            lines[2].starts_with("t.toml:4: listen[0].addr: invalid listen address"),
            "{e}"
        );
        assert!(
            lines[3].starts_with("t.toml:8: listen[2].addr: duplicate listen address"),
            "{e}"
        );
    }

    #[test]
    fn durations_that_would_overflow_or_kill_healthy_workers_are_refused() {
        for key in [
            "worker_timeout",
            "shutdown_timeout",
            "client_header_timeout",
        ] {
            let e = parse_err(&format!("{key} = \"18446744073709551615s\"\n"));
            assert!(
                e.starts_with(&format!("t.toml:1: {key}: must be at most 365 days")),
                "{e}"
            );
        }
        let e = parse_err(
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\nfail_timeout = \"500000000000y\"\n",
        );
        assert!(
            e.starts_with("t.toml:3: upstreams.a.fail_timeout: must be at most 365 days"),
            "{e}"
        );
        assert_eq!(
            parse_ok("tunnel_timeout = \"365d\"").http.tunnel_timeout,
            MAX_DURATION
        );
        let e = parse_err("worker_timeout = \"10ms\"\n");
        assert!(
            e.starts_with("t.toml:1: worker_timeout: must be at least 1s"),
            "{e}"
        );
        assert_eq!(
            parse_ok("worker_timeout = \"1s\"").worker_timeout,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn defaults_are_off_combined_and_beside_the_pid_file() {
        let c = parse(Path::new("t.toml"), "pid_file = \"/run/p.pid\"\n").unwrap();
        assert_eq!(c.admin, None);
        assert_eq!(c.log.access_log_format, AccessFormat::Combined);
        assert_eq!(c.control_socket, PathBuf::from("/run/p.sock"));
    }

    #[test]
    fn observe_keys_parse() {
        let c = parse(
            Path::new("t.toml"),
            r#"
control_socket = "/tmp/ctl.sock"
[admin]
addr = "127.0.0.1:9901"
[log]
access_log_format = "json"
[[routes]]
path = "/quiet"
respond = { body = "x" }
access_log = "off"
[[routes]]
path = "/own"
respond = { body = "x" }
access_log = "/tmp/own.log"
"#,
        )
        .unwrap();
        assert_eq!(c.control_socket, PathBuf::from("/tmp/ctl.sock"));
        assert_eq!(c.admin.unwrap().addr.port(), 9901);
        assert_eq!(c.log.access_log_format, AccessFormat::Json);
        assert_eq!(c.routes[0].access_log, RouteAccessLog::Off);
        assert_eq!(
            c.routes[1].access_log,
            RouteAccessLog::To(LogTarget::File("/tmp/own.log".into()))
        );
    }

    #[test]
    fn bad_observe_keys_name_line_and_key() {
        let e = parse(
            Path::new("t.toml"),
            "[admin]\naddr = \"localhost\"\n[log]\naccess_log_format = \"$nope\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("t.toml:2: admin.addr: invalid address"), "{e}");
        assert!(
            e.contains("t.toml:4: log.access_log_format: unknown variable $nope"),
            "{e}"
        );
    }
}
