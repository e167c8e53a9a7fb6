//! Upgrade: a WebSocket echo through prefork, the tunnel's idle timeout, no
//! h2c upgrade forwarded, and no 101 taken before the request body went up.

use crate::support::http::{request, Conn};
use crate::support::prefork::{Prefork, Setup};
use crate::support::scripted::WebSocketEcho;
use crate::support::wait_until;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

fn start(origin: &WebSocketEcho, tunnel_timeout: &str) -> Prefork {
    Prefork::start(
        Setup::new(1)
            .top(&format!("tunnel_timeout = \"{tunnel_timeout}\""))
            .body(&format!(
                "[upstreams.ws]\nservers = [\"{}\"]\n[[routes]]\nhost = \"ws.local\"\nupstream = \"ws\"\n",
                origin.addr()
            )),
    )
}

fn connect(p: &Prefork) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(p.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (ws, response) = tungstenite::client("ws://ws.local/chat", stream)
        .unwrap_or_else(|e| panic!("handshake through prefork: {e}\n{}", p.logs()));
    assert_eq!(response.status(), 101);
    assert_eq!(
        response
            .headers()
            .get("upgrade")
            .and_then(|v| v.to_str().ok()),
        Some("websocket")
    );
    assert!(response.headers().contains_key("sec-websocket-accept"));
    ws
}

#[test]
fn websocket_echo_through_prefork() {
    let origin = WebSocketEcho::start();
    let p = start(&origin, "30s");
    let mut ws = connect(&p);
    for i in 0..20 {
        let text = format!("message {i}");
        ws.send(Message::text(text.clone())).expect("send");
        assert_eq!(ws.read().expect("echo"), Message::text(text));
    }
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).expect("send binary");
    assert_eq!(ws.read().expect("echo"), Message::binary(big));

    // The close handshake passes through and both halves end.
    ws.close(None).expect("close");
    loop {
        match ws.read() {
            Ok(Message::Close(_)) | Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("unexpected end of the tunnel: {e}"),
        }
    }

    // The worker serves ordinary requests afterwards.
    let r = crate::support::http::get(p.port(), crate::support::prefork::PROBE_HOST, "/")
        .expect("request after the tunnel");
    assert_eq!(r.status, 200);
}

#[test]
fn an_idle_tunnel_is_closed_after_tunnel_timeout() {
    let origin = WebSocketEcho::start();
    let p = start(&origin, "500ms");
    let mut ws = connect(&p);
    ws.send(Message::text("hi")).expect("send");
    assert_eq!(ws.read().expect("echo"), Message::text("hi"));
    // Nothing moves: prefork closes both halves; the client reads the end.
    match ws.read() {
        Err(tungstenite::Error::Protocol(_))
        | Err(tungstenite::Error::ConnectionClosed)
        | Err(tungstenite::Error::AlreadyClosed) => {}
        Err(tungstenite::Error::Io(e)) if e.kind() != std::io::ErrorKind::WouldBlock => {}
        other => panic!("expected the idle tunnel to be closed, got {other:?}"),
    }
}

/// prefork routing `app.local` to `origin`, with large bodies spliced or
/// copied.
fn proxy_to(origin: SocketAddr, splice: bool) -> Prefork {
    Prefork::start(
        Setup::new(1)
            .top(&format!("splice = {splice}"))
            .body(&format!(
                "[upstreams.u]\nservers = [\"{origin}\"]\nread_timeout = \"20s\"\n\
         [[routes]]\nhost = \"app.local\"\nupstream = \"u\"\n"
            )),
    )
}

/// Reads from `stream` up to the end of a head: the head, and the bytes
/// that came after it.
fn read_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut got = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = got.split_off(end + 4);
            return (String::from_utf8_lossy(&got).into_owned(), rest);
        }
        let n = stream.read(&mut chunk).expect("read a head");
        assert!(
            n > 0,
            "closed inside a head: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&chunk[..n]);
    }
}

/// The tokens of the `Upgrade` fields of `head`.
fn upgrade_tokens(head: &str) -> Vec<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case("upgrade"))
        .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_owned()))
        .filter(|t| !t.is_empty())
        .collect()
}

/// An origin that supports cleartext HTTP/2 upgrade (like `h2c` servers):
/// it switches to `h2c` when offered, else to the first protocol offered,
/// else answers `200 plain`. Records each request head.
fn h2c_origin() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let seen = seen.clone();
            thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let (head, _) = read_head(&mut stream);
                let tokens = upgrade_tokens(&head);
                seen.lock().unwrap().push(head);
                let answer = if tokens.iter().any(|t| t.eq_ignore_ascii_case("h2c")) {
                    // What follows would be the server's HTTP/2 preface.
                    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
                        .to_owned()
                } else if let Some(t) = tokens.first() {
                    format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {t}\r\n\r\n")
                } else {
                    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nplain"
                        .to_owned()
                };
                let _ = stream.write_all(answer.as_bytes());
                let _ = stream.shutdown(Shutdown::Write);
                let _ = stream.read_to_end(&mut Vec::new());
            });
        }
    });
    (addr, heads)
}

