//! Large bodies moved from one socket to another with `splice(2)` through a
//! pipe (socket → pipe → socket), so that their bytes never cross into user
//! space: two copies fewer per byte than reading and writing them (HAProxy's
//! `option splice-request` / `splice-response`).
//!
//! A pipe serves one body at a time; the worker keeps a few free ones. A pipe
//! is given back only empty: one left holding bytes (a body cut short) is
//! closed, so that no stray byte ever reaches another connection.

use crate::io::client_socket::ClientSocket;
use crate::io::timed::timed;
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

/// Bodies with at least this many bytes still to come are spliced; smaller
/// ones are copied (setting up a splice costs more than copying them).
pub(crate) const MIN_SPLICE: u64 = 64 * 1024;
/// Size of a read of a response head when splicing is on: most heads fit,
/// and few body bytes come along (those are copied).
pub(crate) const HEAD_READ: usize = 16 * 1024;
/// The pipe capacity asked for: a whole socket buffer per call.
const PIPE_SIZE: usize = 1024 * 1024;
/// Most free pipes kept (two descriptors each).
const MAX_FREE: usize = 32;

/// How a body that did not fail went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Moved {
    /// All of it reached the destination.
    Whole,
    /// The kernel cannot splice these sockets (or no pipe could be made):
    /// nothing was moved, the body may be copied instead.
    Unsupported,
}

/// Why a spliced body did not arrive whole.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Reading the source failed.
    Read(io::Error),
    /// The source sent nothing for the read time limit.
    ReadTimeout,
    /// The source closed before the end of the body.
    Closed,
    /// Writing to the destination failed.
    Write(io::Error),
    /// The destination took nothing for the write time limit.
    WriteTimeout,
}

/// Time limits of one body: between two reads, and between two writes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Longest pause between two reads of the source.
    pub(crate) read: Duration,
    /// Longest pause between two writes to the destination.
    pub(crate) write: Duration,
}

/// A socket a body is spliced from or to, with its owner's way of waiting
/// for readiness.
pub(crate) trait SpliceEnd {
    /// The socket's descriptor.
    fn fd(&self) -> RawFd;

    /// Runs the non-blocking `op` once, as tokio's `TcpStream::try_io`.
    fn try_io<R>(&self, interest: Interest, op: impl FnOnce() -> io::Result<R>) -> io::Result<R>;

    /// Waits until the socket is ready for `interest`.
    async fn ready(&self, interest: Interest) -> io::Result<()>;

    /// Whether the bytes on the socket are the message's own, so that they
    /// may be spliced (not so under TLS).
    fn splices(&self) -> bool {
        true
    }
}

impl SpliceEnd for ClientSocket {
    fn fd(&self) -> RawFd {
        self.as_raw_fd()
    }

    fn try_io<R>(&self, interest: Interest, op: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        ClientSocket::try_io(self, interest, op)
    }

    async fn ready(&self, interest: Interest) -> io::Result<()> {
        ClientSocket::ready(self, interest).await
    }
}

/// A split half of an upstream connection (tokio's `TcpStream`).
macro_rules! splice_end_via_stream {
    ($half:ty) => {
        impl SpliceEnd for $half {
            fn fd(&self) -> RawFd {
                self.as_ref().as_raw_fd()
            }

            fn try_io<R>(
                &self,
                interest: Interest,
                op: impl FnOnce() -> io::Result<R>,
            ) -> io::Result<R> {
                TcpStream::try_io(self.as_ref(), interest, op)
            }

            async fn ready(&self, interest: Interest) -> io::Result<()> {
                TcpStream::ready(self.as_ref(), interest).await.map(drop)
            }
        }
    };
}

