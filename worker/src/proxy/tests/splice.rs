//! Spliced bodies end to end: around the size from which bodies are
//! spliced, and an upstream closing in the middle of one.

use crate::testing::{config, read_response, Proxy};
use prefork_testkit::handler::HandlerOrigin;
use std::thread;
use std::time::Duration;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Origin echoing a Content-Length body back, each in two writes: the head
/// with `first` body bytes, then the rest.
fn echo_origin(first: usize) -> HandlerOrigin {
    HandlerOrigin::start(move |mut s, id| {
        while let Ok(Some(request)) = s.read_request() {
            let body = request.body;
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Conn: {id}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            let cut = r.len() + first.min(body.len());
            r.extend_from_slice(&body);
            if s.send(&r[..cut]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
            if s.send(&r[cut..]).is_err() {
                return;
            }
        }
    })
}

#[test]
fn body_spliced_both_ways_around_the_threshold() {
    for first in [0, 1, 100, 20_000] {
        let origin = echo_origin(first);
        let mut cfg = config(origin.addr());
        cfg.http.splice = true;
        let proxy = Proxy::start(cfg);
        let mut c = proxy.connect();
        let sizes = [
            65_535,
            65_536,
            65_537,
            65_536 + 1,
            65_536 + 100,
            65_536 + 20_000,
            200_000,
            1,
        ];
        for (i, len) in sizes.into_iter().enumerate() {
            let body = pattern(len);
            let head =
                format!("POST /app/{i} HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n");
            // The head with the first `first` body bytes, then the rest.
            let mut req = head.into_bytes();
            let cut = req.len() + first.min(len);
            req.extend_from_slice(&body);
            c.send(&req[..cut]).unwrap();
            thread::sleep(Duration::from_millis(20));
            c.send(&req[cut..]).unwrap();
            let r = read_response(&mut c, false);
            assert_eq!(r.status, 200, "len {len} first {first}");
            assert!(r.body == body, "len {len} first {first}: body differs");
            assert!(c.buffered().is_empty(), "len {len} first {first}");
        }
        assert_eq!(origin.connections(), 1, "first {first}");
    }
}

#[test]
fn body_upstream_closing_mid_splice_closes_the_client() {
    let origin = HandlerOrigin::start(|mut s, _| {
        if let Ok(Some(_)) = s.read_request_head() {
            let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n".to_vec();
            r.extend_from_slice(&pattern(150_000));
            let _ = s.send(&r);
            thread::sleep(Duration::from_millis(50));
        }
    });
    let mut cfg = config(origin.addr());
    cfg.http.splice = true;
    let proxy = Proxy::start(cfg);
    let mut c = proxy.connect();
    c.send(b"GET /app/x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let all = c.read_to_close().unwrap();
    let start = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(all.len() - start, 150_000);
}
