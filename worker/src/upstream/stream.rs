//! An upstream connection's byte stream: plain TCP or TLS over it, and the
//! halves an exchange reads and writes at the same time.
//!
//! The plain case stays what it was (tokio's borrowed TCP halves: writes
//! tried at once, bodies spliced); over TLS the halves copy through rustls,
//! and splicing is off (the bytes on the socket are records, not the body).

use crate::io::splice::SpliceEnd;
use crate::io::write::TryWrite;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::tcp::{ReadHalf, WriteHalf};
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
    /// Its read and write halves, usable at the same time.
    pub(crate) fn split(&mut self) -> (UpRead<'_>, UpWrite<'_>) {
        match self {
            UpStream::Plain(s) => {
                let (rd, wr) = s.split();
                (UpRead::Plain(rd), UpWrite::Plain(wr))
            }
            UpStream::Tls(s) => {
                let (rd, wr) = tokio::io::split(&mut **s);
                (UpRead::Tls(rd), UpWrite::Tls(wr))
            }
        }
    }
}

/// The TLS stream an exchange borrows.
type Tls<'a> = &'a mut TlsStream<TcpStream>;

/// The read half of an upstream connection.
pub(crate) enum UpRead<'a> {
    /// Plain TCP.
    Plain(ReadHalf<'a>),
    /// TLS.
    Tls(tokio::io::ReadHalf<Tls<'a>>),
}

/// The write half of an upstream connection.
pub(crate) enum UpWrite<'a> {
    /// Plain TCP.
    Plain(WriteHalf<'a>),
    /// TLS.
    Tls(tokio::io::WriteHalf<Tls<'a>>),
}

impl AsyncRead for UpRead<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpRead::Plain(rd) => Pin::new(rd).poll_read(cx, buf),
            UpRead::Tls(rd) => Pin::new(rd).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpWrite<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpWrite::Plain(wr) => Pin::new(wr).poll_write(cx, buf),
            UpWrite::Tls(wr) => {
                // Records rustls holds from the last write leave first:
                // what it buffers stays bounded, and in order.
                ready!(Pin::new(&mut *wr).poll_flush(cx))?;
                Pin::new(wr).poll_write(cx, buf)
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpWrite::Plain(wr) => Pin::new(wr).poll_write_vectored(cx, bufs),
            UpWrite::Tls(wr) => {
                ready!(Pin::new(&mut *wr).poll_flush(cx))?;
                Pin::new(wr).poll_write_vectored(cx, bufs)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpWrite::Plain(wr) => wr.is_write_vectored(),
            UpWrite::Tls(wr) => wr.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpWrite::Plain(wr) => Pin::new(wr).poll_flush(cx),
            UpWrite::Tls(wr) => Pin::new(wr).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpWrite::Plain(wr) => Pin::new(wr).poll_shutdown(cx),
            UpWrite::Tls(wr) => Pin::new(wr).poll_shutdown(cx),
        }
    }
}

/// Over TLS nothing is written without rustls: the tries answer
/// `WouldBlock`, and the write goes the waiting way (which flushes).
impl TryWrite for UpWrite<'_> {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            UpWrite::Plain(wr) => TryWrite::try_write_vectored(wr, bufs),
            UpWrite::Tls(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn try_write_more(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            UpWrite::Plain(wr) => TryWrite::try_write_more(wr, bufs),
            UpWrite::Tls(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn shut_write(&self) -> io::Result<()> {
        match self {
            UpWrite::Plain(wr) => TryWrite::shut_write(wr),
            // Never used upstream; a TLS stream ends with close_notify,
            // which needs rustls (poll_shutdown).
            UpWrite::Tls(_) => Err(io::ErrorKind::Unsupported.into()),
        }
    }
}

/// The splice end of a half over TLS is never used: [`SpliceEnd::splices`]
/// says no, and callers copy instead.
macro_rules! splice_end {
    ($half:ident) => {
        impl SpliceEnd for $half<'_> {
            fn fd(&self) -> RawFd {
                match self {
                    $half::Plain(h) => SpliceEnd::fd(h),
                    $half::Tls(_) => -1,
                }
            }

            fn try_io<R>(
                &self,
                interest: Interest,
                op: impl FnOnce() -> io::Result<R>,
            ) -> io::Result<R> {
                match self {
                    $half::Plain(h) => SpliceEnd::try_io(h, interest, op),
                    $half::Tls(_) => Err(io::ErrorKind::Unsupported.into()),
                }
            }

            async fn ready(&self, interest: Interest) -> io::Result<()> {
                match self {
                    $half::Plain(h) => SpliceEnd::ready(h, interest).await,
                    $half::Tls(_) => Err(io::ErrorKind::Unsupported.into()),
                }
            }

            fn splices(&self) -> bool {
                matches!(self, $half::Plain(_))
            }
        }
    };
}

splice_end!(UpRead);
splice_end!(UpWrite);
