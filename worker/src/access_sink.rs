//! Where access-log lines go: a bounded queue drained by a writer thread.
//!
//! The event loop only formats a line and `try_send`s it: it never waits on
//! a disk or a terminal. The writer batches whatever is queued into one
//! buffered write. When the queue is full, lines are dropped and counted,
//! and the count is written to the log once there is room again.

use prefork_shared::config::LogTarget;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
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
        let out: Box<dyn Write + Send> = match target {
            LogTarget::Stderr => Box::new(io::stderr()),
            LogTarget::Stdout => Box::new(io::stdout()),
            LogTarget::File(path) => Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
            ),
        };
        let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, BufWriter::with_capacity(WRITE_BUFFER, out), counter))?;
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

fn write_lines(rx: Receiver<String>, mut out: impl Write, dropped: Arc<AtomicU64>) {
    while let Ok(first) = rx.recv() {
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
