//! Idle keep-alive connections parked outside their task: a parked
//! connection behaves as one that is not (answered when a request comes,
//! closed at its keep-alive timeout or by a drain, counted and logged the
//! same), and `prefork status` counts the parked ones.

use crate::support::http::{self, Conn};
use crate::support::prefork::{Prefork, Setup};
use crate::support::wait_until;
use nix::sys::signal::Signal;
use std::time::Duration;

/// Long enough for a connection idle for a second to be parked and for its
/// worker's next report (once a second) to count it.
const PARKED: Duration = Duration::from_secs(10);

const ROUTES: &str = "[[routes]]\npath = \"/\"\nrespond = { body = \"parked\" }\n";

#[test]
fn idle_connections_are_parked_and_answered_when_a_request_comes() {
    let p = Prefork::start(Setup::new(1).body(ROUTES));
    let mut conns = p.idle_connections(40, "a.test", "parked");
    p.wait_parked(40, PARKED);
    for c in &mut conns {
        let r = c.get("a.test", "/").unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "parked"));
        assert!(!r.closes(), "still kept alive: {:?}", r.headers);
    }
    // Idle again: parked again.
    p.wait_parked(40, PARKED);
    for c in &mut conns {
        assert_eq!(c.get("a.test", "/").unwrap().status, 200);
    }
}

#[test]
fn a_parked_connection_closes_at_its_keepalive_timeout() {
    let p = Prefork::start(Setup::new(1).top("keepalive_timeout = \"3s\"").body(ROUTES));
    let mut conns = p.idle_connections(3, "a.test", "parked");
    p.wait_parked(3, PARKED);
    for c in &mut conns {
        assert!(c.is_closed_by_peer(), "closed once idle for 3 s");
    }
    p.wait_parked(0, PARKED);
    assert_eq!(
        p.status_json()["workers"][0]["active_connections"].as_u64(),
        Some(0)
    );
}

#[test]
fn a_connection_keeps_its_request_count_and_log_identity_across_parking() {
    let p = Prefork::start(Setup::new(1).top("keepalive_requests = 2").body(ROUTES));
    let mut c = Conn::connect(p.addr()).unwrap();
    let first = c.get("a.test", "/first").unwrap();
    assert!(!first.closes());
    p.wait_parked(1, PARKED);
    // The second request is the last one the connection may carry.
    let second = c.get("a.test", "/second").unwrap();
    assert_eq!(second.status, 200);
    assert!(second.closes(), "keepalive_requests counted across parking");
    assert!(c.is_closed_by_peer());
    // The access log is written by a thread of its own, in batches.
    assert!(wait_until(PARKED, || p.access_log().contains("/second")));
    let log = p.access_log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("/first") || l.contains("/second"))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    for line in &lines {
        assert!(
            line.starts_with("127.0.0.1 "),
            "the client's address: {line}"
        );
    }
    let requests = p
        .wait_status(PARKED, |s| {
            s["workers"][0]["requests"].as_u64().is_some_and(|n| n >= 2)
        })
        .is_some();
    assert!(requests, "both requests counted");
}

#[test]
fn a_graceful_stop_closes_parked_connections_politely() {
    let mut p = Prefork::start(Setup::new(2).shutdown_timeout("10s").body(ROUTES));
    let mut conns = p.idle_connections(20, "a.test", "parked");
    p.wait_parked(20, PARKED);
    p.signal(Signal::SIGQUIT);
    for c in &mut conns {
        // An end of stream within the drain's spread, never a reset.
        c.set_read_timeout(Duration::from_secs(10)).unwrap();
        match c.read_to_close() {
            Ok(rest) => assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest)),
            Err(e) => panic!("a parked connection was not closed politely: {e}"),
        }
    }
    assert!(
        p.wait_exit(Duration::from_secs(15)).is_some(),
        "{}",
        p.logs()
    );
}

#[test]
fn a_new_generation_drains_the_old_ones_parked_connections() {
    let p = Prefork::start(Setup::new(1).shutdown_timeout("10s").body(ROUTES));
    let mut conns = p.idle_connections(10, "a.test", "parked");
    p.wait_parked(10, PARKED);
    let old = p.workers();
    // `workers` changed: a new generation takes over and the old one drains.
    p.write_raw_config(&p.config_for(ROUTES).replace("workers = 1", "workers = 2"));
    p.signal(Signal::SIGHUP);
    for c in &mut conns {
        c.set_read_timeout(Duration::from_secs(10)).unwrap();
        match c.read_to_close() {
            Ok(rest) => assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest)),
            Err(e) => panic!("a parked connection was not closed politely: {e}"),
        }
    }
    assert!(old
        .iter()
        .all(|w| !w.is_alive() || w.generation() == Some(1)));
    let r = http::get(p.port(), "a.test", "/").unwrap();
    assert_eq!(r.status, 200);
}
