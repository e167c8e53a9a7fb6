//! Upstream groups: load balancing, weights, passive and active health, and
//! when pooled connections are reused or replayed on.

use crate::support::http::{self, Conn, Response};
use crate::support::origins::{ClosingOrigin, RecordingOrigin, SilentOrigin};
use crate::support::prefork::{Prefork, Setup};
use crate::support::{wait_for, wait_until};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// One worker (balancing and health are per worker) proxying every request
/// to upstream `app`, whose table holds `servers` and `extra` keys.
fn start(servers: &str, extra: &str) -> Prefork {
    Prefork::start(Setup::new(1).body(&format!(
        r#"
[upstreams.app]
servers = [{servers}]
read_timeout = "15s"
{extra}
[[routes]]
host = "app.local"
upstream = "app"
"#
    )))
}

fn quoted(addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    list.join(", ")
}

fn get(p: &Prefork, path: &str) -> Response {
    http::get(p.port(), "app.local", path)
        .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", p.logs()))
}

fn post(p: &Prefork, path: &str, body: &[u8]) -> Response {
    let mut conn = Conn::local(p.port()).expect("connect");
    conn.send(&http::request("POST", "app.local", path, &[], body))
        .expect("send");
    conn.read_response()
        .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", p.logs()))
}

/// Waits until the error log (written asynchronously) shows `text`.
/// Sends `GET /hold` (the recording origin holds its answer) from a thread
/// and waits until it has reached one of `origins`.
fn send_held(
    p: &Prefork,
    origins: [&RecordingOrigin; 2],
) -> thread::JoinHandle<std::io::Result<Response>> {
    let port = p.port();
    let slow = thread::spawn(move || http::get(port, "app.local", "/hold"));
    assert!(
        wait_until(Duration::from_secs(5), || origins
            .iter()
            .map(|o| o.count_path("/hold"))
            .sum::<usize>()
            == 1),
        "the slow request never reached an origin\n{}",
        p.logs()
    );
    slow
}

fn log_shows(p: &Prefork, text: &str) -> bool {
    wait_until(Duration::from_secs(5), || p.error_log().contains(text))
}

/// The origin connection that carried a response.
fn origin_conn(r: &Response) -> u64 {
    r.header("x-conn")
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no X-Conn in {r:?}"))
}

#[test]
fn least_conn_prefers_the_idle_server_when_one_is_slow() {
    let (a, b) = (RecordingOrigin::start(), RecordingOrigin::start());
    let p = start(&quoted(&[a.addr(), b.addr()]), "balance = \"least_conn\"");
    let slow = send_held(&p, [&a, &b]);
    let (busy, idle) = if a.count_path("/hold") == 1 {
        (&a, &b)
    } else {
        (&b, &a)
    };
    for i in 0..10 {
        assert_eq!(get(&p, &format!("/fast/{i}")).status, 200);
    }
    assert_eq!(
        (busy.count_path("/fast"), idle.count_path("/fast")),
        (0, 10),
        "while one server is busy, least_conn sends everything to the idle one"
    );
    busy.release_holds();
    let r = slow.join().expect("slow client").expect("slow response");
    assert_eq!(r.status, 200);
    // Both idle again: requests are shared again.
    for i in 0..10 {
        assert_eq!(get(&p, &format!("/after/{i}")).status, 200);
    }
    assert_eq!((a.count_path("/after"), b.count_path("/after")), (5, 5));
}

#[test]
fn weights_split_traffic_in_proportion() {
    for (policy, tolerance) in [("round_robin", 1), ("least_conn", 1), ("random_two", 20)] {
        let (a, b) = (RecordingOrigin::start(), RecordingOrigin::start());
        let p = start(
            &format!(
                "{{ addr = \"{}\", weight = 3 }}, \"{}\"",
                a.addr(),
                b.addr()
            ),
            &format!("balance = \"{policy}\""),
        );
        for i in 0..80 {
            assert_eq!(get(&p, &format!("/w/{i}")).status, 200, "{policy}");
        }
        let (na, nb) = (a.count_path("/w/"), b.count_path("/w/"));
        assert_eq!(na + nb, 80, "{policy}");
        assert!(
            na.abs_diff(60) <= tolerance,
            "{policy}: weight 3 got {na} and weight 1 got {nb} of 80 (expected 60:20 ± {tolerance})"
        );
    }
}

