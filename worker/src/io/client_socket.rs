//! A client connection's socket, registered with the event loop only once
//! an operation on it has to wait.
//!
//! tokio's `TcpStream` registers its socket with epoll when it is made and
//! deregisters it when dropped: two `epoll_ctl` calls per connection, which
//! `perf` put at 6 % of a worker's cycles with a new connection per request.
//! Most such connections never wait on their own socket: with
//! `TCP_DEFER_ACCEPT` the request is there at accept, and the response fits
//! the socket's send buffer. So every read and write here is first tried on
//! the socket directly, and the socket is registered only when one would
//! block, or when the connection waits idle for its next request (`ready`),
//! where a try would find nothing (HAProxy, too, touches epoll only once a
//! connection must wait). From then on it behaves as tokio's own sockets do:
//! operations wait for readiness.
//!
//! Registering after a try found the socket not ready loses no wake-up:
//! epoll reports a socket that became ready in between as soon as it is
//! added.

use socket2::SockRef;
use std::cell::OnceCell;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A non-blocking client socket and, once it had to wait, its registration
/// with the worker's event loop.
pub(crate) struct ClientSocket {
    // Declared before `socket`, so dropped first: the registration is
    // removed while the descriptor is still open.
    registered: OnceCell<AsyncFd<RawFd>>,
    socket: std::net::TcpStream,
}

/// The event loop could not take a socket that has to wait (`epoll_ctl`
/// failed: out of memory, or `fs.epoll.max_user_watches` reached).
#[derive(Debug, thiserror::Error)]
#[error("cannot watch the connection: {0}")]
struct RegisterError(io::Error);

/// Whether `e` says the event loop could not take the socket.
pub(crate) fn is_register_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<RegisterError>())
}

impl ClientSocket {
    /// Wraps an accepted socket, which must be non-blocking.
    pub(crate) fn new(socket: std::net::TcpStream) -> Self {
        ClientSocket {
            registered: OnceCell::new(),
            socket,
        }
    }

