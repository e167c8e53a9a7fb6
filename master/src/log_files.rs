//! The log files a configuration names, checked by the master before it
//! starts or takes a reload: workers open their logs themselves, and one in
//! a directory that does not exist would make every worker fail to start,
//! again and again, instead of giving one clear error.
//!
//! Workers running as `user` also need the master's help to open them:
//! after logrotate renamed a file, an unprivileged worker cannot create the
//! new one in a directory only root may write to (`/var/log/...`), nor
//! append to one logrotate created root-owned; its reopen would fail and its
//! lines would go on to the rotated file. As nginx does, the master, still
//! root, creates each such file and gives it to the workers' user before
//! they open it ([`give_to`]).

use crate::os::Credentials;
use nix::sys::stat::{fchmod, fstat, Mode, SFlag};
use nix::unistd::fchown;
use prefork_shared::config::{KeyPath, LogTarget, RouteAccessLog};
use prefork_shared::Config;
use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Every log file `config` names, with its key.
fn files(config: &Config) -> Vec<(KeyPath, &Path)> {
    let log = KeyPath::default().key("log");
    let mut files = Vec::new();
    if let LogTarget::File(path) = &config.log.error_log {
        files.push((log.key("error_log"), path.as_path()));
    }
    if let Some(LogTarget::File(path)) = &config.log.access_log {
        files.push((log.key("access_log"), path.as_path()));
    }
    for (i, route) in config.routes.iter().enumerate() {
        if let RouteAccessLog::To(LogTarget::File(path)) = &route.access_log {
            let key = KeyPath::default().key("routes").index(i).key("access_log");
            files.push((key, path.as_path()));
        }
    }
    files
}

/// Checks that the directory of every log file exists and that no log file
/// is a directory. It creates nothing: a file is created by whoever opens it
/// first (the master for workers running as `user`, see [`give_to`]). Each
/// problem names the key, the file and the reason.
pub fn check(config: &Config) -> Vec<(KeyPath, String)> {
    files(config)
        .into_iter()
        .filter_map(|(key, file)| cannot_create(file).map(|why| (key, why)))
        .collect()
}

/// Why a file could not be created at `file`: its directory is missing or
/// not a directory, or `file` is a directory. Names the file.
pub fn cannot_create(file: &Path) -> Option<String> {
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Some(format!(
            "{}: {} is not a directory",
            file.display(),
            dir.display()
        )),
        Ok(_) if std::fs::metadata(file).is_ok_and(|meta| meta.is_dir()) => {
            Some(format!("{}: is a directory", file.display()))
        }
        Ok(_) => None,
        Err(e) => Some(format!(
            "{}: directory {}: {e}",
            file.display(),
            dir.display()
        )),
    }
}

/// Creates every log file `config` names (if missing) and gives it to
/// `creds`' user; returns the files that could not be prepared.
pub fn give_to(config: &Config, creds: &Credentials) -> Vec<io::Error> {
    let paths: BTreeSet<&Path> = files(config).into_iter().map(|(_, path)| path).collect();
    paths
        .into_iter()
        .filter_map(|path| {
            give_file_to(path, creds)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
                .err()
        })
        .collect()
}

fn give_file_to(path: &Path, creds: &Credentials) -> io::Result<()> {
    // Root follows no symbolic link the workers' user may have planted, and
    // changes only a plain file with no other name: never `/dev/null`, nor
    // a file linked in from elsewhere.
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let stat = fstat(&file)?;
    let plain = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
    if !plain || stat.st_nlink != 1 {
        return Ok(());
    }
    if stat.st_uid != creds.uid.as_raw() {
        fchown(&file, Some(creds.uid), None)?;
    }
    let owner_rw = libc::S_IRUSR | libc::S_IWUSR;
    if stat.st_mode & owner_rw != owner_rw {
        fchmod(
            &file,
            Mode::from_bits_truncate((stat.st_mode & 0o7777) | owner_rw),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefork_shared::config::parse;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn config(log: &str) -> Config {
        let text = format!("[log]\n{log}\n[[routes]]\nrespond = {{ status = 200 }}\n");
        parse(Path::new("t.toml"), &text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn names_the_key_and_file_of_every_log_that_cannot_be_created() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let shown = |problems: Vec<(KeyPath, String)>| -> Vec<String> {
            problems.iter().map(|(k, p)| format!("{k}: {p}")).collect()
        };
        assert!(check(&config(&format!("error_log = \"{d}/e.log\""))).is_empty());
        let both = shown(check(&config(&format!(
            "error_log = \"{d}\"\naccess_log = \"{d}/no/a.log\""
        ))));
        assert_eq!(both.len(), 2, "{both:?}");
        assert_eq!(both[0], format!("log.error_log: {d}: is a directory"));
        assert!(
            both[1].starts_with(&format!("log.access_log: {d}/no/a.log: directory {d}/no: ")),
            "{both:?}"
        );
        assert!(check(&config("error_log = \"stderr\"")).is_empty());
    }

    fn nobody() -> Option<Credentials> {
        if !nix::unistd::geteuid().is_root() {
            return None;
        }
        crate::os::lookup_user("nobody").ok()
    }

    #[test]
    fn creates_missing_files_and_gives_them_to_the_user_but_follows_no_link() {
        let Some(nobody) = nobody() else {
            eprintln!("SKIPPED: needs root and a user `nobody`");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let error = dir.path().join("error.log");
        let access = dir.path().join("access.log");
        std::fs::write(&access, "").unwrap();
        std::fs::set_permissions(&access, std::fs::Permissions::from_mode(0o400)).unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "").unwrap();
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let text = "[[listen]]\naddr = \"127.0.0.1:8080\"\n";
        let mut config = prefork_shared::config::parse(Path::new("t.toml"), text).unwrap();
        config.log.error_log = LogTarget::File(error.clone());
        config.log.access_log = Some(LogTarget::File(access.clone()));
        let failed = give_to(&config, &nobody);
        assert!(failed.is_empty(), "{failed:?}");
        for path in [&error, &access] {
            let meta = std::fs::metadata(path).unwrap();
            assert_eq!(meta.uid(), nobody.uid.as_raw(), "{}", path.display());
            assert_eq!(meta.mode() & 0o600, 0o600, "{}", path.display());
        }
        config.log.access_log = Some(LogTarget::File(link));
        assert_eq!(give_to(&config, &nobody).len(), 1, "a link is refused");
        assert_eq!(std::fs::metadata(&target).unwrap().uid(), 0);
    }
}
