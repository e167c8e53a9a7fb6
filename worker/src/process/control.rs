//! How a worker is told to stop: commands from the master over IPC, signals
//! sent to the worker directly, and the master disappearing.

use crate::state::tickets;
use crate::stop::{request_stop, Stop};
use ipc_channel::ipc::IpcReceiver;
use ipc_channel::IpcError;
use prefork_shared::ipc::MasterMsg;
use prefork_shared::Config;
use slog::{error, warn, Logger};
use std::cell::Cell;
use std::future::Future;
use std::io;
use std::rc::Rc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

/// Starts the thread that reads the master's commands.
///
/// `IpcReceiver::recv` blocks, so it gets a plain thread that forwards stops
/// into the watch channel and new configurations to the event loop; new
/// session-ticket keys it installs itself. A closed channel means the master
/// is gone: stop fast rather than keep serving as an orphan.
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
                // rustls reads the keys under a lock: no need for the loop.
                Ok(MasterMsg::TicketKeys(ring)) => tickets::install(&ring),
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
