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

/// What a connection without streams keeps of its [`Shared`] while parked:
/// who the client is and since when it idles. Kept inline in the parked
/// connection, allocated as it parks: the `Shared` allocated as the
/// connection began would pin a page among the busy connections' freed
/// memory.
pub(super) struct Idle {
    /// The client's address.
    pub(super) client: SocketAddr,
    destination: SocketAddr,
    scheme: Scheme,
    tls: Option<TlsInfo>,
    send_timeout: Duration,
    /// When the last stream ended (or the connection began).
    pub(super) idle_since: Instant,
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
    /// connection stalls. It holds its own handle, so that the connection's
    /// task can wait on a session made again (after a failed park).
    pub(super) async fn changed(self: Rc<Self>) {
        self.changed.notified().await;
    }

    /// Whether [`Shared::idle`] is all there is to keep: no stream is
    /// open, and the client did not stall the connection.
    pub(super) fn at_rest(&self) -> bool {
        self.open.get() == 0 && !self.stalled.get()
    }

    /// What a parked connection keeps of it, if [`Shared::at_rest`].
    pub(super) fn idle(&self) -> Idle {
        Idle {
            client: self.client,
            destination: self.destination,
            scheme: self.scheme,
            tls: self.tls.clone(),
            send_timeout: self.send_timeout,
            idle_since: self.idle_since.get(),
        }
    }

    /// The state of a connection parked as `idle`, woken without streams
    /// (its streams' wait for the client's window counts from now).
    pub(super) fn woken(idle: Idle) -> Self {
        let mut shared = Shared::new(
            (idle.client, idle.destination),
            idle.scheme,
            idle.tls,
            idle.send_timeout,
        );
        shared.idle_since = Cell::new(idle.idle_since);
        shared
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_parks_its_identity_and_idle_time_only_without_streams() {
        let addrs = (
            "192.0.2.1:4000".parse().unwrap(),
            "127.0.0.1:443".parse().unwrap(),
        );
        let tls = TlsInfo {
            server_name: Some("example.com".into()),
            ..TlsInfo::default()
        };
        let shared = Rc::new(Shared::new(
            addrs,
            Scheme::Http,
            Some(tls),
            Duration::from_secs(7),
        ));
        let open = shared.stream_opened();
        assert!(!shared.at_rest(), "a stream is open");
        drop(open);
        assert!(shared.at_rest());
        let since = shared.idle_since();
        let woken = Shared::woken(shared.idle());
        assert_eq!((woken.client, woken.destination), addrs);
        assert_eq!(woken.scheme, Scheme::Http);
        assert_eq!(woken.send_timeout, Duration::from_secs(7));
        let name = woken.tls.as_ref().and_then(|t| t.server_name.as_deref());
        assert_eq!(name, Some("example.com"));
        assert_eq!((woken.idle_since(), woken.streams()), (since, 0));

        shared.stalled.set(true);
        assert!(!shared.at_rest(), "a stalled connection goes away");
    }
}
