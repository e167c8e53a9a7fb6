//! The serve loop end to end: a graceful stop.

use crate::stop::{request_stop, Stop};
use crate::testing::{assert_closed, config, exchange, read_response, Proxy};
use prefork_testkit::handler::{HandlerOrigin, ECHO_SLOW};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

#[test]
fn graceful_stop_finishes_busy_connections_and_closes_idle_ones() {
    // Answers at once, but `/app/slow` only after saying it has it.
    let (got_slow, slow_arrived) = mpsc::channel();
    let origin = HandlerOrigin::start(move |mut conn, _| {
        while let Ok(Some(request)) = conn.read_request() {
            if request.path.contains("slow") {
                let _ = got_slow.send(());
                thread::sleep(ECHO_SLOW);
            }
            if conn
                .send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_err()
            {
                return;
            }
        }
    });
    let mut config = config(origin.addr());
    if let Some(app) = config.upstreams.get_mut("app") {
        app.read_timeout = Duration::from_secs(5);
    }
    let mut proxy = Proxy::start(config);
    let mut idle = proxy.connect();
    assert_eq!(
        exchange(&mut idle, "GET /app/echo HTTP/1.1\r\nHost: a\r\n\r\n").status,
        200
    );
    let mut busy = proxy.connect();
    busy.send(b"GET /app/slow HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    // In flight: the stop finds it upstream.
    slow_arrived
        .recv_timeout(Duration::from_secs(10))
        .expect("the slow request reached the origin");
    request_stop(&proxy.stop, Stop::Graceful);
    assert_closed(&mut idle);
    let r = read_response(&mut busy, false);
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert_closed(&mut busy);
    proxy.stop(Stop::Graceful);
    assert!(
        TcpStream::connect(proxy.addr).is_err(),
        "listener closed after the stop"
    );
}
