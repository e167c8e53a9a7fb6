//! The IPC link to each worker: bootstrap through a one-shot server, then a
//! reader thread per worker that forwards its messages to the master loop.
//!
//! A plain reader thread (rather than ipc-channel's router) keeps a decode
//! error from panicking the master, and tags every message with the worker's
//! pid and the link's serial number, so the loop can ignore messages from a
//! worker it already replaced, even one whose pid the next worker got.
//!
//! The server's name is public (the worker's command line) and its socket
//! open to the workers' user, which other daemons may share: the first
//! connection is trusted only if its Hello carries the secret drawn for this
//! link (see `prefork_shared::link_secret`) and the child's pid.

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
                let PendingLink { server, secret, .. } = self;
                let (receiver, first) = match unpanicked(move || server.accept()) {
                    Ok(Ok(pair)) => pair,
                    Ok(Err(e)) => {
                        let _ = events.send(closed(format!("no hello: {e:?}")));
                        return;
                    }
                    Err(why) => {
                        let _ = events.send(closed(format!("no hello: {why}")));
                        return;
                    }
                };
                match check_hello(first, pid, &secret) {
                    Ok(control) => {
                        if events.send(LinkEvent::Hello { from, control }).is_err() {
                            return;
                        }
                    }
                    Err(why) => {
                        let _ = events.send(closed(format!("bad hello: {why}")));
                        return;
                    }
                }
                loop {
                    let event = match unpanicked(|| receiver.recv()) {
                        Ok(Ok(msg)) => LinkEvent::Message(from, msg),
                        Ok(Err(e)) => closed(format!("{e:?}")),
                        Err(why) => closed(why),
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

/// Runs `receive`, a receive on a link, turning a panic into an error:
/// ipc-channel asserts (rather than errs) on some malformed input, such as
/// a first message cut short, which any process allowed to connect can
/// send. Caught, the link still reports closed; the panic's message goes to
/// stderr as any panic's does.
fn unpanicked<T>(receive: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(receive))
        .map_err(|_| "ipc-channel panicked on what it received".to_owned())
}

/// The command channel of the first message on a link if it is the Hello of
/// worker `pid` with `secret`; otherwise why not, which never shows a secret.
fn check_hello(
    first: WorkerMsg,
    pid: Pid,
    secret: &LinkSecret,
) -> Result<IpcSender<MasterMsg>, String> {
    let WorkerMsg::Hello {
        protocol,
        pid: said,
        secret: proof,
        control,
    } = first
    else {
        return Err("the first message is not a Hello".to_owned());
    };
    if protocol != PROTOCOL_VERSION {
        return Err(format!("protocol {protocol}, expected {PROTOCOL_VERSION}"));
    }
    // The secret proves the peer got what the master handed its child; the
    // pid is only the peer's word, checked too so that the right secret from
    // any other process (were it ever to leak) is still refused.
    if !proof.matches(secret) {
        return Err(format!("wrong secret (pid {said})"));
    }
    if said != pid {
        return Err(format!("pid {said}, expected {pid}"));
    }
    Ok(control)
}

/// Unblocks the thread waiting for a worker that died before connecting:
/// connecting and hanging up makes its `accept` return an error.
pub fn abandon(name: &str) {
    let _ = IpcSender::<WorkerMsg>::connect(name.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::Receiver;
    use ipc_channel::ipc::{self, IpcReceiver};
    use std::time::Duration;

    /// A link's thread reports within this (a bound, not a wait: it
    /// reports as soon as the Hello is checked).
    const REPORT_WITHIN: Duration = Duration::from_secs(30);

    const WORKER: LinkId = LinkId {
        pid: 4242,
        serial: 7,
    };

    /// Opens a link for `WORKER` and serves it; returns its name, its
    /// secret and its events.
    fn serving() -> (String, LinkSecret, Receiver<LinkEvent>) {
        let link = PendingLink::open().unwrap();
        let name = link.name().to_owned();
        let secret = link.secret().clone();
        let (tx, rx) = crossbeam_channel::unbounded();
        link.serve(WORKER, tx).unwrap();
        (name, secret, rx)
    }

    /// Connects to `name` as a worker would and sends `first`.
    fn connect_and_send(name: &str, first: WorkerMsg) {
        let to_master = IpcSender::<WorkerMsg>::connect(name.to_owned()).unwrap();
        to_master.send(first).unwrap();
    }

    fn hello(pid: u32, secret: LinkSecret) -> (WorkerMsg, IpcReceiver<MasterMsg>) {
        let (control, commands) = ipc::channel().unwrap();
        let msg = WorkerMsg::Hello {
            protocol: PROTOCOL_VERSION,
            pid,
            secret,
            control,
        };
        (msg, commands)
    }

    fn hex(secret: &LinkSecret) -> String {
        secret.bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The reason the link closed; fails if it reported anything else.
    fn closed_reason(events: &Receiver<LinkEvent>) -> String {
        match events
            .recv_timeout(REPORT_WITHIN)
            .expect("the link reports")
        {
            LinkEvent::Closed { from, reason } => {
                assert_eq!(from, WORKER);
                reason
            }
            LinkEvent::Hello { .. } => panic!("the link trusted the peer"),
            LinkEvent::Message(..) => panic!("the link forwarded a message"),
        }
    }

    #[test]
    fn the_expected_worker_is_trusted() {
        let (name, secret, events) = serving();
        let (msg, _commands) = hello(WORKER.pid, secret);
        connect_and_send(&name, msg);
        match events
            .recv_timeout(REPORT_WITHIN)
            .expect("the link reports")
        {
            LinkEvent::Hello { from, .. } => assert_eq!(from, WORKER),
            LinkEvent::Closed { reason, .. } => panic!("closed: {reason}"),
            LinkEvent::Message(..) => panic!("a message before Hello"),
        }
    }

    /// Another process of the workers' user that read the server's name on
    /// the command line and guessed the pid gets no configuration, and no
    /// second try: the one-shot server is gone, so the worker that was
    /// expected cannot connect either and is replaced.
    #[test]
    fn an_impostor_with_the_right_pid_but_a_wrong_secret_is_refused() {
        let (name, secret, events) = serving();
        let guess = LinkSecret::from_bytes([0x5a; LINK_SECRET_LEN]);
        let (msg, _commands) = hello(WORKER.pid, guess.clone());
        connect_and_send(&name, msg);
        let reason = closed_reason(&events);
        assert!(reason.starts_with("bad hello: wrong secret"), "{reason}");
        assert!(!reason.contains(&hex(&secret)), "{reason}");
        assert!(!reason.contains(&hex(&guess)), "{reason}");
        assert!(IpcSender::<WorkerMsg>::connect(name).is_err());
    }

    /// The secret must come from the child itself: the pid check stays.
    #[test]
    fn the_right_secret_from_another_pid_is_refused() {
        let (name, secret, events) = serving();
        let (msg, _commands) = hello(WORKER.pid + 1, secret.clone());
        connect_and_send(&name, msg);
        let reason = closed_reason(&events);
        assert_eq!(reason, "bad hello: pid 4243, expected 4242");
    }

    #[test]
    fn another_protocol_is_refused() {
        let (name, secret, events) = serving();
        let (control, _commands) = ipc::channel().unwrap();
        let msg = WorkerMsg::Hello {
            protocol: PROTOCOL_VERSION + 1,
            pid: WORKER.pid,
            secret,
            control,
        };
        connect_and_send(&name, msg);
        let reason = closed_reason(&events);
        assert!(reason.starts_with("bad hello: protocol"), "{reason}");
    }

    #[test]
    fn a_link_that_starts_with_anything_but_hello_is_refused() {
        let (name, _secret, events) = serving();
        connect_and_send(&name, WorkerMsg::Ready);
        let reason = closed_reason(&events);
        assert_eq!(reason, "bad hello: the first message is not a Hello");
    }

    /// Bytes that are no ipc-channel message at all, sent on a raw
    /// connection: ipc-channel panics reading them, and the link still
    /// reports closed (the master would otherwise keep the link forever).
    #[test]
    fn a_first_message_ipc_channel_cannot_read_closes_the_link() {
        use socket2::{Domain, SockAddr, Socket, Type};
        let (name, _secret, events) = serving();
        let raw = Socket::new(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        raw.connect(&SockAddr::unix(&name).unwrap()).unwrap();
        raw.send(&[0; 64]).unwrap();
        drop(raw);
        let reason = closed_reason(&events);
        assert!(reason.starts_with("no hello: "), "{reason}");
    }

    #[test]
    fn every_link_has_its_own_secret() {
        let a = PendingLink::open().unwrap();
        let b = PendingLink::open().unwrap();
        assert!(!a.secret().matches(b.secret()));
    }
}
