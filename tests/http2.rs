//! HTTP/2 from clients: h2c with prior knowledge and HTTP/1.1 on one
//! plain listener, ALPN over TLS, many streams on one connection, 1 MiB up
//! and down, trailers, the access log and `/metrics`, a hot reload seen by
//! an open connection's next stream, the idle timeout, a graceful stop
//! that lets a stream in flight finish, and a reload to a new generation
//! under h2load that fails no stream.

use crate::support::http;
use crate::support::origins;
use crate::support::prefork::{free_port, Prefork, Setup};
use crate::support::wait_until;
use nix::sys::signal::Signal;
use prefork_testkit::h2_client::{H2Client, H2Request, H2Response};
use prefork_testkit::handler::{EchoOrigin, HandlerOrigin};
use prefork_testkit::tls_origin::TestCa;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// Routes `/fixed` to a fixed answer, `/echo` to `echo` and the rest to
/// `app`.
fn routes(app: SocketAddr, echo: SocketAddr) -> String {
    format!(
        "[upstreams.app]\nservers = [\"{app}\"]\n\
         [upstreams.echo]\nservers = [\"{echo}\"]\n\
         [[routes]]\npath = \"/fixed\"\nrespond = {{ body = \"fixed\\n\" }}\n\
         [[routes]]\npath = \"/echo\"\nupstream = \"echo\"\n\
         [[routes]]\npath = \"/\"\nupstream = \"app\"\n"
    )
}

/// A prefork whose harness listener takes HTTP/2 as well, routing as
/// [`routes`] says, with `top` keys.
fn start(workers: usize, top: &str) -> (Prefork, EchoOrigin) {
    let echo = EchoOrigin::start();
    let app = origins::minihttp("app");
    let p = Prefork::start(
        Setup::new(workers)
            .top(top)
            .http2()
            .body(&routes(app, echo.addr())),
    );
    (p, echo)
}

fn h2c(p: &Prefork) -> H2Client {
    H2Client::connect(p.addr()).unwrap_or_else(|e| panic!("h2c: {e}\n{}", p.logs()))
}

fn ok(p: &Prefork, r: Result<H2Response, h2::Error>) -> H2Response {
    r.unwrap_or_else(|e| panic!("HTTP/2 request failed: {e}\n{}", p.logs()))
}

#[test]
fn h2c_and_http1_share_a_listener_and_streams_go_through_the_same_core() {
    let (p, _echo) = start(1, "");
    let mut c = h2c(&p);
    let r = ok(&p, c.send(H2Request::get("t.local", "/fixed")));
    assert_eq!((r.status, r.text().as_str()), (200, "fixed\n"));
    assert_eq!(r.field("server"), Some("prefork"));
    assert!(r.field("date").is_some());

    let r = ok(
        &p,
        c.send(
            H2Request::get("t.local", "/echo/x?q=1")
                .field("cookie", "a=1")
                .field("cookie", "b=2")
                .field("x-one", "1"),
        ),
    );
    assert_eq!(r.status, 200);
    let echoed = r.text();
    // The request line, Host from :authority, cookies joined, and the
    // fields every forwarded request gets.
    assert!(echoed.contains("GET /echo/x?q=1 HTTP/1.1\r\n"), "{echoed}");
    assert!(echoed.contains("Host: t.local\r\n"), "{echoed}");
    assert!(echoed.contains("cookie: a=1; b=2\r\n"), "{echoed}");
    assert!(echoed.contains("x-one: 1\r\n"), "{echoed}");
    assert!(echoed.contains("X-Forwarded-Proto: http\r\n"), "{echoed}");
    assert!(echoed.contains("X-Request-Id: "), "{echoed}");
    assert!(echoed.contains("Via: 2 prefork\r\n"), "{echoed}");
    // The origin's hop-by-hop fields never reach an HTTP/2 client.
    assert_eq!(r.field("connection"), None);
    assert_eq!(r.field("keep-alive"), None);
    assert_eq!(r.field("x-origin-hop"), None);
    assert_eq!(r.field("via"), Some("1.1 prefork"));

    let r = ok(&p, c.send(H2Request::get("t.local", "/nothing/here")));
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "origin=app method=GET path=/nothing/here\n");

    // HEAD: the head with its length, no body.
    let mut head = H2Request::get("t.local", "/bytes/100");
    head.method = "HEAD".into();
    let r = ok(&p, c.send(head));
    assert_eq!(r.status, 200);
    assert_eq!(r.field("content-length"), Some("100"));
    assert!(r.body.is_empty());

    // curl with prior knowledge speaks HTTP/2 to it too.
    let out = Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "-w", " %{http_version}"])
        .arg(format!("http://127.0.0.1:{}/fixed", p.port()))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "fixed\n 2");

    // HTTP/1.1 on the same port, as before.
    let r = http::get(p.port(), "t.local", "/fixed").expect("HTTP/1.1");
    assert_eq!((r.status, r.text().as_str()), (200, "fixed\n"));

    assert!(
        wait_until(Duration::from_secs(5), || p
            .access_log()
            .contains("\"GET /fixed HTTP/2.0\" 200 ")),
        "{}",
        p.access_log()
    );
    assert!(
        wait_until(Duration::from_secs(5), || p
            .access_log()
            .contains("\"GET /fixed HTTP/1.1\" 200 ")),
        "{}",
        p.access_log()
    );
}

