//! The checks a start, a reload and `prefork -t` make beyond the config
//! file itself, as `nginx -t` does: what the file names must exist, and the
//! certificates it names are read (the master reads them, workers never
//! open key files).

use crate::log_files;
use crate::os::{self, Credentials};
use prefork_shared::config::{ConfigError, KeyPath, Locator, Problem};
use prefork_shared::{fd_budget, tls, Config};
use std::time::{SystemTime, UNIX_EPOCH};

/// Who the workers of a root master run as when the config names no
/// `user`, as nginx's workers do: a worker faces the network, so it never
/// keeps root unless `user = "root"` says so.
pub const DEFAULT_WORKER_USER: &str = "nobody";

/// The identity workers run as: `user` (by default `nobody`) when the
/// master is root, else none (they run as the master).
fn worker_credentials(config: &Config) -> std::io::Result<Option<Credentials>> {
    if !os::is_root() {
        return Ok(None);
    }
    os::lookup_user(config.user.as_deref().unwrap_or(DEFAULT_WORKER_USER)).map(Some)
}

/// What a start, a reload and `-t` check beyond the file itself, as
/// `nginx -t` does: the workers' `user` exists (as root), the
/// directories of every log file, the pid file and the control socket do,
/// and every certificate and its key are read and checked (into
/// `config.tls.loaded`, which the workers get with the config).
/// Returns the workers' credentials, or every problem found, each located
/// by `locator` in the text `config` was loaded from (`file:line: key:
/// reason`) like the file's own problems: the file is not read again.
pub fn start_checks(
    config: &mut Config,
    locator: &Locator,
) -> Result<Option<Credentials>, ConfigError> {
    let mut problems = Vec::new();
    load_certificates(config, locator, &mut problems);
    let credentials = worker_credentials(config).unwrap_or_else(|e| {
        let user = KeyPath::default().key("user");
        problems.push(locator.problem(&user, e.to_string()));
        None
    });
    if let Err(why) = resolve_max_connections(config) {
        let key = KeyPath::default().key("max_connections");
        problems.push(locator.problem(&key, why));
    }
    for (key, why) in log_files::check(config) {
        problems.push(locator.problem(&key, why));
    }
    // The master creates both before it serves.
    for (key, file) in [
        ("pid_file", &config.pid_file),
        ("control_socket", &config.control_socket),
    ] {
        if let Some(why) = log_files::cannot_create(file) {
            let key = KeyPath::default().key(key);
            problems.push(locator.problem(&key, why));
        }
    }
    if problems.is_empty() {
        Ok(credentials)
    } else {
        problems.sort_by_key(|p| p.line);
        Err(ConfigError::Invalid { problems })
    }
}

/// Checks that the hard `RLIMIT_NOFILE` (the workers inherit it) covers
/// the connection budget, and writes the `max_connections` the workers
/// get: as written, or derived from the limit when absent.
fn resolve_max_connections(config: &mut Config) -> Result<(), String> {
    let (_, hard) =
        fd_budget::nofile_limits().map_err(|e| format!("cannot read RLIMIT_NOFILE: {e}"))?;
    let budget = fd_budget::budget(config, hard).map_err(|e| e.to_string())?;
    config.max_connections = Some(budget.max_connections);
    Ok(())
}

/// Reads every `[[certificates]]` entry into `config.tls.loaded`; a
/// problem with one is located at its `cert` or `key`.
fn load_certificates(config: &mut Config, locator: &Locator, problems: &mut Vec<Problem>) {
    let now = unix_now();
    let mut loaded = Vec::with_capacity(config.tls.certificates.len());
    for (i, files) in config.tls.certificates.iter().enumerate() {
        match tls::load(files, now) {
            Ok(cert) => loaded.push(cert),
            Err(e) => {
                let key = KeyPath::default().key("certificates").index(i).key(e.key());
                problems.push(locator.problem(&key, e.to_string()));
            }
        }
    }
    config.tls.loaded = loaded;
}

/// The current time as Unix time.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A line for each certificate of `config` that expires within
/// [`tls::EXPIRY_WARNING`], to log as a warning.
pub fn expiry_warnings(config: &Config) -> Vec<String> {
    tls::expiring_within(&config.tls.loaded, unix_now(), tls::EXPIRY_WARNING)
        .into_iter()
        .map(|c| {
            let days = (c.not_after - unix_now()).max(0) / 86_400;
            format!(
                "the certificate {} ({}) expires in {days} days",
                c.source.display(),
                c.names.join(", ")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefork_shared::config;

    /// The problems are located in the text loaded: the file is not read
    /// again (here it is gone by the time the checks run).
    #[test]
    fn problems_are_located_in_the_text_loaded_not_in_a_second_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        let missing = dir.path().join("missing");
        let text = format!(
            "workers = 1\npid_file = \"{d}/p.pid\"\n\n[log]\naccess_log = \"{m}/a.log\"\n\
             [[listen]]\naddr = \"127.0.0.1:8080\"\n",
            d = dir.path().display(),
            m = missing.display()
        );
        std::fs::write(&path, text).unwrap();
        let loaded = config::load(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut loaded = loaded;
        let e = start_checks(&mut loaded.config, &loaded.locator)
            .unwrap_err()
            .to_string();
        let location = format!(
            "{}:5: log.access_log: {}/a.log",
            path.display(),
            missing.display()
        );
        assert!(e.starts_with(&location), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }

    #[test]
    fn a_config_whose_files_can_be_created_passes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        let text = format!(
            "pid_file = \"{d}/p.pid\"\n[log]\naccess_log = \"{d}/a.log\"\n\
             [[listen]]\naddr = \"127.0.0.1:8080\"\n",
            d = dir.path().display()
        );
        std::fs::write(&path, text).unwrap();
        let loaded = config::load(&path).unwrap();
        let mut loaded = loaded;
        let credentials = start_checks(&mut loaded.config, &loaded.locator).unwrap();
        if os::is_root() {
            let name = credentials.map(|c| c.name);
            assert_eq!(
                name.as_deref(),
                Some(DEFAULT_WORKER_USER),
                "no `user`, run as root: workers run as nobody"
            );
        } else {
            assert!(
                credentials.is_none(),
                "no `user`: workers run as the master"
            );
        }
    }

    #[test]
    fn certificates_near_their_expiry_are_warned_about() {
        use prefork_shared::tls::{Certificate, KeyFormat, PrivateKey};
        let mut config = config::parse(std::path::Path::new("t.toml"), "").unwrap();
        let cert = |days: i64| Certificate {
            source: format!("/c{days}.pem").into(),
            chain: Vec::new(),
            key: PrivateKey::new(KeyFormat::Pkcs8, vec![7; 16]),
            names: vec!["a.test".into()],
            not_after: unix_now() + days * 86_400 + 3600,
        };
        config.tls.loaded = vec![cert(5), cert(90)];
        let warnings = expiry_warnings(&config);
        assert_eq!(
            warnings,
            ["the certificate /c5.pem (a.test) expires in 5 days"],
            "{warnings:?}"
        );
    }
}
