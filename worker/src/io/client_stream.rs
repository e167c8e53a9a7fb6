//! A client connection's byte stream: its socket, or TLS over it.
//!
//! The HTTP/1.1 session reads a request body and writes the response from
//! one task at once, through two shared handles (as with the plain
//! socket). A TLS stream needs `&mut` for both, so it sits in a `RefCell`
//! borrowed only inside each poll: the two never overlap on one thread.
//!
//! What only a socket can do stays with the plain variant: the first read
//! without waiting, writes tried at once, splicing. A TLS stream reads and
//! writes through rustls and waits like any tokio stream. Either comes
//! apart into what a parked connection keeps (`into_parts`).

use super::client_socket::ClientSocket;
use super::timed::{timed, TimedOut};
use super::tls_renewal;
use super::tls_stream::TlsIo;
use rustls::ServerConnection;
use socket2::SockRef;
use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A client connection's stream.
pub(crate) enum ClientStream {
    /// Plain HTTP on the socket.
    Plain(ClientSocket),
    /// TLS on the socket, its handshake done (boxed: rustls's state is
    /// large, and a plain connection's future must not carry its size).
    Tls(Box<TlsClient>),
}

/// A TLS stream and its socket's descriptor (for socket options, which do
/// not need rustls's state).
pub(crate) struct TlsClient {
    fd: RawFd,
    stream: RefCell<TlsIo>,
}

impl ClientStream {
    /// The stream of a connection whose TLS handshake is done: rustls's
    /// state `conn` over `socket`.
    pub(crate) fn tls(socket: ClientSocket, conn: Box<ServerConnection>) -> Self {
        ClientStream::from(TlsIo::new(socket, conn))
    }

    /// The socket and, for TLS, rustls's state: what a parked connection
    /// keeps.
    pub(crate) fn into_parts(self) -> (ClientSocket, Option<Box<ServerConnection>>) {
        match self {
            ClientStream::Plain(socket) => (socket, None),
            ClientStream::Tls(tls) => {
                let (socket, conn) = tls.stream.into_inner().into_parts();
                (socket, Some(conn))
            }
        }
    }

    /// Whether rustls holds nothing for this connection: no plaintext to
    /// read, no record to send once those queued went out now (always so
    /// for a plain stream).
    pub(crate) fn tls_drained(&self) -> bool {
        match self {
            ClientStream::Plain(_) => true,
            ClientStream::Tls(tls) => {
                let mut stream = tls.stream.borrow_mut();
                let (socket, conn) = stream.get_mut();
                send_now(socket, conn);
                !conn.wants_write()
                    && tls_renewal::processing(conn)
                        .is_ok_and(|state| state.plaintext_bytes_to_read() == 0)
            }
        }
    }

    /// The socket, when bytes go on it as they are (no TLS).
    pub(crate) fn plain(&self) -> Option<&ClientSocket> {
        match self {
            ClientStream::Plain(socket) => Some(socket),
            ClientStream::Tls(_) => None,
        }
    }