splice_end_via_stream!(ReadHalf<'_>);
splice_end_via_stream!(WriteHalf<'_>);

impl<T: SpliceEnd + ?Sized> SpliceEnd for &T {
    fn fd(&self) -> RawFd {
        (**self).fd()
    }

    fn try_io<R>(&self, interest: Interest, op: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        (**self).try_io(interest, op)
    }

    async fn ready(&self, interest: Interest) -> io::Result<()> {
        (**self).ready(interest).await
    }

    fn splices(&self) -> bool {
        (**self).splices()
    }
}

/// A pipe and its capacity.
struct Pipe {
    rd: OwnedFd,
    wr: OwnedFd,
    size: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds: [libc::c_int; 2] = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by
        // nothing else.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A larger pipe moves more per call; where it is refused (above
        // /proc/sys/fs/pipe-max-size, or the user's pipe quota) the default
        // size serves.
        // SAFETY: F_SETPIPE_SZ and F_GETPIPE_SZ on an open pipe take an int
        // argument (ignored by the latter) and touch no memory of ours.
        let size = unsafe {
            match libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int) {
                n if n > 0 => n,
                _ => libc::fcntl(wr.as_raw_fd(), libc::F_GETPIPE_SZ, 0),
            }
        };
        if size <= 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Pipe {
            rd,
            wr,
            size: size as usize,
        })
    }
}

/// The free pipes of one worker process.
#[derive(Default)]
pub(crate) struct Pipes {
    free: RefCell<Vec<Pipe>>,
}

impl Pipes {
    fn lease(&self) -> io::Result<Lease<'_>> {
        let pipe = match self.free.borrow_mut().pop() {
            Some(pipe) => pipe,
            None => Pipe::new()?,
        };
        Ok(Lease {
            pool: self,
            pipe: Some(pipe),
            held: 0,
        })
    }

    #[cfg(test)]
    fn free_count(&self) -> usize {
        self.free.borrow().len()
    }
}

/// A pipe taken for one body; given back on drop if it is empty.
struct Lease<'a> {
    pool: &'a Pipes,
    pipe: Option<Pipe>,
    /// Bytes in the pipe.
    held: usize,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut free = self.pool.free.borrow_mut();
        if let Some(pipe) = self.pipe.take() {
            if self.held == 0 && free.len() < MAX_FREE {
                free.push(pipe);
            }
        }
    }
}

/// Moves exactly `len` bytes from `src` to `dst` (never more: what follows
/// on `src` belongs to the next message). `on_read` is told of the bytes
/// taken from `src` as they come, also when the move fails or is dropped
/// part way.
pub(crate) async fn transfer(
    pipes: &Pipes,
    src: &impl SpliceEnd,
    dst: &impl SpliceEnd,
    len: u64,
    mut on_read: impl FnMut(u64),
    limits: Limits,
) -> Result<Moved, Failure> {
    if !src.splices() || !dst.splices() {
        return Ok(Moved::Unsupported);
    }
    let Ok(mut lease) = pipes.lease() else {
        return Ok(Moved::Unsupported);
    };
    let Some(pipe) = &lease.pipe else {
        return Ok(Moved::Unsupported);
    };
    let (pipe_rd, pipe_wr, size) = (pipe.rd.as_raw_fd(), pipe.wr.as_raw_fd(), pipe.size);
    let (src_fd, dst_fd) = (src.fd(), dst.fd());
    let mut left = len;
    while left > 0 {
        // The pipe is empty here, so "would block" can only mean that the
        // source has nothing: the socket's readiness is cleared rightly.
        let want = left.min(size as u64) as usize;
        let n = loop {
            match src.try_io(Interest::READABLE, || splice(src_fd, pipe_wr, want)) {
                Ok(0) => return Err(Failure::Closed),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match timed(limits.read, src.ready(Interest::READABLE)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(Failure::Read(e)),
                        Err(_) => return Err(Failure::ReadTimeout),
                    }
                }
                Err(e) if left == len && unsupported(&e) => return Ok(Moved::Unsupported),
                Err(e) => return Err(Failure::Read(e)),
            }
        };
        lease.held = n;
        left -= n as u64;
        on_read(n as u64);
        // Drain the pipe whole before filling it again.
        while lease.held > 0 {
            match dst.try_io(Interest::WRITABLE, || splice(pipe_rd, dst_fd, lease.held)) {
                Ok(0) => return Err(Failure::Write(io::ErrorKind::WriteZero.into())),
                Ok(n) => lease.held -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match timed(limits.write, dst.ready(Interest::WRITABLE)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(Failure::Write(e)),
                        Err(_) => return Err(Failure::WriteTimeout),
                    }
                }
                Err(e) => return Err(Failure::Write(e)),
            }
        }
    }
    Ok(Moved::Whole)
}

