//! slog setup for the error log.
//!
//! The log is written by a background thread (`slog-async`), so a worker's
//! event loop never blocks on a slow disk or terminal. Every error-log line
//! carries the process role, pid and generation. (The worker writes its
//! access log itself, see the worker's `access_sink`; it follows [`reopen`]
//! too, through [`reopen_epoch`].)

use crate::config::LogTarget;
use slog::{o, Drain, Logger};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The role a process plays, shown on every error-log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The supervising master process.
    Master,
    /// A serving worker process.
    Worker,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Worker => "worker",
        }
    }
}

/// Keeps the log thread alive; dropping it flushes what is queued.
pub struct LogGuard {
    _guard: slog_async::AsyncGuard,
}

/// Loggers for one process.
pub struct Logs {
    /// The error log.
    pub error: Logger,
    /// Flushes the log when dropped.
    pub guard: LogGuard,
}

/// Lines queued per log before new lines are dropped (and the drop counted
/// in the log) rather than blocking the event loop.
const QUEUE_LINES: usize = 16 * 1024;

/// Bumped by [`reopen`]; each log file compares it with the value it was
/// opened at before writing a line.
static REOPEN_EPOCH: AtomicU64 = AtomicU64::new(0);

/// Makes every log file of this process reopen its path before writing its
/// next line (after logrotate renamed it). Cheap and callable from any
/// thread: the log threads do the reopening.
pub fn reopen() {
    REOPEN_EPOCH.fetch_add(1, Ordering::Relaxed);
}

/// How many times [`reopen`] was called: a writer of its own (the worker's
/// access log) that saw a different value last reopens its file.
pub fn reopen_epoch() -> u64 {
    REOPEN_EPOCH.load(Ordering::Relaxed)
}

/// Collects one log line and writes it with a single `write`, so that lines
/// from the master and its workers sharing a terminal or file never interleave
/// (slog-term writes a line in many pieces, then flushes).
struct WholeLines<W: Write> {
    inner: W,
    line: Vec<u8>,
    /// The file behind `inner`, reopened when [`reopen`] was called.
    path: Option<PathBuf>,
    /// The [`REOPEN_EPOCH`] `inner` was opened at.
    epoch: u64,
}

impl WholeLines<Box<dyn Write + Send>> {
    /// Reopens the file if [`reopen`] was called since it was opened. On
    /// failure the old file is kept: losing lines is worse than writing them
    /// to the rotated file. The failure is said in that file and on stderr
    /// (which a service manager collects): this log cannot log it.
    fn reopen_if_asked(&mut self) {
        let epoch = REOPEN_EPOCH.load(Ordering::Relaxed);
        if epoch == self.epoch {
            return;
        }
        self.epoch = epoch;
        if let Some(path) = &self.path {
            match append(path) {
                Ok(file) => self.inner = Box::new(file),
                Err(e) => {
                    let note = format!(
                        "prefork (pid {}): cannot reopen the error log ({e}); writing on to the file opened before\n",
                        std::process::id()
                    );
                    let _ = self.inner.write_all(note.as_bytes());
                    eprint!("{note}");
                }
            }
        }
    }
}

impl Write for WholeLines<Box<dyn Write + Send>> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.reopen_if_asked();
        let result = self
            .inner
            .write_all(&self.line)
            .and_then(|()| self.inner.flush());
        self.line.clear();
        result
    }
}

/// Opens `path` for appending (created if needed); the error names the file.
pub fn append(path: &std::path::Path) -> io::Result<std::fs::File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn writer(target: &LogTarget) -> io::Result<WholeLines<Box<dyn Write + Send>>> {
    let epoch = REOPEN_EPOCH.load(Ordering::Relaxed);
    let (inner, path): (Box<dyn Write + Send>, _) = match target {
        LogTarget::Stderr => (Box::new(io::stderr()), None),
        LogTarget::Stdout => (Box::new(io::stdout()), None),
        LogTarget::File(path) => (Box::new(append(path)?), Some(path.clone())),
    };
    Ok(WholeLines {
        inner,
        line: Vec::with_capacity(256),
        path,
        epoch,
    })
}