#[test]
fn dead_server_is_skipped_after_max_fails_and_retried_after_fail_timeout() {
    let (dead, live) = (ClosingOrigin::start(), RecordingOrigin::start());
    let p = start(
        &quoted(&[dead.addr(), live.addr()]),
        "max_fails = 2\nfail_timeout = \"2s\"",
    );
    p.expect_log_errors();
    let mut failed = 0;
    for i in 0..12 {
        if get(&p, &format!("/a/{i}")).status != 200 {
            failed += 1;
        }
    }
    let down_at = Instant::now();
    assert_eq!(
        (dead.accepted(), failed),
        (2, 2),
        "after max_fails = 2 failures the dead server gets no more requests\n{}",
        p.logs()
    );
    assert_eq!(live.count_path("/a/"), 10);
    assert!(log_shows(&p, "upstream server marked down"));

    // After fail_timeout, one request probes the dead server again.
    let probed = wait_until(Duration::from_secs(8), || {
        get(&p, "/b");
        dead.accepted() == 3
    });
    assert!(probed, "the dead server was never retried\n{}", p.logs());
    let waited = down_at.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "retried after {waited:?}, before fail_timeout (2s) passed"
    );
    // The failed probe pauses it again at once.
    for i in 0..6 {
        assert_eq!(get(&p, &format!("/c/{i}")).status, 200);
    }
    assert_eq!(dead.accepted(), 3);
}

#[test]
fn all_servers_down_gets_a_fast_502_without_connecting() {
    let (silent, closing) = (SilentOrigin::start(), ClosingOrigin::start());
    let p = Prefork::start(Setup::new(1).body(&format!(
        r#"
[upstreams.app]
servers = ["{}", "{}"]
read_timeout = "2s"
max_fails = 1
fail_timeout = "60s"
[[routes]]
upstream = "app"
"#,
        silent.addr(),
        closing.addr()
    )));
    p.expect_log_errors();
    let statuses: Vec<u16> = (0..2).map(|i| get(&p, &format!("/{i}")).status).collect();
    assert_eq!(statuses, [504, 502], "{}", p.logs());
    assert_eq!((silent.accepted(), closing.accepted()), (1, 1));
    for i in 0..5 {
        let started = Instant::now();
        let r = get(&p, &format!("/down/{i}"));
        let took = started.elapsed();
        assert_eq!(r.status, 502);
        assert!(
            took < Duration::from_secs(2),
            "the 502 took {took:?}, as long as the read timeout"
        );
    }
    assert_eq!(
        (silent.accepted(), closing.accepted()),
        (1, 1),
        "no connection is attempted while every server is down"
    );
    assert!(log_shows(&p, "no live upstream server"));
}

#[test]
fn active_health_check_marks_a_server_down_and_up_again() {
    let (a, b) = (RecordingOrigin::start(), RecordingOrigin::start());
    let p = start(
        &quoted(&[a.addr(), b.addr()]),
        "health_check = { path = \"/health\", interval = \"100ms\", timeout = \"1s\" }",
    );
    // Waits for two more checks of `a`: the first of them was answered and
    // counted by the time the second arrives.
    let two_more_checks = || {
        let seen = a.count_path("/health");
        assert!(
            wait_until(Duration::from_secs(5), || a.count_path("/health")
                >= seen + 2),
            "health checks stopped\n{}",
            p.logs()
        );
    };
    two_more_checks();
    let check = a
        .requests()
        .into_iter()
        .find(|r| r.request.path == "/health")
        .expect("a check");
    assert_eq!(check.request.method, "GET");
    assert_eq!(
        check.request.header("host"),
        Some(a.addr().to_string().as_str())
    );

    a.set_healthy(false);
    two_more_checks();
    for i in 0..10 {
        assert_eq!(get(&p, &format!("/down/{i}")).status, 200);
    }
    assert_eq!((a.count_path("/down"), b.count_path("/down")), (0, 10));
    assert!(
        log_shows(&p, "health check failed, server marked down"),
        "{}",
        p.logs()
    );

    a.set_healthy(true);
    two_more_checks();
    for i in 0..10 {
        assert_eq!(get(&p, &format!("/up/{i}")).status, 200);
    }
    assert_eq!((a.count_path("/up"), b.count_path("/up")), (5, 5));
    assert!(log_shows(&p, "health check passed, server marked up"));
}

#[test]
fn keepalive_race_is_retried_for_get_but_never_for_post() {
    let rec = RecordingOrigin::start();
    let p = start(&quoted(&[rec.addr()]), "");
    p.expect_log_errors();
    let first = get(&p, "/race/1");
    assert_eq!(first.status, 200);
    // The pooled connection is reused and closed by the origin without an
    // answer: the GET is replayed once on a new connection.
    let r = get(&p, "/race/2");
    assert_eq!(r.status, 200, "{}", p.logs());
    assert_ne!(origin_conn(&r), origin_conn(&first));
    assert_eq!(rec.count_path("/race/2"), 2, "sent, dropped, replayed once");

    // Same situation for a POST, with or without a body: not replayed.
    for (i, body) in [&b"x"[..], b""].into_iter().enumerate() {
        assert_eq!(get(&p, &format!("/race/fresh{i}")).status, 200);
        let path = format!("/race/post{i}");
        let r = post(&p, &path, body);
        assert_eq!(r.status, 502, "{}", p.logs());
        assert_eq!(rec.count_path(&path), 1, "a POST is never replayed");
    }
}

