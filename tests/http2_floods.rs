//! HTTP/2 floods (issue 17): each known denial-of-service pattern, sent by
//! the raw frame client at a one-worker prefork whose plain listener takes
//! h2c with prior knowledge. Each flood must end within its deadline, with
//! the worker's memory bounded and a well-behaved client (HTTP/2 and
//! HTTP/1.1, on the same worker) served while it lasts and after.

use crate::support::origins::RecordingOrigin;
use crate::support::prefork::{Prefork, Setup};
use crate::support::{http, wait_until};
use prefork_testkit::h2frames::hpack::{index, Block};
use prefork_testkit::h2frames::{
    self, code, encode_all, setting, Client, Drained, FloodEnd, Frame, GoAway,
};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const HOST: &str = "h2.test";
/// `send_timeout` and `client_body_timeout` of the test config.
const TIMEOUT: Duration = Duration::from_secs(1);
/// `http2_max_concurrent_streams` of the test config.
const MAX_STREAMS: u32 = 10;
/// How soon a flood must end with GOAWAY (the "within a second").
const CALM: Duration = Duration::from_secs(1);
/// How long a flood that is not stopped goes on before the test gives up.
const FLOOD_LIMIT: Duration = Duration::from_secs(4);
/// How much the worker's resident memory may grow while a flood lasts: far
/// less than what the floods send (hundreds of MiB for the endless ones, or
/// what a decoded HPACK bomb would take).
const RSS_GROWTH_KIB: u64 = 32 * 1024;

/// A one-worker prefork with an HTTP/2 listener in front of a recording
/// origin, and the worker's pid.
struct Bench {
    origin: RecordingOrigin,
    p: Prefork,
    worker: i32,
}

fn start() -> Bench {
    start_with(MAX_STREAMS)
}

/// As [`start`], with `http2_max_concurrent_streams = max_streams`.
fn start_with(max_streams: u32) -> Bench {
    let origin = RecordingOrigin::start();
    let p = Prefork::start(
        Setup::new(1)
            .top(&format!(
                "send_timeout = \"1s\"\nclient_body_timeout = \"1s\"\n\
                 http2_max_concurrent_streams = {max_streams}"
            ))
            .http2()
            .body(&format!(
                "[upstreams.origin]\nservers = [\"{}\"]\n\
                 [[routes]]\nhost = \"{HOST}\"\nupstream = \"origin\"\n",
                origin.addr()
            )),
    );
    let worker = p.workers()[0].pid;
    // One request first, so the baseline memory includes what serving
    // HTTP/2 at all allocates.
    let r = h2frames::get(p.addr(), HOST, "/warm").expect("a first HTTP/2 request");
    assert_eq!(r.status, 200, "{}", p.logs());
    Bench { origin, p, worker }
}

impl Bench {
    fn addr(&self) -> SocketAddr {
        self.p.addr()
    }

    /// A connection that has exchanged SETTINGS.
    fn client(&self, settings: &[(u16, u32)]) -> Client {
        Client::handshake(self.addr(), settings).expect("HTTP/2 handshake")
    }
}

/// The resident memory of `pid` in KiB.
fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples a process's resident memory until finished; keeps the peak.
struct RssWatch {
    base: u64,
    stop: Arc<AtomicBool>,
    peak: JoinHandle<u64>,
}

impl RssWatch {
    fn start(pid: i32) -> RssWatch {
        let base = rss_kib(pid).expect("the worker's VmRSS");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let peak = thread::spawn(move || {
            let mut peak = base;
            while !s.load(Ordering::SeqCst) {
                peak = peak.max(rss_kib(pid).unwrap_or(0));
                thread::sleep(Duration::from_millis(5));
            }
            peak
        });
        RssWatch { base, stop, peak }
    }

    /// Stops sampling; asserts the growth stayed under the bound and returns
    /// (baseline, peak) in KiB.
    fn finish(self, what: &str) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let peak = self.peak.join().expect("the RSS sampler");
        assert!(
            peak.saturating_sub(self.base) < RSS_GROWTH_KIB,
            "{what}: the worker's RSS grew from {} to {peak} KiB",
            self.base
        );
        eprintln!("{what}: worker RSS {} KiB, peak {peak} KiB", self.base);
        (self.base, peak)
    }
}

/// A well-behaved client that keeps sending requests, over HTTP/2 and
/// HTTP/1.1 in turn, while a flood goes on.
struct Bystander {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    runs: JoinHandle<(usize, Vec<String>)>,
}

