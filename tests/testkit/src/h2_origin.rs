//! An HTTP/2 origin (the `h2` crate's server, with prior knowledge: h2c,
//! or over TLS by ALPN) on a free loopback port, in a thread of its own with its own runtime,
//! shaped like a gRPC server: its responses end with trailers.
//!
//! By path (any part of it):
//! - otherwise: echoes the request: `200`, `content-type: text/plain`,
//!   a body of `METHOD path` then `scheme://authority`, then each field as
//!   `name: value` (one a line), an empty line, and the request body; then
//!   trailers: the request's trailers, `grpc-status: 0`, `grpc-message: ok`;
//! - `big/N`: `N` bytes of [`pattern`], sent as the stream's window
//!   allows (with [`H2Origin::sent`] and [`H2Origin::stalled_for`] telling
//!   how far it got and how long it has been waiting for the window);
//! - `length/N`: `N` bytes with `content-length`, no trailers;
//! - `trailers-only`: the whole response in one HEADERS frame with
//!   `grpc-status: 12` (as gRPC answers an unimplemented method);
//! - `refuse-once`: the first such stream of the origin is refused
//!   (`REFUSED_STREAM`), the next ones echoed;
//! - `reset`: a head and 5 bytes of body, then the stream is reset
//!   (`INTERNAL_ERROR`);
//! - `hints`: a `103 Early Hints` (`link: </a.css>`) before the echo;
//! - `stall-read`: never reads the request body nor answers (its window
//!   stays shut).

use crate::tls_origin::{self, Leaf};
use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{HeaderMap, HeaderValue, Request, Response};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// The bytes of a `big/N` body: byte `i` is `i % 251`.
pub fn pattern(len: usize) -> Vec<u8> {
    pattern_at(0, len)
}

/// Bytes `from..from + len` of [`pattern`].
fn pattern_at(from: usize, len: usize) -> Vec<u8> {
    (from..from + len).map(|i| (i % 251) as u8).collect()
}

/// Concurrent streams allowed per connection, unless told otherwise.
const MAX_STREAMS: u32 = 1000;

/// What the origin counts.
#[derive(Default)]
struct Counts {
    connections: AtomicUsize,
    streams: AtomicUsize,
    refused: AtomicBool,
    /// Body bytes of `big/` responses sent.
    sent: AtomicU64,
    /// Since when a `big/` response has waited for its window.
    stalled: Mutex<Option<Instant>>,
}

/// A running HTTP/2 origin; it stops (closing every connection) when
/// dropped.
pub struct H2Origin {
    addr: SocketAddr,
    counts: Arc<Counts>,
    /// Tells the connections to go away (graceful GOAWAY) when bumped, and
    /// the origin to stop when set to `u32::MAX`.
    control: watch::Sender<u32>,
    thread: Option<thread::JoinHandle<()>>,
}

impl H2Origin {
    /// An origin on a free loopback port.
    pub fn start() -> H2Origin {
        H2Origin::start_at("127.0.0.1:0".parse().expect("an address"))
    }

    /// An origin on `addr` (say, where a stopped one was).
    pub fn start_at(addr: SocketAddr) -> H2Origin {
        H2Origin::start_with(addr, None, MAX_STREAMS)
    }