#[test]
fn bad_requests_get_the_status_http1_gets_on_their_stream_only() {
    let (p, _echo) = start(1, "max_uri_length = 64\n");
    let mut c = h2c(&p);
    let long = format!("/{}", "a".repeat(100));
    let r = ok(&p, c.send(H2Request::get("t.local", &long)));
    assert_eq!(r.status, 414);
    let r = ok(&p, c.send(H2Request::get("t.local", "/../../etc/passwd")));
    assert_eq!(r.status, 400);
    // The connection goes on.
    let r = ok(&p, c.send(H2Request::get("t.local", "/fixed")));
    assert_eq!(r.status, 200);
}

#[test]
fn many_streams_at_once_on_one_connection_all_succeed() {
    let (p, _echo) = start(1, "http2_max_concurrent_streams = 50\n");
    let mut c = h2c(&p);
    // Once the client has the server's SETTINGS (they come before any
    // response), it keeps to the limit: a client that opens streams beyond
    // it before then has them refused, as the protocol says.
    assert_eq!(
        ok(&p, c.send(H2Request::get("t.local", "/first"))).status,
        200
    );
    // More than the concurrent limit: the client queues the rest.
    let reqs: Vec<H2Request> = (0..300)
        .map(|i| H2Request::get("t.local", &format!("/s/{i}")))
        .collect();
    for (i, r) in c.all(reqs).into_iter().enumerate() {
        let r = ok(&p, r);
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("origin=app method=GET path=/s/{i}\n"));
    }
}

#[test]
fn a_mebibyte_goes_up_and_down_over_one_stream_each() {
    let (p, _echo) = start(1, "");
    let mut c = h2c(&p);
    let r = ok(&p, c.send(H2Request::get("t.local", "/bytes/1048576")));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, prefork_bench::pattern(1 << 20));
    assert_eq!(r.field("content-length"), Some("1048576"));

    // Without a length: it goes up chunked, whole, at the window's pace.
    let body = prefork_bench::pattern(1 << 20);
    let r = ok(
        &p,
        c.send(H2Request::post("t.local", "/echo/up", body.clone())),
    );
    assert_eq!(r.status, 200);
    let echoed = r.body;
    let start = echoed
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("the echoed head")
        + 4;
    let head = String::from_utf8_lossy(&echoed[..start]);
    assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
    assert_eq!(&echoed[start..], &body[..]);

    // With one, as announced.
    let with_length = H2Request::post("t.local", "/echo/up", body.clone())
        .field("content-length", &body.len().to_string());
    let r = ok(&p, c.send(with_length));
    let head = String::from_utf8_lossy(&r.body[..400]).into_owned();
    assert!(head.contains("Content-Length: 1048576"), "{head}");
    assert!(r.body.ends_with(&body[body.len() - 1000..]));
}