impl Bystander {
    fn start(addr: SocketAddr) -> Bystander {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let runs = thread::spawn(move || {
            let (mut served, mut failures) = (0, Vec::new());
            while !s.load(Ordering::SeqCst) {
                match served_once(addr) {
                    Ok(()) => served += 1,
                    Err(e) => failures.push(e),
                }
                thread::sleep(Duration::from_millis(20));
            }
            (served, failures)
        });
        Bystander { addr, stop, runs }
    }

    /// Stops, asserts every request was served, and serves one more after
    /// the flood.
    fn finish(self, what: &str) {
        self.stop.store(true, Ordering::SeqCst);
        let (served, failures) = self.runs.join().expect("the bystander");
        assert!(
            failures.is_empty(),
            "{what}: a well-behaved client failed during the flood: {failures:?}"
        );
        served_once(self.addr)
            .unwrap_or_else(|e| panic!("{what}: a well-behaved client failed after it: {e}"));
        eprintln!("{what}: {served} bystander rounds served during the flood");
    }
}

/// One request over HTTP/2 and one over HTTP/1.1, each on a new connection.
fn served_once(addr: SocketAddr) -> Result<(), String> {
    let r = h2frames::get(addr, HOST, "/bystander").map_err(|e| format!("h2: {e}"))?;
    if r.status != 200 {
        return Err(format!("h2: status {}", r.status));
    }
    let r = http::get(addr.port(), HOST, "/bystander").map_err(|e| format!("h1: {e}"))?;
    if r.status != 200 {
        return Err(format!("h1: status {}", r.status));
    }
    Ok(())
}

/// Asserts a GOAWAY came with one of `codes` and returns it.
fn goaway(d: &Drained, codes: &[u32], what: &str) -> GoAway {
    let g = d
        .goaway
        .clone()
        .unwrap_or_else(|| panic!("{what}: no GOAWAY; the server sent {d:?}"));
    assert!(
        codes.contains(&g.code),
        "{what}: {g}, expected one of {:?}",
        codes.iter().map(|c| code::name(*c)).collect::<Vec<_>>()
    );
    g
}

const CALM_CODES: [u32; 2] = [code::ENHANCE_YOUR_CALM, code::PROTOCOL_ERROR];
/// `content-length` in the HPACK static table.
const CONTENT_LENGTH: usize = 28;

#[test]
fn rapid_reset_ends_with_goaway_and_few_streams_reach_the_origin() {
    const STREAMS: u32 = 5000;
    let b = start();
    let rss = RssWatch::start(b.worker);
    let by = Bystander::start(b.addr());
    let mut c = b.client(&[]);
    let block = Block::request("GET", HOST, "/rapid-reset");
    let frames: Vec<Frame> = (0..STREAMS)
        .flat_map(|i| {
            let stream = 1 + 2 * i;
            [
                Frame::headers(stream, &block, true),
                Frame::RstStream {
                    stream,
                    code: code::CANCEL,
                },
            ]
        })
        .collect();
    let started = Instant::now();
    // The server may close before the whole burst is written: that write
    // error is the point.
    let _ = c.send_raw(&encode_all(&frames));
    let sent = started.elapsed();
    let d = c.drain(CALM, true);
    let g = goaway(&d, &CALM_CODES, "rapid reset");
    let at = sent + d.goaway_after.expect("GOAWAY time");
    eprintln!("rapid reset: {g} {at:?} after the burst began ({sent:?} to write it)");
    assert!(at < CALM, "rapid reset: {g} only after {at:?}");
    assert!(
        !wait_until(Duration::from_millis(500), || b
            .origin
            .count_path("/rapid-reset")
            >= STREAMS as usize / 10),
        "rapid reset: {} of {STREAMS} streams reached the origin",
        b.origin.count_path("/rapid-reset")
    );
    eprintln!(
        "rapid reset: {} of {STREAMS} streams reached the origin",
        b.origin.count_path("/rapid-reset")
    );
    by.finish("rapid reset");
    rss.finish("rapid reset");
}