    /// An origin that allows `max_streams` concurrent streams per
    /// connection (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub fn with_max_streams(max_streams: u32) -> H2Origin {
        H2Origin::start_with(
            "127.0.0.1:0".parse().expect("an address"),
            None,
            max_streams,
        )
    }

    /// An origin over TLS with `leaf`, choosing `h2` by ALPN, on a free
    /// loopback port.
    pub fn start_tls(leaf: &Leaf) -> H2Origin {
        // The HTTP/1.1 origin's configuration, offering h2 instead.
        let mut config = (*tls_origin::server_config(leaf)).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        H2Origin::start_with(
            "127.0.0.1:0".parse().expect("an address"),
            Some(acceptor),
            MAX_STREAMS,
        )
    }

    fn start_with(addr: SocketAddr, tls: Option<TlsAcceptor>, max_streams: u32) -> H2Origin {
        let listener = std::net::TcpListener::bind(addr).expect("bind the h2 origin");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local_addr");
        let counts = Arc::new(Counts::default());
        let (control, watch) = watch::channel(0u32);
        let c = counts.clone();
        let thread = thread::Builder::new()
            .name("h2-origin".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the h2 origin's runtime");
                runtime.block_on(accept_loop(listener, tls, max_streams, c, watch));
            })
            .expect("spawn the h2 origin");
        H2Origin {
            addr,
            counts,
            control,
            thread: Some(thread),
        }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.counts.connections.load(Ordering::SeqCst)
    }

    /// Streams (requests) received so far.
    pub fn streams(&self) -> usize {
        self.counts.streams.load(Ordering::SeqCst)
    }

    /// Body bytes of `big/` responses sent so far.
    pub fn sent(&self) -> u64 {
        self.counts.sent.load(Ordering::SeqCst)
    }

    /// How long a `big/` response has been waiting for its window to open
    /// (zero if it is not waiting).
    pub fn stalled_for(&self) -> Duration {
        let stalled = self.counts.stalled.lock().expect("the stall clock");
        stalled.map_or(Duration::ZERO, |since| since.elapsed())
    }

    /// Sends every open connection a graceful GOAWAY (streams in flight
    /// finish; new ones go to new connections).
    pub fn go_away(&self) {
        self.control.send_modify(|n| *n += 1);
    }
}

impl Drop for H2Origin {
    fn drop(&mut self) {
        self.control.send_replace(u32::MAX);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts connections until told to stop; dropping the runtime then
/// closes them all.
async fn accept_loop(
    listener: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
    max_streams: u32,
    counts: Arc<Counts>,
    mut control: watch::Receiver<u32>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((socket, _)) = accepted else { continue };
                counts.connections.fetch_add(1, Ordering::SeqCst);
                let (counts, control) = (counts.clone(), control.clone());
                match tls.clone() {
                    None => {
                        tokio::spawn(serve(socket, max_streams, counts, control));
                    }
                    Some(acceptor) => {
                        tokio::spawn(async move {
                            if let Ok(tls) = acceptor.accept(socket).await {
                                serve(tls, max_streams, counts, control).await;
                            }
                        });
                    }
                }
            }
            changed = control.changed() => {
                if changed.is_err() || *control.borrow() == u32::MAX {
                    return;
                }
            }
        }
    }
}

/// Serves one connection's streams.
async fn serve<T: AsyncRead + AsyncWrite + Unpin>(
    socket: T,
    max_streams: u32,
    counts: Arc<Counts>,
    mut control: watch::Receiver<u32>,
) {
    let Ok(mut conn) = h2::server::Builder::new()
        .max_concurrent_streams(max_streams)
        .handshake::<_, Bytes>(socket)
        .await
    else {
        return;
    };
    control.mark_unchanged();
    let mut going_away = false;
    loop {
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((request, respond))) => {
                    counts.streams.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(answer(request, respond, counts.clone()));
                }
                _ => return,
            },
            changed = control.changed(), if !going_away => {
                if changed.is_err() || *control.borrow() == u32::MAX {
                    return;
                }
                conn.graceful_shutdown();
                going_away = true;
            }
        }
    }
}

/// Answers one stream as its path says.
async fn answer(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    counts: Arc<Counts>,
) {
    let path = request.uri().path().to_owned();
    if path.contains("refuse-once") && !counts.refused.swap(true, Ordering::SeqCst) {
        respond.send_reset(h2::Reason::REFUSED_STREAM);
        return;
    }
    if path.contains("trailers-only") {
        let response = Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .header("grpc-status", "12")
            .body(())
            .expect("a response");
        let _ = respond.send_response(response, true);
        return;
    }
    if let Some(n) = number_after(&path, "big/") {
        let _ = send_big(respond, n, &counts).await;
        return;
    }
    if let Some(n) = number_after(&path, "length/") {
        let bodyless = n == 0 || request.method() == http::Method::HEAD;
        let response = Response::builder()
            .status(200)
            .header("content-length", n.to_string())
            .body(())
            .expect("a response");
        if let Ok(mut body) = respond.send_response(response, bodyless) {
            if !bodyless {
                let _ = send_all(&mut body, Bytes::from(pattern(n)), true).await;
            }
        }
        return;
    }
    if path.contains("stall-read") {
        // Held, unread, until the connection ends.
        std::future::pending::<()>().await;
        drop((request, respond));
        return;
    }
    if path.contains("reset") {
        let response = Response::builder()
            .status(200)
            .body(())
            .expect("a response");
        if let Ok(mut body) = respond.send_response(response, false) {
            let _ = body.send_data(Bytes::from_static(b"hello"), false);
            tokio::time::sleep(Duration::from_millis(50)).await;
            body.send_reset(h2::Reason::INTERNAL_ERROR);
        }
        return;
    }
    if path.contains("hints") {
        let hints = Response::builder()
            .status(103)
            .header("link", "</a.css>")
            .body(())
            .expect("a response");
        let _ = respond.send_informational(hints);
    }
    let _ = echo(request, respond).await;
}

