//! Error responses: 400, 404, 502, 504.

use crate::support::http::{self, Conn};
use crate::support::origins::{self, SilentOrigin};
use crate::support::prefork::{Prefork, Setup};
use std::time::{Duration, Instant};

#[test]
fn unparsable_request_gets_400_and_the_connection_closes() {
    let origin = origins::minihttp("e400");
    let p = Prefork::start(Setup::new(1).body(&format!(
        r#"
[upstreams.app]
servers = ["{origin}"]
[[routes]]
upstream = "app"
"#
    )));
    let garbage: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost app.local\r\n\r\n",
        b"\x01\x02\x03 nonsense\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: nope\r\n\r\n",
    ];
    for bytes in garbage {
        let mut conn = Conn::local(p.port()).expect("connect");
        conn.set_read_timeout(Duration::from_secs(5)).unwrap();
        conn.send(bytes).expect("send");
        let r = conn.read_response().unwrap_or_else(|e| {
            panic!(
                "no response to {:?}: {e}\n{}",
                String::from_utf8_lossy(bytes),
                p.logs()
            )
        });
        assert_eq!(r.status, 400, "for {:?}", String::from_utf8_lossy(bytes));
        assert!(
            conn.is_closed_by_peer(),
            "the connection should be closed after a 400 for {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    // The proxy still serves well-formed requests.
    let ok = http::get(p.port(), "x", "/").expect("request after the bad ones");
    assert_eq!((ok.status, ok.text().as_str()), (200, prefork_bench::HELLO));
}

#[test]
fn unrouted_request_gets_404() {
    let origin = origins::minihttp("e404");
    let p = Prefork::start(Setup::new(1).body(&format!(
        r#"
[upstreams.app]
servers = ["{origin}"]
[[routes]]
host = "app.local"
path = "/app"
upstream = "app"
"#
    )));
    let mut conn = Conn::local(p.port()).expect("connect");
    let r = conn.get("other.local", "/app").expect("unknown host");
    assert_eq!(r.status, 404);
    let r = conn.get("app.local", "/elsewhere").expect("unknown path");
    assert_eq!(r.status, 404);
    // A 404 does not end the connection.
    let r = conn
        .get("app.local", "/app/x")
        .expect("routed request on the same connection");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "origin=e404 method=GET path=/app/x\n");
}

#[test]
fn refused_upstream_gets_502() {
    let refused = origins::refused_addr();
    let p = Prefork::start(Setup::new(1).body(&format!(
        r#"
[upstreams.down]
servers = ["{refused}"]
connect_timeout = "2s"
[[routes]]
upstream = "down"
[[routes]]
host = "status.local"
respond = {{ status = 200, body = "alive\n" }}
"#
    )));
    p.expect_log_errors();
    let mut conn = Conn::local(p.port()).expect("connect");
    let r = conn
        .get("app.local", "/")
        .unwrap_or_else(|e| panic!("{e}\n{}", p.logs()));
    assert_eq!(r.status, 502, "{}", p.logs());
    // The client connection may be kept or closed, but the proxy keeps serving.
    let r = http::get(p.port(), "status.local", "/").expect("request after the 502");
    assert_eq!((r.status, r.text().as_str()), (200, "alive\n"));
}

#[test]
fn silent_upstream_gets_504_after_read_timeout() {
    let silent = SilentOrigin::start();
    let p = Prefork::start(Setup::new(1).body(&format!(
        r#"
[upstreams.silent]
servers = ["{}"]
read_timeout = "500ms"
[[routes]]
upstream = "silent"
"#,
        silent.addr()
    )));
    p.expect_log_errors();
    let mut conn = Conn::local(p.port()).expect("connect");
    let started = Instant::now();
    let r = conn
        .get("app.local", "/wait")
        .unwrap_or_else(|e| panic!("{e}\n{}", p.logs()));
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", p.logs());
    assert!(
        silent.accepted() >= 1,
        "the request never reached the silent origin"
    );
    assert!(silent.bytes() > 0, "the silent origin received no bytes");
    assert!(
        took >= Duration::from_millis(400),
        "504 came after {took:?}, before the 500ms read_timeout could pass"
    );
}