#[test]
fn a_continuation_flood_ends_with_goaway() {
    let b = start();
    let rss = RssWatch::start(b.worker);
    let by = Bystander::start(b.addr());
    let mut c = b.client(&[]);
    c.send(&Frame::Headers {
        stream: 1,
        end_stream: true,
        end_headers: false,
        block: Block::request("GET", HOST, "/continuation").into_bytes(),
    })
    .expect("HEADERS without END_HEADERS");
    // Each CONTINUATION holds one whole field, never the last.
    let unit = encode_all(&vec![
        Frame::Continuation {
            stream: 1,
            end_headers: false,
            block: Block::new().literal("x-flood", &[b'c'; 1000]).into_bytes(),
        };
        64
    ]);
    let f = c.flood(&unit, Instant::now() + FLOOD_LIMIT);
    let d = c.drain(CALM, true);
    let g = goaway(&d, &CALM_CODES, "CONTINUATION flood");
    eprintln!(
        "CONTINUATION flood: {g}; the flood ended {:?} after {:?} and {} bytes",
        f.end, f.after, f.sent
    );
    assert!(
        matches!(f.end, FloodEnd::Closed(_)) && f.after < CALM,
        "CONTINUATION flood: still open after {:?} ({:?})",
        f.after,
        f.end
    );
    assert_eq!(b.origin.count_path("/continuation"), 0);
    by.finish("CONTINUATION flood");
    rss.finish("CONTINUATION flood");
}

/// Floods `frame` without reading anything back: the server must close the
/// connection with GOAWAY ENHANCE_YOUR_CALM within about a second.
fn control_flood(frame: Frame, what: &str) {
    let b = start();
    let rss = RssWatch::start(b.worker);
    let by = Bystander::start(b.addr());
    let mut c = b.client(&[]);
    let unit = encode_all(&vec![frame; 1000]);
    let f = c.flood(&unit, Instant::now() + FLOOD_LIMIT);
    eprintln!(
        "{what}: the flood ended {:?} after {:?} and {} bytes",
        f.end, f.after, f.sent
    );
    assert!(
        matches!(f.end, FloodEnd::Closed(_)),
        "{what}: the connection was still open after {:?}",
        f.after
    );
    // Read what the server managed to send before it closed.
    let d = c.drain(Duration::from_secs(2), true);
    let g = goaway(&d, &[code::ENHANCE_YOUR_CALM], what);
    eprintln!("{what}: {g} after {:?} answers", d.frames);
    assert!(f.after < CALM, "{what}: closed only after {:?}", f.after);
    by.finish(what);
    rss.finish(what);
}

#[test]
fn a_ping_flood_unread_ends_with_goaway() {
    control_flood(
        Frame::Ping {
            ack: false,
            data: *b"pingpong",
        },
        "PING flood",
    );
}

/// A connection parked (frozen, its meter reduced to its count) and woken
/// by the flood's first bytes meters them as one never parked does.
#[test]
fn a_ping_flood_on_a_parked_connection_ends_with_goaway() {
    let b = start();
    let mut c = b.client(&[]);
    b.p.wait_parked(1, Duration::from_secs(10));
    let ping = Frame::Ping {
        ack: false,
        data: *b"pingpong",
    };
    let f = c.flood(&encode_all(&vec![ping; 1000]), Instant::now() + FLOOD_LIMIT);
    assert!(
        matches!(f.end, FloodEnd::Closed(_)),
        "the woken connection was still open after {:?}",
        f.after
    );
    let d = c.drain(Duration::from_secs(2), true);
    goaway(&d, &[code::ENHANCE_YOUR_CALM], "PING flood after parking");
    assert!(f.after < CALM, "closed only after {:?}", f.after);
}

#[test]
fn a_settings_flood_unread_ends_with_goaway() {
    control_flood(
        Frame::Settings {
            ack: false,
            params: vec![(setting::ENABLE_PUSH, 0)],
        },
        "SETTINGS flood",
    );
}

