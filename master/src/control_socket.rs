//! The master's Unix control socket: one command per connection (`status`,
//! `reload`, `metrics`), answered with one document, then closed. Also the
//! client side used by `prefork status`, `top` and `-s reload`.

use crate::query::{ask, Asked, Query};
use crossbeam_channel::Sender;
use slog::{warn, Logger};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a client may take to send its command.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the master loop may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest command line accepted.
const MAX_COMMAND: u64 = 64;

/// The bound socket; dropping it removes the socket file.
pub struct ControlSocket {
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `path` (mode 0600) and answers on a thread, asking `master`.
///
/// A leftover socket file nobody answers on is replaced; one a running
/// master answers on is an error.
pub fn listen(path: &Path, master: Sender<Asked>, log: Logger) -> io::Result<ControlSocket> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{}: another prefork master answers there", path.display()),
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| io::Error::new(e.kind(), format!("remove {}: {e}", path.display())))?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| io::Error::new(e.kind(), format!("bind {}: {e}", path.display())))?;
    let guard = ControlSocket {
        path: path.to_owned(),
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

fn serve(stream: UnixStream, master: &Sender<Asked>) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_COMMAND)).read_line(&mut line)?;
    let query = match line.trim() {
        "status" => Query::Status,
        "reload" => Query::Reload,
        "metrics" => Query::Metrics,
        other => {
            let reply = serde_json::json!({
                "ok": false,
                "message": format!("unknown command {other:?}: use status, reload or metrics"),
            });
            return (&stream).write_all(format!("{reply}\n").as_bytes());
        }
    };
    let body = match ask(master, query, ANSWER_TIMEOUT) {
        Some(answer) => answer.body,
        None => format!(
            "{}\n",
            serde_json::json!({"ok": false, "message": "the master did not answer in time"})
        ),
    };
    (&stream).write_all(body.as_bytes())
}

/// Sends `command` to the master listening on `path`; returns its answer.
pub fn request(path: &Path, command: &str, timeout: Duration) -> io::Result<String> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Answer;

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
        let second = listen(&path, tx, log).err().unwrap();
        assert_eq!(second.kind(), io::ErrorKind::AddrInUse);
        drop(socket);
        assert!(!path.exists());
    }
}
