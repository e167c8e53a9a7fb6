//! Checks of the harness itself, without prefork: when a black-box test
//! fails, these show the client and the origins are not the cause.

use crate::support::http::{self, Conn};
use crate::support::origins::{self, RecordingOrigin, SilentOrigin};
use crate::support::wait_until;
use std::time::Duration;

#[test]
fn recording_origin_decodes_chunked_bodies_and_keeps_the_connection() {
    let rec = RecordingOrigin::start();
    let mut conn = Conn::connect(rec.addr()).unwrap();
    let body: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    let mut req = http::request("POST", "h", "/a", &["Transfer-Encoding: chunked"], b"");
    req.extend(http::chunked(&body, &[1, 5000, 65536]));
    conn.send(&req).unwrap();
    let r = conn.read_response().unwrap();
    assert_eq!(r.text(), format!("recorded conn=1 body={}\n", body.len()));
    conn.send(&http::request("PUT", "h", "/b", &[], b"xyz"))
        .unwrap();
    assert_eq!(conn.read_response().unwrap().status, 200);
    let got = rec.requests();
    assert_eq!(got.len(), 2);
    assert!(got[0].request.chunked && got[0].request.body == body);
    assert_eq!(
        (got[1].conn, got[1].request.body.as_slice()),
        (1, &b"xyz"[..])
    );
}

#[test]
fn client_reads_chunked_and_large_responses() {
    let rec = RecordingOrigin::start();
    let mut conn = Conn::connect(rec.addr()).unwrap();
    let r = conn.get("h", "/chunked/100000").unwrap();
    assert!(r.body == prefork_bench::pattern(100_000));
    let big = origins::minihttp("self-big");
    let mut conn = Conn::connect(big).unwrap();
    for len in [0, 17, 1 << 20, (1 << 20) + 5, 3_000_001] {
        let r = conn.get("h", &format!("/bytes/{len}")).unwrap();
        assert_eq!(r.header("x-origin"), Some("self-big"));
        assert!(r.body == prefork_bench::pattern(len), "/bytes/{len}");
    }
}

#[test]
fn minihttp_origin_answers_pipelined_requests_in_order() {
    let addr = origins::minihttp("self-pipe");
    let mut conn = Conn::connect(addr).unwrap();
    let mut batch = http::request("GET", "h", "/", &[], b"");
    batch.extend(http::request("POST", "h", "/two", &[], b"abc"));
    batch.extend(http::request("GET", "h", "/three", &[], b""));
    conn.send(&batch).unwrap();
    let texts: Vec<String> = (0..3)
        .map(|_| conn.read_response().unwrap().text())
        .collect();
    assert_eq!(
        texts,
        [
            prefork_bench::HELLO,
            "origin=self-pipe method=POST path=/two body=3\n",
            "origin=self-pipe method=GET path=/three\n"
        ]
    );
}

#[test]
fn silent_origin_reads_but_never_answers_and_refused_addr_refuses() {
    let silent = SilentOrigin::start();
    let mut conn = Conn::connect(silent.addr()).unwrap();
    conn.set_read_timeout(Duration::from_millis(200)).unwrap();
    conn.send(&http::request("GET", "h", "/", &[], b""))
        .unwrap();
    assert!(conn.read_response().is_err());
    assert!(wait_until(Duration::from_secs(1), || silent.accepted()
        == 1
        && silent.bytes() > 0));
    assert!(Conn::connect(origins::refused_addr()).is_err());
}
