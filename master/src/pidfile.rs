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
///
/// The pid goes to a new file beside it (created exclusively, so never
/// through a link someone planted), renamed over `path`: a symbolic link at
/// `path` is replaced, not followed, so a root master cannot be made to
/// overwrite another file, and a reader never sees a half-written pid.
pub fn write(path: &Path) -> Result<(), PidFileError> {
    if let Ok(pid) = read(path) {
        if pid != std::process::id() as i32 && is_prefork(pid) {
            return Err(PidFileError::AlreadyRunning {
                path: path.to_owned(),
                pid,
            });
        }
    }
    let io = |source| PidFileError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = temporary_beside(path).map_err(io)?;
    let written = write_new(&tmp).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(io)
}

/// A name beside `path` for the pid file being written.
fn temporary_beside(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{}.tmp", std::process::id()));
    Ok(path.with_file_name(tmp))
}

/// Creates `tmp` afresh (a leftover of ours is removed first) and writes
/// our pid to it.
fn write_new(tmp: &Path) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(tmp)?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())
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
    fn a_symbolic_link_at_the_pid_file_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").expect("write");
        let path = dir.path().join("p.pid");
        std::os::unix::fs::symlink(&victim, &path).expect("symlink");
        write(&path).expect("write");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(!std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(read(&path).expect("read"), std::process::id() as i32);
        // Nothing is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
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