/// The number after `prefix` in `path`, if any.
fn number_after(path: &str, prefix: &str) -> Option<usize> {
    let at = path.find(prefix)? + prefix.len();
    let digits: String = path[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Echoes the request (see the module's doc).
async fn echo(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) -> Result<(), h2::Error> {
    let (parts, mut body) = request.into_parts();
    let mut text = format!(
        "{} {}\n",
        parts.method,
        parts.uri.path_and_query().map_or("", |p| p.as_str())
    );
    text.push_str(&format!(
        "{}://{}\n",
        parts.uri.scheme_str().unwrap_or(""),
        parts.uri.authority().map_or("", |a| a.as_str())
    ));
    for (name, value) in &parts.headers {
        text.push_str(&format!(
            "{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    text.push('\n');
    let mut echoed = text.into_bytes();
    while let Some(data) = body.data().await {
        let data = data?;
        let _ = body.flow_control().release_capacity(data.len());
        echoed.extend_from_slice(&data);
    }
    let mut trailers = body.trailers().await?.unwrap_or_default();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers.insert("grpc-message", HeaderValue::from_static("ok"));
    let response = Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(())
        .expect("a response");
    let mut out = respond.send_response(response, false)?;
    send_all(&mut out, Bytes::from(echoed), false).await?;
    out.send_trailers(trailers)
}

/// Sends `data` as the stream's window allows; `end`: the stream ends with
/// it.
async fn send_all(
    out: &mut h2::SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<(), h2::Error> {
    while !data.is_empty() {
        out.reserve_capacity(data.len());
        let n = match std::future::poll_fn(|cx| out.poll_capacity(cx)).await {
            Some(n) => n?,
            None => return Err(h2::Error::from(h2::Reason::CANCEL)),
        };
        let piece = data.split_to(n.min(data.len()));
        out.send_data(piece, end && data.is_empty())?;
    }
    Ok(())
}

/// A `big/N` response: counted as it goes, its waits for the window timed.
async fn send_big(
    mut respond: SendResponse<Bytes>,
    n: usize,
    counts: &Counts,
) -> Result<(), h2::Error> {
    let response = Response::builder()
        .status(200)
        .body(())
        .expect("a response");
    let mut out = respond.send_response(response, false)?;
    // Made piece by piece: the whole of a large body would hold up the
    // runtime before the head leaves.
    let mut at = 0;
    while at < n {
        out.reserve_capacity((n - at).min(1 << 20));
        let capacity = std::future::poll_fn(|cx| {
            let polled = out.poll_capacity(cx);
            let mut stalled = counts.stalled.lock().expect("the stall clock");
            match polled {
                std::task::Poll::Pending => {
                    stalled.get_or_insert_with(Instant::now);
                }
                std::task::Poll::Ready(_) => *stalled = None,
            }
            polled
        })
        .await;
        let capacity = match capacity {
            Some(n) => n?,
            None => return Err(h2::Error::from(h2::Reason::CANCEL)),
        };
        let piece = pattern_at(at, capacity.min(n - at));
        at += piece.len();
        counts.sent.fetch_add(piece.len() as u64, Ordering::SeqCst);
        out.send_data(Bytes::from(piece), false)?;
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    out.send_trailers(trailers)
}
