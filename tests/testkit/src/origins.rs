//! Upstream servers for the tests, besides the may_minihttp origin from
//! `prefork-bench`:
//! - [`RecordingOrigin`]: std threads, records every request exactly as it
//!   arrived (head, decoded body, connection id) and answers by path;
//! - [`SilentOrigin`]: accepts and reads, never answers (for 504);
//! - [`ClosingOrigin`]: accepts and closes at once, counting connections;
//! - [`refused_addr`]: an address nothing listens on (for 502).

use crate::http::{Conn, Request};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long an origin connection may stay idle before the origin closes it.
/// Longer than any test, so origins never close pooled connections under a
/// test's feet.
const IDLE: Duration = Duration::from_secs(60);
/// Longest a `/hold` request waits for [`RecordingOrigin::release_holds`].
const HOLD_LIMIT: Duration = Duration::from_secs(10);

/// Starts the may_minihttp origin named `name` on a free loopback port.
pub fn minihttp(name: &str) -> SocketAddr {
    prefork_bench::start_local(name).unwrap_or_else(|e| panic!("cannot start origin {name}: {e}"))
}

/// A request as the recording origin received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Which origin connection carried it (1, 2, ... in accept order).
    pub conn: u64,
    pub request: Request,
}

struct Shared {
    requests: Mutex<Vec<Recorded>>,
    next_conn: AtomicU64,
    /// Connections whose serving thread ended (the peer closed, or the
    /// origin did).
    closed: AtomicU64,
    stop: AtomicBool,
    /// What `/health` answers: 200 when true, 503 otherwise.
    healthy: AtomicBool,
    /// Set by `release_holds`; `/hold` and `/partial` wait for it.
    released: Mutex<bool>,
    release: Condvar,
}

impl Shared {
    fn wait_released(&self) {
        let deadline = Instant::now() + HOLD_LIMIT;
        let mut released = self.released.lock().unwrap();
        while !*released {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            released = self.release.wait_timeout(released, left).unwrap().0;
        }
    }
}

/// An origin that records what it receives.
///
/// Answers, by path:
/// - `/delay/MS...`: waits MS milliseconds (after recording), then answers;
/// - `/hop...`: answers with hop-by-hop headers (`Connection: X-Resp-Hop`,
///   `X-Resp-Hop`, `Keep-Alive`) next to an end-to-end `X-End: kept`;
/// - `/chunked/N...`: answers a chunked body of N bytes of the bench pattern;
/// - `/hold...`: waits until [`RecordingOrigin::release_holds`] (at most
///   10 s), then answers;
/// - `/health...`: `200`, or `503` after `set_healthy(false)`;
/// - `/race...`: on a connection's first request answers; on a later one
///   (a reused connection) records it and closes without answering, as a
///   server closing an idle keep-alive connection just as it is reused;
/// - `/close-after...`: answers (keep-alive allowed) then closes the
///   connection, as a server with a short keep-alive timeout;
/// - `/resp-close...`: answers `Connection: close` but keeps the connection
///   open, so a client that reuses it anyway is caught;
/// - `/http10...`: answers `HTTP/1.0` without keep-alive, connection kept
///   open likewise;
/// - `/partial/N...`: `Content-Length: N` and 10 body bytes, then waits until
///   released, then sends the rest;
/// - anything else: `200`, body `recorded conn=C body=LEN\n`.
///
/// Every response carries `X-Origin: recorder` and `X-Conn: C`.
pub struct RecordingOrigin {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl RecordingOrigin {
    pub fn start() -> RecordingOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the recording origin");
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            next_conn: AtomicU64::new(1),
            closed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            released: Mutex::new(false),
            release: Condvar::new(),
        });
        let accept_shared = shared.clone();
        thread::Builder::new()
            .name("recording-origin".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if accept_shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let id = accept_shared.next_conn.fetch_add(1, Ordering::SeqCst);
                    let conn_shared = accept_shared.clone();
                    thread::spawn(move || {
                        serve_recorded(stream, id, &conn_shared);
                        conn_shared.closed.fetch_add(1, Ordering::SeqCst);
                    });
                }
            })
            .expect("spawn the recording origin");
        RecordingOrigin { addr, shared }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// How many requests have arrived.
    pub fn count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> u64 {
        self.shared.next_conn.load(Ordering::SeqCst) - 1
    }

    /// How many connections have ended.
    pub fn closed(&self) -> u64 {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// The requests received so far whose path starts with `prefix`.
    pub fn count_path(&self, prefix: &str) -> usize {
        let requests = self.shared.requests.lock().unwrap();
        requests
            .iter()
            .filter(|r| r.request.path.starts_with(prefix))
            .count()
    }

    /// Sets what `/health` answers.
    pub fn set_healthy(&self, healthy: bool) {
        self.shared.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Lets every waiting and future `/hold` and `/partial` request go on.
    pub fn release_holds(&self) {
        *self.shared.released.lock().unwrap() = true;
        self.shared.release.notify_all();
    }
}

impl Drop for RecordingOrigin {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.release_holds();
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn serve_recorded(stream: TcpStream, id: u64, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(IDLE));
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut conn = Conn::from_stream(stream);
    let mut nth = 0;
    while let Ok(Some(request)) = conn.read_request() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        nth += 1;
        let close = request
            .header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("close"))
            || request.version == 0;
        shared.requests.lock().unwrap().push(Recorded {
            conn: id,
            request: request.clone(),
        });
        let path = request.path.as_str();
        if path.starts_with("/race") && nth > 1 {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
        if path.starts_with("/hold") {
            shared.wait_released();
        }
        if let Some(rest) = path.strip_prefix("/partial/") {
            let len: usize = rest.parse().unwrap_or(0).max(10);
            let head = format!("HTTP/1.1 200 OK\r\nX-Conn: {id}\r\nContent-Length: {len}\r\n\r\n");
            let body = prefork_bench::pattern(len);
            if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&body[..10]).is_err()
            {
                return;
            }
            shared.wait_released();
            for piece in body[10..].chunks(64 * 1024) {
                if writer.write_all(piece).is_err() {
                    return;
                }
            }
            continue;
        }
        let healthy = shared.healthy.load(Ordering::SeqCst);
        let response = answer(&request, id, close, healthy);
        if writer.write_all(&response).is_err() || close || path.starts_with("/close-after") {
            let _ = writer.shutdown(Shutdown::Write);
            return;
        }
    }
}