#[test]
fn request_trailers_go_up_in_the_last_chunk() {
    // An origin that answers with the chunked body exactly as it came.
    let raw = HandlerOrigin::start(|mut s, _| {
        if s.read_raw_head().is_ok() && s.read_until(b"\r\n0\r\n") && s.read_until(b"\r\n\r\n") {
            let body = s.consume(s.buffered().len());
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = s.send(head.as_bytes());
            let _ = s.send(&body);
        }
    });
    let p = Prefork::start(Setup::new(1).http2().body(&format!(
        "[upstreams.raw]\nservers = [\"{}\"]\n[[routes]]\nupstream = \"raw\"\n",
        raw.addr()
    )));
    let mut c = h2c(&p);
    let req = H2Request::post("t.local", "/t", b"data".to_vec())
        .field("te", "trailers")
        .trailer("x-checksum", "abc");
    let r = ok(&p, c.send(req));
    assert_eq!(r.status, 200, "{}", p.logs());
    assert_eq!(r.text(), "4\r\ndata\r\n0\r\nx-checksum: abc\r\n\r\n");
}

#[test]
fn tls_clients_choose_http2_by_alpn_and_http1_is_still_served() {
    let ca = TestCa::new("h2 test CA");
    let leaf = ca.leaf(&["h2.test"]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = leaf.write(dir.path());
    let (h2_port, h1_port) = (free_port(), free_port());
    let p = Prefork::start(Setup::new(1).body(&format!(
        "[[listen]]\naddr = \"127.0.0.1:{h2_port}\"\ntls = true\nhttp2 = true\n\
         [[listen]]\naddr = \"127.0.0.1:{h1_port}\"\ntls = true\n\
         [[certificates]]\ncert = \"{}\"\nkey = \"{}\"\n\
         [[routes]]\nrespond = {{ body = \"hi\\n\" }}\n",
        cert.display(),
        key.display()
    )));
    let addr: SocketAddr = format!("127.0.0.1:{h2_port}").parse().unwrap();
    let mut c = H2Client::connect_tls(addr, "h2.test", ca.der())
        .unwrap_or_else(|e| panic!("h2 over TLS: {e}\n{}", p.logs()));
    let r = ok(&p, c.send(H2Request::get("h2.test", "/")));
    assert_eq!((r.status, r.text().as_str()), (200, "hi\n"));
    assert!(
        wait_until(Duration::from_secs(5), || p
            .access_log()
            .contains("\"GET / HTTP/2.0\" 200 ")),
        "{}",
        p.access_log()
    );

    // A listener without http2 does not offer it.
    let plain_tls: SocketAddr = format!("127.0.0.1:{h1_port}").parse().unwrap();
    let refused = H2Client::connect_tls(plain_tls, "h2.test", ca.der());
    assert!(refused.is_err(), "h2 offered without http2 = true");

    // curl offers h2 and http/1.1; told http/1.1 only, it gets HTTP/1.1.
    for (flag, want) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = Command::new("curl")
            .args(["-sk", flag, "-o", "/dev/null", "-w", "%{http_version}"])
            .args(["--resolve", &format!("h2.test:{h2_port}:127.0.0.1")])
            .arg(format!("https://h2.test:{h2_port}/"))
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "curl {flag}");
    }
}

#[test]
fn a_hot_reload_applies_to_the_next_stream_of_an_open_connection() {
    let p = Prefork::start(
        Setup::new(1)
            .http2()
            .body("[[routes]]\nrespond = { body = \"one\\n\" }\n"),
    );
    let mut c = h2c(&p);
    let r = ok(&p, c.send(H2Request::get("t.local", "/")));
    assert_eq!(r.text(), "one\n");
    p.write_config("[[routes]]\nrespond = { body = \"two\\n\" }\n");
    p.reload_ok();
    assert!(
        wait_until(Duration::from_secs(10), || c
            .send(H2Request::get("t.local", "/"))
            .is_ok_and(|r| r.text() == "two\n")),
        "the open connection never saw the new configuration\n{}",
        p.logs()
    );
}

