//! The serve loop end to end: a graceful stop.

use crate::stop::{request_stop, Stop};
use crate::testing::{assert_closed, config, exchange, read_response, Proxy};
use prefork_testkit::handler::EchoOrigin;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

#[test]
fn graceful_stop_finishes_busy_connections_and_closes_idle_ones() {
    let origin = EchoOrigin::start();
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
    thread::sleep(Duration::from_millis(100));
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