/// Whether `e` says the kernel cannot splice between these descriptors.
fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS))
}

/// One non-blocking `splice(2)` of at most `len` bytes from `from` to `to`.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call (the
    // caller borrows their owners), and null offsets make splice use and
    // advance the descriptors' own positions: no memory of ours is touched.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const LIMITS: Limits = Limits {
        read: Duration::from_secs(10),
        write: Duration::from_secs(10),
    };

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    /// A client connection as a worker holds it, and the client's end,
    /// with a receive buffer of `rcvbuf` bytes if given (set before it
    /// connects, so that the window it offers stays that small).
    fn client_pair(rcvbuf: Option<usize>) -> (ClientSocket, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        if let Some(size) = rcvbuf {
            client.set_recv_buffer_size(size).unwrap();
        }
        client
            .connect(&listener.local_addr().unwrap().into())
            .unwrap();
        let client: std::net::TcpStream = client.into();
        client.set_nonblocking(true).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        (
            ClientSocket::new(accepted),
            TcpStream::from_std(client).unwrap(),
        )
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn moves_exactly_the_length_and_gives_the_pipe_back() {
        let pipes = Pipes::default();
        let (mut origin, mut src) = pair().await;
        // A client that takes little at a time: the socket must wait.
        let (dst, mut client) = client_pair(Some(4096));
        dst.sock_ref().set_send_buffer_size(4096).unwrap();
        let body = pattern(3 * 1024 * 1024 + 17);
        let mut sent = body.clone();
        sent.extend_from_slice(b"NEXT");
        let writer = tokio::spawn(async move {
            origin.write_all(&sent).await.unwrap();
            origin
        });
        let reader = tokio::spawn(async move {
            let mut got = vec![0; 3 * 1024 * 1024 + 17];
            client.read_exact(&mut got).await.unwrap();
            got
        });
        let mut read = 0;
        let len = body.len() as u64;
        // From an upstream's read half to a client socket, as a response.
        let (src_rd, _) = src.split();
        let moved = transfer(&pipes, &src_rd, &dst, len, |n| read += n, LIMITS).await;
        assert_eq!(moved.unwrap(), Moved::Whole);
        assert_eq!(read, len);
        assert!(dst.is_registered(), "the client socket had to wait");
        assert!(reader.await.unwrap() == body, "the body differs");
        let _origin = writer.await.unwrap();
        // What follows the body is still on the source.
        let mut next = [0; 4];
        src.read_exact(&mut next).await.unwrap();
        assert_eq!(&next, b"NEXT");
        assert_eq!(pipes.free_count(), 1, "the empty pipe is kept");
    }

    #[tokio::test]
    async fn a_source_closed_early_fails_after_passing_on_what_came() {
        let pipes = Pipes::default();
        // From a client socket to an upstream's write half, as a request body.
        let (src, mut origin) = client_pair(None);
        let (mut dst, _upstream) = pair().await;
        origin.write_all(&pattern(100_000)).await.unwrap();
        drop(origin);
        let (_, dst_wr) = dst.split();
        let mut read = 0;
        let result = transfer(&pipes, &src, &dst_wr, 1_000_000, |n| read += n, LIMITS).await;
        assert!(matches!(result, Err(Failure::Closed)), "{result:?}");
        assert_eq!(read, 100_000);
        assert_eq!(pipes.free_count(), 1, "the pipe was drained, so it is kept");
    }

    #[tokio::test]
    async fn a_pipe_left_holding_bytes_is_closed() {
        let pipes = Pipes::default();
        let mut lease = pipes.lease().unwrap();
        lease.held = 10;
        drop(lease);
        assert_eq!(pipes.free_count(), 0);
        drop(pipes.lease().unwrap());
        assert_eq!(pipes.free_count(), 1);
    }
}