#[test]
fn an_idle_connection_is_sent_away_after_http2_idle_timeout() {
    let (p, _echo) = start(1, "http2_idle_timeout = \"1s\"\n");
    let mut c = h2c(&p);
    assert_eq!(
        ok(&p, c.send(H2Request::get("t.local", "/fixed"))).status,
        200
    );
    let since = Instant::now();
    assert!(c.closed_within(Duration::from_secs(5)), "{}", p.logs());
    assert!(since.elapsed() >= Duration::from_millis(500));
}

#[test]
fn a_graceful_stop_lets_the_stream_in_flight_finish_then_closes() {
    let (p, echo) = start(1, "");
    let mut c = h2c(&p);
    let mut slow = H2Client::connect(p.addr()).expect("a second connection");
    let waiting = std::thread::spawn(move || slow.send(H2Request::get("t.local", "/echo/slow")));
    // The slow request reached the origin, which holds it a while.
    assert!(
        wait_until(Duration::from_secs(5), || echo.connections() == 1),
        "{}",
        p.logs()
    );
    p.signal(Signal::SIGQUIT);
    let r = waiting.join().expect("the client thread");
    let r = ok(&p, r);
    assert_eq!(r.status, 200, "{}", p.logs());
    assert!(c.closed_within(Duration::from_secs(5)), "{}", p.logs());
}

#[test]
fn metrics_and_status_count_http2_connections_streams_and_goaways() {
    let echo = EchoOrigin::start();
    let app = origins::minihttp("app");
    let p = Prefork::start(
        Setup::new(1)
            .top("http2_idle_timeout = \"1s\"")
            .http2()
            .admin()
            .body(&routes(app, echo.addr())),
    );
    let admin = p.admin_port();
    let mut c = h2c(&p);
    let reqs = (0..5)
        .map(|_| H2Request::get("t.local", "/fixed"))
        .collect();
    assert!(c
        .all(reqs)
        .into_iter()
        .all(|r| r.is_ok_and(|r| r.status == 200)));
    assert!(c.closed_within(Duration::from_secs(5)));
    let metric = |name: &str| {
        let text = http::get(admin, "admin", "/metrics")
            .expect("metrics")
            .text();
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert!(
        wait_until(Duration::from_secs(5), || metric(
            "prefork_http2_goaways_total{reason=\"NO_ERROR\"}"
        ) == 1.0),
        "{}",
        http::get(admin, "admin", "/metrics").unwrap().text()
    );
    assert_eq!(metric("prefork_http2_streams_total"), 5.0);
    assert_eq!(metric("prefork_http2_connections_total"), 1.0);
    assert_eq!(metric("prefork_http2_connections{"), 0.0);
    // `prefork status` says the same.
    let status = p.status_json();
    assert_eq!(status["http2"]["streams"], 5, "{status}");
    assert_eq!(status["http2"]["goaways"]["NO_ERROR"], 1, "{status}");
    let table = String::from_utf8_lossy(&p.cli(&["status"]).stdout).into_owned();
    assert!(
        table.contains("HTTP/2: 1 connections, 5 streams; GOAWAY sent: NO_ERROR 1"),
        "{table}"
    );
}

/// The streams h2load's summary counts as succeeded.
fn h2load_succeeded(out: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("no summary from h2load:\n{out}"));
    let at = line
        .find(" succeeded")
        .unwrap_or_else(|| panic!("no count of succeeded streams in {line}"));
    line[..at]
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of succeeded streams in {line}"))
}