fn answer(request: &Request, id: u64, close: bool, healthy: bool) -> Vec<u8> {
    let path = request.path.as_str();
    let (version, status) = match path {
        p if p.starts_with("/health") && !healthy => ("1.1", "503 Unhealthy"),
        p if p.starts_with("/http10") => ("1.0", "200 OK"),
        _ => ("1.1", "200 OK"),
    };
    let mut head = format!("HTTP/{version} {status}\r\nX-Origin: recorder\r\nX-Conn: {id}\r\n");
    if path.starts_with("/resp-close") && !close {
        head.push_str("Connection: close\r\n");
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    let body: Vec<u8>;
    if let Some(rest) = path.strip_prefix("/delay/") {
        let ms: u64 = rest
            .split('/')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        thread::sleep(Duration::from_millis(ms));
        body = format!("delayed {ms}ms\n").into_bytes();
    } else if path.starts_with("/hop") {
        if !close {
            head.push_str("Connection: X-Resp-Hop\r\n");
        }
        head.push_str("X-Resp-Hop: secret\r\nKeep-Alive: timeout=30\r\nX-End: kept\r\n");
        body = b"hop\n".to_vec();
    } else if let Some(rest) = path.strip_prefix("/chunked/") {
        let len: usize = rest
            .split('/')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
        let mut out = head.into_bytes();
        out.extend(crate::http::chunked(
            &prefork_bench::pattern(len),
            &[1, 7, 100, 4096, 30000],
        ));
        return out;
    } else {
        body = format!("recorded conn={id} body={}\n", request.body.len()).into_bytes();
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = head.into_bytes();
    out.extend(body);
    out
}

/// An origin that accepts connections and reads requests but never answers.
pub struct SilentOrigin {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
}

impl SilentOrigin {
    pub fn start() -> SilentOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the silent origin");
        let addr = listener.local_addr().expect("local_addr");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicUsize::new(0));
        let (s, a, b) = (stop.clone(), accepted.clone(), bytes.clone());
        thread::Builder::new()
            .name("silent-origin".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if s.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut stream) = stream else { continue };
                    a.fetch_add(1, Ordering::SeqCst);
                    let b = b.clone();
                    thread::spawn(move || {
                        let _ = stream.set_read_timeout(Some(IDLE));
                        let mut sink = [0u8; 4096];
                        loop {
                            match stream.read(&mut sink) {
                                Ok(0) => break,
                                Ok(n) => {
                                    b.fetch_add(n, Ordering::SeqCst);
                                }
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                                Err(_) => break,
                            }
                        }
                    });
                }
            })
            .expect("spawn the silent origin");
        SilentOrigin {
            addr,
            stop,
            accepted,
            bytes,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Bytes received so far, over all connections.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::SeqCst)
    }
}

impl Drop for SilentOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// A loopback address nothing listens on: a port bound and released at once.
/// Another test's socket may take the port in between: then another one.
pub fn refused_addr() -> SocketAddr {
    let mut last = None;
    for _ in 0..10 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        drop(listener);
        // Check: connecting is refused now.
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return addr,
            other => last = Some((addr, other)),
        }
    }
    panic!("no port that refuses connections in 10 tries, last: {last:?}")
}

/// An origin that accepts connections and closes each at once, without
/// reading: every request sent to it fails before any response byte.
pub struct ClosingOrigin {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
}

impl ClosingOrigin {
    pub fn start() -> ClosingOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the closing origin");
        let addr = listener.local_addr().expect("local_addr");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (s, a) = (stop.clone(), accepted.clone());
        thread::Builder::new()
            .name("closing-origin".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if s.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        a.fetch_add(1, Ordering::SeqCst);
                        let _ = stream.shutdown(Shutdown::Both);
                    }
                }
            })
            .expect("spawn the closing origin");
        ClosingOrigin {
            addr,
            stop,
            accepted,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for ClosingOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}
