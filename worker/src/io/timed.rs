//! Time limits on reads and writes that cost nothing when the operation
//! completes at once.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;
use tokio::time::{sleep, Instant, Sleep};

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

/// Runs `io` within `limit` (as [`timed`]), mapping its error with
/// `on_error` and a timeout to `on_timeout`.
pub(crate) async fn within<T, E>(
    limit: Duration,
    io: impl Future<Output = std::io::Result<T>>,
    on_error: impl FnOnce(std::io::Error) -> E,
    on_timeout: E,
) -> Result<T, E> {
    match timed(limit, io).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(on_error(e)),
        Err(_) => Err(on_timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