/// h2c smuggling: an `h2c` upgrade is never forwarded (as Envoy does), so
/// that a client cannot get a raw HTTP/2 connection to the upstream past
/// prefork's routing; `HTTP2-Settings` is connection-specific (RFC 9113
/// §3.2.1) and never forwarded either. Other protocols still upgrade.
#[test]
fn h2c_upgrades_are_not_forwarded() {
    let (origin, heads) = h2c_origin();
    let p = proxy_to(origin, false);
    let settings = "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA";
    for (connection, upgrade) in [
        ("Upgrade, HTTP2-Settings", "h2c"),
        // HTTP2-Settings not named in Connection (h2csmuggler's variant).
        ("Upgrade", "h2c"),
        ("keep-alive, upgrade", "H2C"),
    ] {
        let mut c = Conn::local(p.port()).expect("connect");
        c.send(&request(
            "GET",
            "app.local",
            "/",
            &[
                &format!("Connection: {connection}"),
                &format!("Upgrade: {upgrade}"),
                settings,
            ],
            b"",
        ))
        .expect("send");
        let r = c.read_response().expect("response");
        assert_eq!(
            (r.status, r.text()),
            (200, "plain".to_owned()),
            "{connection} / {upgrade}"
        );
        assert!(!r.has_header("upgrade"));
        let head = heads.lock().unwrap().pop().expect("forwarded");
        let lower = head.to_ascii_lowercase();
        assert!(!lower.contains("upgrade"), "{head}");
        assert!(!lower.contains("h2c"), "{head}");
        assert!(!lower.contains("http2-settings"), "{head}");
    }

    // With another protocol offered, only that one is forwarded.
    let mut c = Conn::local(p.port()).expect("connect");
    c.send(&request(
        "GET",
        "app.local",
        "/",
        &[
            "Connection: Upgrade, HTTP2-Settings",
            "Upgrade: h2c, foo/1",
            settings,
        ],
        b"",
    ))
    .expect("send");
    let r = c.read_response_to(true).expect("response");
    assert_eq!(r.status, 101);
    assert_eq!(r.header("upgrade"), Some("foo/1"));
    let head = heads.lock().unwrap().pop().expect("forwarded");
    assert_eq!(upgrade_tokens(&head), ["foo/1"], "{head}");
    assert!(head.contains("\r\nConnection: upgrade\r\n"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("http2-settings"),
        "{head}"
    );
}

/// A 101 that comes while the request body is still on its way up (the
/// upstream stopped reading it) cannot open a faithful tunnel: the body
/// bytes in flight inside prefork (half written, or in a splice pipe) would
/// be sent twice or lost. prefork refuses the switch with a 502, and the
/// upstream never receives anything but a prefix of the body.
#[test]
fn a_101_before_the_request_body_was_sent_is_refused() {
    for splice in [false, true] {
        switch_during_the_body(splice);
    }
}

fn switch_during_the_body(splice: bool) {
    const LEN: usize = 64 << 20;
    let body: Arc<Vec<u8>> = Arc::new((0..LEN as u32 / 4).flat_map(|i| i.to_le_bytes()).collect());
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let origin_addr = listener.local_addr().expect("addr");
    let (go_tx, go_rx) = mpsc::channel::<()>();
    // Reads the head, stops reading until told, switches, then takes all
    // that comes until the end.
    let origin = thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let (head, mut got) = read_head(&mut stream);
        go_rx.recv().expect("go");
        stream
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n",
            )
            .expect("write 101");
        let mut chunk = vec![0u8; 256 * 1024];
        while got.len() < 2 * LEN {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
        (head, got)
    });
    let p = proxy_to(origin_addr, splice);
    // The refused switch is logged as an upstream failure.
    p.expect_log_errors();

    let client = TcpStream::connect(p.addr()).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let sent = Arc::new(AtomicUsize::new(0));
    let mut writer = client.try_clone().expect("clone");
    let (counter, data) = (sent.clone(), body.clone());
    let sender = thread::spawn(move || {
        let head = format!(
            "POST /up HTTP/1.1\r\nHost: app.local\r\nConnection: Upgrade\r\nUpgrade: foo\r\nContent-Length: {LEN}\r\n\r\n"
        );
        if writer.write_all(head.as_bytes()).is_err() {
            return;
        }
        for part in data.chunks(64 * 1024) {
            if writer.write_all(part).is_err() {
                return;
            }
            counter.fetch_add(part.len(), Ordering::SeqCst);
        }
        // The end of the body; in a tunnel, the client's end.
        let _ = writer.shutdown(Shutdown::Write);
    });

    // The upstream reads nothing: wait until the client's writes stall,
    // every buffer on the way being full, so prefork's body pump is stuck
    // writing upstream.
    let mut last = (usize::MAX, Instant::now());
    assert!(
        wait_until(Duration::from_secs(30), || {
            let now = sent.load(Ordering::SeqCst);
            if now != last.0 {
                last = (now, Instant::now());
            }
            last.1.elapsed() > Duration::from_millis(500)
        }),
        "the body never stalled"
    );
    assert!(
        sent.load(Ordering::SeqCst) < LEN,
        "the whole body was taken"
    );
    go_tx.send(()).expect("go");

    let mut reader = Conn::from_stream(client);
    let r = reader.read_response_to(true).expect("response");
    let _ = reader.stream().shutdown(Shutdown::Both);
    let _ = sender.join();
    let (head, got) = origin.join().expect("origin");
    assert!(head.contains("Upgrade: foo\r\n"), "{head}");
    // Whatever reached the upstream is the body as sent, in order.
    let same = got.len().min(LEN);
    if let Some(at) = (0..same).find(|&i| got[i] != body[i]) {
        panic!(
            "splice={splice}: upstream stream corrupted at byte {at} of {} (status {})",
            got.len(),
            r.status
        );
    }
    assert_eq!(r.status, 502, "splice={splice}: {}", p.logs());
}
