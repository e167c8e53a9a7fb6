//! Retries end to end: a request replayed on a new upstream connection.

use crate::testing::{config, exchange, Proxy};
use prefork_testkit::handler::EchoOrigin;

#[test]
fn replays_an_idempotent_request_once_when_a_pooled_connection_was_closed() {
    let origin = EchoOrigin::start();
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    let r = exchange(&mut c, "GET /app/drop-second HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(r.text().starts_with("conn=1\n"));
    let r = exchange(&mut c, "GET /app/drop-second HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("conn=2\n"), "{}", r.text());
    // A request with a body is not replayed.
    let r = exchange(
        &mut c,
        "POST /app/drop-second HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx",
    );
    assert_eq!(r.status, 502);
    assert_eq!(origin.connections(), 2);
}
