//! Origins whose connections run code rather than answer by path:
//! - [`HandlerOrigin`]: each connection runs a test's own handler (to
//!   trickle bytes, misframe a body, stall after an interim response...);
//! - [`EchoOrigin`]: echoes each request back, head as received and body.

use crate::http::Conn;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// How long an origin connection may stay idle (longer than any test).
const IDLE: Duration = Duration::from_secs(60);
/// How long an [`EchoOrigin`] waits before answering a path with `slow`.
pub const ECHO_SLOW: Duration = Duration::from_millis(600);

/// An origin whose connections each run `handler` on their own thread,
/// given the connection and its number (1, 2, ... in accept order).
pub struct HandlerOrigin {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
}

impl HandlerOrigin {
    pub fn start(handler: impl Fn(Conn, usize) + Send + Sync + 'static) -> HandlerOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the handler origin");
        let addr = listener.local_addr().expect("local_addr");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (s, a) = (stop.clone(), accepted.clone());
        let handler = Arc::new(handler);
        thread::Builder::new()
            .name("handler-origin".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if s.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let id = a.fetch_add(1, Ordering::SeqCst) + 1;
                    let handler = handler.clone();
                    thread::spawn(move || {
                        let _ = stream.set_read_timeout(Some(IDLE));
                        handler(Conn::from_stream(stream), id);
                    });
                }
            })
            .expect("spawn the handler origin");
        HandlerOrigin {
            addr,
            stop,
            accepted,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for HandlerOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// An origin that echoes each request: `200` with body `conn=C\n`, the head
/// exactly as received, then the body (decoded when it came chunked; none
/// for `HEAD`). It answers `Expect: 100-continue` with `100 Continue` before
/// reading the body, and its answer carries hop-by-hop fields
/// (`Connection: keep-alive, X-Origin-Hop`, `X-Origin-Hop`, `Keep-Alive`).
///
/// By path (any part of it):
/// - `drop-second`: from a connection's second request on, closes the
///   connection instead of answering, as a server closing an idle
///   keep-alive connection just as it is reused;
/// - `slow`: answers after [`ECHO_SLOW`];
/// - `chunked`: answers `hello, world` chunked, with a chunk extension;
/// - `close`: answers `Connection: close` with a body delimited by closing.
pub struct EchoOrigin {
    origin: HandlerOrigin,
}

impl EchoOrigin {
    pub fn start() -> EchoOrigin {
        EchoOrigin {
            origin: HandlerOrigin::start(echo),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.origin.addr()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.origin.connections()
    }
}

fn echo(mut conn: Conn, id: usize) {
    let mut requests = 0;
    while let Ok(Some(mut request)) = conn.read_request_head() {
        requests += 1;
        let path = request.path.clone();
        if path.contains("drop-second") && requests > 1 {
            return;
        }
        if request.header("expect") == Some("100-continue")
            && conn.send(b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
        {
            return;
        }
        if conn.read_request_body(&mut request).is_err() {
            return;
        }
        if path.contains("slow") {
            thread::sleep(ECHO_SLOW);
        }
        let response = if path.contains("chunked") {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\n\r\n"
                .to_vec()
        } else if path.contains("close") {
            let _ = conn.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nclose-delimited body");
            return;
        } else {
            let mut payload = format!("conn={id}\n{}", request.raw_head).into_bytes();
            payload.extend_from_slice(&request.body);
            let mut response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\
                 Connection: keep-alive, X-Origin-Hop\r\nX-Origin-Hop: secret\r\n\
                 Keep-Alive: timeout=5\r\n\r\n",
                payload.len()
            )
            .into_bytes();
            if request.method != "HEAD" {
                response.extend_from_slice(&payload);
            }
            response
        };
        if conn.send(&response).is_err() {
            return;
        }
    }
}
