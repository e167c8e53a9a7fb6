//! An idle HTTP/2 connection parked outside its task (see
//! `downstream::park`): `h2`'s connection frozen (its settings, HPACK
//! decoder table, flow-control windows and stream ids, no stream, no
//! buffer), rustls's state if TLS, who the client is and its meter's count,
//! all in one allocation made as it parks. The socket leaves tokio's event
//! loop meanwhile; the lot watches it, and `connection` resumes or closes
//! it (its `Parkable`).

use super::meter::{Budget, Flood, Metered};
use super::shared::{Idle, Shared};
use crate::io::client_socket::ClientSocket;
use crate::io::tls_stream::TlsIo;
use crate::observe::stats::Stats;
use bytes::Bytes;
use std::net::SocketAddr;
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

/// A parked HTTP/2 connection.
pub(crate) struct Parked<T> {
    kept: Kept<T>,
    /// The client socket's descriptor (inside what is kept).
    pub(super) fd: RawFd,
}

/// What a parked connection keeps. Boxed: the lot's slots stay small.
enum Kept<T> {
    /// `h2`'s connection frozen (see `h2::server::Frozen`), with its socket:
    /// the usual case.
    Frozen(Box<FrozenSession<T>>),
    /// The session as it was, its buffers given back: `h2` could not freeze
    /// it (its SETTINGS not yet acknowledged, say).
    Live(Box<Session<T>>),
}

/// A session with `h2`'s connection frozen: 512 bytes over h2c where the
/// connection takes 2 KiB, and the allocations made as it began (its
/// `Shared` and `Flood`) freed: among the memory a busy connection frees,
/// they would keep pages in use.
struct FrozenSession<T> {
    io: T,
    h2: h2::server::Frozen,
    budget: Budget,
    idle: Idle,
    counted: Counted,
}

impl<T: H2Io> Parked<T> {
    /// Parks `session`, frozen if `h2` can freeze it (and the meter and
    /// the streams' state hold nothing but what is kept).
    pub(super) fn new(mut session: Session<T>) -> Self {
        let fd = session.conn.get_mut().get_mut().socket().as_raw_fd();
        let frozen = if session.shared.at_rest() && session.conn.get_mut().is_idle() {
            match session.conn.freeze() {
                Ok((metered, h2)) => {
                    let (io, budget) = metered.into_idle();
                    Ok(FrozenSession {
                        io,
                        h2,
                        budget,
                        idle: session.shared.idle(),
                        counted: session.counted,
                    })
                }
                Err(conn) => Err(Session { conn, ..session }),
            }
        } else {
            Err(session)
        };
        let kept = match frozen {
            Ok(frozen) => Kept::Frozen(Box::new(frozen)),
            Err(session) => Kept::Live(Box::new(session)),
        };
        Parked { kept, fd }
    }

    /// When the connection's last stream ended (or it began).
    pub(super) fn idle_since(&self) -> tokio::time::Instant {
        match &self.kept {
            Kept::Frozen(frozen) => frozen.idle.idle_since,
            Kept::Live(session) => session.shared.idle_since(),
        }
    }

    /// The client's address.
    pub(super) fn client(&self) -> SocketAddr {
        match &self.kept {
            Kept::Frozen(frozen) => frozen.idle.client,
            Kept::Live(session) => session.shared.client,
        }
    }

    /// The session again, `h2`'s connection thawed with `builder` if it
    /// was frozen.
    pub(super) fn into_session(self, builder: &h2::server::Builder) -> Session<T> {
        match self.kept {
            Kept::Frozen(frozen) => {
                let FrozenSession {
                    io,
                    h2,
                    budget,
                    idle,
                    counted,
                } = *frozen;
                let flood = Rc::new(Flood::default());
                Session {
                    conn: builder.thaw(Metered::woken(io, budget, flood.clone()), h2),
                    shared: Rc::new(Shared::woken(idle)),
                    flood,
                    counted,
                }
            }
            Kept::Live(session) => *session,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A frozen h2c session is what each idle connection keeps: it must
    /// stay within jemalloc's 512-byte size class (the next is 640).
    #[test]
    fn a_frozen_h2c_session_fits_a_512_byte_allocation() {
        let size = std::mem::size_of::<FrozenSession<ClientSocket>>();
        assert!(size <= 512, "{size} bytes");
    }
}
