//! Writes that try the socket at once and wait only for what it did not
//! take: a head and the body bytes at hand leave in one system call, and a
//! connection's last bytes share their segment with the FIN.

use super::client_socket::ClientSocket;
use super::client_stream::ClientStream;
use super::timed::{timed, TimedOut};
use socket2::SockRef;
use std::io::{self, IoSlice};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A writer that can also write without waiting (a client socket, and
/// tokio's `TcpStream` and its write half for upstream connections).
pub(crate) trait TryWrite: AsyncWrite + Unpin {
    /// Writes what the socket takes now (`WouldBlock`: nothing).
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// As [`TryWrite::try_write_vectored`], for bytes the FIN follows at
    /// once: the kernel holds back a partial last segment for it
    /// (`MSG_MORE`).
    fn try_write_more(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Sends the FIN (`shutdown(SHUT_WR)`), with whatever was held back.
    fn shut_write(&self) -> io::Result<()>;

    /// As [`TryWrite::shut_write`], for a writer that may hold back more
    /// than the kernel does (TLS records): waits at most `limit` for them.
    async fn end_within(&mut self, _limit: Duration) -> Result<io::Result<()>, TimedOut> {
        Ok(self.shut_write())
    }
}

/// The tries go to the socket directly: tokio's own would answer
/// `WouldBlock` without trying until its event loop has seen the socket
/// writable. A real `WouldBlock` then sends the write the waiting way,
/// through tokio.
impl TryWrite for TcpStream {
    // MSG_NOSIGNAL: a reset peer gives EPIPE, never SIGPIPE (std ignores
    // SIGPIPE in the process too; this does not rely on it).
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        SockRef::from(self).send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL)
    }

    fn try_write_more(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        SockRef::from(self).send_vectored_with_flags(bufs, libc::MSG_MORE | libc::MSG_NOSIGNAL)
    }

    fn shut_write(&self) -> io::Result<()> {
        match SockRef::from(self).shutdown(std::net::Shutdown::Write) {
            // The peer reset the connection after the bytes were written:
            // they count as sent (tokio's own shutdown reads it so too).
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            done => done,
        }
    }
}

impl TryWrite for &ClientStream {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.send_vectored(bufs, 0)
    }

    fn try_write_more(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.send_more(bufs)
    }

    fn shut_write(&self) -> io::Result<()> {
        ClientStream::shut_write(self)
    }

    async fn end_within(&mut self, limit: Duration) -> Result<io::Result<()>, TimedOut> {
        ClientStream::end_within(self, limit).await
    }
}

impl TryWrite for &ClientSocket {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.send_vectored(bufs, 0)
    }

    fn try_write_more(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.send_vectored(bufs, libc::MSG_MORE)
    }

    fn shut_write(&self) -> io::Result<()> {
        ClientSocket::shut_write(self)
    }
}

impl TryWrite for tokio::net::tcp::WriteHalf<'_> {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        TryWrite::try_write_vectored(self.as_ref(), bufs)
    }

    fn try_write_more(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        TryWrite::try_write_more(self.as_ref(), bufs)
    }

    fn shut_write(&self) -> io::Result<()> {
        TryWrite::shut_write(self.as_ref())
    }
}

/// Writes `head` then `body` (as [`write_two`]) within `limit`. Most writes
/// leave whole in one system call: that one is tried at once, with no future
/// or timer set up; what the socket did not take goes the waiting way.
pub(crate) async fn write_two_within<W: TryWrite>(
    w: &mut W,
    head: &[u8],
    body: &[u8],
    limit: Duration,
) -> Result<io::Result<()>, TimedOut> {
    write_within(w, head, body, limit, W::try_write_vectored).await
}

/// As [`write_two_within`], for the last bytes a connection sends, then
/// sends the FIN at once. When the first write takes them all, the FIN joins
/// their last segment: one segment less, and the client ACKs both at once.
/// Nothing stays held back for a close that could find unread input and
/// reset the connection instead.
pub(crate) async fn write_last_within<W: TryWrite>(
    w: &mut W,
    head: &[u8],
    body: &[u8],
    limit: Duration,
) -> Result<io::Result<()>, TimedOut> {
    match write_within(w, head, body, limit, W::try_write_more).await {
        Ok(Ok(())) => w.end_within(limit).await,
        failed => failed,
    }
}

