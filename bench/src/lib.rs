//! The benchmark and test origin: a small [may_minihttp] server.
//!
//! Routes:
//! - `GET /` answers `Hello, World!`.
//! - `GET /bytes/N` answers `N` bytes of [`pattern`], so a client can check a
//!   large body byte for byte (a dropped, repeated or reordered block shows).
//! - anything else answers `origin=NAME method=METHOD path=PATH\n` (plus
//!   ` body=LEN` when the request had a body), so routing is visible.
//!
//! Every response carries `X-Origin: NAME`.
//!
//! `GET /stats` answers `connections=C requests=R\n`: the connections the
//! origin has accepted and the requests it has served since it started (not
//! counting `/stats` itself), so a benchmark can count how often a proxy
//! opens a new upstream connection.
//!
//! may_minihttp reads request bodies only by `Content-Length` (no chunked
//! bodies) and takes at most 16 request headers; the black-box tests use their
//! own recording origin where they need to see exactly what arrived.

use may_minihttp::{HttpService, HttpServiceFactory, Request, Response};
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Body served by `GET /`.
pub const HELLO: &str = "Hello, World!";

/// Length of one block of [`pattern`]: 15 hex digits of the block's offset and
/// a newline.
const BLOCK: usize = 16;

/// Bodies up to this size are served from one shared buffer, without
/// allocating per request.
const SHARED_PATTERN_LEN: usize = 1 << 20;

/// The first `len` bytes of the `/bytes/N` body.
///
/// The body is a sequence of 16-byte blocks, each holding its own byte offset
/// as 15 lower-case hex digits and a newline (`000000000000000\n`,
/// `000000000000010\n`, ...), cut at `len`.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + BLOCK);
    let mut offset = 0;
    while out.len() < len {
        out.extend_from_slice(format!("{offset:015x}\n").as_bytes());
        offset += BLOCK;
    }
    out.truncate(len);
    out
}

fn shared_pattern() -> &'static str {
    static SHARED: OnceLock<String> = OnceLock::new();
    SHARED.get_or_init(|| {
        String::from_utf8(pattern(SHARED_PATTERN_LEN)).expect("the pattern is ASCII")
    })
}

/// What one origin server has served, shared by its connections.
#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
}

/// One origin's request handler; cloned for every connection.
#[derive(Clone)]
struct Origin {
    name: &'static str,
    /// `X-Origin: NAME`, built once per server because may_minihttp takes
    /// only `&'static str` headers.
    origin_header: &'static str,
    counters: Arc<Counters>,
}

impl HttpServiceFactory for Origin {
    type Service = Origin;

    /// Called once per accepted connection, which is what makes it count them.
    fn new_service(&self, _id: usize) -> Origin {
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
        self.clone()
    }
}

impl HttpService for Origin {
    fn call(&mut self, req: Request, rsp: &mut Response) -> io::Result<()> {
        rsp.header(self.origin_header);
        let method = req.method().to_owned();
        let path = req.path().to_owned();
        // Always drain the body: bytes left unread would be parsed as the
        // next request.
        let mut body = Vec::new();
        req.body().read_to_end(&mut body)?;

        if method == "GET" && path == "/stats" {
            let c = &self.counters;
            let text = format!(
                "connections={} requests={}\n",
                c.connections.load(Ordering::Relaxed),
                c.requests.load(Ordering::Relaxed)
            );
            rsp.body_vec(text.into_bytes());
            return Ok(());
        }
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        if method == "GET" && path == "/" {
            rsp.body(HELLO);
        } else if let Some(len) = path
            .strip_prefix("/bytes/")
            .and_then(|n| n.parse::<usize>().ok())
        {
            rsp.header("Content-Type: application/octet-stream");
            if len <= SHARED_PATTERN_LEN {
                rsp.body(&shared_pattern()[..len]);
            } else {
                rsp.body_vec(pattern(len));
            }
        } else {
            let mut text = format!("origin={} method={method} path={path}", self.name);
            if !body.is_empty() {
                text.push_str(&format!(" body={}", body.len()));
            }
            text.push('\n');
            rsp.body_vec(text.into_bytes());
        }
        Ok(())
    }
}

/// Starts an origin named `name` on `addr` and returns the address it bound.
///
/// With port 0 a free port is chosen. The server runs on may's coroutine
/// scheduler until the process exits; several can run in one process.
pub fn start(addr: SocketAddr, name: &str) -> io::Result<SocketAddr> {
    let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
    let origin_header: &'static str = Box::leak(format!("X-Origin: {name}").into_boxed_str());
    let origin = Origin {
        name,
        origin_header,
        counters: Arc::default(),
    };
    if addr.port() != 0 {
        origin.start(addr)?;
        return Ok(addr);
    }
    // may_minihttp binds by itself and does not report the port it got, so
    // pick a free one and retry if another socket takes it in between.
    let mut last_error = None;
    for _ in 0..20 {
        let candidate = TcpListener::bind(addr)?.local_addr()?;
        match origin.clone().start(candidate) {
            Ok(_) => return Ok(candidate),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}

/// Starts an origin named `name` on a free loopback port.
pub fn start_local(name: &str) -> io::Result<SocketAddr> {
    start(SocketAddr::from(([127, 0, 0, 1], 0)), name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpStream;

    #[test]
    fn pattern_blocks_hold_their_offsets() {
        let p = pattern(40);
        assert_eq!(&p[..16], b"000000000000000\n");
        assert_eq!(&p[16..32], b"000000000000010\n");
        assert_eq!(&p[32..], b"00000000");
        assert_eq!(shared_pattern().len(), SHARED_PATTERN_LEN);
        assert_eq!(shared_pattern().as_bytes()[..40], p[..]);
    }

    /// Sends `GET path` on `conn` and reads until the response ends with `end`.
    fn get(conn: &mut TcpStream, path: &str, end: &str) -> String {
        write!(conn, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0; 1024];
        while !got.ends_with(end.as_bytes()) {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(got).unwrap()
    }

    #[test]
    fn stats_count_connections_and_requests() {
        let addr = start_local("stats").unwrap();
        let mut first = TcpStream::connect(addr).unwrap();
        get(&mut first, "/", HELLO);
        get(&mut first, "/", HELLO);
        let mut second = TcpStream::connect(addr).unwrap();
        get(&mut second, "/other", "\n");
        let mut stats = TcpStream::connect(addr).unwrap();
        let rsp = get(&mut stats, "/stats", "\n");
        assert!(rsp.ends_with("\r\n\r\nconnections=3 requests=3\n"), "{rsp}");
        // `/stats` does not count itself.
        let rsp = get(&mut stats, "/stats", "\n");
        assert!(rsp.ends_with("\r\n\r\nconnections=3 requests=3\n"), "{rsp}");
    }
}