fn async_logger(target: &LogTarget) -> io::Result<(Logger, slog_async::AsyncGuard)> {
    let decorator = slog_term::PlainDecorator::new(writer(target)?);
    let format = slog_term::FullFormat::new(decorator).build().fuse();
    // Debug lines are for development; operators see info and above.
    let format = slog::LevelFilter::new(format, slog::Level::Info).fuse();
    let (drain, guard) = slog_async::Async::new(format)
        .chan_size(QUEUE_LINES)
        .overflow_strategy(slog_async::OverflowStrategy::DropAndReport)
        .thread_name("log".into())
        .build_with_guard();
    Ok((Logger::root(drain.fuse(), o!()), guard))
}

/// Opens the error log.
pub fn open(error_log: &LogTarget, role: Role, generation: u64) -> io::Result<Logs> {
    open_tagged(error_log, role, generation)
}

/// Opens the master's error log, whose generation changes with reloads: every
/// line shows the value `generation` holds when it is written.
pub fn open_master(error_log: &LogTarget, generation: Arc<AtomicU64>) -> io::Result<Logs> {
    let current = slog::FnValue(move |_: &slog::Record| generation.load(Ordering::Relaxed));
    open_tagged(error_log, Role::Master, current)
}

fn open_tagged<G>(error_log: &LogTarget, role: Role, generation: G) -> io::Result<Logs>
where
    G: slog::Value + Send + Sync + std::panic::RefUnwindSafe + 'static,
{
    let (error, error_guard) = async_logger(error_log)?;
    let error = error.new(o!(
        "role" => role.as_str(),
        "pid" => std::process::id(),
        "generation" => generation,
    ));
    Ok(Logs {
        error,
        guard: LogGuard {
            _guard: error_guard,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each `write` call it receives.
    struct Calls(std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

    #[test]
    fn reopen_follows_a_renamed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut w = writer(&LogTarget::File(path.clone())).unwrap();
        writeln!(w, "one").unwrap();
        w.flush().unwrap();
        std::fs::rename(&path, dir.path().join("x.log.1")).unwrap();
        writeln!(w, "two").unwrap();
        w.flush().unwrap();
        reopen();
        writeln!(w, "three").unwrap();
        w.flush().unwrap();
        let rotated = std::fs::read_to_string(dir.path().join("x.log.1")).unwrap();
        assert_eq!(rotated, "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
    }

    #[test]
    fn a_failed_reopen_is_noted_in_the_file_kept() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("logs");
        std::fs::create_dir(&dir).unwrap();
        let mut w = writer(&LogTarget::File(dir.join("x.log"))).unwrap();
        writeln!(w, "one").unwrap();
        w.flush().unwrap();
        // Its directory goes away: the path cannot be opened again.
        let kept = top.path().join("kept");
        std::fs::rename(&dir, &kept).unwrap();
        reopen();
        writeln!(w, "two").unwrap();
        w.flush().unwrap();
        let text = std::fs::read_to_string(kept.join("x.log")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!((lines[0], lines[2]), ("one", "two"));
        assert!(
            lines[1].contains("cannot reopen") && lines[1].contains("x.log"),
            "{text}"
        );
    }

    impl Write for Calls {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_is_written_in_one_call() {
        let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut w = WholeLines::<Box<dyn Write + Send>> {
            inner: Box::new(Calls(calls.clone())),
            line: Vec::new(),
            path: None,
            epoch: 0,
        };
        write!(w, "a: {}, ", 1).unwrap();
        writeln!(w, "b: {}", 2).unwrap();
        assert!(calls.lock().unwrap().is_empty());
        w.flush().unwrap();
        assert_eq!(*calls.lock().unwrap(), vec![b"a: 1, b: 2\n".to_vec()]);
    }
}
