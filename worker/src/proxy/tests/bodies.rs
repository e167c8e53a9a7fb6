//! Bodies end to end: streaming both ways, responses delimited by length,
//! chunks or close, and bodies that do not match their framing.

use crate::testing::{config, exchange, read_response, Proxy};
use prefork_testkit::handler::{EchoOrigin, HandlerOrigin};
use std::io::Write;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

#[test]
fn forwards_chunked_and_close_delimited_responses() {
    let origin = EchoOrigin::start();
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    let r = exchange(&mut c, "GET /app/chunked HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.text(), "hello, world");
    // Still usable after a chunked response.
    let r = exchange(&mut c, "GET /app/close HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.text(), "close-delimited body");

    // HTTP/1.0 gets the chunked body decoded, delimited by close.
    let mut c = proxy.connect();
    let r = exchange(
        &mut c,
        "GET /app/chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.text(), "hello, world");
}

#[test]
fn streams_large_bodies_both_ways() {
    let origin = EchoOrigin::start();
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    let body: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let head = format!(
        "POST /app/big HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut writer = c.stream().try_clone().unwrap();
    let upload = body.clone();
    let sender = thread::spawn(move || {
        writer.write_all(head.as_bytes()).unwrap();
        writer.write_all(&upload).unwrap();
    });
    let r = read_response(&mut c, false);
    sender.join().unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.ends_with(&body), "the echoed body differs");
    assert_eq!(
        exchange(&mut c, "GET /app/echo HTTP/1.1\r\nHost: a\r\n\r\n").status,
        200
    );
}

/// The origin's note that it wrote a whole response, stray bytes included:
/// on loopback they are then in prefork's socket.
fn wait_written(written: &mpsc::Receiver<()>) {
    written
        .recv_timeout(Duration::from_secs(10))
        .expect("the origin wrote its response");
}

#[test]
fn body_longer_than_content_length_is_not_forwarded_nor_reused() {
    let (wrote, written) = mpsc::channel();
    let origin = HandlerOrigin::start(move |mut s, id| {
        while let Ok(Some(_)) = s.read_request_head() {
            let r = format!("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nc{id:03}xEXTRA");
            s.trickle(r.as_bytes());
            let _ = wrote.send(());
        }
    });
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    c.send(b"GET /app/1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = read_response(&mut c, false);
    assert_eq!(r.text(), "c001x");
    wait_written(&written);
    c.send(b"GET /app/2 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = read_response(&mut c, false);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "c002x");
    assert!(
        c.buffered().is_empty(),
        "{:?}",
        String::from_utf8_lossy(c.buffered())
    );
    assert_eq!(origin.connections(), 2);
}

#[test]
fn body_shorter_than_content_length_closes_the_client() {
    let origin = HandlerOrigin::start(|mut s, _| {
        if let Ok(Some(_)) = s.read_request_head() {
            s.trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
        }
    });
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    c.send(b"GET /app/1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let all = c.read_to_close().unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(text.ends_with("\r\n\r\nhello"), "{text}");
}

#[test]
fn body_head_and_204_carrying_bytes() {
    let (wrote, written) = mpsc::channel();
    let origin = HandlerOrigin::start(move |mut s, id| {
        while let Ok(Some(request)) = s.read_request_head() {
            let (method, path) = (request.method, request.path);
            let r = if method == "HEAD" {
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nBOGUS".to_string()
            } else if path.contains("204") {
                "HTTP/1.1 204 No Content\r\n\r\nBOGUS".to_string()
            } else {
                format!("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nc{id:03}")
            };
            s.trickle(r.as_bytes());
            let _ = wrote.send(());
        }
    });
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    c.send(b"HEAD /app/1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = read_response(&mut c, true);
    assert_eq!(r.status, 200);
    wait_written(&written);
    c.send(b"GET /app/204 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = read_response(&mut c, false);
    assert_eq!(r.status, 204);
    wait_written(&written);
    c.send(b"GET /app/3 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = read_response(&mut c, false);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "c003");
    assert!(
        c.buffered().is_empty(),
        "{:?}",
        String::from_utf8_lossy(c.buffered())
    );
    assert_eq!(origin.connections(), 3);
}

/// HEAD, 204 and 304 answers have no body whatever their head announces
/// (RFC 9112 §6.3): their upstream connection goes back to the pool, as in
/// nginx and HAProxy; a new connection per HEAD would churn ports.
#[test]
fn bodyless_answers_announcing_a_body_keep_their_upstream_connection() {
    let origin = HandlerOrigin::start(|mut s, id| {
        while let Ok(Some(request)) = s.read_request_head() {
            let (method, path) = (request.method, request.path);
            let r = if method == "HEAD" && path.contains("chunked") {
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned()
            } else if method == "HEAD" {
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_owned()
            } else if path.contains("304") {
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n".to_owned()
            } else if path.contains("204") {
                "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned()
            } else {
                format!("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nc{id:03}")
            };
            if s.send(r.as_bytes()).is_err() {
                return;
            }
        }
    });
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    for i in 0..5 {
        c.send(format!("HEAD /app/{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .unwrap();
        let r = read_response(&mut c, true);
        assert_eq!((r.status, r.header("content-length")), (200, Some("5")));
    }
    c.send(b"HEAD /app/chunked HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut c, true).status, 200);
    for (path, status) in [("/app/304", 304), ("/app/204", 204)] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .unwrap();
        assert_eq!(read_response(&mut c, false).status, status);
    }
    c.send(b"GET /app/last HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let r = read_response(&mut c, false);
    assert_eq!(r.text(), "c001");
    assert!(
        c.buffered().is_empty(),
        "{:?}",
        String::from_utf8_lossy(c.buffered())
    );
    assert_eq!(origin.connections(), 1);
}