#[test]
fn pooled_connections_are_reused_only_after_a_clean_keep_alive_exchange() {
    let rec = RecordingOrigin::start();
    let p = start(&quoted(&[rec.addr()]), "");
    let c1 = origin_conn(&get(&p, "/a"));
    assert_eq!(
        origin_conn(&get(&p, "/b")),
        c1,
        "a clean exchange is reused"
    );
    // The origin said `Connection: close` (and kept the socket open).
    assert_eq!(origin_conn(&get(&p, "/resp-close")), c1);
    let c2 = origin_conn(&get(&p, "/c"));
    assert_ne!(c2, c1, "reused after the origin said Connection: close");
    // An HTTP/1.0 response without keep-alive.
    assert_eq!(origin_conn(&get(&p, "/http10")), c2);
    let c3 = origin_conn(&get(&p, "/d"));
    assert_ne!(c3, c2, "reused after an HTTP/1.0 response");

    // A client that leaves mid-body: the response is never read to its end,
    // so the connection is closed, not pooled.
    let mut client = TcpStream::connect(p.addr()).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::io::Write::write_all(
        &mut client,
        &http::request("GET", "app.local", "/partial/8000000", &[], b""),
    )
    .unwrap();
    let mut head = Vec::new();
    let got_head = wait_for(Duration::from_secs(10), || {
        let mut chunk = [0u8; 4096];
        match client.read(&mut chunk) {
            Ok(n) if n > 0 => head.extend_from_slice(&chunk[..n]),
            _ => return Some(false),
        }
        head.windows(4).any(|w| w == b"\r\n\r\n").then_some(true)
    });
    assert_eq!(got_head, Some(true), "no response head\n{}", p.logs());
    drop(client);
    rec.release_holds();
    assert!(
        wait_until(Duration::from_secs(10), || rec.closed()
            == rec.connections()),
        "the proxy kept {} of {} origin connections open after an unfinished response",
        rec.connections() - rec.closed(),
        rec.connections()
    );
    assert_ne!(origin_conn(&get(&p, "/e")), c3);
}

#[test]
fn stale_pooled_connection_is_detected_before_a_post() {
    let rec = RecordingOrigin::start();
    let p = start(&quoted(&[rec.addr()]), "");
    // The origin answers with keep-alive, then closes the idle connection.
    let r = get(&p, "/close-after");
    assert_eq!(r.status, 200);
    assert!(
        wait_until(Duration::from_secs(5), || rec.closed() == 1),
        "the origin did not close its connection"
    );
    // A POST is never replayed, so it only succeeds if the closed pooled
    // connection was noticed before sending on it.
    let r = post(&p, "/after-stale", b"payload");
    assert_eq!(r.status, 200, "{}", p.logs());
    assert_eq!(origin_conn(&r), 2, "sent on a new connection");
    let posted = rec
        .requests()
        .into_iter()
        .find(|r| r.request.path == "/after-stale")
        .expect("the POST arrived");
    assert_eq!(posted.conn, 2);
    assert_eq!(posted.request.body, b"payload");
}

#[test]
fn health_checks_stop_when_the_worker_drains() {
    let (a, b) = (RecordingOrigin::start(), RecordingOrigin::start());
    let mut p = start(
        &quoted(&[a.addr(), b.addr()]),
        "health_check = { path = \"/health\", interval = \"50ms\" }",
    );
    assert!(
        wait_until(Duration::from_secs(5), || a.count_path("/health") >= 2),
        "no health checks\n{}",
        p.logs()
    );
    // A request in flight keeps the worker draining after SIGQUIT.
    let slow = send_held(&p, [&a, &b]);
    p.signal(nix::sys::signal::Signal::SIGQUIT);
    assert!(
        log_shows(&p, "stopping gracefully"),
        "the worker did not start draining\n{}",
        p.logs()
    );
    let checks = a.count_path("/health") + b.count_path("/health");
    // An absence over ten check intervals: nothing to wait on but time.
    thread::sleep(Duration::from_millis(500));
    let later = a.count_path("/health") + b.count_path("/health");
    assert!(
        later <= checks + 2,
        "{} health checks were sent while draining",
        later - checks
    );
    a.release_holds();
    b.release_holds();
    let r = slow.join().expect("slow client").expect("slow response");
    assert_eq!(r.status, 200);
    assert!(
        p.wait_exit(Duration::from_secs(10)).is_some(),
        "the master did not exit\n{}",
        p.logs()
    );
}
