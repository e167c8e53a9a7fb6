//! Upstreams that speak HTTP/2 (`protocol = "h2c"`), through the HTTP/1.1
//! session: requests become streams of one shared connection, bodies and
//! trailers pass both ways, GOAWAY, refused streams and restarts are
//! retried as the core's rules say, and a slow client slows the stream.

use crate::testing::{config, exchange, Proxy};
use prefork_shared::config::UpstreamProtocol;
use prefork_shared::Config;
use prefork_testkit::h2_origin::{pattern, H2Origin};
use prefork_testkit::wait_until;
use std::net::SocketAddr;
use std::time::Duration;

/// The test configuration with `/app` going to `origin` over h2c.
fn h2c(origin: SocketAddr) -> Config {
    let mut config = config(origin);
    let app = config.upstreams.get_mut("app").expect("the app upstream");
    app.protocol = UpstreamProtocol::H2c;
    config
}

#[test]
fn a_chunked_request_with_trailers_goes_up_and_the_response_trailers_come_back() {
    let origin = H2Origin::start();
    let proxy = Proxy::start(h2c(origin.addr()));
    let mut c = proxy.connect();
    let r = exchange(
        &mut c,
        "POST /app/echo?q=1 HTTP/1.1\r\nHost: api.test\r\nTE: trailers\r\nTrailer: x-sum\r\n\
         Content-Type: application/grpc\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\n\
         Transfer-Encoding: chunked\r\n\r\n\
         6\r\nhello \r\n5\r\nworld\r\n0\r\nX-Sum: 11\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    let echoed = r.text();
    assert!(
        echoed.starts_with("POST /app/echo?q=1\nhttp://api.test\n"),
        "{echoed}"
    );
    for field in [
        "\ncontent-type: application/grpc\n",
        "\ntrailer: x-sum\n",
        "\nte: trailers\n",
        "\nx-forwarded-for: 127.0.0.1\n",
        "\nx-request-id: ",
    ] {
        assert!(echoed.contains(field), "{field:?} missing: {echoed}");
    }
    for gone in [
        "\nconnection:",
        "\nx-hop:",
        "\ntransfer-encoding:",
        "\nhost:",
    ] {
        assert!(!echoed.contains(gone), "{gone:?} forwarded: {echoed}");
    }
    assert!(echoed.ends_with("\n\nhello world"), "{echoed}");
    // The request's trailers came back as response trailers, with gRPC's.
    assert_eq!(r.trailer("x-sum"), Some("11"));
    assert_eq!(r.trailer("grpc-status"), Some("0"));
    assert_eq!(r.trailer("grpc-message"), Some("ok"));

    // The connection goes on, on the same upstream connection.
    let r = exchange(&mut c, "GET /app/again HTTP/1.1\r\nHost: api.test\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("GET /app/again\n"), "{}", r.text());
    assert_eq!((origin.connections(), origin.streams()), (1, 2));
}

#[test]
fn response_framing_follows_the_upstreams_length_and_an_http10_client_loses_the_trailers() {
    let origin = H2Origin::start();
    let proxy = Proxy::start(h2c(origin.addr()));
    let mut c = proxy.connect();
    // A length: passed on as such.
    let r = exchange(&mut c, "GET /app/length/1000 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1000"));
    assert_eq!(r.body, pattern(1000));
    // A trailers-only response (gRPC's error): an empty body, its status
    // among the fields.
    let r = exchange(
        &mut c,
        "POST /app/trailers-only HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), Some("12"));
    assert_eq!(r.header("content-length"), Some("0"));
    // HEAD: no body, whatever the upstream says.
    let r = exchange(&mut c, "HEAD /app/length/7 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status, r.header("content-length")), (200, Some("7")));

    let mut c = proxy.connect();
    c.send(b"GET /app/echo HTTP/1.0\r\nHost: a\r\n\r\n")
        .unwrap();
    let all = String::from_utf8_lossy(&c.read_to_close().unwrap()).into_owned();
    assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
    assert!(all.ends_with("\n\n"), "trailers or framing sent: {all}");
    assert!(!all.contains("grpc-status"), "{all}");
}

#[test]
fn concurrent_requests_share_one_upstream_connection() {
    let origin = H2Origin::start();
    let proxy = Proxy::start(h2c(origin.addr()));
    let addr = proxy.addr;
    let clients: Vec<_> = (0..16)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = prefork_testkit::http::Conn::connect(addr).unwrap();
                for j in 0..4 {
                    let body = format!("client {i} request {j}");
                    let request = format!(
                        "POST /app/echo HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let r = exchange(&mut c, &request);
                    assert_eq!(r.status, 200);
                    assert!(r.text().ends_with(&body), "{}", r.text());
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    assert_eq!(origin.streams(), 64);
    assert_eq!(origin.connections(), 1, "one shared connection");
}

#[test]
fn a_goaway_or_a_refused_stream_sends_the_request_again() {
    let origin = H2Origin::start();
    let proxy = Proxy::start(h2c(origin.addr()));
    let mut c = proxy.connect();
    let get = "GET /app/x HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(exchange(&mut c, get).status, 200);
    origin.go_away();
    // A graceful GOAWAY comes in two steps (streams opened before the
    // second are still served): every request succeeds, on the old
    // connection or, once it goes away, on a new one.
    assert!(wait_until(Duration::from_secs(5), || {
        assert_eq!(exchange(&mut c, get).status, 200);
        origin.connections() == 2
    }));
    assert_eq!(exchange(&mut c, get).status, 200);
    assert_eq!(origin.connections(), 2);

    // A refused stream is not processed: even a POST goes again.
    let r = exchange(
        &mut c,
        "POST /app/refuse-once HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(
        r.text().starts_with("POST /app/refuse-once\n"),
        "{}",
        r.text()
    );
}

#[test]
fn an_upstream_restart_is_retried_and_a_dead_one_is_a_502() {
    let origin = H2Origin::start();
    let addr = origin.addr();
    let proxy = Proxy::start(h2c(addr));
    let mut c = proxy.connect();
    let get = "GET /app/x HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(exchange(&mut c, get).status, 200);
    drop(origin);
    let origin = H2Origin::start_at(addr);
    // The pooled connection is gone: the GET goes again on a new one.
    assert_eq!(exchange(&mut c, get).status, 200);
    assert_eq!(origin.connections(), 1);
    drop(origin);
    let r = exchange(&mut c, get);
    assert_eq!(r.status, 502);
}

#[test]
fn a_stream_reset_mid_body_cuts_the_response_short() {
    let origin = H2Origin::start();
    let proxy = Proxy::start(h2c(origin.addr()));
    let mut c = proxy.connect();
    c.send(b"GET /app/reset HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let all = String::from_utf8_lossy(&c.read_to_close().unwrap()).into_owned();
    assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
    assert!(all.ends_with("5\r\nhello\r\n"), "no end of body: {all}");
}

#[test]
fn a_slow_client_slows_the_upstream_stream() {
    const TOTAL: usize = 32 << 20;
    let origin = H2Origin::start();
    let proxy = Proxy::start(h2c(origin.addr()));
    let mut c = proxy.connect();
    c.send(format!("GET /app/big/{TOTAL} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .unwrap();
    // The client reads nothing: once the sockets' buffers and the stream's
    // window are full, the origin waits for the window, for good.
    assert!(
        wait_until(Duration::from_secs(10), || origin.stalled_for()
            >= Duration::from_millis(300)),
        "the origin sent {} bytes without waiting",
        origin.sent()
    );
    let sent = origin.sent() as usize;
    assert!(
        sent < TOTAL / 2,
        "{sent} bytes sent to a client reading none"
    );
    let r = c.read_response().unwrap();
    assert_eq!(r.body.len(), TOTAL);
    assert!(r.body == pattern(TOTAL), "the body differs");
    assert_eq!(r.trailer("grpc-status"), Some("0"));
}

#[test]
fn a_server_that_reads_no_body_times_the_upload_out() {
    let origin = H2Origin::start();
    let proxy = Proxy::start(h2c(origin.addr()));
    let mut c = proxy.connect();
    let len = 8 << 20;
    c.send(
        format!("POST /app/stall-read HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    // The body is sent on the side: the worker stops reading it once the
    // stream's window is shut.
    let stream = c.stream().try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut &stream, &vec![b'x'; len]);
    });
    // No window for `write_timeout` (2 s), then no answer for
    // `read_timeout`: 504, and the connection ends (the body was not all
    // read).
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 504);
    assert!(r.closes());
    drop(c);
    sender.join().unwrap();
}

#[test]
fn a_second_connection_opens_when_the_servers_stream_limit_is_reached() {
    const BIG: usize = 8 << 20;
    let origin = H2Origin::with_max_streams(2);
    let proxy = Proxy::start(h2c(origin.addr()));
    // Four responses in flight at once (their clients read only the head).
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let mut c = proxy.connect();
            c.send(format!("GET /app/big/{BIG} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
                .unwrap();
            assert!(c.read_until(b"\r\n\r\n"));
            assert!(c.buffered().starts_with(b"HTTP/1.1 200 OK\r\n"));
            c
        })
        .collect();
    assert_eq!(origin.connections(), 2, "two streams per connection");
    assert_eq!(origin.streams(), 4);
    drop(clients);
}

#[test]
fn interim_responses_are_relayed_to_an_http11_client() {
    let origin = H2Origin::start();
    let proxy = Proxy::start(h2c(origin.addr()));
    let mut c = proxy.connect();
    c.send(b"GET /app/hints HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let hints = c.read_next_response(false).unwrap();
    assert_eq!(
        (hints.status, hints.header("link")),
        (103, Some("</a.css>"))
    );
    let r = c.read_next_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("GET /app/hints\n"), "{}", r.text());
}

#[test]
fn via_names_the_hop_from_an_http2_upstream_as_2() {
    let origin = H2Origin::start();
    let mut config = h2c(origin.addr());
    config.http.via = Some("prefork".into());
    let proxy = Proxy::start(config);
    let mut c = proxy.connect();
    let r = exchange(&mut c, "GET /app/x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.header("via"), Some("2 prefork"));
    assert!(r.text().contains("\nvia: 1.1 prefork\n"), "{}", r.text());
}

#[test]
fn a_client_that_expects_100_continue_is_asked_for_its_body() {
    let origin = H2Origin::start();
    let proxy = Proxy::start(h2c(origin.addr()));
    let mut c = proxy.connect();
    c.send(b"POST /app/e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .unwrap();
    let r = c.read_next_response(false).unwrap();
    assert_eq!(r.status, 100);
    c.send(b"hello").unwrap();
    let r = c.read_next_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.text().ends_with("\n\nhello"), "{}", r.text());
    assert!(!r.text().contains("expect"), "{}", r.text());
}

#[test]
fn protocol_h2_goes_over_verified_tls_chosen_by_alpn() {
    use prefork_shared::config::{Der, TlsRoots, UpstreamTls};
    use prefork_testkit::tls_origin::TestCa;
    let ca = TestCa::new("test CA");
    let origin = H2Origin::start_tls(&ca.leaf(&["api.internal"]));
    let mut config = config(origin.addr());
    let app = config.upstreams.get_mut("app").expect("the app upstream");
    app.protocol = UpstreamProtocol::H2;
    app.tls = Some(UpstreamTls {
        server_name: Some("api.internal".into()),
        roots: TlsRoots::Ca {
            file: "ca.pem".into(),
            certs: vec![Der(ca.der().to_vec())],
        },
    });
    let proxy = Proxy::start(config);
    let mut c = proxy.connect();
    for _ in 0..3 {
        let r = exchange(&mut c, "GET /app/tls HTTP/1.1\r\nHost: api.test\r\n\r\n");
        assert_eq!(r.status, 200);
        assert!(
            r.text().starts_with("GET /app/tls\nhttps://api.test\n"),
            "{}",
            r.text()
        );
        assert_eq!(r.trailer("grpc-status"), Some("0"));
    }
    assert_eq!((origin.connections(), origin.streams()), (1, 3));
}