#[test]
fn a_reload_to_a_new_generation_under_h2load_fails_no_stream() {
    let h2load = Command::new("h2load").arg("--version").output();
    assert!(
        h2load.is_ok_and(|o| o.status.success()),
        "h2load is missing: apt-get install nghttp2-client"
    );
    let (p, _echo) = start(2, "");
    let old = p.workers();
    let url = format!("http://127.0.0.1:{}/fixed", p.port());
    let streams_log = p.dir().join("h2load.log");
    let log_arg = streams_log.display().to_string();
    let load = std::thread::spawn(move || {
        Command::new("h2load")
            .args([
                "--log-file",
                &log_arg,
                "-D",
                "5",
                "-c",
                "8",
                "-m",
                "10",
                &url,
            ])
            .output()
            .expect("h2load")
    });
    // Under load, a worker count change rolls a new generation.
    let served = |s: &serde_json::Value| {
        s["workers"].as_array().map_or(0, |ws| {
            ws.iter()
                .map(|w| w["requests"].as_u64().unwrap_or(0))
                .sum::<u64>()
        })
    };
    assert!(
        p.wait_status(Duration::from_secs(5), |s| served(s) > 500)
            .is_some(),
        "h2load's requests did not arrive\n{}",
        p.logs()
    );
    let body = std::fs::read_to_string(p.config_path()).unwrap();
    p.write_raw_config(&body.replacen("workers = 2", "workers = 3", 1));
    p.signal(Signal::SIGHUP);
    let new = p.wait_workers(3, Duration::from_secs(10), |ws| {
        ws.iter().all(|w| old.iter().all(|o| o.pid != w.pid))
    });
    assert!(new.is_some(), "no new generation\n{}", p.logs());
    assert!(
        !load.is_finished(),
        "h2load ended before the new generation took over: nothing was shown"
    );
    let out = load.join().expect("the h2load thread");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let succeeded = h2load_succeeded(&text);
    assert!(succeeded > 500, "{text}");
    // h2load counts as failed the streams it queued, then did not send
    // because a GOAWAY arrived in the same read as the responses it queued
    // them after (a browser sends those on a new connection): they never
    // reached prefork. Its log gives such a stream no start time. Every
    // stream it did send must have succeeded.
    let streams = std::fs::read_to_string(&streams_log).expect("h2load's log");
    let sent_and_failed: Vec<&str> = streams
        .lines()
        .filter(|l| {
            let fields: Vec<&str> = l.split('\t').collect();
            fields.get(1) != Some(&"200") && fields.first() != Some(&"0")
        })
        .collect();
    assert!(
        sent_and_failed.is_empty(),
        "streams sent that failed (start, status, µs): {sent_and_failed:?}\n{text}\n{}",
        p.logs()
    );
    // And prefork answered every stream that reached it.
    let log = p.access_log();
    let other: Vec<&str> = log.lines().filter(|l| !l.contains("\" 200 ")).collect();
    assert!(other.is_empty(), "{other:?}");
}

#[test]
fn a_graceful_stop_sends_goaway_in_two_steps_and_serves_a_stream_sent_between_them() {
    use prefork_testkit::h2frames::hpack::Block;
    use prefork_testkit::h2frames::{Client, Frame};
    let (p, echo) = start(1, "");
    let mut c = Client::handshake(p.addr(), &[]).expect("h2c handshake");
    let slow = Block::request("GET", "t.local", "/echo/slow");
    c.send(&Frame::headers(1, &slow, true)).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || echo.connections() == 1),
        "{}",
        p.logs()
    );
    p.signal(Signal::SIGQUIT);

    // Step one: GOAWAY naming the highest stream id, and a PING whose
    // answer tells the worker the client has seen it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut first, mut ping) = (None, None);
    while first.is_none() || ping.is_none() {
        match c.read_frame(deadline).expect("frames before the deadline") {
            Some(Frame::GoAway {
                last_stream, code, ..
            }) => first = Some((last_stream, code)),
            Some(Frame::Ping { ack: false, data }) => ping = Some(data),
            Some(_) => {}
            None => panic!("closed before the second GOAWAY\n{}", p.logs()),
        }
    }
    assert_eq!(first, Some(((1 << 31) - 1, 0)), "NO_ERROR, every stream");

    // A stream the client sent before it saw that GOAWAY is still served.
    let fixed = Block::request("GET", "t.local", "/fixed");
    c.send(&Frame::headers(3, &fixed, true)).unwrap();
    c.send(&Frame::Ping {
        ack: true,
        data: ping.unwrap(),
    })
    .unwrap();

    // Step two: GOAWAY naming the last stream taken; both streams finish,
    // then the connection closes.
    let (mut second, mut statuses, mut ended) = (None, Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let frame = match c.read_frame(deadline) {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => panic!("{e}: no close after the streams\n{}", p.logs()),
        };
        if let Ok(Some((stream, fields))) = c.headers_of(&frame) {
            let status = fields.iter().find(|(n, _)| n == ":status").unwrap();
            statuses.push((stream, status.1.clone()));
        }
        match frame {
            Frame::GoAway {
                last_stream, code, ..
            } => second = Some((last_stream, code)),
            Frame::Data {
                stream,
                end_stream: true,
                ..
            } => ended.push(stream),
            _ => {}
        }
    }
    assert_eq!(second, Some((3, 0)), "{}", p.logs());
    statuses.sort();
    assert_eq!(
        statuses,
        [(1, "200".to_owned()), (3, "200".to_owned())],
        "{}",
        p.logs()
    );
    ended.sort();
    assert_eq!(ended, [1, 3]);
}

