//! Where access-log lines go: a bounded queue drained by a writer thread.
//!
//! The event loop only formats a line and `try_send`s it: it never waits on
//! a disk or a terminal. The writer batches whatever is queued into one
//! buffered write. When the queue is full, lines are dropped and counted,
//! and the count is written to the log once there is room again.

use prefork_shared::config::LogTarget;
use prefork_shared::log as plog;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Lines queued before new ones are dropped.
const QUEUE_LINES: usize = 16 * 1024;
/// The writer's buffer: one `write` carries many lines under load.
const WRITE_BUFFER: usize = 64 * 1024;

/// One access-log destination.
pub(crate) struct Sink {
    target: LogTarget,
    tx: Option<SyncSender<String>>,
    dropped: Arc<AtomicU64>,
    writer: Option<JoinHandle<()>>,
}

impl Sink {
    /// Opens `target` (a file is created if needed and appended to) and
    /// starts its writer thread.
    pub(crate) fn open(target: &LogTarget) -> io::Result<Sink> {
        let epoch = plog::reopen_epoch();
        let out = destination(target)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        let file = match target {
            LogTarget::File(path) => Some((path.clone(), epoch)),
            LogTarget::Stderr | LogTarget::Stdout => None,
        };
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, out, file, counter))?;
        Ok(Sink {
            target: target.clone(),
            tx: Some(tx),
            dropped,
            writer: Some(writer),
        })
    }

    /// The destination.
    pub(crate) fn target(&self) -> &LogTarget {
        &self.target
    }

    /// Queues a line (ending in `\n`) without waiting.
    pub(crate) fn send(&self, line: String) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The writer failed (its destination is gone): nothing to do.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

impl Drop for Sink {
    /// Writes what is queued before returning.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn destination(target: &LogTarget) -> io::Result<BufWriter<Box<dyn Write + Send>>> {
    let out: Box<dyn Write + Send> = match target {
        LogTarget::Stderr => Box::new(io::stderr()),
        LogTarget::Stdout => Box::new(io::stdout()),
        LogTarget::File(path) => Box::new(plog::append(path)?),
    };
    Ok(BufWriter::with_capacity(WRITE_BUFFER, out))
}

/// The writer thread. `file` is the log file and the reopen epoch it was
/// opened at: after SIGUSR1 (logrotate), the file is reopened before the
/// next lines are written; if that fails, the old file is kept (losing
/// lines is worse than writing them to the rotated file).
fn write_lines(
    rx: Receiver<String>,
    mut out: BufWriter<Box<dyn Write + Send>>,
    mut file: Option<(PathBuf, u64)>,
    dropped: Arc<AtomicU64>,
) {
    while let Ok(first) = rx.recv() {
        if let Some((path, epoch)) = &mut file {
            let now = plog::reopen_epoch();
            if now != *epoch {
                *epoch = now;
                if let Ok(reopened) = destination(&LogTarget::File(path.clone())) {
                    let _ = out.flush();
                    out = reopened;
                }
            }
        }
        let mut result = out.write_all(first.as_bytes());
        while let (Ok(()), Ok(line)) = (&result, rx.try_recv()) {
            result = out.write_all(line.as_bytes());
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 && result.is_ok() {
            result = writeln!(
                out,
                "prefork: {lost} access-log lines dropped: the log could not keep up"
            );
        }
        if result.and_then(|()| out.flush()).is_err() {
            // A destination that fails keeps failing (disk full, closed
            // pipe): stop, and let `send` drop lines from now on.
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
        let sink = Sink::open(&LogTarget::File(path.clone())).unwrap();
        for i in 0..100 {
            sink.send(format!("line {i}\n"));
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
        let sink = Sink::open(&LogTarget::File(path.clone())).unwrap();
        sink.send("before\n".into());
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
        sink.send("after\n".into());
        drop(sink);
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "before\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        let _ = std::fs::remove_dir_all(dir);
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
