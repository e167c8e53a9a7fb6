//! Trailers end to end, and the `Trailer` field that announces them.

use crate::testing::{config, exchange, read_response, Proxy};
use prefork_testkit::handler::{EchoOrigin, HandlerOrigin};

#[test]
fn body_chunked_response_with_trailers_byte_by_byte_then_reuse() {
    let chunked: &[u8] = b"5;x=y\r\nhello\r\n7\r\n, world\r\n0;e\r\nX-T: 1\r\nY:2\r\n\r\n";
    let origin = HandlerOrigin::start(move |mut s, id| {
        while let Ok(Some(request)) = s.read_request_head() {
            let path = request.path;
            if path.contains("chunked") {
                let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                r.extend_from_slice(chunked);
                s.trickle(&r);
            } else {
                let r = format!("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nc{id:03}");
                s.send(r.as_bytes()).unwrap();
            }
        }
    });
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    c.send(b"GET /app/chunked HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert!(c.read_until(b"\r\n\r\n"));
    let start = c
        .buffered()
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap()
        + 4;
    c.consume(start);
    let body = c.read_exact_body(chunked.len()).unwrap();
    assert_eq!(&body[..], chunked);
    assert_eq!(c.buffered(), b"", "bytes after the chunked body");
    c.send(b"GET /app/x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = read_response(&mut c, false);
    assert_eq!(r.text(), "c001");
    assert_eq!(origin.connections(), 1);
}

/// `Trailer` is an end-to-end field (RFC 9110 §6.6.2): it goes upstream
/// with the chunked body whose trailers prefork passes on unchanged.
#[test]
fn a_request_trailer_field_goes_upstream_with_its_trailers() {
    let origin = EchoOrigin::start();
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    let r = exchange(
        &mut c,
        "POST /app/t HTTP/1.1\r\nHost: a\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n0\r\nX-Sum: 5\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let echoed = r.text();
    assert!(echoed.contains("\r\nTrailer: X-Sum\r\n"), "{echoed}");
}

/// A response's `Trailer` field reaches the client that gets its trailers
/// (HTTP/1.1, chunked as received), not an HTTP/1.0 one, whose body is
/// decoded and loses them.
#[test]
fn a_response_trailer_field_goes_where_its_trailers_go() {
    let origin = HandlerOrigin::start(|mut s, _| {
        while let Ok(Some(_)) = s.read_request_head() {
            let r = b"HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n\
                      5\r\nhello\r\n0\r\nX-Sum: 5\r\n\r\n";
            if s.send(r).is_err() {
                return;
            }
        }
    });
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    c.send(b"GET /app/t HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert!(c.read_until(b"\r\n0\r\nX-Sum: 5\r\n\r\n"));
    let text = String::from_utf8_lossy(c.buffered());
    assert!(text.contains("\r\nTrailer: X-Sum\r\n"), "{text}");

    let mut c = proxy.connect();
    c.send(b"GET /app/t HTTP/1.0\r\n\r\n").unwrap();
    let all = c.read_to_close().unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(text.ends_with("\r\n\r\nhello"), "{text}");
    assert!(!text.to_ascii_lowercase().contains("trailer"), "{text}");
}
