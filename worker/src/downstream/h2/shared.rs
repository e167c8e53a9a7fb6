//! What one HTTP/2 connection's streams share with it: the client's
//! identity, the count of open streams (for the idle timeout), and whether
//! the client holds every stream's window shut (a stalled connection).

use super::responder::{self, Responder};
use crate::http::Scheme;
use crate::observe::access_log::TlsInfo;
use crate::proxy::error::ClientError;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What a connection's streams share with it.
pub(super) struct Shared {
    /// The client's address.
    pub(super) client: SocketAddr,
    /// The address it connected to (for a PROXY header sent upstream).
    pub(super) destination: SocketAddr,
    /// The scheme it speaks.
    pub(super) scheme: Scheme,
    /// What its TLS negotiated, if TLS.
    pub(super) tls: Option<TlsInfo>,
    /// Longest wait for the client's window to open.
    pub(super) send_timeout: Duration,
    /// Streams open.
    open: Cell<usize>,
    /// When the last stream ended (or the connection began).
    idle_since: Cell<Instant>,
    /// When a stream last found the client's window open.
    progress: Cell<Instant>,
    /// Set when every stream waited `send_timeout` for the window.
    stalled: Cell<bool>,
    /// Wakes the connection's task when `open` or `stalled` changes.
    changed: Notify,
}

/// Counts one open stream until dropped.
pub(super) struct OpenStream(Rc<Shared>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        let shared = &self.0;
        shared.open.set(shared.open.get().saturating_sub(1));
        if shared.open.get() == 0 {
            shared.idle_since.set(Instant::now());
            shared.changed.notify_one();
        }
    }
}

impl Shared {
    /// The state of a connection from `client` to `destination` speaking
    /// `scheme` (with `tls` if TLS), starting now with no stream.
    pub(super) fn new(
        (client, destination): (SocketAddr, SocketAddr),
        scheme: Scheme,
        tls: Option<TlsInfo>,
        send_timeout: Duration,
    ) -> Self {
        let now = Instant::now();
        Shared {
            client,
            destination,
            scheme,
            tls,
            send_timeout,
            open: Cell::new(0),
            idle_since: Cell::new(now),
            progress: Cell::new(now),
            stalled: Cell::new(false),
            changed: Notify::new(),
        }
    }

    /// Streams open now.
    pub(super) fn streams(&self) -> usize {
        self.open.get()
    }

    /// When the last stream ended, or the connection began.
    pub(super) fn idle_since(&self) -> Instant {
        self.idle_since.get()
    }

    /// Whether the client holds every stream's window shut.
    pub(super) fn stalled(&self) -> bool {
        self.stalled.get()
    }

    /// Wakes when the count of open streams drops to zero, or the
    /// connection stalls.
    pub(super) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Counts a stream opened, until the guard is dropped.
    pub(super) fn stream_opened(self: &Rc<Self>) -> OpenStream {
        self.open.set(self.open.get() + 1);
        OpenStream(self.clone())
    }

    /// Waits for the client's window to let out some of `wanted` bytes on
    /// `send`, at most `limit`; how many it may send.
    pub(super) async fn window(
        &self,
        io: &RefCell<Responder>,
        wanted: usize,
        limit: Duration,
    ) -> Result<usize, ClientError> {
        match responder::window(io, wanted, limit).await {
            Ok(n) => {
                self.progress.set(Instant::now());
                Ok(n)
            }
            Err(ClientError::WriteTimeout) => {
                // No stream of this connection got to send for as long: the
                // client holds the whole connection, not one stream.
                if self.progress.get().elapsed() >= self.send_timeout {
                    self.stalled.set(true);
                    self.changed.notify_one();
                }
                Err(ClientError::WriteTimeout)
            }
            Err(e) => Err(e),
        }
    }
}
