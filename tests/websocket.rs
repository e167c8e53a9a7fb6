//! Upgrade: a WebSocket echo through prefork, and the tunnel's idle timeout.

use crate::support::prefork::{Prefork, Setup};
use crate::support::scripted::WebSocketEcho;
use std::net::TcpStream;
use std::time::Duration;
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
