//! The checks a start, a reload and `prefork -t` make beyond the config
//! file itself, as `nginx -t` does: what the file names must exist.

use crate::log_files;
use crate::os::{self, Credentials};
use prefork_shared::config::{self, KeyPath};
use prefork_shared::Config;
use std::path::Path;

/// The identity workers run as: `user` when the master is root, else none.
fn worker_credentials(config: &Config) -> std::io::Result<Option<Credentials>> {
    match &config.user {
        Some(name) if os::is_root() => os::lookup_user(name).map(Some),
        _ => Ok(None),
    }
}

/// What a start, a reload and `-t` check beyond the file itself, as
/// `nginx -t` does: the workers' `user` exists (as root), and the
/// directories of every log file, the pid file and the control socket do.
/// Returns the workers' credentials, or every problem found, each located
/// in the config file at `path` (`file:line: key: reason`) like the file's
/// own problems.
pub fn start_checks(
    config: &Config,
    path: &Path,
) -> Result<Option<Credentials>, config::ConfigError> {
    let mut problems = Vec::new();
    let credentials = worker_credentials(config).unwrap_or_else(|e| {
        let user = KeyPath::default().key("user");
        problems.push(config::problem_at(path, &user, e.to_string()));
        None
    });
    for (key, why) in log_files::check(config) {
        problems.push(config::problem_at(path, &key, why));
    }
    // The master creates both before it serves.
    for (key, file) in [
        ("pid_file", &config.pid_file),
        ("control_socket", &config.control_socket),
    ] {
        if let Some(why) = log_files::cannot_create(file) {
            let key = KeyPath::default().key(key);
            problems.push(config::problem_at(path, &key, why));
        }
    }
    if problems.is_empty() {
        Ok(credentials)
    } else {
        problems.sort_by_key(|p| p.line);
        Err(config::ConfigError::Invalid { problems })
    }
}
