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
            window_start: None,
            control: 0,
            resets: 0,
        }
    }

    /// Takes the next bytes read; true when they make the client a flooder.
    pub(crate) fn read(&mut self, mut bytes: &[u8], now: impl Fn() -> Instant) -> bool {
        let mut flood = false;
        let skipped = self.preface.min(bytes.len());
        self.preface -= skipped;
        bytes = &bytes[skipped..];
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
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
            if control || kind == RST_STREAM {
                flood |= self.count(kind == RST_STREAM, &now);
            }
        }
        flood
    }

    /// Counts one frame in the current window.
    fn count(&mut self, reset: bool, now: &impl Fn() -> Instant) -> bool {
        let at = now();
        match self.window_start {
            Some(start) if at.duration_since(start) < WINDOW => {}
            _ => {
                self.window_start = Some(at);
                self.control = 0;
                self.resets = 0;
            }
        }
        if reset {
            self.resets += 1;
            self.resets > MAX_RESETS
        } else {
            self.control += 1;
            self.control > MAX_CONTROL
        }
    }
}

/// A client's byte stream with a [`FrameCounter`] on its reads.
pub(crate) struct Metered<T> {
    io: T,
    counter: FrameCounter,
    flood: Rc<Flood>,
}

impl<T> Metered<T> {
    /// Meters `io`, raising `flood` when the client floods.
    pub(crate) fn new(io: T, flood: Rc<Flood>) -> Self {
        Metered {
            io,
            counter: FrameCounter::new(),
            flood,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if this.counter.read(&buf.filled()[before..], Instant::now) {
                this.flood.raise();
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
        assert!(!c.read(&bytes, || start));
        let mut pings = Vec::new();
        for _ in 0..MAX_CONTROL - 1 {
            pings.extend(frame(PING, 0, 8));
        }
        assert!(!c.read(&pings, || start));
        // One byte at a time: headers split anywhere are still counted.
        let last = frame(PING, 0, 8);
        let flooded: Vec<bool> = last.iter().map(|b| c.read(&[*b], || start)).collect();
        assert!(flooded.iter().any(|f| *f));
    }

    #[test]
    fn the_budget_is_per_second_and_requests_and_data_do_not_count() {
        let start = Instant::now();
        let mut c = FrameCounter::new();
        assert!(!c.read(PREFACE, || start));
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
            assert!(!c.read(&bytes, || at), "second {second}");
        }
    }

    #[test]
    fn resets_and_empty_data_frames_have_their_budgets() {
        let start = Instant::now();
        let mut c = FrameCounter::new();
        let mut resets = PREFACE.to_vec();
        for _ in 0..MAX_RESETS {
            resets.extend(frame(RST_STREAM, 0, 4));
        }
        assert!(!c.read(&resets, || start));
        assert!(c.read(&frame(RST_STREAM, 0, 4), || start));

        let mut c = FrameCounter::new();
        let mut empty = PREFACE.to_vec();
        for _ in 0..=MAX_CONTROL {
            empty.extend(frame(DATA, 0, 0));
        }
        assert!(c.read(&empty, || start));
    }
}
