//! The master's Unix control socket: one command per connection (`status`,
//! `reload`, `metrics`), answered with one document, then closed. Also the
//! client side used by `prefork status`, `top` and `-s reload`.

use crate::deadline::Deadline;
use crate::query::{ask, Asked, Query};
use crossbeam_channel::Sender;
use slog::{warn, Logger};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a client may take to send its whole command, and then to read
/// the whole answer (one client is served at a time).
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the master loop may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest command line accepted.
const MAX_COMMAND: usize = 64;

/// The bound socket; dropping it removes the socket file, unless another
/// master replaced it meanwhile (binary upgrade).
pub struct ControlSocket {
    /// Where the socket file is now.
    path: PathBuf,
    /// Where it goes on [`ControlSocket::install`] (binary upgrade).
    destination: Option<PathBuf>,
    /// Device and inode of the socket file, to recognise it.
    id: (u64, u64),
}

impl ControlSocket {
    /// Moves a socket bound by [`listen_beside`] to its real path, in one
    /// `rename`: from then on clients reach this master, never nobody. The
    /// old master's socket file is replaced (it keeps the file it bound
    /// open, but no client finds it any more, and it does not remove ours).
    pub fn install(&mut self) -> io::Result<()> {
        let Some(destination) = self.destination.take() else {
            return Ok(());
        };
        std::fs::rename(&self.path, &destination).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "rename {} to {}: {e}",
                    self.path.display(),
                    destination.display()
                ),
            )
        })?;
        self.path = destination;
        Ok(())
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if file_id(&self.path).is_ok_and(|id| id == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn file_id(path: &Path) -> io::Result<(u64, u64)> {
    let meta = std::fs::symlink_metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// Binds `path` (mode 0600) and answers on a thread, asking `master`.
///
/// A leftover socket file nobody answers on is replaced; one a running
/// master answers on is an error, and so is a file that is not a socket
/// (a mistyped path must not delete a config or a log).
pub fn listen(path: &Path, master: Sender<Asked>, log: Logger) -> io::Result<ControlSocket> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: exists and is not a socket", path.display()),
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{}: another prefork master answers there", path.display()),
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| io::Error::new(e.kind(), format!("remove {}: {e}", path.display())))?;
    }
    bind(path, None, master, log)
}

/// For a master started by a binary upgrade, while the old master still
/// answers on `path`: binds beside it (`path` plus `.PID`), to be moved
/// onto `path` with [`ControlSocket::install`] once this master serves.
pub fn listen_beside(path: &Path, master: Sender<Asked>, log: Logger) -> io::Result<ControlSocket> {
    let mut beside = path.as_os_str().to_owned();
    beside.push(format!(".{}", std::process::id()));
    let beside = PathBuf::from(beside);
    // A leftover of a process that had this pid.
    let _ = std::fs::remove_file(&beside);
    bind(&beside, Some(path.to_owned()), master, log)
}

fn bind(
    path: &Path,
    destination: Option<PathBuf>,
    master: Sender<Asked>,
    log: Logger,
) -> io::Result<ControlSocket> {
    let listener = UnixListener::bind(path)
        .map_err(|e| io::Error::new(e.kind(), format!("bind {}: {e}", path.display())))?;
    let guard = ControlSocket {
        path: path.to_owned(),
        destination,
        id: file_id(path)?,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io::Error::new(e.kind(), format!("chmod {}: {e}", path.display())))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let result = stream.and_then(|s| serve(s, &master));
                if let Err(e) = result {
                    warn!(log, "control socket client failed"; "error" => %e);
                }
            }
        })?;
    Ok(guard)
}

fn serve(mut stream: UnixStream, master: &Sender<Asked>) -> io::Result<()> {
    let deadline = Deadline::after(READ_TIMEOUT);
    let mut command = [0u8; MAX_COMMAND];
    let mut len = 0;
    while len < MAX_COMMAND && !command[..len].contains(&b'\n') {
        match deadline.read(&mut stream, &mut command[len..])? {
            0 => break,
            n => len += n,
        }
    }
    let line = command[..len]
        .split(|b| *b == b'\n')
        .next()
        .unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let query = match line.trim() {
        "status" => Query::Status,
        "reload" => Query::Reload,
        "metrics" => Query::Metrics,
        other => {
            let reply = serde_json::json!({
                "ok": false,
                "message": format!("unknown command {other:?}: use status, reload or metrics"),
            });
            let reply = format!("{reply}\n");
            return Deadline::after(READ_TIMEOUT).write_all(&mut stream, reply.as_bytes());
        }
    };
    let body = match ask(master, query, ANSWER_TIMEOUT) {
        Some(answer) => answer.body,
        None => format!(
            "{}\n",
            serde_json::json!({"ok": false, "message": "the master did not answer in time"})
        ),
    };
    Deadline::after(READ_TIMEOUT).write_all(&mut stream, body.as_bytes())
}

