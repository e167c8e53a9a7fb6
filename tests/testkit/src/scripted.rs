//! Origins for the conformance and WebSocket tests:
//! - [`ScriptedOrigin`]: records each request as it arrived and answers it
//!   with the exact bytes scripted for its path (malformed ones included);
//! - [`WebSocketEcho`]: a WebSocket server that echoes every message.

use crate::http::{Conn, Request};
use std::collections::HashMap;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How long an origin connection may stay idle (longer than any test).
const IDLE: Duration = Duration::from_secs(30);
/// The pause inside a split response: long enough for the proxy to have
/// passed the first part on (either order is still a correct outcome).
const PAUSE: Duration = Duration::from_millis(200);

/// What the scripted origin answers for one path.
#[derive(Clone)]
pub struct Script {
    /// The exact response bytes.
    pub bytes: Vec<u8>,
    /// Close the connection after writing them.
    pub close: bool,
    /// Write this many bytes first, then the rest a moment later, so the
    /// proxy has forwarded the first part before it sees the rest.
    pub pause_at: Option<usize>,
}

#[derive(Default)]
struct Shared {
    scripts: Mutex<HashMap<String, Script>>,
    /// Each request with the number of the connection it came on.
    requests: Mutex<Vec<(usize, Request)>>,
    stop: AtomicBool,
    /// Connections accepted so far (numbers the next one).
    connections: AtomicUsize,
    /// Never answer `Expect: 100-continue` (like most servers behind nginx).
    ignore_expect: AtomicBool,
    /// Answers written whole so far.
    answered: AtomicUsize,
}

/// An origin answering each request with the bytes scripted for its path
/// (without the query), or `200` with body `ok` when none is. Answers
/// `Expect: 100-continue` with `100 Continue` before reading the body unless
/// told not to.
pub struct ScriptedOrigin {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl ScriptedOrigin {
    pub fn start() -> ScriptedOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the scripted origin");
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Shared::default());
        let accept_shared = shared.clone();
        thread::Builder::new()
            .name("scripted-origin".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if accept_shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let conn_shared = accept_shared.clone();
                    let id = accept_shared.connections.fetch_add(1, Ordering::SeqCst);
                    thread::spawn(move || serve(stream, id, &conn_shared));
                }
            })
            .expect("spawn the scripted origin");
        ScriptedOrigin { addr, shared }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers requests for `path` with exactly `bytes`.
    pub fn script(&self, path: &str, bytes: &[u8], close: bool) {
        self.shared.scripts.lock().unwrap().insert(
            path.to_owned(),
            Script {
                bytes: bytes.to_vec(),
                close,
                pause_at: None,
            },
        );
    }

    /// Like [`ScriptedOrigin::script`], writing the first `at` bytes, then
    /// the rest after a pause.
    pub fn script_split(&self, path: &str, bytes: &[u8], at: usize, close: bool) {
        self.shared.scripts.lock().unwrap().insert(
            path.to_owned(),
            Script {
                bytes: bytes.to_vec(),
                close,
                pause_at: Some(at),
            },
        );
    }

    /// Makes the origin ignore `Expect: 100-continue`: it just reads the body.
    pub fn ignore_expect(&self) {
        self.shared.ignore_expect.store(true, Ordering::SeqCst);
    }

    /// Every complete request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        let all = self.shared.requests.lock().unwrap();
        all.iter().map(|(_, r)| r.clone()).collect()
    }

    /// The numbers of the connections the requests for `path` came on.
    pub fn connections_for(&self, path: &str) -> Vec<usize> {
        let all = self.shared.requests.lock().unwrap();
        all.iter()
            .filter(|(_, r)| r.path == path)
            .map(|(id, _)| *id)
            .collect()
    }

    /// How many answers were written whole so far (a split one counts once
    /// its second part is written).
    pub fn answered(&self) -> usize {
        self.shared.answered.load(Ordering::SeqCst)
    }

    /// The requests received for `path`.
    pub fn requests_for(&self, path: &str) -> Vec<Request> {
        let mut all = self.requests();
        all.retain(|r| r.path == path);
        all
    }
}

impl Drop for ScriptedOrigin {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn serve(stream: TcpStream, id: usize, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(IDLE));
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut conn = Conn::from_stream(stream);
    loop {
        let mut continue_writer = writer.try_clone();
        let read = conn.read_request_then(|head| {
            let expects = !shared.ignore_expect.load(Ordering::SeqCst)
                && head
                    .header("expect")
                    .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
            if let (true, Ok(w)) = (expects, continue_writer.as_mut()) {
                w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            }
            Ok(())
        });
        let Ok(Some(request)) = read else { return };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let path = request.path.split('?').next().unwrap_or("").to_owned();
        shared.requests.lock().unwrap().push((id, request));
        let script = shared
            .scripts
            .lock()
            .unwrap()
            .get(&path)
            .cloned()
            .unwrap_or(Script {
                bytes: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
                close: false,
                pause_at: None,
            });
        let (first, rest) = script
            .bytes
            .split_at(script.pause_at.unwrap_or(0).min(script.bytes.len()));
        if !first.is_empty() {
            if writer.write_all(first).is_err() {
                return;
            }
            thread::sleep(PAUSE);
        }
        if writer.write_all(rest).is_err() {
            return;
        }
        shared.answered.fetch_add(1, Ordering::SeqCst);
        if script.close {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// A WebSocket origin (tungstenite) that echoes every text and binary
/// message back, and answers a close with a close.
pub struct WebSocketEcho {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl WebSocketEcho {
    pub fn start() -> WebSocketEcho {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the websocket origin");
        let addr = listener.local_addr().expect("local_addr");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        thread::Builder::new()
            .name("websocket-echo".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if s.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    thread::spawn(move || echo(stream));
                }
            })
            .expect("spawn the websocket origin");
        WebSocketEcho { addr, stop }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for WebSocketEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn echo(stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(IDLE));
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    loop {
        match ws.read() {
            Ok(msg) if msg.is_text() || msg.is_binary() => {
                if ws.send(msg).is_err() {
                    return;
                }
            }
            // Pings are answered and closes acknowledged by tungstenite.
            Ok(_) => {}
            Err(_) => return,
        }
    }
}
