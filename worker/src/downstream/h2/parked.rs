//! An idle HTTP/2 connection parked outside its task (see
//! `downstream::park`): `h2`'s connection with its buffers given back (it
//! keeps its settings, HPACK tables and flow-control windows, no stream),
//! rustls's state if TLS, and what its streams shared. The socket leaves
//! tokio's event loop meanwhile; the lot watches it, and `connection`
//! resumes or closes it (its `Parkable`).

use super::meter::{Flood, Metered};
use super::shared::Shared;
use crate::io::client_socket::ClientSocket;
use crate::io::tls_stream::TlsIo;
use crate::observe::stats::Stats;
use bytes::Bytes;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use tokio::io::{AsyncRead, AsyncWrite};

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
    pub(super) session: Box<Session<T>>,
    /// The client socket's descriptor (inside the session's I/O).
    pub(super) fd: RawFd,
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

/// A connection past its handshake: `h2`'s side of it and what its
/// streams share with it. It is what a parked connection keeps.
pub(super) struct Session<T> {
    pub(super) conn: h2::server::Connection<Metered<T>, Bytes>,
    pub(super) shared: Rc<Shared>,
    pub(super) flood: Rc<Flood>,
    /// Counts the connection among the open HTTP/2 ones until dropped.
    pub(super) counted: Counted,
}

/// Counts one open HTTP/2 connection until dropped.
pub(super) struct Counted(pub(super) Rc<Stats>);

impl Counted {
    /// Where it is counted.
    pub(super) fn stats(&self) -> &Stats {
        &self.0
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.http2_connection(false);
    }
}