/// Writes `head` then `body` within `limit`, trying `first` at once.
async fn write_within<W: TryWrite>(
    w: &mut W,
    head: &[u8],
    body: &[u8],
    limit: Duration,
    first: fn(&W, &[IoSlice<'_>]) -> io::Result<usize>,
) -> Result<io::Result<()>, TimedOut> {
    if head.is_empty() && body.is_empty() {
        return Ok(Ok(()));
    }
    let n = match first(w, &[IoSlice::new(head), IoSlice::new(body)]) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Ok(Err(e)),
    };
    let from_head = n.min(head.len());
    let (head, body) = (&head[from_head..], &body[n - from_head..]);
    if head.is_empty() && body.is_empty() {
        return Ok(Ok(()));
    }
    write_two(w, head, body, limit).await
}

/// Writes `head` then `body` with vectored writes, so a head and the body
/// bytes already at hand usually leave in one system call; each write may
/// wait at most `limit` (the limit counts between two writes, as nginx's
/// `send_timeout`, not for all of what is left).
pub(crate) async fn write_two<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut head: &[u8],
    mut body: &[u8],
    limit: Duration,
) -> Result<io::Result<()>, TimedOut> {
    while !head.is_empty() || !body.is_empty() {
        let write = async {
            if head.is_empty() {
                w.write(body).await
            } else if body.is_empty() {
                w.write(head).await
            } else {
                w.write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
                    .await
            }
        };
        let n = match timed(limit, write).await? {
            Ok(0) => return Ok(Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        let from_head = n.min(head.len());
        head = &head[from_head..];
        body = &body[n - from_head..];
    }
    // A TLS stream may hold records its socket did not take yet (sockets
    // hold nothing: their flush is a no-op).
    timed(limit, w.flush()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::time::{sleep, Instant, Sleep};

    /// A writer that accepts at most `chunk` bytes per call.
    struct Trickle {
        chunk: usize,
        written: Vec<u8>,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.chunk);
            self.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A writer that takes at most `chunk` bytes per call, and nothing
    /// without waiting once `refuse_now` is set.
    struct Sink {
        chunk: usize,
        refuse_now: bool,
        written: RefCell<Vec<u8>>,
        /// Set by `shut_write`.
        shut: std::cell::Cell<bool>,
    }

    impl Sink {
        fn take(&self, bufs: &[IoSlice<'_>]) -> usize {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = all.len().min(self.chunk);
            self.written.borrow_mut().extend_from_slice(&all[..n]);
            n
        }
    }

    impl AsyncWrite for Sink {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(self.take(&[IoSlice::new(buf)])))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl TryWrite for Sink {
        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.refuse_now {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(self.take(bufs))
        }
        fn try_write_more(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.try_write_vectored(bufs)
        }
        fn shut_write(&self) -> io::Result<()> {
            self.shut.set(true);
            Ok(())
        }
    }

    #[tokio::test]
    async fn writes_tried_at_once_finish_the_waiting_way() {
        let limit = Duration::from_secs(10);
        for last in [false, true] {
            for (chunk, refuse_now) in
                [(100, false), (3, false), (6, false), (100, true), (2, true)]
            {
                let mut w = Sink {
                    chunk,
                    refuse_now,
                    written: RefCell::default(),
                    shut: Default::default(),
                };
                let done = if last {
                    write_last_within(&mut w, b"head", b"body!", limit).await
                } else {
                    write_two_within(&mut w, b"head", b"body!", limit).await
                };
                assert!(matches!(done, Ok(Ok(()))));
                assert_eq!(*w.written.borrow(), b"headbody!");
                assert_eq!(w.shut.get(), last, "the FIN follows the last bytes only");
            }
        }
    }

    /// Segments `socket` received so far: `tcpi_segs_in` of the kernel's
    /// `struct tcp_info` (linux/tcp.h, Linux 4.2+), past the end of the
    /// older layout the libc crate describes.
    fn segments_in(socket: &std::net::TcpStream) -> u32 {
        use std::os::fd::AsRawFd;
        const SEGS_IN: usize = 140;
        let mut info = [0u8; 256];
        let mut len = info.len() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `info` and the
        // new length into `len`, both valid for writes.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "TCP_INFO: {}", io::Error::last_os_error());
        assert!(len as usize >= SEGS_IN + 4, "TCP_INFO too short: {len}");
        u32::from_ne_bytes(info[SEGS_IN..SEGS_IN + 4].try_into().expect("4 bytes"))
    }

    /// A connected pair as the worker gets it: accepted by a plain
    /// listener, non-blocking, not yet known to the event loop.
    fn accepted_pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (client, server)
    }

    /// Everything the peer receives until the end.
    fn read_all(mut client: &std::net::TcpStream) -> Vec<u8> {
        use std::io::Read;
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut all = Vec::new();
        client.read_to_end(&mut all).unwrap();
        all
    }

    /// The last bytes of a connection and its FIN leave as one segment,
    /// from a client socket and from an upstream connection's write half:
    /// the peer receives the SYN-ACK, then that segment, and nothing else
    /// (three segments if the FIN left alone).
    #[tokio::test]
    async fn the_last_bytes_and_the_fin_leave_as_one_segment() {
        let limit = Duration::from_secs(10);
        let (client, server) = accepted_pair();
        let server = ClientSocket::new(server);
        let done = write_last_within(&mut &server, b"head", b"body!", limit).await;
        assert!(matches!(done, Ok(Ok(()))));
        assert_eq!(read_all(&client), b"headbody!");
        assert_eq!(
            segments_in(&client),
            2,
            "client socket: SYN-ACK, then data and FIN"
        );

        // Wrapped with `from_std`, tokio has not yet seen it writable (its
        // own accept or connect would assume it is).
        let (client, server) = accepted_pair();
        let mut server = TcpStream::from_std(server).unwrap();
        let (_, mut w) = server.split();
        let done = write_last_within(&mut w, b"head", b"body!", limit).await;
        assert!(matches!(done, Ok(Ok(()))));
        assert_eq!(read_all(&client), b"headbody!");
        assert_eq!(segments_in(&client), 2, "half: SYN-ACK, then data and FIN");
    }

    /// A last write larger than the socket takes goes on the waiting way
    /// (the socket then registered with the event loop) once the direct try
    /// is refused, and ends with the FIN.
    #[tokio::test]
    async fn a_last_write_the_socket_cannot_take_at_once_completes() {
        let (client, server) = accepted_pair();
        let server = ClientSocket::new(server);
        server.sock_ref().set_send_buffer_size(4096).unwrap();
        let body: Vec<u8> = (0..4 << 20).map(|i: u32| i as u8).collect();
        // The peer starts reading only once the writer has had to wait.
        let (go, wait) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            wait.recv().unwrap();
            read_all(&client)
        });
        let mut writer = &server;
        let write = write_last_within(&mut writer, b"head", &body, Duration::from_secs(10));
        let waited = async {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !server.is_registered() && std::time::Instant::now() < deadline {
                tokio::task::yield_now().await;
            }
            // Whatever happened, so that the reader never hangs.
            let _ = go.send(());
        };
        let (done, ()) = tokio::join!(write, waited);
        assert!(matches!(done, Ok(Ok(()))));
        assert!(
            server.is_registered(),
            "the rest was written the waiting way"
        );
        let all = reader.join().unwrap();
        assert_eq!(all.len(), 4 + body.len());
        assert!(all.starts_with(b"head") && all[4..] == body[..]);
    }

    #[tokio::test]
    async fn partial_writes_keep_order() {
        for chunk in 1..8 {
            let mut w = Trickle {
                chunk,
                written: Vec::new(),
            };
            write_two(&mut w, b"head", b"body!", Duration::from_secs(10))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(w.written, b"headbody!");
        }
    }

    /// A client that keeps reading, slowly: it takes one byte every `gap`,
    /// nothing at once.
    struct SlowReader {
        gap: Duration,
        next: Pin<Box<Sleep>>,
        written: Vec<u8>,
    }

    impl AsyncWrite for SlowReader {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            std::task::ready!(self.next.as_mut().poll(cx));
            let gap = self.gap;
            self.next.as_mut().reset(Instant::now() + gap);
            self.written.push(buf[0]);
            Poll::Ready(Ok(1))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl TryWrite for SlowReader {
        fn try_write_vectored(&self, _: &[IoSlice<'_>]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
        fn try_write_more(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.try_write_vectored(bufs)
        }
        fn shut_write(&self) -> io::Result<()> {
            Ok(())
        }
    }

    /// `send_timeout` is documented as the limit "between two writes"
    /// (nginx's): a client that takes a byte every 300 ms never stalls for
    /// the 1 s limit, so the write must complete.
    #[tokio::test]
    async fn send_timeout_counts_between_two_writes() {
        let gap = Duration::from_millis(300);
        let mut w = SlowReader {
            gap,
            next: Box::pin(sleep(gap)),
            written: Vec::new(),
        };
        let started = Instant::now();
        let done = write_two_within(&mut w, b"head", b"body!", Duration::from_secs(1)).await;
        assert!(
            matches!(done, Ok(Ok(()))),
            "timed out after {:?} and {} bytes, each write within {gap:?} of the last",
            started.elapsed(),
            w.written.len()
        );
        assert_eq!(w.written, b"headbody!");
    }
}
