//! Accepting client connections on one listener until a stop.

use crate::conn::Connection;
use crate::control::Stop;
use crate::load_share::ACCEPT_DEFER;
use crate::server::Worker;
use slog::error;
use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Pause after an accept error such as EMFILE, so a full descriptor table
/// does not turn the loop into a busy spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A listening socket, and whether other workers accept on it too (one
/// shared socket, not this slot's own `reuseport` one).
pub(crate) struct Listener {
    /// The socket.
    pub(crate) socket: TcpListener,
    /// Whether other workers accept on it too.
    pub(crate) shared: bool,
}

/// Accepts connections and spawns a task for each until a stop is
/// requested. On a graceful stop it then takes every connection already
/// queued before dropping the worker's copy of the listener: for a per-slot
/// (`reuseport`) socket that copy may be the last, and closing it would make
/// the kernel reset whatever still waits in its queue.
pub(crate) async fn accept_loop(worker: Rc<Worker>, listener: Listener) {
    let Listener {
        socket: listener,
        shared,
    } = listener;
    loop {
        if worker.stopping() {
            break;
        }
        if shared && worker.busier_than_others() && defer(&worker).await.is_break() {
            break;
        }
        // Accepting comes first: while connections are queued, the stop
        // branch is never polled, so no waiter is registered per accept (the
        // check above sees a stop at the next connection).
        let accepted = tokio::select! {
            biased;
            accepted = listener.accept() => accepted,
            () = worker.on_change(|| worker.stopping()) => break,
        };
        match accepted {
            Ok((stream, peer)) => serve(&worker, stream, peer),
            Err(e) if is_per_connection(&e) => {}
            Err(e) => {
                let addr = listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                error!(worker.log, "accept failed"; "listen" => addr, "error" => %e);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    if *worker.stop.borrow() == Stop::Graceful {
        take_queued(&worker, listener);
    }
}

/// Holds back from accepting for a moment when this worker is clearly
/// busier than another: the kernel wakes every worker for a new connection
/// on a shared socket and the first to accept wins, so this lets a less
/// loaded one take it. Whatever is still queued afterwards, this worker
/// takes. Breaks on a stop.
async fn defer(worker: &Worker) -> ControlFlow<()> {
    // First let the connections just accepted read their requests: those
    // that close after one (`Connection: close`) no longer weigh, and a
    // batch of them must not make the worker hold back.
    tokio::task::yield_now().await;
    if worker.busier_than_others() {
        tokio::select! {
            biased;
            () = worker.on_change(|| worker.stopping()) => return ControlFlow::Break(()),
            () = tokio::time::sleep(ACCEPT_DEFER) => {}
        }
    }
    ControlFlow::Continue(())
}

fn serve(worker: &Rc<Worker>, stream: TcpStream, peer: SocketAddr) {
    // TCP_NODELAY is set when a response needs it (conn::set_nodelay).
    let active = worker.track();
    // The newest configuration (hot reload) serves it.
    let conn = Connection::new(worker.latest(), stream, peer, active);
    // Boxed: the connection's future is several KiB, and tokio moves a
    // task's future by value a few times while spawning and finishing it;
    // moving a pointer instead saves more than the allocation costs.
    tokio::task::spawn_local(Box::pin(conn.run()));
}

/// Accepts, without waiting, every connection in the listener's queue (the
/// std listener asks the kernel directly, where tokio's would trust a
/// readiness flag that may be stale), then closes the listener.
fn take_queued(worker: &Rc<Worker>, listener: TcpListener) {
    let Ok(listener) = listener.into_std() else {
        return;
    };
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                // std's accept does not inherit O_NONBLOCK; tokio needs it.
                let stream = stream
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(stream));
                if let Ok(stream) = stream {
                    serve(worker, stream, peer);
                }
            }
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
