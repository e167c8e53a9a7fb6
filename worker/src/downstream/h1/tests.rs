//! The HTTP/1.1 session end to end: keep-alive, pipelining, HTTP/1.0,
//! protocol versions, bad requests; and the size of a connection's future.

use crate::downstream::h1::Connection;
use crate::io::client_socket::ClientSocket;
use crate::testing::{assert_closed, config, exchange, read_response, Proxy};
use prefork_testkit::handler::EchoOrigin;
use std::net::{TcpListener, TcpStream};

#[test]
fn proxies_with_keep_alive_and_a_pooled_upstream_connection() {
    let origin = EchoOrigin::start();
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    let r = exchange(
        &mut c,
        "GET /app/echo?x=1 HTTP/1.1\r\nHost: Site.Test:8080\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n\
         Keep-Alive: timeout=1\r\nX-Forwarded-For: 1.2.3.4\r\nTE: trailers\r\nx-keep: Yes\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let echoed = r.text();
    assert!(
        echoed.starts_with(
            "conn=1\nGET /app/echo?x=1 HTTP/1.1\r\nHost: Site.Test:8080\r\nx-keep: Yes\r\n"
        ),
        "{echoed}"
    );
    assert!(
        echoed.contains("X-Forwarded-For: 1.2.3.4, 127.0.0.1\r\n"),
        "{echoed}"
    );
    assert!(echoed.contains("X-Forwarded-Proto: http\r\n"));
    assert!(echoed.contains("X-Forwarded-Host: Site.Test:8080\r\n"));
    for dropped in ["X-Drop", "Keep-Alive", "TE:", "Connection"] {
        assert!(!echoed.contains(dropped), "{dropped} forwarded: {echoed}");
    }
    // The origin's hop-by-hop fields do not reach the client.
    assert_eq!(r.header("x-origin-hop"), None);
    assert_eq!(r.header("keep-alive"), None);
    assert_eq!(r.header("connection"), None);

    // The same client connection, and the pooled origin connection.
    let r = exchange(&mut c, "GET /app/echo HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(r.text().starts_with("conn=1\n"), "{}", r.text());
    assert_eq!(origin.connections(), 1);
    // A HEAD answer announcing a body (Content-Length) has none: its
    // connection goes back to the pool too.
    let r = exchange(&mut c, "HEAD /app/echo HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.header("content-length").is_some());
    let r = exchange(&mut c, "GET /app/echo HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(r.text().starts_with("conn=1\n"), "{}", r.text());

    // HTTP/1.0 keeps the connection only when asked.
    let r = exchange(
        &mut c,
        "GET /app/echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    assert_eq!(r.header("connection"), Some("keep-alive"));
    assert!(r.text().contains("Host: \r\n"), "{}", r.text());
    let r = exchange(&mut c, "GET /app/echo HTTP/1.0\r\n\r\n");
    assert_eq!(r.header("connection"), Some("close"));
    assert_closed(&mut c);
}

#[test]
fn answers_pipelined_requests_in_order() {
    let origin = EchoOrigin::start();
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    c.send(
        b"GET /app/one HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /app/two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz\
          GET /x HTTP/1.1\r\nHost: fixed.test\r\n\r\n\
          GET /app/four HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let one = read_response(&mut c, false);
    assert!(one.text().contains("GET /app/one "), "{}", one.text());
    let two = read_response(&mut c, false);
    assert!(
        two.text().contains("POST /app/two ") && two.text().ends_with("xyz"),
        "{}",
        two.text()
    );
    let three = read_response(&mut c, false);
    assert_eq!((three.status, three.text().as_str()), (201, "fixed\n"));
    assert_eq!(three.header("content-type"), Some("text/plain"));
    assert_eq!(three.header("server"), Some("prefork"));
    assert!(three.header("date").is_some());
    let four = read_response(&mut c, false);
    assert!(four.text().contains("GET /app/four "), "{}", four.text());
    assert_eq!(four.header("connection"), Some("close"));
    assert!(c.buffered().is_empty());
    assert_closed(&mut c);
}

#[test]
fn classifies_errors() {
    let origin = EchoOrigin::start();
    let proxy = Proxy::start(config(origin.addr()));

    let mut c = proxy.connect();
    let r = exchange(&mut c, "GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("connection"), None, "404 keeps the connection");
    let r = exchange(&mut c, "GET /down HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 502);
    assert!(r.text().contains("502 Bad Gateway"));
    let r = exchange(&mut c, "GET /app/slow HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 504);

    let mut c = proxy.connect();
    let r = exchange(
        &mut c,
        "POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!((r.status, r.header("connection")), (400, Some("close")));
    assert_closed(&mut c);

    let mut c = proxy.connect();
    let r = exchange(
        &mut c,
        "POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    );
    assert_eq!((r.status, r.header("connection")), (400, Some("close")));
    assert_closed(&mut c);

    let mut c = proxy.connect();
    let huge = format!(
        "GET /app HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(40 * 1024)
    );
    let r = exchange(&mut c, &huge);
    assert_eq!(r.status, 431);

    // A slow client times out alone; others are served meanwhile.
    let mut slow = proxy.connect();
    slow.send(b"GET /app HTTP/1.1\r\nHo").unwrap();
    let mut c = proxy.connect();
    assert_eq!(
        exchange(&mut c, "GET /app/echo HTTP/1.1\r\nHost: a\r\n\r\n").status,
        200
    );
    let r = read_response(&mut slow, false);
    assert_eq!((r.status, r.header("connection")), (408, Some("close")));
}

/// RFC 9112 §2.3: a higher minor version is handled as the highest one
/// supported (HTTP/1.1); another major version gets 505 (as nginx does).
#[test]
fn higher_minor_versions_are_read_as_1_1_and_other_majors_get_505() {
    let origin = EchoOrigin::start();
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    let r = exchange(&mut c, "GET /app/minor HTTP/1.2\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("GET /app/minor HTTP/1.1\r\n"),
        "{}",
        r.text()
    );
    // Kept alive, as HTTP/1.1 is by default.
    let r = exchange(&mut c, "GET /app/next HTTP/1.9\r\nHost: a\r\n\r\n");
    assert_eq!((r.status, r.header("connection")), (200, None));

    for line in [
        "GET / HTTP/2.0",
        "GET / HTTP/3.0",
        "GET / HTTP/0.9",
        "GET / HTTP/2",
    ] {
        let mut c = proxy.connect();
        let r = exchange(&mut c, &format!("{line}\r\nHost: a\r\n\r\n"));
        assert_eq!(
            (r.status, r.header("connection")),
            (505, Some("close")),
            "{line}"
        );
        assert_closed(&mut c);
    }
    for line in [
        "GET / HTTP/1.10",
        "GET / HTTP/1.x",
        "GET / HTTPS/1.1",
        "GET / HTTP/x.1",
    ] {
        let mut c = proxy.connect();
        let r = exchange(&mut c, &format!("{line}\r\nHost: a\r\n\r\n"));
        assert_eq!(r.status, 400, "{line}");
    }
}

/// A connection's future is allocated whole when it is accepted and kept
/// while the connection idles: it must stay within jemalloc's 4 KiB size
/// class. It once grew past it unnoticed (4,296 bytes, a 5 KiB allocation:
/// 1.5 KiB more per idle connection).
#[test]
fn a_connections_future_fits_a_4_kib_allocation() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, peer) = listener.accept().unwrap();
    let (snapshot, _stop) = crate::testing::snapshot(config(client.local_addr().unwrap()));
    let conn = Connection::new(
        snapshot.latest(),
        ClientSocket::new(accepted),
        (peer, None),
        snapshot.track(),
        None,
    );
    let size = std::mem::size_of_val(&conn.run());
    assert!(size <= 4096, "a connection's future takes {size} bytes");
}