    /// The socket itself, for socket options.
    pub(crate) fn sock_ref(&self) -> SockRef<'_> {
        SockRef::from(self)
    }

    /// Waits until the socket is ready for `interest`. A TLS stream does
    /// not wait: rustls may hold decrypted bytes the socket no longer
    /// shows; its read waits instead.
    pub(crate) async fn ready(&self, interest: Interest) -> io::Result<()> {
        match self {
            ClientStream::Plain(socket) => socket.ready(interest).await,
            ClientStream::Tls(_) => Ok(()),
        }
    }

    /// Whether the client has sent bytes not read yet (on the socket).
    pub(crate) fn has_unread(&self) -> bool {
        match self {
            ClientStream::Plain(socket) => socket.has_unread(),
            ClientStream::Tls(tls) => {
                let mut probe = [std::mem::MaybeUninit::uninit(); 1];
                matches!(SockRef::from(&**tls).peek(&mut probe), Ok(n) if n > 0)
            }
        }
    }

    /// Ends the sending side: for TLS, a `close_notify` alert first (sent
    /// if the socket takes it now), then the FIN.
    pub(crate) fn shut_write(&self) -> io::Result<()> {
        match self {
            ClientStream::Plain(socket) => socket.shut_write(),
            ClientStream::Tls(tls) => {
                let mut stream = tls.stream.borrow_mut();
                let (socket, conn) = stream.get_mut();
                close_notify(socket, conn);
                socket.shut_write()
            }
        }
    }

    /// Takes `bufs`, the last bytes before the FIN, without waiting: a
    /// socket sends them holding back a partial last segment (`MSG_MORE`);
    /// a TLS stream encrypts them and holds the records, which leave with
    /// its `close_notify` in one system call ([`ClientStream::end_within`]).
    pub(crate) fn send_more(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(socket) => socket.send_vectored(bufs, libc::MSG_MORE),
            ClientStream::Tls(tls) => tls.stream.borrow_mut().queue(bufs),
        }
    }

    /// Ends the sending side after the last bytes ([`ClientStream::send_more`]):
    /// a TLS stream sends its held records and `close_notify` together,
    /// waiting at most `limit` for the socket to take them, then the FIN.
    pub(crate) async fn end_within(&self, limit: Duration) -> Result<io::Result<()>, TimedOut> {
        match self {
            ClientStream::Plain(socket) => Ok(socket.shut_write()),
            ClientStream::Tls(tls) => {
                timed(
                    limit,
                    std::future::poll_fn(|cx| {
                        Pin::new(&mut *tls.stream.borrow_mut()).poll_shutdown(cx)
                    }),
                )
                .await
            }
        }
    }

    /// Sends `bufs` without waiting (`flags` besides `MSG_NOSIGNAL`); a TLS
    /// stream answers `WouldBlock`, so that its writes go the waiting way,
    /// through rustls.
    pub(crate) fn send_vectored(
        &self,
        bufs: &[IoSlice<'_>],
        flags: libc::c_int,
    ) -> io::Result<usize> {
        match self {
            ClientStream::Plain(socket) => socket.send_vectored(bufs, flags),
            ClientStream::Tls(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// Sends a `close_notify` alert if the socket takes it now.
pub(crate) fn close_notify(socket: &ClientSocket, conn: &mut ServerConnection) {
    conn.send_close_notify();
    send_now(socket, conn);
}

/// Sends rustls's queued records as far as the socket takes them now.
fn send_now(socket: &ClientSocket, conn: &mut ServerConnection) {
    while conn.wants_write() {
        match conn.write_tls(&mut SocketWriter(socket)) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// Writes TLS records straight to the socket, without waiting.
struct SocketWriter<'a>(&'a ClientSocket);

impl io::Write for SocketWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send_vectored(&[IoSlice::new(buf)], 0)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.send_vectored(bufs, 0)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl From<TlsIo> for ClientStream {
    /// The stream of a connection whose TLS handshake is done.
    fn from(io: TlsIo) -> Self {
        let fd = io.get_ref().0.as_raw_fd();
        ClientStream::Tls(Box::new(TlsClient {
            fd,
            stream: RefCell::new(io),
        }))
    }
}

impl AsFd for TlsClient {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor belongs to the socket inside `stream`,
        // which lives as long as `self`.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }
}

impl AsFd for ClientStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            ClientStream::Plain(socket) => socket.as_fd(),
            ClientStream::Tls(tls) => tls.as_fd(),
        }
    }
}

impl AsyncRead for &ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match *self {
            ClientStream::Plain(socket) => Pin::new(&mut &*socket).poll_read(cx, buf),
            ClientStream::Tls(tls) => Pin::new(&mut *tls.stream.borrow_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for &ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match *self {
            ClientStream::Plain(socket) => Pin::new(&mut &*socket).poll_write(cx, buf),
            ClientStream::Tls(tls) => Pin::new(&mut *tls.stream.borrow_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match *self {
            ClientStream::Plain(socket) => Pin::new(&mut &*socket).poll_write_vectored(cx, bufs),
            ClientStream::Tls(tls) => {
                Pin::new(&mut *tls.stream.borrow_mut()).poll_write_vectored(cx, bufs)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match *self {
            ClientStream::Plain(_) => Poll::Ready(Ok(())),
            ClientStream::Tls(tls) => Pin::new(&mut *tls.stream.borrow_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match *self {
            ClientStream::Plain(socket) => Poll::Ready(socket.shut_write()),
            ClientStream::Tls(tls) => Pin::new(&mut *tls.stream.borrow_mut()).poll_shutdown(cx),
        }
    }
}
