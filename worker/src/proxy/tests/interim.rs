//! Interim (1xx) responses end to end: relayed at once, under a slow
//! client, and with an upstream falling silent after one.

use crate::testing::{config, read_response, Proxy};
use prefork_testkit::handler::HandlerOrigin;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

#[test]
fn a_slow_client_does_not_make_interim_responses_time_the_upstream_out() {
    // More interim responses than the socket buffers between prefork and a
    // client that does not read can hold (the sender's grows to tcp_wmem's
    // 4 MiB at most, the client's is set small below), so that relaying
    // them waits on the client.
    const HINTS: usize = 200;
    let link = format!("Link: </{}.css>; rel=preload\r\n", "x".repeat(1000));
    let hint = format!("HTTP/1.1 103 Early Hints\r\n{}\r\n", link.repeat(40));
    let origin = HandlerOrigin::start(move |mut s, _| {
        if let Ok(Some(_)) = s.read_request_head() {
            for _ in 0..HINTS {
                if s.send(hint.as_bytes()).is_err() {
                    return;
                }
            }
            let _ = s.send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone");
            let _ = s.read_to_close();
        }
    });
    let config = config(origin.addr());
    let read_timeout = config.upstreams["app"].read_timeout;
    let proxy = Proxy::start(config);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.connect(&proxy.addr.into()).unwrap();
    let mut c = TcpStream::from(socket);
    c.write_all(b"GET /app/hints HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    // The upstream answers at once; the client reads nothing for three
    // read timeouts: its slowness is not the upstream's.
    thread::sleep(3 * read_timeout);
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Read to the end of the response (megabytes: only the tail is checked).
    let mut all = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    while !all.ends_with(b"\r\n\r\ndone") {
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&all);
    let hints = text.matches("HTTP/1.1 103 Early Hints\r\n").count();
    let last = text.rfind("HTTP/1.1 ").map_or("", |i| &text[i..]);
    let last_line = last.lines().next().unwrap_or("");
    assert_eq!(
        (hints, last_line, last.ends_with("\r\n\r\ndone")),
        (HINTS, "HTTP/1.1 200 OK", true),
        "every hint, then the response (got {} bytes)",
        all.len()
    );
}

#[test]
fn an_upstream_silent_after_an_interim_response_still_times_out() {
    let origin = HandlerOrigin::start(|mut s, _| {
        if let Ok(Some(_)) = s.read_request_head() {
            let _ = s.send(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n");
            // Then nothing, until prefork gives up.
            let _ = s.read_to_close();
        }
    });
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    c.send(b"GET /app/hint HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let hint = read_response(&mut c, false);
    assert_eq!(hint.status, 103);
    assert_eq!(read_response(&mut c, false).status, 504);
}

/// Interim responses leave at once: a second one must not wait behind
/// Nagle's algorithm for the ACK of the first, which a client with delayed
/// ACKs sends only after 40 ms or more (deterministically: the kernel's
/// minimum delay). A run is fast unless the machine stalls, so one fast run
/// in three passes; before TCP_NODELAY was set for them, none ever was.
#[test]
fn a_second_interim_response_does_not_wait_for_the_first_ack() {
    let origin = HandlerOrigin::start(|mut s, _| {
        while let Ok(Some(_)) = s.read_request_head() {
            let hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
                          HTTP/1.1 103 Early Hints\r\nLink: </b>\r\n\r\n";
            let _ = s.send(hints);
            thread::sleep(Duration::from_millis(100));
            let _ = s.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let proxy = Proxy::start(config(origin.addr()));
    let mut waits = Vec::new();
    for _ in 0..3 {
        // A fresh connection (TCP_NODELAY not set yet), with delayed ACKs.
        let mut c = proxy.connect();
        socket2::SockRef::from(c.stream())
            .set_tcp_quickack(false)
            .unwrap();
        c.send(b"GET /app/x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert!(c.read_until(b"</a>"));
        let first = std::time::Instant::now();
        assert!(c.read_until(b"</b>"));
        waits.push(first.elapsed());
        if waits.last() < Some(&Duration::from_millis(20)) {
            return;
        }
    }
    panic!("the second 103 waited each time: {waits:?}");
}