#[test]
fn an_hpack_bomb_is_refused_without_decoding_it() {
    const REFS: usize = 4000;
    let b = start();
    let rss = RssWatch::start(b.worker);
    let mut c = b.client(&[]);
    // One field of about 4 KiB enters the dynamic table (all of its 4,096
    // bytes: 32 + 6 + 4,000), then the block names it again and again: 8 KiB
    // on the wire, 16 MB decoded.
    let mut block = Block::request("GET", HOST, "/hpack-bomb").incremental("x-bomb", &[b'b'; 4000]);
    for _ in 0..REFS {
        block = block.indexed(index::FIRST_DYNAMIC);
    }
    assert!(block.len() < h2frames::DEFAULT_MAX_FRAME);
    let started = Instant::now();
    c.send(&Frame::headers(1, &block, true)).expect("the bomb");
    let d = c.drain_until(CALM, |d| {
        d.goaway.is_some() || d.statuses.contains_key(&1) || d.stream_ends.contains_key(&1)
    });
    let answer = if let Some(g) = &d.goaway {
        format!("{g}")
    } else if let Some(s) = d.statuses.get(&1) {
        format!("status {s}")
    } else if let Some((_, c)) = d.resets.iter().find(|(s, _)| *s == 1) {
        format!("RST_STREAM {}", code::name(*c))
    } else {
        panic!("HPACK bomb: no answer within {CALM:?}: {d:?}");
    };
    eprintln!("HPACK bomb: {answer} after {:?}", started.elapsed());
    if let Some(s) = d.statuses.get(&1) {
        assert_eq!(*s, 431, "HPACK bomb: {answer}");
    }
    if let Some(g) = &d.goaway {
        assert!(CALM_CODES.contains(&g.code), "HPACK bomb: {g}");
    } else {
        // The connection's HPACK state is intact: it still serves.
        let r = c
            .request(
                3,
                &Block::request("GET", HOST, "/after-bomb"),
                None,
                Duration::from_secs(5),
            )
            .expect("a request after the refused bomb");
        assert_eq!(r.status, 200);
    }
    // A block that decodes to a little over the header list limit (32 KiB
    // by default) is refused for its stream only, with 431, and the
    // connection goes on.
    let mut c = b.client(&[]);
    let mut block = Block::request("GET", HOST, "/hpack-bomb").incremental("x-bomb", &[b'b'; 4000]);
    for _ in 0..10 {
        block = block.indexed(index::FIRST_DYNAMIC);
    }
    let r = c
        .request(1, &block, None, Duration::from_secs(5))
        .expect("an answer to a header list over the limit");
    assert_eq!(r.status, 431);
    let r = c
        .request(
            3,
            &Block::request("GET", HOST, "/after-431"),
            None,
            Duration::from_secs(5),
        )
        .expect("a request after the 431");
    assert_eq!(r.status, 200);
    assert_eq!(b.origin.count_path("/hpack-bomb"), 0);
    let by = Bystander::start(b.addr());
    by.finish("HPACK bomb");
    rss.finish("HPACK bomb");
}

#[test]
fn a_client_that_never_opens_its_window_is_closed_at_send_timeout() {
    // Far more than the socket buffers and the worker's bound hold.
    const LEN: usize = 64 << 20;
    let b = start();
    let rss = RssWatch::start(b.worker);
    let by = Bystander::start(b.addr());
    let mut c = b.client(&[(setting::INITIAL_WINDOW_SIZE, 0)]);
    c.send(&Frame::headers(
        1,
        &Block::request("GET", HOST, &format!("/chunked/{LEN}")),
        true,
    ))
    .expect("the request");
    // The origin takes its time to make the body: the stall begins with the
    // response's head.
    let head = c.drain_until(Duration::from_secs(10), |d| d.statuses.contains_key(&1));
    assert_eq!(head.statuses.get(&1), Some(&200), "zero window: {head:?}");
    let d = c.drain(TIMEOUT + Duration::from_secs(3), false);
    eprintln!(
        "zero window: {:?} {:?} after the response head, closed after {:?}, resets {:?}, {} DATA bytes",
        d.goaway.as_ref().map(|g| g.to_string()),
        d.goaway_after,
        d.closed_after,
        d.resets,
        d.data_bytes + head.data_bytes
    );
    goaway(&d, &[code::ENHANCE_YOUR_CALM], "zero window");
    let at = d.goaway_after.expect("GOAWAY time");
    assert!(
        at >= TIMEOUT.mul_f32(0.9) && at < TIMEOUT + CALM,
        "zero window: GOAWAY after {at:?}, send_timeout is {TIMEOUT:?}"
    );
    assert!(d.closed, "zero window: still open: {d:?}");
    let closed = d.closed_after.expect("close time");
    assert!(
        closed < at + CALM,
        "zero window: closed {closed:?} after the head, GOAWAY at {at:?}"
    );
    assert_eq!(
        d.data_bytes + head.data_bytes,
        0,
        "DATA sent into a zero window"
    );
    by.finish("zero window");
    rss.finish("zero window");
}

