//! A meter on what a client's HTTP/2 connection reads: it walks the frame
//! headers (9 bytes each, payloads skipped) of the bytes `h2` is handed and
//! counts the frames that cost the server work without giving it a
//! request: PING and SETTINGS (each wants an answer), PRIORITY, empty DATA
//! frames and RST_STREAM. A client sending more of them within a second
//! than any browser or gRPC client does is flooding (CVE-2019-9512,
//! CVE-2019-9515, CVE-2019-9518, CVE-2023-44487): the connection is told
//! to go away.
//!
//! `h2` answers each PING and SETTINGS but reads no further while an answer
//! waits to be written: a client that never reads stalls the connection
//! with bounded memory, yet holds it open; and it limits only the resets
//! of streams not yet accepted. The meter ends both within a second. It
//! parses no frame: `h2` still does all of that.
//!
//! From the frame over budget on, `h2` is handed no more bytes: it would
//! answer every PING of a read (thousands) before the GOAWAY, and a client
//! that never reads would get its receive buffer filled with answers, the
//! GOAWAY stuck behind them and lost when the socket closes.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The client connection preface, before the first frame.
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The window over which frames are counted.
const WINDOW: Duration = Duration::from_secs(1);
/// Most PING, SETTINGS, PRIORITY and empty DATA frames (without
/// END_STREAM) in one window: a client sends a few.
pub(crate) const MAX_CONTROL: u32 = 100;
/// Most streams reset by the client in one window.
pub(crate) const MAX_RESETS: u32 = 200;

const DATA: u8 = 0x0;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
/// The flag of a SETTINGS or PING frame that answers one.
const ACK: u8 = 0x1;
/// The flag of a DATA frame that ends its stream.
const END_STREAM: u8 = 0x1;

/// What the meter found, shared with the connection's driver.
#[derive(Default)]
pub(crate) struct Flood {
    found: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Flood {
    /// Ready once the client floods.
    pub(crate) fn poll_found(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.found.get() {
            return Poll::Ready(());
        }
        self.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }

    /// Drops the waker of the task that last waited (it is parked: see
    /// `parked`).
    pub(crate) fn forget_waker(&self) {
        self.waker.take();
    }

    fn raise(&self) {
        if !self.found.replace(true) {
            if let Some(waker) = self.waker.take() {
                waker.wake();
            }
        }
    }
}

/// Counts the frames of a byte stream as it arrives.
pub(crate) struct FrameCounter {
    /// Preface bytes still to skip.
    preface: usize,
    /// The frame header being read, and how much of it came.
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    skip: usize,
    budget: Budget,
}

/// The frames counted in the current window: what a parked connection
/// keeps of its meter.
#[derive(Clone, Copy, Default)]
pub(crate) struct Budget {
    window_start: Option<Instant>,
    control: u32,
    resets: u32,
}

impl FrameCounter {
    /// A counter for a client's bytes, which start with the preface.
    pub(crate) fn new() -> Self {
        FrameCounter {
            preface: PREFACE.len(),
            header: [0; 9],
            have: 0,
            skip: 0,
            budget: Budget::default(),
        }
    }

    /// A counter for bytes past the preface, starting with a frame, which
    /// goes on with `budget`.
    fn between_frames(budget: Budget) -> Self {
        FrameCounter {
            preface: 0,
            budget,
            ..FrameCounter::new()
        }
    }

    /// Whether the bytes read so far end with a whole frame.
    fn between_whole_frames(&self) -> bool {
        self.preface == 0 && self.have == 0 && self.skip == 0
    }

    /// Takes the next bytes read. `Some(n)` when they make the client a
    /// flooder: the first `n` of them come before the frame over budget.
    pub(crate) fn read(&mut self, bytes: &[u8], now: impl Fn() -> Instant) -> Option<usize> {
        let mut pos = self.preface.min(bytes.len());
        self.preface -= pos;
        while pos < bytes.len() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len() - pos);
                self.skip -= n;
                pos += n;
                continue;
            }
            // Where this frame's header began: 0 when in an earlier read.
            let start = pos.saturating_sub(self.have);
            let n = (9 - self.have).min(bytes.len() - pos);
            self.header[self.have..self.have + n].copy_from_slice(&bytes[pos..pos + n]);
            self.have += n;
            pos += n;
            if self.have < 9 {
                break;
            }
            self.have = 0;
            let h = self.header;
            let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            self.skip = len;
            let (kind, flags) = (h[3], h[4]);
            let control = match kind {
                PING | SETTINGS => flags & ACK == 0,
                PRIORITY => true,
                DATA => len == 0 && flags & END_STREAM == 0,
                _ => false,
            };
            if (control || kind == RST_STREAM) && self.count(kind == RST_STREAM, &now) {
                return Some(start);
            }
        }
        None
    }

    /// Counts one frame in the current window.
    fn count(&mut self, reset: bool, now: &impl Fn() -> Instant) -> bool {
        let at = now();
        let budget = &mut self.budget;
        match budget.window_start {
            Some(start) if at.duration_since(start) < WINDOW => {}
            _ => {
                *budget = Budget {
                    window_start: Some(at),
                    control: 0,
                    resets: 0,
                }
            }
        }
        if reset {
            budget.resets += 1;
            budget.resets > MAX_RESETS
        } else {
            budget.control += 1;
            budget.control > MAX_CONTROL
        }
    }
}

