//! Idle HTTP/2 connections parked outside their task, their buffers given
//! back: a parked connection behaves as one that is not. Its next streams
//! are served with the HPACK state and settings it had (over h2c and TLS),
//! it is counted as open, it goes away with GOAWAY at `http2_idle_timeout`,
//! and a graceful stop sends it away politely.

use crate::support::http;
use crate::support::prefork::{free_port, Prefork, Setup};
use crate::support::wait_until;
use nix::sys::signal::Signal;
use prefork_testkit::h2_client::{H2Client, H2Request, H2Response};
use prefork_testkit::h2frames::hpack::Block;
use prefork_testkit::h2frames::Client;
use prefork_testkit::handler::EchoOrigin;
use prefork_testkit::tls_origin::TestCa;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Long enough for a connection idle for a second to be parked and for its
/// worker's next report (once a second) to count it.
const PARKED: Duration = Duration::from_secs(10);

/// `/fixed` answered by prefork, the rest by `echo`.
fn routes(echo: SocketAddr) -> String {
    format!(
        "[upstreams.echo]\nservers = [\"{echo}\"]\n\
         [[routes]]\npath = \"/fixed\"\nrespond = {{ body = \"fixed\\n\" }}\n\
         [[routes]]\npath = \"/\"\nupstream = \"echo\"\n"
    )
}

/// A prefork from `setup`, its harness listener taking HTTP/2 too, routing
/// as [`routes`] says to the echo origin returned with it.
fn start(setup: Setup) -> (Prefork, EchoOrigin) {
    let echo = EchoOrigin::start();
    let p = Prefork::start(setup.http2().body(&routes(echo.addr())));
    (p, echo)
}

/// A raw HTTP/2 client whose one request (stream 1, `/fixed`) was answered.
fn raw_client_after_one_request(p: &Prefork) -> Client {
    let mut c = Client::handshake(p.addr(), &[]).expect("h2c handshake");
    let fixed = Block::request("GET", "t.local", "/fixed");
    let r = c.request(1, &fixed, None, Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, 200);
    c
}

fn ok(p: &Prefork, r: Result<H2Response, h2::Error>) -> H2Response {
    r.unwrap_or_else(|e| panic!("HTTP/2 request failed: {e}\n{}", p.logs()))
}

/// A request whose field the client's HPACK encoder adds to its dynamic
/// table the first time, and sends as an index into it after.
fn tagged(path: &str, n: usize) -> H2Request {
    H2Request::get("t.local", path).field("x-client", &format!("client-{n}"))
}

/// Sends `tagged` requests on each client: the fixed route and the echo
/// origin, which must see each client's own field.
fn serve_each(p: &Prefork, clients: &mut [H2Client]) {
    for (n, c) in clients.iter_mut().enumerate() {
        let r = ok(p, c.send(tagged("/fixed", n)));
        assert_eq!((r.status, r.text().as_str()), (200, "fixed\n"));
        let r = ok(p, c.send(tagged("/echo", n)));
        assert_eq!(r.status, 200);
        let echoed = r.text();
        assert!(
            echoed.contains(&format!("x-client: client-{n}\r\n")),
            "{echoed}"
        );
    }
}

#[test]
fn idle_http2_connections_are_parked_and_serve_their_next_streams() {
    let (p, _echo) = start(Setup::new(1).admin());
    let mut clients: Vec<H2Client> = (0..12)
        .map(|_| H2Client::connect(p.addr()).unwrap_or_else(|e| panic!("h2c: {e}")))
        .collect();
    serve_each(&p, &mut clients);
    p.wait_parked(12, PARKED);
    // Parked, they are still open connections.
    let status = p.status_json();
    assert_eq!(
        status["workers"][0]["active_connections"].as_u64(),
        Some(12),
        "{status}"
    );
    let metrics = http::get(p.admin_port(), "admin", "/metrics")
        .expect("metrics")
        .text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("prefork_http2_connections{") && l.ends_with(" 12")),
        "{metrics}"
    );
    // Woken by their next streams, which find the HPACK tables as they
    // were (each client's field comes as an index into its table).
    serve_each(&p, &mut clients);
    p.wait_parked(12, PARKED);
    serve_each(&p, &mut clients);
    // Logged as any other streams (the log is written in batches).
    let logged = || {
        p.access_log()
            .lines()
            .filter(|l| l.contains("\"GET /echo HTTP/2.0\" 200 "))
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(10), || logged() == 36),
        "{} of 36 logged\n{}",
        logged(),
        p.logs()
    );
}