#[test]
fn a_binary_upgrade_lets_an_http2_stream_in_flight_finish_and_new_connections_reach_the_new_workers(
) {
    let origin = origins::RecordingOrigin::start();
    let mut p = Prefork::start(Setup::new(1).http2().body(&format!(
        "[upstreams.rec]\nservers = [\"{}\"]\n[[routes]]\nupstream = \"rec\"\n",
        origin.addr()
    )));
    let old_master = p.master_pid();
    let mut held = h2c(&p);
    let waiting = std::thread::spawn(move || {
        let r = held.send(H2Request::get("t.local", "/hold"));
        (r, held.closed_within(Duration::from_secs(10)))
    });
    assert!(
        wait_until(Duration::from_secs(5), || origin.count() == 1),
        "{}",
        p.logs()
    );
    // The upgrade completes only once the old worker has drained: the held
    // stream is released once that worker has begun its graceful stop.
    let log = p.error_log_path();
    let (new_master, _) = std::thread::scope(|s| {
        let up = s.spawn(|| p.binary_upgrade());
        let draining = wait_until(Duration::from_secs(20), || {
            std::fs::read_to_string(&log)
                .is_ok_and(|l| l.contains("stopping gracefully, connections: 1"))
        });
        origin.release_holds();
        assert!(draining, "the old worker never began to drain");
        up.join().expect("the upgrade")
    });
    let (response, closed) = waiting.join().expect("the held client");
    let response = response.unwrap_or_else(|e| panic!("the held stream failed: {e}"));
    assert_eq!(response.status, 200);
    assert!(closed, "the old worker's connection did not close");
    assert_ne!(new_master, old_master);
    let mut fresh = h2c(&p);
    assert_eq!(
        ok(&p, fresh.send(H2Request::get("t.local", "/x"))).status,
        200
    );
}

#[test]
fn a_body_over_max_body_size_gets_413_on_its_stream_and_the_connection_goes_on() {
    let (p, echo) = start(1, "max_body_size = \"64k\"\n");
    let mut c = h2c(&p);
    let big = vec![b'x'; 200 * 1024];
    // Announced: refused before any of it is read.
    let announced = H2Request::post("t.local", "/echo/a", big.clone())
        .field("content-length", &big.len().to_string());
    let r = ok(&p, c.send(announced));
    assert_eq!(r.status, 413, "{}", p.logs());
    assert_eq!(
        echo.connections(),
        0,
        "an announced body over the limit went up"
    );
    // Streamed without a length: refused once the limit is passed (what
    // went up before is cut off with the upstream connection).
    let r = ok(&p, c.send(H2Request::post("t.local", "/echo/b", big)));
    assert_eq!(r.status, 413, "{}", p.logs());
    // The connection still serves.
    let r = ok(
        &p,
        c.send(H2Request::post("t.local", "/echo/c", b"small".to_vec())),
    );
    assert_eq!(r.status, 200);
    assert!(r.text().ends_with("small"), "{}", r.text());
}