/// A client's byte stream with a [`FrameCounter`] on its reads.
pub(crate) struct Metered<T> {
    io: T,
    counter: FrameCounter,
    flood: Rc<Flood>,
    /// Set at the frame over budget: reads stay pending from then on (the
    /// connection's task, woken by [`Flood`], sends GOAWAY and ends).
    cut: bool,
}

impl<T> Metered<T> {
    /// Meters `io`, raising `flood` when the client floods.
    pub(crate) fn new(io: T, flood: Rc<Flood>) -> Self {
        Metered {
            io,
            counter: FrameCounter::new(),
            flood,
            cut: false,
        }
    }

    /// Meters `io` of a connection woken from the lot, past its preface
    /// and between frames, its frames counted in `budget` (see
    /// [`Metered::into_idle`]).
    pub(crate) fn woken(io: T, budget: Budget, flood: Rc<Flood>) -> Self {
        Metered {
            counter: FrameCounter::between_frames(budget),
            ..Metered::new(io, flood)
        }
    }

    /// Whether all the meter holds is its count ([`Budget`]): the client
    /// did not flood and its last frame came whole.
    pub(crate) fn is_idle(&self) -> bool {
        !self.cut && self.counter.between_whole_frames()
    }

    /// The stream and its meter's count, which is all it holds if
    /// [`Metered::is_idle`]. A parked connection keeps the count, so that a
    /// client cannot start a new budget by idling until parked between
    /// bursts.
    pub(crate) fn into_idle(self) -> (T, Budget) {
        (self.io, self.counter.budget)
    }

