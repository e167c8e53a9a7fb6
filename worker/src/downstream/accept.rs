//! Accepting client connections on one listener until a stop.

use crate::downstream::h1::Connection;
use crate::downstream::limit;
use crate::downstream::lots::{self, Lots};
use crate::downstream::protocols::{plain_then_serve, Protocols};
use crate::downstream::{proxy_protocol, tls};
use crate::io::client_socket::ClientSocket;
use crate::state::load_share::{HoldBack, ACCEPT_DEFER};
use crate::state::Snapshot;
use crate::stop::Stop;
use socket2::{SockAddr, SockRef, Socket};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A listening socket, and whether other workers accept on it too (one
/// shared socket, not this slot's own `reuseport` one). It is watched for
/// readiness apart from accepting, so that a worker can decide whether to
/// take a connection once one waits (see `load_share`).
pub(crate) struct Listener {
    socket: AsyncFd<std::net::TcpListener>,
    shared: bool,
    /// What its clients send first.
    protocols: Protocols,
}

impl Listener {
    /// Registers a non-blocking `socket` with the event loop; `protocols`:
    /// what its clients send first.
    pub(crate) fn new(
        socket: std::net::TcpListener,
        shared: bool,
        protocols: Protocols,
    ) -> io::Result<Listener> {
        // SAFETY: the std listener owns its descriptor, which stays open and
        // the same until the AsyncFd gives the listener back or drops it.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }?;
        Ok(Listener {
            socket,
            shared,
            protocols,
        })
    }
}

/// Accepts connections and spawns a task for each until a stop is
/// requested. On a graceful stop it then takes every connection already
/// queued before dropping the worker's copy of the listener: for a per-slot
/// (`reuseport`) socket that copy may be the last, and closing it would make
/// the kernel reset whatever still waits in its queue.
///
/// It holds the newest configuration snapshot only: one a hot reload
/// replaced belongs to the connections still using it, and goes (with its
/// log files) when they are done.
pub(crate) async fn accept_loop(
    mut snapshot: Rc<Snapshot>,
    listener: Listener,
    lot: Option<Rc<Lots>>,
) {
    let Listener {
        socket,
        shared,
        protocols,
    } = listener;
    // Any listener's connection may close a parked one to make room.
    let evictable = lot.clone();
    let mut hold = HoldBack::default();
    loop {
        if snapshot.stopping() {
            break;
        }
        // Waiting comes first: while connections are queued, the stop
        // branch is never polled, so no waiter is registered per accept (the
        // check above sees a stop at the next connection).
        let ready = tokio::select! {
            biased;
            ready = socket.readable() => ready,
            () = snapshot.on_change(|| snapshot.stopping() || snapshot.superseded()) => {
                snapshot = snapshot.latest();
                continue;
            }
        };
        let mut ready = match ready {
            Ok(ready) => ready,
            Err(e) => {
                accept_failed(&snapshot, &socket, &evictable, &e).await;
                continue;
            }
        };
        // At the limit the readiness may be stale (it clears only when an
        // accept finds the queue empty): make room only for a connection
        // that waits.
        if snapshot.full() && !limit::queued(socket.get_ref()) {
            ready.clear_ready();
            continue;
        }
        if !limit::make_room(&snapshot, evictable.as_deref()) {
            // Left queued: this worker takes it once a connection closes
            // or parks, unless another worker does first.
            drop(ready);
            if !limit::room_made(&snapshot).await {
                break;
            }
            // A new configuration (its `max_connections`) applies at once.
            snapshot = snapshot.latest();
            continue;
        }
        let mut paused_for = None;
        let ignored = hold.ignored();
        if shared && snapshot.busier_than_others(ignored) {
            drop(ready);
            let least = snapshot.least_loaded(ignored);
            match defer(&snapshot, ignored).await {
                Deferral::Stopped => break,
                Deferral::Paused => paused_for = Some(least),
                Deferral::NotNeeded => {}
            }
            // Still ready (nothing cleared it): what is queued now, this
            // worker takes.
            ready = match socket.readable().await {
                Ok(ready) => ready,
                Err(e) => {
                    accept_failed(&snapshot, &socket, &evictable, &e).await;
                    continue;
                }
            };
        }
        let accepted = ready.try_io(|socket| accept_nonblocking(socket.get_ref()));
        if let Some(Some((cell, count))) = paused_for {
            // Used: the queue was emptied, or the least loaded worker's
            // count moved (it accepts, while connections keep coming).
            let moved = snapshot.load_of(cell) != count;
            hold.paused(cell, accepted.is_err() || moved);
        }
        on_accepted(&snapshot, &socket, accepted, &lot, &evictable, protocols).await;
    }
    if *snapshot.stop.borrow() == Stop::Graceful {
        take_queued(&snapshot, socket.into_inner(), &lot, protocols);
    }
}

/// One `accept4`, the new socket non-blocking and close-on-exec from the
/// start (no extra system call).
fn accept_nonblocking(listener: &std::net::TcpListener) -> io::Result<(Socket, SockAddr)> {
    SockRef::from(listener).accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
}

/// What one try at accepting gave: a connection, an error, or (outer
/// `Err`) an empty queue, the listener's readiness cleared.
type Accepted = Result<io::Result<(Socket, SockAddr)>, tokio::io::unix::TryIoError>;

async fn on_accepted(
    snapshot: &Rc<Snapshot>,
    socket: &AsyncFd<std::net::TcpListener>,
    accepted: Accepted,
    lot: &Option<Rc<Lots>>,
    evictable: &Option<Rc<Lots>>,
    protocols: Protocols,
) {
    match accepted {
        Ok(Ok(accepted)) => serve_accepted(snapshot, accepted, lot, protocols),
        Ok(Err(e)) if is_per_connection(&e) => {}
        Ok(Err(e)) => accept_failed(snapshot, socket, evictable, &e).await,
        // The queue is empty: wait for the next connection.
        Err(_would_block) => {}
    }
}

/// Serves a connection `accept4` returned, after what `protocols` says
/// comes first.
fn serve_accepted(
    snapshot: &Rc<Snapshot>,
    (socket, peer): (Socket, SockAddr),
    lot: &Option<Rc<Lots>>,
    protocols: Protocols,
) {
    // A TCP listener's peers are IP addresses.
    let Some(peer) = peer.as_socket() else {
        return;
    };
    let socket = ClientSocket::new(socket.into());
    if protocols.proxy_protocol {
        proxy_protocol::serve(snapshot, socket, peer, lot, protocols);
    } else if protocols.tls {
        tls::serve(
            snapshot,
            socket,
            peer,
            snapshot.track(),
            lot.clone(),
            protocols.http2,
        );
    } else if protocols.http2 {
        let active = snapshot.track();
        let task = plain_then_serve(snapshot.latest(), socket, (peer, None), active, lot.clone());
        tokio::task::spawn_local(Box::pin(task));
    } else {
        serve(snapshot, socket, peer, lot);
    }
}

async fn accept_failed(
    snapshot: &Snapshot,
    socket: &AsyncFd<std::net::TcpListener>,
    lot: &Option<Rc<Lots>>,
    e: &io::Error,
) {
    let listen = || {
        socket
            .get_ref()
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    };
    limit::accept_failed(snapshot, lot.as_deref(), listen, e).await;
}

/// How holding back ended.
enum Deferral {
    /// A stop came.
    Stopped,
    /// The worker paused.
    Paused,
    /// It turned out not to be busier after all.
    NotNeeded,
}

/// Holds back from accepting for a moment when this worker is clearly
/// busier than another: the kernel wakes every worker for a new connection
/// on a shared socket and the first to accept wins, so this lets a less
/// loaded one take it.
async fn defer(snapshot: &Snapshot, ignored: Option<usize>) -> Deferral {
    // First let the connections just accepted read their requests: those
    // that close after one (`Connection: close`) no longer weigh, and a
    // batch of them must not make the worker hold back.
    tokio::task::yield_now().await;
    if !snapshot.busier_than_others(ignored) {
        return Deferral::NotNeeded;
    }
    tokio::select! {
        biased;
        () = snapshot.on_change(|| snapshot.stopping()) => Deferral::Stopped,
        () = tokio::time::sleep(ACCEPT_DEFER) => Deferral::Paused,
    }
}

fn serve(snapshot: &Rc<Snapshot>, stream: ClientSocket, peer: SocketAddr, lot: &Option<Rc<Lots>>) {
    // TCP_NODELAY is set when a response needs it (h1::set_nodelay).
    let active = snapshot.track();
    // The newest configuration (hot reload) serves it.
    let conn = Connection::new(
        snapshot.latest(),
        stream,
        (peer, None),
        active,
        lots::h1(lot),
    );
    // Boxed: the connection's future is several KiB, and tokio moves a
    // task's future by value a few times while spawning and finishing it;
    // moving a pointer instead saves more than the allocation costs.
    tokio::task::spawn_local(Box::pin(conn.run()));
}

/// Accepts, without waiting, every connection in the listener's queue (it
/// asks the kernel directly, where the readiness flag may be stale), then
/// closes the listener.
fn take_queued(
    snapshot: &Rc<Snapshot>,
    listener: std::net::TcpListener,
    lot: &Option<Rc<Lots>>,
    protocols: Protocols,
) {
    loop {
        match accept_nonblocking(&listener) {
            Ok(accepted) => serve_accepted(snapshot, accepted, lot, protocols),
            Err(e) if is_per_connection(&e) => {}
            // WouldBlock: the queue is empty (the socket is non-blocking).
            Err(_) => return,
        }
    }
}

/// Errors that concern only the connection being accepted.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests;