#[test]
fn a_parked_http2_connection_over_tls_serves_its_next_stream() {
    let ca = TestCa::new("h2 parking CA");
    let leaf = ca.leaf(&["h2.test"]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = leaf.write(dir.path());
    let port = free_port();
    let echo = EchoOrigin::start();
    let p = Prefork::start(Setup::new(1).body(&format!(
        "[[listen]]\naddr = \"127.0.0.1:{port}\"\ntls = true\nhttp2 = true\n\
         [[certificates]]\ncert = \"{}\"\nkey = \"{}\"\n{}",
        cert.display(),
        key.display(),
        routes(echo.addr())
    )));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut clients: Vec<H2Client> = (0..4)
        .map(|_| {
            H2Client::connect_tls(addr, "h2.test", ca.der())
                .unwrap_or_else(|e| panic!("h2 over TLS: {e}\n{}", p.logs()))
        })
        .collect();
    serve_each(&p, &mut clients);
    p.wait_parked(4, PARKED);
    serve_each(&p, &mut clients);
    p.wait_parked(4, PARKED);
    serve_each(&p, &mut clients);
}

#[test]
fn a_parked_http2_connection_goes_away_at_its_idle_timeout() {
    let (p, _echo) = start(Setup::new(1).top("http2_idle_timeout = \"4s\""));
    let mut c = H2Client::connect(p.addr()).expect("h2c");
    let since = Instant::now();
    assert_eq!(
        ok(&p, c.send(H2Request::get("t.local", "/fixed"))).status,
        200
    );
    p.wait_parked(1, PARKED);
    let end = c.end_within(Duration::from_secs(10));
    assert_eq!(end, Some(Ok(())), "{}", p.logs());
    assert!(
        since.elapsed() >= Duration::from_secs(3),
        "{:?}",
        since.elapsed()
    );
    p.wait_parked(0, PARKED);
}

#[test]
fn a_graceful_stop_sends_parked_http2_connections_away_politely() {
    let (mut p, _echo) = start(Setup::new(2).shutdown_timeout("10s"));
    let mut clients: Vec<H2Client> = (0..10)
        .map(|_| H2Client::connect(p.addr()).expect("h2c"))
        .collect();
    serve_each(&p, &mut clients);
    p.wait_parked(10, PARKED);
    p.signal(Signal::SIGQUIT);
    for c in &mut clients {
        // GOAWAY with NO_ERROR, then the close, within the drain: never a
        // reset.
        let end = c.end_within(Duration::from_secs(15));
        assert_eq!(end, Some(Ok(())), "{}", p.logs());
    }
    assert!(
        p.wait_exit(Duration::from_secs(15)).is_some(),
        "{}",
        p.logs()
    );
}

#[test]
fn a_parked_connection_woken_by_a_frame_without_a_stream_goes_away_at_its_idle_timeout() {
    use prefork_testkit::h2frames::Frame;
    let (p, _echo) = start(Setup::new(1).top("http2_idle_timeout = \"5s\""));
    // A goes idle first; B three seconds later, so B's idle timeout comes
    // three seconds after A's.
    let mut a = raw_client_after_one_request(&p);
    let a_idle = Instant::now();
    p.wait_parked(1, PARKED);
    while a_idle.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut b = H2Client::connect(p.addr()).expect("h2c");
    assert_eq!(
        ok(&p, b.send(H2Request::get("t.local", "/fixed"))).status,
        200
    );
    p.wait_parked(2, PARKED);
    // A WINDOW_UPDATE wakes A without a stream (and wants no answer): A is
    // still idle since its request, and parks again at once.
    a.send(&Frame::WindowUpdate {
        stream: 0,
        increment: 1,
    })
    .unwrap();
    let drained = a.drain(Duration::from_secs(15), true);
    let goaway = drained
        .goaway
        .unwrap_or_else(|| panic!("no GOAWAY\n{}", p.logs()));
    assert_eq!(goaway.code, 0, "{goaway}");
    // At A's own timeout, not held back until B's.
    let after = a_idle.elapsed();
    assert!(
        after >= Duration::from_secs(4) && after < Duration::from_millis(7500),
        "GOAWAY {after:?} after A's request\n{}",
        p.logs()
    );
    assert_eq!(
        b.end_within(Duration::from_millis(100)),
        None,
        "B is not due yet"
    );
}

#[test]
fn at_max_connections_the_oldest_parked_http2_connection_makes_room_with_a_goaway() {
    let (p, _echo) = start(Setup::new(1).top("max_connections = 4"));
    let mut oldest = raw_client_after_one_request(&p);
    p.wait_parked(1, PARKED);
    let mut others: Vec<H2Client> = (0..3)
        .map(|_| H2Client::connect(p.addr()).expect("h2c"))
        .collect();
    for c in &mut others {
        assert_eq!(
            ok(&p, c.send(H2Request::get("t.local", "/fixed"))).status,
            200
        );
    }
    p.wait_parked(4, PARKED);
    // A fifth client is served: the oldest parked connection closed for it,
    // telling its client first.
    let r = http::get(p.port(), "t.local", "/fixed").expect("a response at the limit");
    assert_eq!(r.status, 200, "{}", p.logs());
    let drained = oldest.drain(Duration::from_secs(5), false);
    let goaway = drained
        .goaway
        .unwrap_or_else(|| panic!("no GOAWAY\n{}", p.logs()));
    assert_eq!((goaway.code, goaway.last_stream), (0, 1), "{goaway}");
    assert!(drained.closed, "closed after its GOAWAY");
    // The younger ones are still served.
    for c in &mut others {
        assert_eq!(
            ok(&p, c.send(H2Request::get("t.local", "/fixed"))).status,
            200
        );
    }
}