    /// The metered stream.
    pub(crate) fn get_mut(&mut self) -> &mut T {
        &mut self.io
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.cut {
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if let Some(keep) = this.counter.read(&buf.filled()[before..], Instant::now) {
                buf.set_filled(before + keep);
                this.cut = true;
                this.flood.raise();
                // Nothing kept would read as the end of the stream.
                if keep == 0 {
                    return Poll::Pending;
                }
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload_len: usize) -> Vec<u8> {
        let mut f = vec![
            (payload_len >> 16) as u8,
            (payload_len >> 8) as u8,
            payload_len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.resize(9 + payload_len, 0xab);
        f
    }

    #[test]
    fn pings_beyond_the_budget_in_one_second_are_a_flood_answers_are_not() {
        let start = Instant::now();
        let mut c = FrameCounter::new();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 6));
        for _ in 0..500 {
            bytes.extend(frame(PING, ACK, 8));
            bytes.extend(frame(SETTINGS, ACK, 0));
        }
        assert_eq!(c.read(&bytes, || start), None);
        let mut pings = Vec::new();
        for _ in 0..MAX_CONTROL - 1 {
            pings.extend(frame(PING, 0, 8));
        }
        assert_eq!(c.read(&pings, || start), None);
        // One byte at a time: headers split anywhere are still counted, and
        // the cut falls where the read began.
        let last = frame(PING, 0, 8);
        let flooded: Vec<Option<usize>> = last.iter().map(|b| c.read(&[*b], || start)).collect();
        assert_eq!(flooded[8], Some(0));
    }

    #[test]
    fn the_budget_is_per_second_and_requests_and_data_do_not_count() {
        let start = Instant::now();
        let mut c = FrameCounter::new();
        assert_eq!(c.read(PREFACE, || start), None);
        for second in 0..5u64 {
            let at = start + Duration::from_secs(second);
            let mut bytes = Vec::new();
            for _ in 0..MAX_CONTROL {
                bytes.extend(frame(PING, 0, 8));
            }
            // Requests and their bodies, however many.
            for _ in 0..1000 {
                bytes.extend(frame(0x1, 0x4, 20));
                bytes.extend(frame(DATA, END_STREAM, 0));
                bytes.extend(frame(DATA, 0, 100));
            }
            assert_eq!(c.read(&bytes, || at), None, "second {second}");
        }
    }

    #[test]
    fn a_parked_connections_budget_goes_on_where_it_stopped() {
        let start = Instant::now();
        let pings = |n| (0..n).flat_map(|_| frame(PING, 0, 8)).collect::<Vec<u8>>();
        let mut c = FrameCounter::new();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(pings(MAX_CONTROL - 10));
        assert_eq!(c.read(&bytes, || start), None);
        assert!(c.between_whole_frames());
        // Half a frame: not all the meter holds is its count.
        assert_eq!(c.read(&pings(1)[..5], || start), None);
        assert!(!c.between_whole_frames());
        assert_eq!(c.read(&pings(1)[5..], || start), None);
        assert!(c.between_whole_frames());

        let later = start + WINDOW / 2;
        let mut woken = FrameCounter::between_frames(c.budget);
        assert_eq!(woken.read(&pings(9), || later), None);
        assert_eq!(woken.read(&pings(1), || later), Some(0));
        // A count started afresh would have let the burst through.
        let mut afresh = FrameCounter::between_frames(Budget::default());
        assert_eq!(afresh.read(&pings(10), || later), None);
    }

    /// What `metered` reads of what is waiting, until it would wait.
    fn read_all<T: AsyncRead + Unpin>(metered: &mut Metered<T>) -> Vec<u8> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut read = Vec::new();
        loop {
            let mut chunk = [0u8; 4096];
            let mut buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut *metered).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    read.extend_from_slice(buf.filled())
                }
                Poll::Ready(other) => panic!("{other:?} after {} bytes", read.len()),
                Poll::Pending => return read,
            }
        }
    }

    #[test]
    fn a_meter_parked_and_woken_counts_on_and_raises_its_new_flood() {
        // The meter reads tokio's clock: paused, the window cannot run out.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let _clock = rt.enter();
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut send = |bytes: &[u8]| {
            rt.block_on(async {
                use tokio::io::AsyncWriteExt;
                client.write_all(bytes).await.unwrap();
            })
        };
        let ping = frame(PING, 0, 8);
        let first = Rc::new(Flood::default());
        let mut metered = Metered::new(server, first.clone());
        let mut bytes = PREFACE.to_vec();
        for _ in 0..MAX_CONTROL - 10 {
            bytes.extend(&ping);
        }
        send(&bytes);
        assert_eq!(read_all(&mut metered).len(), bytes.len());
        send(&ping[..4]);
        read_all(&mut metered);
        assert!(!metered.is_idle(), "half a frame read");
        send(&ping[4..]);
        read_all(&mut metered);
        assert!(metered.is_idle());

        let (io, budget) = metered.into_idle();
        let woken = Rc::new(Flood::default());
        let mut metered = Metered::woken(io, budget, woken.clone());
        // 9 more PINGs are within the second's budget, the next is not: the
        // bytes after the wake are frames (no preface skipped), counted on.
        let burst: Vec<u8> = (0..20).flat_map(|_| ping.clone()).collect();
        send(&burst);
        assert_eq!(read_all(&mut metered), burst[..9 * ping.len()]);
        assert!(woken.found.get() && !first.found.get());
        assert!(!metered.is_idle(), "a flooded connection is not frozen");
    }

    #[test]
    fn resets_and_empty_data_frames_have_their_budgets() {
        let start = Instant::now();
        let mut c = FrameCounter::new();
        let mut resets = PREFACE.to_vec();
        for _ in 0..MAX_RESETS {
            resets.extend(frame(RST_STREAM, 0, 4));
        }
        assert_eq!(c.read(&resets, || start), None);
        assert_eq!(c.read(&frame(RST_STREAM, 0, 4), || start), Some(0));

        let mut c = FrameCounter::new();
        let mut empty = PREFACE.to_vec();
        for _ in 0..=MAX_CONTROL {
            empty.extend(frame(DATA, 0, 0));
        }
        assert!(c.read(&empty, || start).is_some());
    }

    #[test]
    fn the_frame_over_budget_and_all_after_it_are_kept_from_h2() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 6));
        // The client's SETTINGS counts: 99 PINGs are within budget.
        let budget_end = bytes.len() + (MAX_CONTROL as usize - 1) * 17;
        for _ in 0..MAX_CONTROL * 3 {
            bytes.extend(frame(PING, 0, 8));
        }
        let flood = Rc::new(Flood::default());
        let (mut client, server) = tokio::io::duplex(bytes.len() + 1);
        let mut metered = Metered::new(server, flood.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            use tokio::io::AsyncWriteExt;
            client.write_all(&bytes).await.unwrap();
        });
        let mut cx = Context::from_waker(Waker::noop());
        let mut read = Vec::new();
        loop {
            let mut chunk = [0u8; 4096];
            let mut buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut metered).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    read.extend_from_slice(buf.filled())
                }
                Poll::Ready(other) => panic!("{other:?} after {} bytes", read.len()),
                Poll::Pending => break,
            }
        }
        // The SETTINGS and the PINGs within budget, not one byte more.
        assert_eq!(read.len(), budget_end);
        assert_eq!(read, bytes[..budget_end]);
        assert!(flood.found.get());
    }
}
