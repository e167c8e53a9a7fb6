//! The pid file: written by the master once its listeners are bound, read by
//! `prefork -s`, removed when the master exits.

use std::io;
use std::path::{Path, PathBuf};

/// A pid file problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    /// Reading or writing failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The pid file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file does not hold a pid.
    #[error("{}: does not hold a process id", .path.display())]
    Garbled {
        /// The pid file.
        path: PathBuf,
    },
    /// Another master is alive.
    #[error("prefork is already running with pid {pid} (pid file {})", .path.display())]
    AlreadyRunning {
        /// The pid file.
        path: PathBuf,
        /// The running master.
        pid: i32,
    },
}

/// Reads the pid in `path`.
pub fn read(path: &Path) -> Result<i32, PidFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| PidFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    text.trim()
        .parse()
        .ok()
        .filter(|pid: &i32| *pid > 0)
        .ok_or_else(|| PidFileError::Garbled {
            path: path.to_owned(),
        })
}

/// Writes our pid to `path`, refusing if it names another live prefork.
pub fn write(path: &Path) -> Result<(), PidFileError> {
    if let Ok(pid) = read(path) {
        if pid != std::process::id() as i32 && is_prefork(pid) {
            return Err(PidFileError::AlreadyRunning {
                path: path.to_owned(),
                pid,
            });
        }
    }
    std::fs::write(path, format!("{}\n", std::process::id())).map_err(|source| PidFileError::Io {
        path: path.to_owned(),
        source,
    })
}

/// A pid file this process wrote, removed when the guard is dropped unless
/// it was disarmed: a start that fails after writing it leaves none behind.
#[must_use = "dropping the guard removes the pid file"]
pub struct Guard {
    /// The pid file; `None` once disarmed.
    path: Option<PathBuf>,
}

impl Guard {
    /// Writes our pid to `path` as [`write`] does, to be removed unless the
    /// guard is disarmed.
    pub fn write(path: &Path) -> Result<Guard, PidFileError> {
        write(path)?;
        Ok(Guard {
            path: Some(path.to_owned()),
        })
    }

    /// Keeps the pid file: whoever disarms the guard removes it later.
    pub fn disarm(mut self) {
        self.path = None;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            remove(&path);
        }
    }
}

/// Writes our pid to `path` in place of `old` (binary upgrade: the old
/// master is alive and hands over); refuses if it names any other live
/// prefork.
pub fn take_over(path: &Path, old: i32) -> Result<(), PidFileError> {
    if read(path).is_ok_and(|pid| pid == old) {
        let _ = std::fs::remove_file(path);
    }
    write(path)
}

/// Removes `path` if it still names this process.
pub fn remove(path: &Path) {
    if read(path).is_ok_and(|pid| pid == std::process::id() as i32) {
        let _ = std::fs::remove_file(path);
    }
}

/// Whether `pid` is a live process running prefork (not a reused pid).
pub fn is_prefork(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("prefork"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.pid");
        write(&path).expect("write");
        assert_eq!(read(&path).expect("read"), std::process::id() as i32);
        remove(&path);
        assert!(!path.exists());
    }

    #[test]
    fn garbage_and_stale_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.pid");
        std::fs::write(&path, "hello").expect("write");
        assert!(matches!(read(&path), Err(PidFileError::Garbled { .. })));
        // A pid that is not a prefork process is stale: it is overwritten.
        std::fs::write(&path, "1\n").expect("write");
        write(&path).expect("a stale pid file is replaced");
    }

    #[test]
    fn a_guard_dropped_removes_the_pid_file_and_a_disarmed_one_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.pid");
        let guard = Guard::write(&path).expect("write");
        assert_eq!(read(&path).expect("read"), std::process::id() as i32);
        drop(guard);
        assert!(!path.exists(), "removed when the guard is dropped");
        Guard::write(&path).expect("write").disarm();
        assert_eq!(read(&path).expect("read"), std::process::id() as i32);
    }

    #[test]
    fn a_guard_leaves_a_pid_file_another_master_wrote_since() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.pid");
        let guard = Guard::write(&path).expect("write");
        std::fs::write(&path, "1\n").expect("write");
        drop(guard);
        assert_eq!(read(&path).expect("read"), 1);
    }

    #[test]
    fn remove_leaves_another_masters_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.pid");
        std::fs::write(&path, "1\n").expect("write");
        remove(&path);
        assert!(path.exists());
    }
}