#[test]
fn streams_past_the_limit_are_refused_and_idle_ones_end_at_client_body_timeout() {
    const STREAMS: u32 = MAX_STREAMS + 5;
    let b = start();
    let rss = RssWatch::start(b.worker);
    let by = Bystander::start(b.addr());
    let mut c = b.client(&[]);
    let block = Block::request("POST", HOST, "/idle");
    let frames: Vec<Frame> = (0..STREAMS)
        .map(|i| Frame::headers(1 + 2 * i, &block, false))
        .collect();
    c.send_all(&frames).expect("the streams");
    let d = c.drain_until(TIMEOUT + Duration::from_secs(3), |d| {
        d.stream_ends.len() == STREAMS as usize
    });
    eprintln!(
        "idle streams: resets {:?}, statuses {:?}, ends {:?}, {:?}",
        d.resets, d.statuses, d.stream_ends, d.goaway
    );
    let refused: Vec<u32> = d
        .resets
        .iter()
        .filter(|(_, c)| *c == code::REFUSED_STREAM)
        .map(|(s, _)| *s)
        .collect();
    let extra: Vec<u32> = (MAX_STREAMS..STREAMS).map(|i| 1 + 2 * i).collect();
    assert_eq!(refused, extra, "idle streams: the ones past the limit");
    for i in 0..MAX_STREAMS {
        let stream = 1 + 2 * i;
        let end = d.stream_ends.get(&stream).unwrap_or_else(|| {
            panic!("idle streams: stream {stream} still open after {TIMEOUT:?} + 3 s: {d:?}")
        });
        assert!(
            *end >= TIMEOUT.mul_f32(0.9),
            "idle streams: stream {stream} ended after only {end:?}"
        );
        if let Some(s) = d.statuses.get(&stream) {
            assert_eq!(*s, 408, "idle streams: stream {stream}");
        }
    }
    assert!(d.goaway.is_none(), "idle streams: {d:?}");
    by.finish("idle streams");
    rss.finish("idle streams");
}

#[test]
fn made_you_reset_ends_with_goaway() {
    const STREAMS: u32 = 5000;
    // The default stream limit: the streams are reset for their errors, not
    // refused for their number.
    let b = start_with(128);
    let rss = RssWatch::start(b.worker);
    let by = Bystander::start(b.addr());
    let mut c = b.client(&[]);
    let open = Block::request("POST", HOST, "/made-you-reset");
    let one_byte =
        Block::request("POST", HOST, "/made-you-reset").literal_indexed_name(CONTENT_LENGTH, b"1");
    // Every stream is one the server must reset itself (a stream error, no
    // connection error): a WINDOW_UPDATE that overflows the stream's window
    // (FLOW_CONTROL_ERROR), or more DATA than its content-length
    // (PROTOCOL_ERROR). (A PRIORITY on which a stream depends on itself is
    // one too, but PRIORITY frames have the meter's budget of their own.)
    let frames: Vec<Frame> = (0..STREAMS)
        .flat_map(|i| {
            let stream = 1 + 2 * i;
            if i % 2 == 0 {
                [
                    Frame::headers(stream, &open, false),
                    Frame::WindowUpdate {
                        stream,
                        increment: 0x7fff_ffff,
                    },
                ]
            } else {
                [
                    Frame::headers(stream, &one_byte, false),
                    Frame::Data {
                        stream,
                        end_stream: true,
                        data: b"xx".to_vec(),
                    },
                ]
            }
        })
        .collect();
    let started = Instant::now();
    let _ = c.send_raw(&encode_all(&frames));
    let sent = started.elapsed();
    let d = c.drain(CALM, true);
    let g = goaway(&d, &CALM_CODES, "MadeYouReset");
    let at = sent + d.goaway_after.expect("GOAWAY time");
    eprintln!("MadeYouReset: {g} {at:?} after the burst began");
    assert!(at < CALM, "MadeYouReset: {g} only after {at:?}");
    assert!(
        !wait_until(Duration::from_millis(500), || b
            .origin
            .count_path("/made-you-reset")
            >= STREAMS as usize / 10),
        "MadeYouReset: {} of {STREAMS} streams reached the origin",
        b.origin.count_path("/made-you-reset")
    );
    eprintln!(
        "MadeYouReset: {} of {STREAMS} streams reached the origin",
        b.origin.count_path("/made-you-reset")
    );
    // Two errors h2 takes for the whole connection's: a WINDOW_UPDATE of 0
    // on a stream, and DATA on a stream the client already ended.
    let closed = Block::request("GET", HOST, "/made-you-reset");
    for (what, frames) in [
        (
            "WINDOW_UPDATE of 0",
            [
                Frame::headers(1, &open, false),
                Frame::WindowUpdate {
                    stream: 1,
                    increment: 0,
                },
            ],
        ),
        (
            "DATA on a half-closed stream",
            [
                Frame::headers(1, &closed, true),
                Frame::Data {
                    stream: 1,
                    end_stream: true,
                    data: b"x".to_vec(),
                },
            ],
        ),
    ] {
        let mut c = b.client(&[]);
        c.send_all(&frames).expect(what);
        let d = c.drain(CALM, true);
        let g = goaway(&d, &[code::PROTOCOL_ERROR], what);
        eprintln!("{what}: {g} after {:?}", d.goaway_after);
    }
    by.finish("MadeYouReset");
    rss.finish("MadeYouReset");
}
