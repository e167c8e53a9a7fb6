//! An idle HTTP/2 connection parked outside its task (see
//! `downstream::park`): `h2`'s connection with its buffers given back (it
//! keeps its settings, HPACK tables and flow-control windows, no stream),
//! rustls's state if TLS, and what its streams shared. The socket leaves
//! tokio's event loop meanwhile; the lot watches it.

use super::connection::{drive, Session, Start};
use crate::downstream::park::{Parkable, ParkingLot};
use crate::io::client_socket::ClientSocket;
use crate::io::tls_stream::TlsIo;
use crate::state::{ActiveConnection, Snapshot};
use prefork_shared::Config;
use socket2::SockRef;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// What an HTTP/2 connection runs over: a client socket, plain or with TLS.
pub(crate) trait H2Io: AsyncRead + AsyncWrite + Unpin + 'static {
    /// The client socket.
    fn socket(&self) -> &ClientSocket;
    /// The client socket, mutably.
    fn socket_mut(&mut self) -> &mut ClientSocket;
    /// Whether nothing is held between the socket and `h2`: no bytes to
    /// send, none received but not read.
    fn is_drained(&mut self) -> bool;
}

impl H2Io for ClientSocket {
    fn socket(&self) -> &ClientSocket {
        self
    }

    fn socket_mut(&mut self) -> &mut ClientSocket {
        self
    }

    fn is_drained(&mut self) -> bool {
        true
    }
}

impl H2Io for TlsIo {
    fn socket(&self) -> &ClientSocket {
        self.get_ref().0
    }

    fn socket_mut(&mut self) -> &mut ClientSocket {
        self.get_mut().0
    }

    fn is_drained(&mut self) -> bool {
        TlsIo::is_drained(self)
    }
}

/// A parked HTTP/2 connection. Boxed: the lot's slots stay small.
pub(crate) struct Parked<T> {
    session: Box<Session<T>>,
    /// The client socket's descriptor (inside the session's I/O).
    fd: RawFd,
}

impl<T: H2Io> Parked<T> {
    /// Parks `session`.
    pub(super) fn new(mut session: Session<T>) -> Self {
        let fd = session.conn.get_mut().get_mut().socket().as_raw_fd();
        Parked {
            session: Box::new(session),
            fd,
        }
    }
}

impl<T: H2Io> Parkable for Parked<T> {
    fn fd(&self) -> RawFd {
        self.fd
    }

    fn idle_since(&self) -> Instant {
        self.session.shared.idle_since()
    }

    fn peer(&self) -> Option<SocketAddr> {
        Some(self.session.shared.client)
    }

    fn has_unread(&self) -> bool {
        // SAFETY: the descriptor belongs to the session's socket, which
        // `self` owns: it stays open while borrowed here.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let mut probe = [MaybeUninit::uninit(); 1];
        matches!(SockRef::from(&fd).peek(&mut probe), Ok(n) if n > 0)
    }

    fn idle_timeout(config: &Config) -> Duration {
        config.http2.idle_timeout
    }

    fn close(self, snapshot: Option<Rc<Snapshot>>, active: ActiveConnection) {
        // It goes away as one in its task does: GOAWAY, then the close.
        if let Some(snapshot) = snapshot {
            let task = drive(snapshot, *self.session, active, None, Start::GoAway);
            tokio::task::spawn_local(Box::pin(task));
        }
    }

    fn resume(self, snapshot: Rc<Snapshot>, lot: &Rc<ParkingLot<Self>>, active: ActiveConnection) {
        let task = drive(
            snapshot,
            *self.session,
            active,
            Some(lot.clone()),
            Start::Serve,
        );
        tokio::task::spawn_local(Box::pin(task));
    }
}