    /// The socket, for socket options.
    pub(crate) fn sock_ref(&self) -> SockRef<'_> {
        SockRef::from(&self.socket)
    }

    /// Whether the socket has been registered with the event loop.
    #[cfg(test)]
    pub(crate) fn is_registered(&self) -> bool {
        self.registered.get().is_some()
    }

    /// The socket's registration, made on first use.
    fn registration(&self) -> io::Result<&AsyncFd<RawFd>> {
        if let Some(fd) = self.registered.get() {
            return Ok(fd);
        }
        // SAFETY: the descriptor stays open as long as the registration:
        // both belong to `self`, and the registration is dropped first.
        let fd = unsafe { AsyncFd::register(self.socket.as_raw_fd()) }.map_err(|e| {
            let e = e.into_parts().1;
            io::Error::new(e.kind(), RegisterError(e))
        })?;
        Ok(self.registered.get_or_init(|| fd))
    }

    /// Runs `op`, a non-blocking transfer of up to `want` bytes of kind
    /// `interest`, until it does not report `WouldBlock`: at once while
    /// unregistered, then each time the event loop reports the socket ready.
    fn poll_io(
        &self,
        cx: &mut Context<'_>,
        interest: Interest,
        want: usize,
        mut op: impl FnMut() -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        if self.registered.get().is_none() {
            // Budgeted as tokio's own sockets are, so that a connection
            // whose socket never blocks still lets the others run.
            let coop = ready!(tokio::task::coop::poll_proceed(cx));
            match op() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => {
                    coop.made_progress();
                    return Poll::Ready(done);
                }
            }
        }
        let fd = self.registration()?;
        loop {
            let mut guard = if interest.is_readable() {
                ready!(fd.poll_read_ready(cx))?
            } else {
                ready!(fd.poll_write_ready(cx))?
            };
            // `WouldBlock` clears the readiness and waits again.
            if let Ok(done) = guard.try_io(|_| op()) {
                // A short transfer emptied the receive queue or filled the
                // send buffer: as tokio does, the next one waits for epoll's
                // next edge instead of trying in vain (one system call per
                // request on a keep-alive connection).
                if matches!(done, Ok(n) if n > 0 && n < want) {
                    guard.clear_ready();
                }
                return Poll::Ready(done);
            }
        }
    }

    /// Waits until the socket is ready for `interest` (registering it),
    /// leaving the readiness set for the operation that follows.
    pub(crate) async fn ready(&self, interest: Interest) -> io::Result<()> {
        let mut guard = self.registration()?.ready(interest).await?;
        guard.retain_ready();
        Ok(())
    }

    /// The socket alone, its registration with the event loop removed
    /// (a parked connection waits elsewhere: see `downstream::park`).
    pub(crate) fn into_std(self) -> std::net::TcpStream {
        let ClientSocket { registered, socket } = self;
        drop(registered);
        socket
    }

    /// Removes the socket's registration with the event loop, if it has
    /// one, while the connection waits elsewhere (see `downstream::park`);
    /// the next operation that has to wait registers it again.
    pub(crate) fn unregister(&mut self) {
        drop(self.registered.take());
    }

    /// Runs `op`, a non-blocking operation of kind `interest`, once: on the
    /// socket directly while unregistered, else only if the event loop has
    /// it ready (as tokio's `try_io`).
    pub(crate) fn try_io<R>(
        &self,
        interest: Interest,
        op: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        match self.registered.get() {
            Some(fd) => fd.try_io(interest, |_| op()),
            None => op(),
        }
    }

    /// Whether the client has sent bytes not read yet: asks the socket
    /// itself (`MSG_PEEK`), registered or not, since the event loop may not
    /// have seen them yet.
    pub(crate) fn has_unread(&self) -> bool {
        let mut probe = [MaybeUninit::uninit(); 1];
        matches!(self.sock_ref().peek(&mut probe), Ok(n) if n > 0)
    }

    /// Copies what the client has sent into `buf` without taking it
    /// (`MSG_PEEK`) once more than `seen` bytes are there, or `buf` is full
    /// (0: the client closed). Until then it waits for the client's next
    /// bytes: epoll reports only new arrivals, so no wake-up is spent on the
    /// `seen` bytes still queued.
    pub(crate) async fn peek_beyond(&self, buf: &mut [u8], seen: usize) -> io::Result<usize> {
        let full = buf.len();
        let enough = |n: usize| n > seen || n == 0 || n == full;
        if self.registered.get().is_none() {
            match self.socket.peek(buf) {
                Ok(n) if enough(n) => return Ok(n),
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
        }
        let fd = self.registration()?;
        loop {
            let mut guard = fd.readable().await?;
            match self.socket.peek(buf) {
                Ok(n) if enough(n) => return Ok(n),
                // The client shut its side with the bytes seen: no more come.
                Ok(_) if guard.ready().is_read_closed() => {
                    return Err(io::ErrorKind::UnexpectedEof.into())
                }
                // Nothing new: the readiness is cleared unless an event came
                // since it was reported (tokio compares the ticks).
                Ok(_) => guard.clear_ready(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends `bufs` without waiting, with `flags` besides `MSG_NOSIGNAL` (a
    /// reset peer then gives EPIPE, never SIGPIPE).
    pub(crate) fn send_vectored(
        &self,
        bufs: &[IoSlice<'_>],
        flags: libc::c_int,
    ) -> io::Result<usize> {
        self.sock_ref()
            .send_vectored_with_flags(bufs, flags | libc::MSG_NOSIGNAL)
    }

    /// Sends `bufs` as [`ClientSocket::send_vectored`] does, waiting (as
    /// `poll_write_vectored`) while the socket is full.
    pub(crate) fn poll_send_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
        flags: libc::c_int,
    ) -> Poll<io::Result<usize>> {
        let want = bufs.iter().map(|b| b.len()).sum();
        self.poll_io(cx, Interest::WRITABLE, want, || {
            self.send_vectored(bufs, flags)
        })
    }

    /// Sends the FIN (`shutdown(SHUT_WR)`).
    pub(crate) fn shut_write(&self) -> io::Result<()> {
        match self.socket.shutdown(Shutdown::Write) {
            // The peer reset the connection after the bytes were written:
            // they count as sent (tokio's own shutdown reads it so too).
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            done => done,
        }
    }
}

impl AsRawFd for ClientSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsFd for ClientSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

// An owned socket reads and writes as a shared one does: what a TLS stream
// wraps (see `client_stream`).
impl AsyncRead for ClientSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shut_write())
    }
}

/// One `recv` into the unfilled part of `buf`; returns the bytes read.
fn recv(socket: &std::net::TcpStream, buf: &mut ReadBuf<'_>) -> io::Result<usize> {
    // SAFETY: recv only writes into the slice, never de-initialises it.
    let n = SockRef::from(socket).recv(unsafe { buf.unfilled_mut() })?;
    // SAFETY: recv initialised the first n bytes of the unfilled part.
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    Ok(n)
}

// Reading and writing through a shared reference: a connection reads its
// client's body and writes to it from one task at once (as tokio's
// `TcpStream::split` halves do).
impl AsyncRead for &ClientSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let socket: &ClientSocket = *self;
        let want = buf.remaining();
        socket
            .poll_io(cx, Interest::READABLE, want, || recv(&socket.socket, buf))
            .map_ok(drop)
    }
}

