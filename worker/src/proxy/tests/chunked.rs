//! Chunked bodies end to end: uploads (with `Expect: 100-continue`, byte
//! by byte, at the size limit), responses decoded for HTTP/1.0 clients, and
//! responses cut short.

use crate::testing::{config, read_response, Proxy};
use prefork_testkit::handler::{EchoOrigin, HandlerOrigin};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

#[test]
fn streams_a_chunked_upload_and_expect_continue() {
    let origin = EchoOrigin::start();
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    c.send(b"POST /app/upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nabcd\r\n")
        .unwrap();
    thread::sleep(Duration::from_millis(50));
    c.send(b"3\r\nef").unwrap();
    thread::sleep(Duration::from_millis(50));
    c.send(b"g\r\n0\r\nX-Trailer: t\r\n\r\n").unwrap();
    let r = read_response(&mut c, false);
    assert_eq!(r.status, 200);
    let echoed = r.text();
    assert!(
        echoed.contains("Transfer-Encoding: chunked\r\n"),
        "{echoed}"
    );
    assert!(echoed.ends_with("\r\n\r\nabcdefg"), "{echoed}");

    // A Content-Length upload that waits for 100 Continue.
    c.send(
        b"PUT /app/put HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .unwrap();
    let interim = read_response(&mut c, false);
    assert_eq!(interim.status, 100);
    c.send(b"hello").unwrap();
    let r = read_response(&mut c, false);
    assert_eq!(r.status, 200);
    assert!(
        r.text().ends_with("Content-Length: 5\r\n\r\nhello"),
        "{}",
        r.text()
    );
}

#[test]
fn body_chunked_upload_byte_by_byte_then_pipelined() {
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = got.clone();
    let origin = HandlerOrigin::start(move |mut s, _| {
        while let Ok(Some(request)) = s.read_request_head() {
            let path = request.path;
            if request.chunked {
                s.read_until(b"\r\n\r\n");
                let end = s
                    .buffered()
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .unwrap()
                    + 4;
                seen.lock().unwrap().extend(s.consume(end));
            }
            let body = format!("path={path}");
            let r = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            s.send(r.as_bytes()).unwrap();
        }
    });
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    let chunked = b"3;a=b;c=\"d e\"\r\nabc\r\nA\r\n0123456789\r\n0;z\r\nX-T: 1\r\nY: 2\r\n\r\n";
    let mut all =
        b"POST /app/up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    all.extend_from_slice(chunked);
    all.extend_from_slice(b"GET /app/next HTTP/1.1\r\nHost: a\r\n\r\n");
    c.trickle(&all);
    let r = read_response(&mut c, false);
    assert_eq!(r.text(), "path=/app/up");
    let r = read_response(&mut c, false);
    assert_eq!(r.text(), "path=/app/next");
    assert_eq!(&got.lock().unwrap()[..], &chunked[..]);
}

#[test]
fn body_chunked_response_decoded_for_http10_byte_by_byte() {
    let origin = HandlerOrigin::start(|mut s, _| {
        if let Ok(Some(_)) = s.read_request_head() {
            s.trickle(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n7\r\n, world\r\n0\r\nX-T: 1\r\n\r\n",
            );
            // Open until prefork closes it: the body's end, not the
            // origin's close, must end the client's response.
            let _ = s.read_to_close();
        }
    });
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    c.send(b"GET /app/x HTTP/1.0\r\n\r\n").unwrap();
    let all = c.read_to_close().unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(text.ends_with("\r\n\r\nhello, world"), "{text}");
}

#[test]
fn body_chunked_upload_at_the_limit_exactly() {
    let origin = HandlerOrigin::start(|mut s, _| {
        while let Ok(Some(_)) = s.read_request_head() {
            s.read_until(b"0\r\n\r\n");
            s.consume(usize::MAX);
            s.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
        }
    });
    let mut cfg = config(origin.addr());
    cfg.http.max_body_size = 10;
    let proxy = Proxy::start(cfg);
    let mut c = proxy.connect();
    let req = b"POST /app/up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n6\r\nefghij\r\n0\r\n\r\n";
    c.trickle(req);
    let r = read_response(&mut c, false);
    assert_eq!(r.status, 200);
    let req = b"POST /app/up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n7\r\nefghijk\r\n0\r\n\r\n";
    c.send(req).unwrap();
    let r = read_response(&mut c, false);
    assert_eq!(r.status, 413);
}

#[test]
fn body_chunked_response_cut_short_closes_the_client() {
    for cut in [3usize, 7, 14, 20, 26, 28, 29, 30] {
        let chunked: &[u8] = b"5;x=y\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
        let origin = HandlerOrigin::start(move |mut s, _| {
            if let Ok(Some(_)) = s.read_request_head() {
                let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                r.extend_from_slice(&chunked[..cut]);
                s.trickle(&r);
            }
        });
        // The head trickles in byte by byte: on a loaded machine that can
        // take longer than the harness's 300 ms read timeout, and a 504
        // would keep the connection open. The cut is what is tested.
        let mut cfg = config(origin.addr());
        if let Some(app) = cfg.upstreams.get_mut("app") {
            app.read_timeout = Duration::from_secs(30);
        }
        let proxy = Proxy::start(cfg);
        for version in ["1.1", "1.0"] {
            let mut c = proxy.connect();
            c.send(
                format!("GET /app/x HTTP/{version}\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
            let all = c.read_to_close();
            // On an error, what arrived before it.
            let text = String::from_utf8_lossy(all.as_deref().unwrap_or(c.buffered()));
            let r = all.as_ref().map(Vec::len);
            assert!(r.is_ok(), "cut {cut} {version}: {r:?} {text}");
            assert!(
                text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.1 502"),
                "cut {cut} {version}: {text}"
            );
        }
    }
}
