//! How a worker is told to stop: commands from the master over IPC, signals
//! sent to the worker directly, and the master disappearing.

use ipc_channel::ipc::IpcReceiver;
use ipc_channel::IpcError;
use prefork_shared::ipc::{MasterMsg, StopMode};
use prefork_shared::Config;
use slog::{error, warn, Logger};
use std::cell::Cell;
use std::future::Future;
use std::io;
use std::rc::Rc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

/// The worker's run state; it only ever moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stop {
    /// Serving.
    Running,
    /// Stop accepting, finish in-flight requests, then exit.
    Graceful,
    /// Exit now.
    Fast,
}

impl From<StopMode> for Stop {
    fn from(mode: StopMode) -> Self {
        match mode {
            StopMode::Graceful => Stop::Graceful,
            StopMode::Fast => Stop::Fast,
        }
    }
}

/// Moves the run state to `to`, unless it is already further along.
pub(crate) fn request_stop(state: &watch::Sender<Stop>, to: Stop) {
    state.send_if_modified(|current| {
        let advance = to > *current;
        if advance {
            *current = to;
        }
        advance
    });
}

/// Starts the thread that reads the master's commands.
///
/// `IpcReceiver::recv` blocks, so it gets a plain thread that forwards stops
/// into the watch channel and new configurations to the event loop. A closed
/// channel means the master is gone: stop fast rather than keep serving as
/// an orphan.
pub(crate) fn spawn_ipc_reader(
    commands: IpcReceiver<MasterMsg>,
    state: watch::Sender<Stop>,
    updates: mpsc::UnboundedSender<Box<Config>>,
    log: Logger,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name("ipc".into())
        .spawn(move || loop {
            match commands.recv() {
                Ok(MasterMsg::Stop(mode)) => request_stop(&state, mode.into()),
                Ok(MasterMsg::Configure(config)) => {
                    if updates.send(config).is_err() {
                        warn!(log, "the event loop is gone; configuration ignored");
                    }
                }
                // The log threads reopen the files before their next line.
                Ok(MasterMsg::ReopenLogs) => prefork_shared::log::reopen(),
                Err(IpcError::Disconnected) => {
                    warn!(log, "master channel closed, stopping");
                    request_stop(&state, Stop::Fast);
                    return;
                }
                Err(e) => {
                    error!(log, "master channel failed, stopping"; "error" => %e);
                    request_stop(&state, Stop::Fast);
                    return;
                }
            }
        })
        .map(drop)
}

/// Installs the signal handlers and returns the task that applies them:
/// SIGQUIT and SIGHUP stop gracefully, SIGTERM and SIGINT stop fast. Each
/// sets `signalled`, so that the worker's exit code tells the master it was
/// stopped from outside, to be replaced rather than counted as a crash.
///
/// Must be called inside the runtime.
pub(crate) fn watch_signals(
    state: watch::Sender<Stop>,
    signalled: Rc<Cell<bool>>,
) -> io::Result<impl Future<Output = ()>> {
    let mut quit = signal(SignalKind::quit())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        loop {
            let to = tokio::select! {
                _ = quit.recv() => Stop::Graceful,
                _ = hangup.recv() => Stop::Graceful,
                _ = terminate.recv() => Stop::Fast,
                _ = interrupt.recv() => Stop::Fast,
            };
            signalled.set(true);
            request_stop(&state, to);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_only_moves_forward() {
        let (tx, rx) = watch::channel(Stop::Running);
        request_stop(&tx, Stop::Graceful);
        assert_eq!(*rx.borrow(), Stop::Graceful);
        request_stop(&tx, Stop::Fast);
        assert_eq!(*rx.borrow(), Stop::Fast);
        request_stop(&tx, Stop::Graceful);
        assert_eq!(*rx.borrow(), Stop::Fast);
    }
}