/// Sends `command` to the master listening on `path`; returns its answer.
/// The answer is trusted only from a process of root or of this user: a
/// socket someone else bound at that path (say in /tmp) gets no command.
pub fn request(path: &Path, command: &str, timeout: Duration) -> io::Result<String> {
    let mut stream = UnixStream::connect(path)?;
    check_peer(&stream, path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// Refuses a peer that runs as neither root nor this process's user.
fn check_peer(stream: &UnixStream, path: &Path) -> io::Result<()> {
    let peer = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(io::Error::from)?;
    let me = nix::unistd::geteuid().as_raw();
    if trusted_peer(peer.uid(), me) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{}: the process listening there runs as uid {}, neither root nor you (uid {me}): not a master of yours",
                path.display(),
                peer.uid()
            ),
        ))
    }
}

/// Whether a control socket's owner `peer` may answer a client running as
/// `me`.
fn trusted_peer(peer: u32, me: u32) -> bool {
    peer == 0 || peer == me
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Answer;

    #[test]
    fn only_root_or_the_same_user_is_trusted_to_answer() {
        assert!(trusted_peer(0, 1000));
        assert!(trusted_peer(1000, 1000));
        assert!(!trusted_peer(1001, 1000));
        assert!(trusted_peer(0, 0));
        assert!(!trusted_peer(65534, 0));
    }

    #[test]
    fn answers_commands_and_refuses_a_second_master() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let (tx, rx) = crossbeam_channel::unbounded::<Asked>();
        let log = Logger::root(slog::Discard, slog::o!());
        let socket = listen(&path, tx.clone(), log.clone()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::thread::spawn(move || {
            for asked in rx {
                let body = format!("{:?}\n", asked.query);
                let _ = asked.reply.send(Answer { ok: true, body });
            }
        });
        let t = Duration::from_secs(5);
        assert_eq!(request(&path, "status", t).unwrap(), "Status\n");
        assert_eq!(request(&path, "reload", t).unwrap(), "Reload\n");
        assert!(request(&path, "bogus", t)
            .unwrap()
            .contains("unknown command"));
        let second = listen(&path, tx.clone(), log.clone()).err().unwrap();
        assert_eq!(second.kind(), io::ErrorKind::AddrInUse);
        drop(socket);
        assert!(!path.exists());
    }

    #[test]
    fn a_file_that_is_not_a_socket_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prefork.toml");
        std::fs::write(&path, "workers = 2\n").unwrap();
        let (tx, _rx) = crossbeam_channel::unbounded::<Asked>();
        let log = Logger::root(slog::Discard, slog::o!());
        let e = listen(&path, tx, log).err().unwrap();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "workers = 2\n");
    }

    #[test]
    fn a_trickling_client_cannot_hold_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let (tx, rx) = crossbeam_channel::unbounded::<Asked>();
        std::thread::spawn(move || {
            for asked in rx {
                let body = "answer\n".to_owned();
                let _ = asked.reply.send(Answer { ok: true, body });
            }
        });
        let log = Logger::root(slog::Discard, slog::o!());
        let _socket = listen(&path, tx, log).unwrap();
        // One byte every 400 ms (each read well within its timeout), for up
        // to 24 s, never a newline.
        let mut slow = UnixStream::connect(&path).unwrap();
        slow.write_all(b"s").unwrap();
        let trickle = std::thread::spawn(move || {
            for _ in 0..60 {
                std::thread::sleep(Duration::from_millis(400));
                if slow.write_all(b"s").is_err() {
                    return;
                }
            }
        });
        let started = std::time::Instant::now();
        let answer = request(&path, "status", Duration::from_secs(30)).unwrap();
        assert_eq!(answer, "answer\n");
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(10), "{waited:?}");
        trickle.join().unwrap();
    }

    #[test]
    fn a_new_master_takes_the_path_over_and_the_old_one_leaves_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let (tx, rx) = crossbeam_channel::unbounded::<Asked>();
        let log = Logger::root(slog::Discard, slog::o!());
        std::thread::spawn(move || {
            for asked in rx {
                let _ = asked.reply.send(Answer {
                    ok: true,
                    body: "answer\n".into(),
                });
            }
        });
        let old = listen(&path, tx.clone(), log.clone()).unwrap();
        let mut new = listen_beside(&path, tx, log).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        new.install().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let t = Duration::from_secs(5);
        assert_eq!(request(&path, "status", t).unwrap(), "answer\n");
        // The old master exits: the socket file is the new master's now.
        drop(old);
        assert!(path.exists());
        assert_eq!(request(&path, "status", t).unwrap(), "answer\n");
        drop(new);
        assert!(!path.exists());
    }
}
