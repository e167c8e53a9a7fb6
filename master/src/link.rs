//! The IPC link to each worker: bootstrap through a one-shot server, then a
//! reader thread per worker that forwards its messages to the master loop.
//!
//! A plain reader thread (rather than ipc-channel's router) keeps a decode
//! error from panicking the master, and tags every message with the worker's
//! pid and the link's serial number, so the loop can ignore messages from a
//! worker it already replaced, even one whose pid the next worker got.

use crate::os;
use crate::supervisor::Pid;
use crossbeam_channel::Sender;
use ipc_channel::ipc::{IpcOneShotServer, IpcSender};
use prefork_shared::ipc::{MasterMsg, WorkerMsg, PROTOCOL_VERSION};
use prefork_shared::link_secret::{LinkSecret, LINK_SECRET_LEN};
use std::io;

/// Which link an event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkId {
    /// The worker.
    pub pid: Pid,
    /// Numbers the links the master started: the kernel may give a reaped
    /// worker's pid to the next worker before the old link's last events
    /// arrive, and those must not be taken for the new worker's.
    pub serial: u64,
}

/// Something that happened on a worker's link.
pub enum LinkEvent {
    /// The worker connected and sent its command channel.
    Hello {
        /// The link.
        from: LinkId,
        /// Where commands to it go.
        control: IpcSender<MasterMsg>,
    },
    /// A later message.
    Message(LinkId, WorkerMsg),
    /// The link failed or closed (the worker is exiting or gone).
    Closed {
        /// The link.
        from: LinkId,
        /// Why, for the log.
        reason: String,
    },
}

impl LinkEvent {
    /// The link it comes from.
    pub fn from(&self) -> LinkId {
        match self {
            LinkEvent::Hello { from, .. }
            | LinkEvent::Message(from, _)
            | LinkEvent::Closed { from, .. } => *from,
        }
    }
}

/// A one-shot server a new worker connects to, and the secret it must say
/// hello with.
pub struct PendingLink {
    server: IpcOneShotServer<WorkerMsg>,
    name: String,
    secret: LinkSecret,
}

impl PendingLink {
    /// Opens a new one-shot server with a fresh secret from the kernel.
    pub fn open() -> io::Result<Self> {
        let mut bytes = [0; LINK_SECRET_LEN];
        os::random_bytes(&mut bytes)?;
        let (server, name) = IpcOneShotServer::new()?;
        Ok(PendingLink {
            server,
            name,
            secret: LinkSecret::from_bytes(bytes),
        })
    }

    /// The name the worker connects to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The secret to hand the worker, and that worker alone.
    pub fn secret(&self) -> &LinkSecret {
        &self.secret
    }

    /// Waits, on a new thread, for worker `from.pid` to connect, then
    /// forwards its messages to `events`, tagged `from`, until the link
    /// closes.
    pub fn serve(self, from: LinkId, events: Sender<LinkEvent>) -> io::Result<()> {
        let pid = from.pid;
        std::thread::Builder::new()
            .name(format!("ipc-{pid}"))
            .spawn(move || {
                let closed = |reason: String| LinkEvent::Closed { from, reason };
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
                        if events.send(LinkEvent::Hello { from, control }).is_err() {
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
                        Ok(msg) => LinkEvent::Message(from, msg),
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
