//! Small I/O helpers shared by the client and upstream sides.

use socket2::SockRef;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::{sleep, Instant, Sleep};

/// Size of one body read, and the spare room kept for it.
pub(crate) const BODY_READ: usize = 256 * 1024;

/// A time limit ran out.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TimedOut;

/// Runs `io` for at most `limit` (as `tokio::time::timeout`). Most reads and
/// writes complete at their first poll: the timer is armed only once `io`
/// has to wait, which spares setting up and dropping a timer for each of
/// them. The limit then counts from that first poll, microseconds after the
/// call.
pub(crate) async fn timed<F: Future>(limit: Duration, io: F) -> Result<F::Output, TimedOut> {
    let mut io = pin!(io);
    let mut timer = pin!(None::<Sleep>);
    poll_fn(|cx| {
        if let Poll::Ready(out) = io.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if timer.is_none() {
            timer.set(Some(sleep(limit)));
        }
        match timer.as_mut().as_pin_mut().map(|t| t.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(TimedOut)),
            _ => Poll::Pending,
        }
    })
    .await
}

/// Runs `io` until `deadline`, timed by `timer`, one of a connection's
/// timers that it reuses for every request. As with [`timed`], the timer is
/// set only once `io` has to wait; and setting a registered timer to a later
/// deadline than before costs tokio a mere store (it files the timer again
/// when the old deadline comes), so a connection that waits with the same
/// limit request after request does not touch the timer wheel each time.
pub(crate) async fn timed_until<F: Future>(
    mut timer: Pin<&mut Sleep>,
    deadline: Instant,
    io: F,
) -> Result<F::Output, TimedOut> {
    let mut io = pin!(io);
    let mut armed = false;
    poll_fn(|cx| {
        if let Poll::Ready(out) = io.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if !armed {
            timer.as_mut().reset(deadline);
            armed = true;
        }
        timer.as_mut().poll(cx).map(|()| Err(TimedOut))
    })
    .await
}

/// A writer that can also write without waiting (tokio's TCP halves).
pub(crate) trait TryWrite: AsyncWrite + Unpin {
    /// Writes what the socket takes now (`WouldBlock`: nothing).
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// As [`TryWrite::try_write_vectored`], for the last bytes a connection
    /// sends before it closes: the kernel may hold back a partial segment
    /// for the close's FIN to join (`MSG_MORE`). A plain write by default.
    fn try_write_last(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.try_write_vectored(bufs)
    }
}

impl TryWrite for tokio::net::tcp::WriteHalf<'_> {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        tokio::net::tcp::WriteHalf::try_write_vectored(self, bufs)
    }

    fn try_write_last(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let stream: &TcpStream = self.as_ref();
        stream.try_io(Interest::WRITABLE, || {
            SockRef::from(stream).send_vectored_with_flags(bufs, libc::MSG_MORE)
        })
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

/// As [`write_two_within`], for the last bytes a connection sends before it
/// closes: when they all leave in the first write, their last segment and the
/// FIN may leave as one (see [`TryWrite::try_write_last`]).
pub(crate) async fn write_last_within<W: TryWrite>(
    w: &mut W,
    head: &[u8],
    body: &[u8],
    limit: Duration,
) -> Result<io::Result<()>, TimedOut> {
    write_within(w, head, body, limit, W::try_write_last).await
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
    timed(limit, write_two(w, head, body)).await
}

/// Writes `head` then `body` with vectored writes, so a head and the body
/// bytes already at hand usually leave in one system call.
pub(crate) async fn write_two<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut head: &[u8],
    mut body: &[u8],
) -> io::Result<()> {
    while !head.is_empty() || !body.is_empty() {
        let n = if head.is_empty() {
            w.write(body).await?
        } else if body.is_empty() {
            w.write(head).await?
        } else {
            w.write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
                .await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(head.len());
        head = &head[from_head..];
        body = &body[n - from_head..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::pin::Pin;
    use std::task::{Context, Poll};

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

    #[tokio::test]
    async fn timed_io_completes_or_times_out() {
        let short = Duration::from_millis(20);
        let long = Duration::from_secs(10);
        let never = std::future::pending::<()>;
        assert_eq!(timed(long, async { 7 }).await, Ok(7));
        assert_eq!(timed(long, sleep(short)).await, Ok(()));
        assert_eq!(timed(short, never()).await, Err(TimedOut));

        let mut timer = pin!(sleep(long));
        let soon = || Instant::now() + short;
        assert_eq!(
            timed_until(timer.as_mut(), soon(), async { 7 }).await,
            Ok(7)
        );
        assert_eq!(
            timed_until(timer.as_mut(), soon(), never()).await,
            Err(TimedOut)
        );
        // Reused after it fired, then for a later deadline, then an earlier one.
        let later = Instant::now() + long;
        assert_eq!(
            timed_until(timer.as_mut(), later, sleep(short)).await,
            Ok(())
        );
        assert_eq!(
            timed_until(timer.as_mut(), soon(), never()).await,
            Err(TimedOut)
        );
    }

    /// A writer that takes at most `chunk` bytes per call, and nothing
    /// without waiting once `refuse_now` is set.
    struct Sink {
        chunk: usize,
        refuse_now: bool,
        written: RefCell<Vec<u8>>,
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
    }

    #[tokio::test]
    async fn writes_tried_at_once_finish_the_waiting_way() {
        let limit = Duration::from_secs(10);
        for (chunk, refuse_now) in [(100, false), (3, false), (6, false), (100, true), (2, true)] {
            let mut w = Sink {
                chunk,
                refuse_now,
                written: RefCell::default(),
            };
            let done = write_two_within(&mut w, b"head", b"body!", limit).await;
            assert!(matches!(done, Ok(Ok(()))));
            assert_eq!(*w.written.borrow(), b"headbody!");
        }
    }

    /// The last write of a connection waits in the kernel for the FIN,
    /// which then carries it: the peer reads nothing until the close, then
    /// everything and the end at once.
    #[tokio::test]
    async fn a_last_write_leaves_with_the_fin() {
        use std::io::Read;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // A plain socket: each read below is a real recv(2).
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        {
            let (_, mut w) = server.split();
            let done = write_last_within(&mut w, b"head", b"body!", Duration::from_secs(10)).await;
            assert!(matches!(done, Ok(Ok(()))));
        }
        client.set_nonblocking(true).unwrap();
        let mut got = [0u8; 16];
        assert_eq!(
            client.read(&mut got).map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock),
            "held for the FIN"
        );
        server.shutdown().await.unwrap();
        client.set_nonblocking(false).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut all = Vec::new();
        client.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"headbody!");
    }

    #[tokio::test]
    async fn partial_writes_keep_order() {
        for chunk in 1..8 {
            let mut w = Trickle {
                chunk,
                written: Vec::new(),
            };
            write_two(&mut w, b"head", b"body!").await.unwrap();
            assert_eq!(w.written, b"headbody!");
        }
    }
}
