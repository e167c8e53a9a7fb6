//! Accepting end to end: workers sharing one listening socket spread its
//! connections between them through the load board.

use crate::testing::{assert_closed, config, exchange, read_response, Proxy};
use prefork_testkit::handler::EchoOrigin;
use prefork_testkit::http::Conn;
use std::thread;
use std::time::Duration;

#[test]
fn a_burst_of_connections_is_spread_over_workers_sharing_a_socket() {
    let origin = EchoOrigin::start();
    let (proxy, board) = Proxy::start_sharing(config(origin.addr()), 2);
    // All connect and send at once; each keeps its connection open.
    let mut clients: Vec<Conn> = (0..24).map(|_| proxy.connect()).collect();
    for c in &mut clients {
        c.send(b"GET /app/echo HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
    }
    for c in &mut clients {
        assert_eq!(read_response(c, false).status, 200);
    }
    // Without the board, the first worker to wake takes the whole queue.
    // With it, a worker more than 4 ahead holds back while the other
    // accepts, and takes one connection at most after each pause.
    let (a, b) = (board.get(0), board.get(1));
    assert_eq!(a + b, 24, "both workers count every open connection");
    assert!(a.abs_diff(b) <= 8, "connections split {a} / {b}");
}

#[test]
fn connections_arriving_one_by_one_are_spread_too() {
    let origin = EchoOrigin::start();
    let (proxy, board) = Proxy::start_sharing(config(origin.addr()), 2);
    // Each arrives when both workers wait for one, longer after the last
    // than a pause lasts: the decision is taken when a connection waits,
    // not when a worker starts waiting.
    let mut clients = Vec::new();
    for _ in 0..16 {
        let mut c = proxy.connect();
        assert_eq!(
            exchange(&mut c, "GET /app/echo HTTP/1.1\r\nHost: a\r\n\r\n").status,
            200
        );
        clients.push(c);
        thread::sleep(3 * crate::state::load_share::ACCEPT_DEFER);
    }
    let (a, b) = (board.get(0), board.get(1));
    assert_eq!(a + b, 16);
    assert!(a.abs_diff(b) <= 6, "connections split {a} / {b}");
}

#[test]
fn a_busier_worker_holds_back_only_for_a_moment() {
    let origin = EchoOrigin::start();
    let (proxy, board) = Proxy::start_sharing(config(origin.addr()), 1);
    // A second worker that says it accepts with no connection, and never
    // accepts: the first defers to it, a pause per connection, but serves.
    board.set(1, 0);
    board.set_in_use(2);
    let request = "GET /app/echo HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut clients: Vec<Conn> = (0..5).map(|_| proxy.connect()).collect();
    for c in &mut clients {
        assert_eq!(exchange(c, request).status, 200);
    }
    // The pause after the 5th accept may have begun before this.
    let started = std::time::Instant::now();
    for _ in 0..3 {
        let mut c = proxy.connect();
        assert_eq!(exchange(&mut c, request).status, 200);
        clients.push(c);
    }
    assert!(
        started.elapsed() >= 2 * crate::state::load_share::ACCEPT_DEFER,
        "each connection past the margin waits for a pause: {:?}",
        started.elapsed()
    );
    assert_eq!(board.get(0), 8);
    // Connections that close after their request do not weigh.
    let mut c = proxy.connect();
    let r = exchange(
        &mut c,
        "GET /app/echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_closed(&mut c);
    assert_eq!(board.get(0), 8);
}

#[test]
fn a_connection_closing_after_its_answer_does_not_weigh_while_the_close_lingers() {
    let origin = EchoOrigin::start();
    let mut config = config(origin.addr());
    config.http.max_body_size = 16;
    let (proxy, board) = Proxy::start_sharing(config, 1);
    // A keep-alive upload too large: refused with a 413 that closes the
    // connection, which then lingers (up to 5 s) while the client is still
    // sending its body.
    let mut c = proxy.connect();
    let r = exchange(
        &mut c,
        "POST /app/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\n",
    );
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut weighed = board.get(0);
    while weighed != 0 && std::time::Instant::now() < deadline {
        c.send(&[b'x'; 1024]).unwrap();
        thread::sleep(Duration::from_millis(20));
        weighed = board.get(0);
    }
    assert_eq!(
        weighed, 0,
        "a connection that only lingers before its close is published as staying"
    );
}
