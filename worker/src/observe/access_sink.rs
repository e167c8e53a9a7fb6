//! Where access-log lines go: a buffer shared with a writer thread.
//!
//! The event loop formats a line and appends it to the buffer under a lock
//! that the writer holds only to swap buffers: it never waits on a disk or a
//! terminal, and it wakes the writer only when a batch is worth writing
//! (waking it for every line cost a context switch per request on a 2-core
//! machine). The writer also wakes on its own every [`FLUSH_EVERY`], so a
//! quiet worker's lines appear within that time. When the buffer is full,
//! lines are dropped and counted, and the count is written to the log.

use prefork_shared::config::LogTarget;
use prefork_shared::log as plog;
use slog::{error, Logger};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Pending bytes at which the writer is woken for a batch.
const BATCH_BYTES: usize = 32 * 1024;
/// Pending bytes above which new lines are dropped.
const MAX_PENDING: usize = 4 * 1024 * 1024;
/// The longest a line waits in the buffer of a quiet worker.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// State shared by the event loop and the writer thread.
struct Shared {
    pending: Mutex<Vec<u8>>,
    batch_ready: Condvar,
    dropped: AtomicU64,
    closed: AtomicBool,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panic while holding the lock leaves only bytes behind.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One access-log destination.
pub(crate) struct Sink {
    target: LogTarget,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

impl Sink {
    /// Opens `target` (a file is created if needed and appended to) and
    /// starts its writer thread, which reports to `log` a reopen that fails.
    pub(crate) fn open(target: &LogTarget, log: &Logger) -> io::Result<Sink> {
        let epoch = plog::reopen_epoch();
        let out = destination(target)?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(BATCH_BYTES * 2)),
            batch_ready: Condvar::new(),
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        let file = match target {
            LogTarget::File(path) => Some((path.clone(), epoch)),
            LogTarget::Stderr | LogTarget::Stdout => None,
        };
        let for_writer = shared.clone();
        let log = log.clone();
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(&for_writer, out, file, &log))?;
        Ok(Sink {
            target: target.clone(),
            shared,
            writer: Some(writer),
        })
    }

    /// The destination.
    pub(crate) fn target(&self) -> &LogTarget {
        &self.target
    }

    /// Queues a line (ending in `\n`) without waiting.
    pub(crate) fn send(&self, line: &str) {
        let mut pending = self.shared.pending();
        if pending.len() + line.len() > MAX_PENDING {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let before = pending.len();
        pending.extend_from_slice(line.as_bytes());
        let crossed = before < BATCH_BYTES && pending.len() >= BATCH_BYTES;
        drop(pending);
        if crossed {
            self.shared.batch_ready.notify_one();
        }
    }
}

impl Drop for Sink {
    /// Writes what is queued before returning.
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.batch_ready.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn destination(target: &LogTarget) -> io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        LogTarget::Stderr => Box::new(io::stderr()),
        LogTarget::Stdout => Box::new(io::stdout()),
        LogTarget::File(path) => Box::new(plog::append(path)?),
    })
}

/// The writer thread: swaps the pending buffer out and writes it in one
/// call. `file` is the log file and the reopen epoch it was opened at: after
/// SIGUSR1 (logrotate), the file is reopened before the next batch; if that
/// fails, the old file is kept (losing lines is worse than writing them to
/// the rotated file) and the failure goes to the error log `log`.
fn write_lines(
    shared: &Shared,
    mut out: Box<dyn Write + Send>,
    mut file: Option<(PathBuf, u64)>,
    log: &Logger,
) {
    let mut batch = Vec::with_capacity(BATCH_BYTES * 2);
    loop {
        let closed = {
            let mut pending = shared.pending();
            if pending.len() < BATCH_BYTES && !shared.closed.load(Ordering::Acquire) {
                pending = shared
                    .batch_ready
                    .wait_timeout(pending, FLUSH_EVERY)
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            std::mem::swap(&mut *pending, &mut batch);
            shared.closed.load(Ordering::Acquire)
        };
        if let Some((path, epoch)) = &mut file {
            let now = plog::reopen_epoch();
            if now != *epoch {
                *epoch = now;
                match destination(&LogTarget::File(path.clone())) {
                    Ok(reopened) => out = reopened,
                    Err(e) => {
                        error!(log, "cannot reopen an access log; writing on to the file opened before"; "error" => %e)
                    }
                }
            }
        }
        let lost = shared.dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let note =
                format!("prefork: {lost} access-log lines dropped: the log could not keep up\n");
            batch.extend_from_slice(note.as_bytes());
        }
        if !batch.is_empty() {
            // A failing destination (disk full, closed pipe) loses this
            // batch; later ones are tried again.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
        }
        if closed && shared.pending().is_empty() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_file_when_the_sink_drops() {
        let dir = tempfile_dir();
        let path = dir.join("access.log");
        let sink = Sink::open(&LogTarget::File(path.clone()), &discard()).unwrap();
        for i in 0..100 {
            sink.send(&format!("line {i}\n"));
        }
        drop(sink);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 100);
        assert!(text.ends_with("line 99\n"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_reopen_moves_later_lines_to_the_new_file() {
        let dir = tempfile_dir();
        let path = dir.join("rotated.log");
        let sink = Sink::open(&LogTarget::File(path.clone()), &discard()).unwrap();
        sink.send("before\n");
        let written = |p: &std::path::Path, what: &str| {
            std::fs::read_to_string(p).is_ok_and(|t| t.contains(what))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !written(&path, "before") {
            assert!(
                std::time::Instant::now() < deadline,
                "the line was not written"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let old = dir.join("rotated.log.1");
        std::fs::rename(&path, &old).unwrap();
        plog::reopen();
        sink.send("after\n");
        drop(sink);
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "before\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn discard() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "prefork-sink-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
