//! Validation of the keys about observing prefork: `control_socket`,
//! `[admin]`, `[log] access_log_format` and a route's `access_log`.

use super::Validator;
use crate::config::{AccessFormat, Admin, LogTarget, RouteAccessLog};
use crate::config_locate::KeyPath;
use crate::config_observe::{default_control_socket, parse_template};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// `[admin]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    addr: Option<String>,
}

/// Longest control socket path: a Unix socket path has at most 107 bytes
/// (`sun_path` and its NUL), and a binary upgrade binds the new master's
/// socket beside it with `.PID` added (at most 8 bytes, pid_max being 2^22).
const MAX_CONTROL_SOCKET: usize = 107 - 8;

impl Validator<'_> {
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

    pub(super) fn admin(&mut self, path: KeyPath, raw: Option<RawAdmin>) -> Option<Admin> {
        let raw = raw?;
        let key = path.key("addr");
        let Some(text) = raw.addr else {
            self.problem(
                &key,
                "the admin listener needs an address, e.g. \"127.0.0.1:9901\"",
            );
            return None;
        };
        match text.parse::<SocketAddr>() {
            Ok(addr) if addr.port() == 0 => {
                self.problem(
                    &key,
                    format!("port 0 is not a port clients can reach (found {text:?})"),
                );
                None
            }
            Ok(addr) => Some(Admin { addr }),
            Err(_) => {
                self.problem(
                    &key,
                    format!(
                        "invalid address {text:?}: write an IP and a port, e.g. \"127.0.0.1:9901\""
                    ),
                );
                None
            }
        }
    }

    pub(super) fn access_format(&mut self, path: KeyPath, raw: Option<String>) -> AccessFormat {
        match raw.as_deref() {
            None | Some("combined") => AccessFormat::Combined,
            Some("json") => AccessFormat::Json,
            Some(template) => match parse_template(template) {
                Ok(t) => AccessFormat::Template(t),
                Err(why) => {
                    self.problem(
                        &path,
                        format!("{why}; write \"combined\", \"json\" or a template"),
                    );
                    AccessFormat::Combined
                }
            },
        }
    }

    pub(super) fn route_access_log(
        &mut self,
        path: KeyPath,
        raw: Option<String>,
    ) -> RouteAccessLog {
        if raw.is_none() {
            return RouteAccessLog::Inherit;
        }
        match self.log_target(path, raw, LogTarget::Stdout) {
            Some(target) => RouteAccessLog::To(target),
            None => RouteAccessLog::Off,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{AccessFormat, LogTarget, RouteAccessLog};
    use crate::config_file::parse;
    use std::path::{Path, PathBuf};

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

#[cfg(test)]
mod socket_length_tests {
    use crate::config_file::parse;
    use std::path::Path;

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