impl AsyncWrite for &ClientSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let socket: &ClientSocket = *self;
        socket.poll_io(cx, Interest::WRITABLE, buf.len(), || {
            socket.sock_ref().send_with_flags(buf, libc::MSG_NOSIGNAL)
        })
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_send_vectored(cx, bufs, 0)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shut_write())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::{poll_fn, Future};
    use std::io::{Read, Write};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::timeout;

    /// Bound on every wait here: a bug fails a test instead of hanging it.
    const LIMIT: Duration = Duration::from_secs(10);

    /// A connected pair: a blocking std client and the accepted side as a
    /// `ClientSocket`.
    fn pair() -> (std::net::TcpStream, ClientSocket) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_read_timeout(Some(LIMIT)).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (client, ClientSocket::new(server))
    }

    /// Waits until bytes are there to read, without the event loop:
    /// `poll(2)` on the descriptor.
    fn wait_readable(socket: &ClientSocket) {
        let mut fds = libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut fds, 1, LIMIT.as_millis() as libc::c_int) };
        assert_eq!(n, 1, "no bytes within {LIMIT:?}");
    }

    /// Polls `f` once: whether it finished at once.
    async fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx))).await
    }

    #[tokio::test]
    async fn bytes_already_there_are_read_and_answered_without_registering() {
        let (mut client, socket) = pair();
        client.write_all(b"ping").unwrap();
        wait_readable(&socket);
        let mut got = [0u8; 4];
        (&socket).read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        (&socket).write_all(b"pong").await.unwrap();
        assert!(!socket.is_registered());
        let mut answer = [0u8; 4];
        client.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"pong");
    }

    #[tokio::test]
    async fn a_read_that_would_block_registers_and_wakes_when_bytes_come() {
        let (mut client, socket) = pair();
        let mut got = [0u8; 4];
        let mut reader = &socket;
        let mut read = std::pin::pin!(reader.read_exact(&mut got));
        assert!(poll_once(&mut read).await.is_pending());
        assert!(socket.is_registered());
        client.write_all(b"late").unwrap();
        timeout(LIMIT, read).await.expect("woken").unwrap();
        assert_eq!(&got, b"late");
    }

    /// A short read clears the readiness (the next read waits for epoll's
    /// next edge): the end of the stream must still wake that read.
    #[tokio::test]
    async fn the_end_after_a_short_read_wakes_the_next_read() {
        let (mut client, socket) = pair();
        let mut buf = [0u8; 8];
        let mut reader = &socket;
        {
            let mut read = std::pin::pin!(reader.read(&mut buf));
            assert!(poll_once(&mut read).await.is_pending());
            client.write_all(b"abc").unwrap();
            let n = timeout(LIMIT, read).await.expect("woken").unwrap();
            assert_eq!(n, 3);
        }
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let end = timeout(LIMIT, reader.read(&mut buf)).await.expect("woken");
        assert_eq!(end.unwrap(), 0);
    }

    /// One handle waits to read while the other waits to write: each is
    /// woken by its own readiness.
    #[tokio::test]
    async fn a_waiting_read_and_a_waiting_write_both_finish() {
        let (client, socket) = pair();
        socket.sock_ref().set_send_buffer_size(4096).unwrap();
        let body = vec![5u8; 2 << 20];
        let len = body.len();
        // The peer reads the whole body, then answers.
        let peer = std::thread::spawn(move || {
            let mut all = vec![0u8; len];
            (&client).read_exact(&mut all).unwrap();
            (&client).write_all(b"done").unwrap();
            all
        });
        let (mut rd, mut wr) = (&socket, &socket);
        let mut answer = [0u8; 4];
        let both = async { tokio::join!(rd.read_exact(&mut answer), wr.write_all(&body)) };
        let (read, written) = timeout(LIMIT, both).await.expect("both woken");
        read.unwrap();
        written.unwrap();
        assert!(socket.is_registered());
        assert_eq!(&answer, b"done");
        assert!(peer.join().unwrap() == body);
    }

    #[tokio::test]
    async fn has_unread_sees_bytes_the_event_loop_has_not_reported() {
        let (mut client, socket) = pair();
        assert!(!socket.has_unread());
        // Registered, with a read that found nothing: the readiness is clear.
        let mut buf = [0u8; 1];
        let mut reader = &socket;
        assert!(poll_once(&mut std::pin::pin!(reader.read(&mut buf)))
            .await
            .is_pending());
        assert!(socket.is_registered());
        client.write_all(b"x").unwrap();
        wait_readable(&socket);
        // No await since: the event loop has not run to see the byte.
        assert!(socket.has_unread());
        // Peeked, not taken.
        let got = timeout(LIMIT, reader.read(&mut buf)).await.expect("woken");
        assert_eq!((got.unwrap(), buf), (1, *b"x"));
        assert!(!socket.has_unread());
    }

    /// Reads that never block still spend the task's budget, as tokio's
    /// sockets do: the connection yields to the others now and then.
    #[tokio::test]
    async fn reads_that_never_block_spend_the_task_budget() {
        let (mut client, socket) = pair();
        client.write_all(&[1u8; 300]).unwrap();
        wait_readable(&socket);
        let mut reader = &socket;
        let mut byte = [0u8; 1];
        let mut reads = 0;
        while reads < 300 {
            if poll_once(&mut std::pin::pin!(reader.read(&mut byte)))
                .await
                .is_pending()
            {
                break;
            }
            reads += 1;
        }
        assert!(reads > 0 && reads < 300, "{reads} reads without a yield");
        assert!(!socket.is_registered(), "the yield was the budget's");
    }
}
