//! An origin behind a proxy that sends the PROXY protocol: each connection
//! must start with a v1 or v2 header (read here by a parser of its own,
//! not prefork's), then serves HTTP/1.1 keep-alive, plain or over TLS.
//! Each response's body says which connection served it and what its
//! header said: `conn=3 v1 src=127.0.0.1:40000 dst=127.0.0.1:8080` (`-`
//! for the LOCAL and UNKNOWN forms). A connection whose first bytes are
//! not a header is closed and counted.

use crate::tls_origin::{self, Leaf};
use rustls::ServerConfig;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How long a connection may stay idle (longer than any test).
const IDLE: Duration = Duration::from_secs(60);
/// The first bytes of a version 2 header.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// What one connection's header said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 1 or 2.
    pub version: u8,
    /// The client's address; `None` for LOCAL (v2) and UNKNOWN (v1).
    pub source: Option<SocketAddr>,
    /// The address the client connected to; `None` as `source`.
    pub destination: Option<SocketAddr>,
}

impl Header {
    /// As the response bodies write it: `v1 src=... dst=...`.
    pub fn describe(&self) -> String {
        let addr = |a: Option<SocketAddr>| a.map_or_else(|| "-".to_owned(), |a| a.to_string());
        format!(
            "v{} src={} dst={}",
            self.version,
            addr(self.source),
            addr(self.destination)
        )
    }
}

/// The state the origin's threads share.
#[derive(Default)]
struct Shared {
    /// Each connection's header, by connection number (from 1).
    headers: Mutex<Vec<Header>>,
    /// Connections closed for lack of a header.
    refused: AtomicUsize,
}

/// The origin; see the module's documentation.
pub struct ProxyOrigin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
}

impl ProxyOrigin {
    /// Serves plain HTTP/1.1 after the header.
    pub fn start() -> ProxyOrigin {
        ProxyOrigin::serve(None)
    }

    /// Serves TLS with `leaf` after the header, then HTTP/1.1.
    pub fn start_tls(leaf: &Leaf) -> ProxyOrigin {
        ProxyOrigin::serve(Some(tls_origin::server_config(leaf)))
    }

    fn serve(tls: Option<Arc<ServerConfig>>) -> ProxyOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the PROXY origin");
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, s) = (shared.clone(), stop.clone());
        thread::Builder::new()
            .name("proxy-origin".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if s.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (sh, tls) = (sh.clone(), tls.clone());
                    thread::spawn(move || connection(stream, &sh, tls));
                }
            })
            .expect("spawn the PROXY origin");
        ProxyOrigin { addr, shared, stop }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every connection's header so far, in accept order.
    pub fn headers(&self) -> Vec<Header> {
        self.shared.headers.lock().expect("headers").clone()
    }

    /// Connections closed because they did not start with a header.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

impl Drop for ProxyOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the stop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Reads the header, then serves the connection's requests.
fn connection(mut stream: TcpStream, shared: &Shared, tls: Option<Arc<ServerConfig>>) {
    let _ = stream.set_read_timeout(Some(IDLE));
    let Some(header) = read_header(&mut stream) else {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        return;
    };
    let described = header.describe();
    let id = {
        let mut headers = shared.headers.lock().expect("headers");
        headers.push(header);
        headers.len()
    };
    let body = |path: &str| format!("conn={id} {described} path={path}");
    match tls {
        None => tls_origin::answer_each(stream, id, body),
        Some(config) => {
            if let Some(tls) = tls_origin::accept_tls(stream, config) {
                tls_origin::answer_each(tls, id, body);
            }
        }
    }
}

/// Reads exactly a PROXY header (byte by byte for v1: what follows is
/// left on the socket); `None` if the connection starts otherwise.
fn read_header(stream: &mut TcpStream) -> Option<Header> {
    let mut first = [0u8; 6];
    stream.read_exact(&mut first).ok()?;
    if &first == b"PROXY " {
        let mut line = Vec::new();
        while !line.ends_with(b"\r\n") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).ok()?;
            line.push(byte[0]);
            if line.len() > 107 {
                return None;
            }
        }
        return v1(std::str::from_utf8(&line[..line.len() - 2]).ok()?);
    }
    let mut fixed = [0u8; 16];
    fixed[..6].copy_from_slice(&first);
    stream.read_exact(&mut fixed[6..]).ok()?;
    if &fixed[..12] != V2_SIGNATURE || fixed[12] >> 4 != 2 {
        return None;
    }
    let mut rest = vec![0u8; usize::from(u16::from_be_bytes([fixed[14], fixed[15]]))];
    stream.read_exact(&mut rest).ok()?;
    v2(fixed[12] & 0x0f, fixed[13], &rest)
}

fn v1(line: &str) -> Option<Header> {
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["UNKNOWN", ..] => Some(Header {
            version: 1,
            source: None,
            destination: None,
        }),
        [family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip = |text: &str| -> Option<IpAddr> {
                if *family == "TCP4" {
                    text.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
                } else {
                    text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
                }
            };
            Some(Header {
                version: 1,
                source: Some(SocketAddr::new(ip(src)?, sport.parse().ok()?)),
                destination: Some(SocketAddr::new(ip(dst)?, dport.parse().ok()?)),
            })
        }
        _ => None,
    }
}

fn v2(command: u8, family: u8, block: &[u8]) -> Option<Header> {
    let local = Header {
        version: 2,
        source: None,
        destination: None,
    };
    let port = |at: usize| Some(u16::from_be_bytes([*block.get(at)?, *block.get(at + 1)?]));
    match (command, family) {
        (0, _) => Some(local),
        (1, 0x11) => {
            let ip = |at: usize| -> Option<IpAddr> {
                let octets: [u8; 4] = block.get(at..at + 4)?.try_into().ok()?;
                Some(IpAddr::from(octets))
            };
            Some(Header {
                version: 2,
                source: Some(SocketAddr::new(ip(0)?, port(8)?)),
                destination: Some(SocketAddr::new(ip(4)?, port(10)?)),
            })
        }
        (1, 0x21) => {
            let ip = |at: usize| -> Option<IpAddr> {
                let octets: [u8; 16] = block.get(at..at + 16)?.try_into().ok()?;
                Some(IpAddr::from(octets))
            };
            Some(Header {
                version: 2,
                source: Some(SocketAddr::new(ip(0)?, port(32)?)),
                destination: Some(SocketAddr::new(ip(16)?, port(34)?)),
            })
        }
        _ => None,
    }
}
