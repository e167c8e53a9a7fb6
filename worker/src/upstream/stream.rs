//! An upstream connection's byte stream: plain TCP or TLS over it, and the
//! halves of a TLS stream an exchange reads and writes at the same time.
//!
//! An exchange looks at the kind once and runs on its halves (see
//! `proxy::exchange`): the plain ones are tokio's borrowed TCP halves as
//! ever (writes tried at once, bodies spliced); the TLS ones copy through
//! rustls, and splicing is off (the bytes on the socket are records, not
//! the body).

use crate::io::splice::SpliceEnd;
use crate::io::write::TryWrite;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The stream of an upstream connection.
pub(crate) enum UpStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed: rustls's state is large, plain connections
    /// stay small).
    Tls(Box<TlsStream<TcpStream>>),
}

impl UpStream {
    /// The TCP socket under the stream.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            UpStream::Plain(s) => s,
            UpStream::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether it is a TLS stream.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, UpStream::Tls(_))
    }
}

/// The TLS stream an exchange borrows.
type Tls<'a> = &'a mut TlsStream<TcpStream>;

/// The read half of a TLS stream.
pub(crate) struct TlsRead<'a>(tokio::io::ReadHalf<Tls<'a>>);

/// The write half of a TLS stream.
pub(crate) struct TlsWrite<'a> {
    half: tokio::io::WriteHalf<Tls<'a>>,
}

/// The halves of `stream`, usable at the same time.
pub(crate) fn split_tls(stream: &mut TlsStream<TcpStream>) -> (TlsRead<'_>, TlsWrite<'_>) {
    let (rd, wr) = tokio::io::split(stream);
    (TlsRead(rd), TlsWrite { half: wr })
}

impl AsyncRead for TlsRead<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsWrite<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Records rustls holds from the last write leave first: what it
        // buffers stays bounded, and in order.
        ready!(Pin::new(&mut self.half).poll_flush(cx))?;
        Pin::new(&mut self.half).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.half).poll_flush(cx))?;
        Pin::new(&mut self.half).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.half.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.half).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.half).poll_shutdown(cx)
    }
}

/// Nothing is written without rustls: the tries answer `WouldBlock`, and
/// the write goes the waiting way (which flushes).
impl TryWrite for TlsWrite<'_> {
    fn try_write_vectored(&self, _: &[IoSlice<'_>]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn try_write_more(&self, _: &[IoSlice<'_>]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    // Never used upstream; a TLS stream ends with close_notify, which
    // needs rustls (`poll_shutdown`).
    fn shut_write(&self) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// A TLS half is never spliced: [`SpliceEnd::splices`] says no, and callers
/// copy instead.
macro_rules! not_spliced {
    ($half:ident) => {
        impl SpliceEnd for $half<'_> {
            fn fd(&self) -> RawFd {
                -1
            }

            fn try_io<R>(&self, _: Interest, _: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
                Err(io::ErrorKind::Unsupported.into())
            }

            async fn ready(&self, _: Interest) -> io::Result<()> {
                Err(io::ErrorKind::Unsupported.into())
            }

            fn splices(&self) -> bool {
                false
            }
        }
    };
}

not_spliced!(TlsRead);
not_spliced!(TlsWrite);
