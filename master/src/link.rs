//! The IPC link to each worker: bootstrap through a one-shot server, then a
//! reader thread per worker that forwards its messages to the master loop.
//!
//! A plain reader thread (rather than ipc-channel's router) keeps a decode
//! error from panicking the master, and tags every message with the worker's
//! pid so the loop can ignore messages from a worker it already replaced.

use crate::supervisor::Pid;
use crossbeam_channel::Sender;
use ipc_channel::ipc::{IpcOneShotServer, IpcSender};
use prefork_shared::ipc::{MasterMsg, WorkerMsg, PROTOCOL_VERSION};
use std::io;

/// Something that happened on a worker's link.
pub enum LinkEvent {
    /// The worker connected and sent its command channel.
    Hello {
        /// The worker.
        pid: Pid,
        /// Where commands to it go.
        control: IpcSender<MasterMsg>,
    },
    /// A later message.
    Message(Pid, WorkerMsg),
    /// The link failed or closed (the worker is exiting or gone).
    Closed {
        /// The worker.
        pid: Pid,
        /// Why, for the log.
        reason: String,
    },
}

/// A one-shot server a new worker connects to.
pub struct PendingLink {
    server: IpcOneShotServer<WorkerMsg>,
    name: String,
}

impl PendingLink {
    /// Opens a new one-shot server.
    pub fn open() -> io::Result<Self> {
        let (server, name) = IpcOneShotServer::new()?;
        Ok(PendingLink { server, name })
    }

    /// The name the worker connects to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits, on a new thread, for worker `pid` to connect, then forwards its
    /// messages to `events` until the link closes.
    pub fn serve(self, pid: Pid, events: Sender<LinkEvent>) -> io::Result<()> {
        std::thread::Builder::new()
            .name(format!("ipc-{pid}"))
            .spawn(move || {
                let closed = |reason: String| LinkEvent::Closed { pid, reason };
                let (receiver, first) = match self.server.accept() {
                    Ok(pair) => pair,
                    Err(e) => {
                        let _ = events.send(closed(format!("no hello: {e:?}")));
                        return;
                    }
                };
                match first {
                    WorkerMsg::Hello {
                        protocol: PROTOCOL_VERSION,
                        pid: said,
                        control,
                    } if said == pid => {
                        if events.send(LinkEvent::Hello { pid, control }).is_err() {
                            return;
                        }
                    }
                    other => {
                        let _ = events.send(closed(format!("bad hello: {other:?}")));
                        return;
                    }
                }
                loop {
                    let event = match receiver.recv() {
                        Ok(msg) => LinkEvent::Message(pid, msg),
                        Err(e) => closed(format!("{e:?}")),
                    };
                    let last = matches!(event, LinkEvent::Closed { .. });
                    if events.send(event).is_err() || last {
                        return;
                    }
                }
            })
            .map(drop)
    }
}

/// Unblocks the thread waiting for a worker that died before connecting:
/// connecting and hanging up makes its `accept` return an error.
pub fn abandon(name: &str) {
    let _ = IpcSender::<WorkerMsg>::connect(name.to_owned());
}
