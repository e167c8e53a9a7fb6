//! The log files a configuration names, checked by the master before it
//! starts or takes a reload: workers open their logs themselves, and one in
//! a directory that does not exist would make every worker fail to start,
//! again and again, instead of giving one clear error.

use prefork_shared::config::{LogTarget, RouteAccessLog};
use prefork_shared::Config;
use std::path::Path;

/// Every log file `config` names, with its key.
fn files(config: &Config) -> Vec<(String, &Path)> {
    let mut files = Vec::new();
    if let LogTarget::File(path) = &config.log.error_log {
        files.push(("log.error_log".to_owned(), path.as_path()));
    }
    if let Some(LogTarget::File(path)) = &config.log.access_log {
        files.push(("log.access_log".to_owned(), path.as_path()));
    }
    for (i, route) in config.routes.iter().enumerate() {
        if let RouteAccessLog::To(LogTarget::File(path)) = &route.access_log {
            files.push((format!("routes[{i}].access_log"), path.as_path()));
        }
    }
    files
}

/// Checks that the directory of every log file exists and that no log file
/// is a directory. It creates nothing: a file is created by whoever opens it
/// first, a worker running as `user` included. The error names the key, the
/// file and the reason.
pub fn check(config: &Config) -> Result<(), String> {
    for (key, file) in files(config) {
        let dir = match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "{key}: {}: {} is not a directory",
                    file.display(),
                    dir.display()
                ))
            }
            Err(e) => {
                return Err(format!(
                    "{key}: {}: directory {}: {e}",
                    file.display(),
                    dir.display()
                ))
            }
        }
        if std::fs::metadata(file).is_ok_and(|meta| meta.is_dir()) {
            return Err(format!("{key}: {}: is a directory", file.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefork_shared::config_file::parse;

    fn config(log: &str) -> Config {
        let text = format!("[log]\n{log}\n[[routes]]\nrespond = {{ status = 200 }}\n");
        parse(Path::new("t.toml"), &text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn names_the_key_and_file_of_a_log_that_cannot_be_created() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        assert_eq!(
            check(&config(&format!("error_log = \"{d}/e.log\""))),
            Ok(())
        );
        let missing = check(&config(&format!("access_log = \"{d}/no/a.log\"")));
        let err = missing.unwrap_err();
        assert!(
            err.starts_with(&format!("log.access_log: {d}/no/a.log: directory {d}/no: ")),
            "{err}"
        );
        let is_dir = check(&config(&format!("error_log = \"{d}\"")));
        assert_eq!(is_dir, Err(format!("log.error_log: {d}: is a directory")));
        assert_eq!(check(&config("error_log = \"stderr\"")), Ok(()));
    }
}
