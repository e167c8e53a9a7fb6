//! What goes through the proxy: keep-alive on both sides, bodies in both
//! directions, forwarded headers, pipelining.

use crate::support::http::{self, Conn};
use crate::support::origins::{self, RecordingOrigin};
use crate::support::prefork::{is_stopped, Continue, Prefork, Setup};
use crate::support::scripted::ScriptedOrigin;
use crate::support::wait_until;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// One upstream group of `server`; large bodies are spliced, so that the
/// body tests here cover that path.
fn single_upstream(workers: usize, server: std::net::SocketAddr) -> Prefork {
    Prefork::start(Setup::new(workers).top("splice = true").body(&format!(
        r#"
[upstreams.app]
servers = ["{server}"]
read_timeout = "10s"
[[routes]]
host = "app.local"
upstream = "app"
[[routes]]
host = "status.local"
respond = {{ status = 200, body = "fixed\n" }}
"#
    )))
}

#[test]
fn client_keepalive_serves_many_requests_on_one_connection() {
    let origin = origins::minihttp("ka");
    let p = single_upstream(2, origin);
    let mut conn = Conn::local(p.port()).expect("connect");
    for i in 0..10 {
        let path = format!("/ka/{i}");
        let r = conn
            .get("app.local", &path)
            .unwrap_or_else(|e| panic!("request {i} on the same connection: {e}\n{}", p.logs()));
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.text(), format!("origin=ka method=GET path={path}\n"));
        assert!(
            !r.closes(),
            "request {i}: the proxy announced Connection: close"
        );
    }
    // Fixed responses keep the connection too.
    let r = conn
        .get("status.local", "/")
        .expect("fixed response on the same connection");
    assert_eq!((r.status, r.text().as_str()), (200, "fixed\n"));
    let r = conn
        .get("app.local", "/")
        .expect("after the fixed response");
    assert_eq!(r.text(), prefork_bench::HELLO);
}

#[test]
fn upstream_connections_are_reused() {
    let rec = RecordingOrigin::start();
    let p = single_upstream(1, rec.addr());
    let n = 8;
    for i in 0..n {
        // A fresh client connection each time: reuse must come from the
        // proxy's upstream pool, not from the client connection.
        let r = http::get(p.port(), "app.local", &format!("/pool/{i}")).expect("request");
        assert_eq!(r.status, 200, "request {i}\n{}", p.logs());
    }
    let requests = rec.requests();
    assert_eq!(
        requests.len(),
        n,
        "the origin should see every request once"
    );
    let mut per_conn: BTreeMap<u64, usize> = BTreeMap::new();
    for r in &requests {
        *per_conn.entry(r.conn).or_default() += 1;
    }
    let most = per_conn.values().copied().max().unwrap_or(0);
    assert!(
        most >= n / 2 && per_conn.len() < n,
        "{n} sequential requests through one worker used {} origin connections ({per_conn:?}, {} accepted); \
         expected pooled keep-alive connections to carry several requests each",
        per_conn.len(),
        rec.connections()
    );
    for r in &requests {
        let conn = r
            .request
            .header("connection")
            .unwrap_or("")
            .to_ascii_lowercase();
        assert!(
            !conn.contains("close"),
            "the proxy asked the origin to close: Connection: {conn}"
        );
    }
}

#[test]
fn chunked_upload_arrives_decoded_and_intact() {
    let rec = RecordingOrigin::start();
    let p = single_upstream(1, rec.addr());
    let body: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(7919) >> 3) as u8)
        .collect();
    let mut conn = Conn::local(p.port()).expect("connect");
    let mut req = http::request(
        "POST",
        "app.local",
        "/upload",
        &[
            "Transfer-Encoding: chunked",
            "Content-Type: application/octet-stream",
        ],
        b"",
    );
    req.extend(http::chunked(&body, &[1, 2, 3, 1000, 4096, 65536, 100_000]));
    conn.send(&req).expect("send");
    let r = conn
        .read_response()
        .unwrap_or_else(|e| panic!("{e}\n{}", p.logs()));
    assert_eq!(r.status, 200, "{}", p.logs());
    assert!(
        r.text().ends_with(&format!(" body={}\n", body.len())),
        "the origin reports the body length it decoded: {:?}",
        r.text()
    );

    // The same connection stays usable after a chunked body.
    let small = b"after the chunked one".to_vec();
    conn.send(&http::request("POST", "app.local", "/upload2", &[], &small))
        .expect("send");
    let r2 = conn
        .read_response()
        .expect("second request on the connection");
    assert_eq!(r2.status, 200);

    let got = rec.requests();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].request.method, "POST");
    assert_eq!(got[0].request.path, "/upload");
    assert_eq!(got[0].request.body.len(), body.len(), "decoded length");
    assert!(
        got[0].request.body == body,
        "the decoded body differs from the one sent"
    );
    assert_eq!(got[1].request.body, small);
}

#[test]
fn content_length_upload_arrives_intact() {
    let rec = RecordingOrigin::start();
    let p = single_upstream(1, rec.addr());
    let body: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut conn = Conn::local(p.port()).expect("connect");
    conn.send(&http::request("PUT", "app.local", "/put", &[], &body))
        .expect("send");
    let r = conn
        .read_response()
        .unwrap_or_else(|e| panic!("{e}\n{}", p.logs()));
    assert_eq!(r.status, 200, "{}", p.logs());
    let got = rec.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].request.method, "PUT");
    assert_eq!(got[0].request.header("content-length"), Some("2000000"));
    assert!(
        got[0].request.body == body,
        "the body differs from the one sent"
    );
}

#[test]
fn ten_megabyte_download_arrives_intact() {
    let origin = origins::minihttp("big");
    let p = single_upstream(1, origin);
    let len = 10 * 1024 * 1024;
    let mut conn = Conn::local(p.port()).expect("connect");
    conn.set_read_timeout(Duration::from_secs(30)).unwrap();
    let started = Instant::now();
    let r = conn
        .get("app.local", &format!("/bytes/{len}"))
        .unwrap_or_else(|e| panic!("{e}\n{}", p.logs()));
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), len, "body length");
    let expected = prefork_bench::pattern(len);
    if let Some(at) = r.body.iter().zip(&expected).position(|(a, b)| a != b) {
        panic!(
            "the body differs from byte {at}: got {:?}, want {:?}",
            String::from_utf8_lossy(&r.body[at..(at + 32).min(len)]),
            String::from_utf8_lossy(&expected[at..(at + 32).min(len)])
        );
    }
    eprintln!("10 MiB through the proxy in {:?}", started.elapsed());
    // The connection is still usable.
    let again = conn
        .get("app.local", "/")
        .expect("request after the download");
    assert_eq!(again.text(), prefork_bench::HELLO);
}

#[test]
fn chunked_response_from_upstream_arrives_intact() {
    let rec = RecordingOrigin::start();
    let p = single_upstream(1, rec.addr());
    let mut conn = Conn::local(p.port()).expect("connect");
    for len in [0usize, 1, 100_000] {
        let r = conn
            .get("app.local", &format!("/chunked/{len}"))
            .unwrap_or_else(|e| panic!("{e}\n{}", p.logs()));
        assert_eq!(r.status, 200);
        assert!(
            r.body == prefork_bench::pattern(len),
            "chunked body of {len} bytes differs"
        );
    }
}

#[test]
fn forwarded_headers_are_added_and_hop_by_hop_removed() {
    let rec = RecordingOrigin::start();
    let p = single_upstream(1, rec.addr());
    let mut conn = Conn::local(p.port()).expect("connect");
    conn.send(
        b"GET /fw?q=1 HTTP/1.1\r\n\
          Host: App.Local:8080\r\n\
          X-Forwarded-For: 203.0.113.7\r\n\
          Connection: keep-alive, X-Custom-Hop\r\n\
          X-Custom-Hop: secret\r\n\
          Keep-Alive: timeout=5\r\n\
          TE: trailers\r\n\
          X-End-To-End: kept\r\n\
          User-Agent: blackbox\r\n\
          \r\n",
    )
    .expect("send");
    let r = conn
        .read_response()
        .unwrap_or_else(|e| panic!("{e}\n{}", p.logs()));
    assert_eq!(r.status, 200, "{}", p.logs());

    let got = rec.requests();
    assert_eq!(got.len(), 1);
    let req = &got[0].request;
    let mut problems = Vec::new();
    if req.path != "/fw?q=1" {
        problems.push(format!("path: {:?}", req.path));
    }
    if req.header_values("host") != ["App.Local:8080"] {
        problems.push(format!(
            "Host should be passed as received: {:?}",
            req.header_values("host")
        ));
    }
    let xff: Vec<String> = req
        .header_values("x-forwarded-for")
        .join(",")
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    if xff != ["203.0.113.7", "127.0.0.1"] {
        problems.push(format!(
            "X-Forwarded-For should be the client's list plus 127.0.0.1: {xff:?}"
        ));
    }
    if req.header("x-forwarded-proto") != Some("http") {
        problems.push(format!(
            "X-Forwarded-Proto: {:?}",
            req.header("x-forwarded-proto")
        ));
    }
    match req.header("x-forwarded-host") {
        Some(h)
            if h.split(':')
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case("app.local")) => {}
        other => problems.push(format!("X-Forwarded-Host should name App.Local: {other:?}")),
    }
    for hop in ["x-custom-hop", "keep-alive", "te"] {
        if let Some(v) = req.header(hop) {
            problems.push(format!("hop-by-hop header {hop} was forwarded: {v:?}"));
        }
    }
    if let Some(c) = req.header("connection") {
        if c.to_ascii_lowercase().contains("x-custom-hop") {
            problems.push(format!(
                "the client's Connection header was forwarded: {c:?}"
            ));
        }
    }
    for keep in [("x-end-to-end", "kept"), ("user-agent", "blackbox")] {
        if req.header(keep.0) != Some(keep.1) {
            problems.push(format!(
                "end-to-end header {} lost: {:?}",
                keep.0,
                req.header(keep.0)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "as received by the origin:\n{}\n{:#?}",
        problems.join("\n"),
        req.headers
    );
}

#[test]
fn hop_by_hop_response_headers_are_removed() {
    let rec = RecordingOrigin::start();
    let p = single_upstream(1, rec.addr());
    let mut conn = Conn::local(p.port()).expect("connect");
    let r = conn
        .get("app.local", "/hop")
        .unwrap_or_else(|e| panic!("{e}\n{}", p.logs()));
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hop\n");
    assert_eq!(
        r.header("x-end"),
        Some("kept"),
        "end-to-end response header lost: {:?}",
        r.headers
    );
    assert!(
        !r.has_header("x-resp-hop"),
        "a header the origin listed in Connection reached the client: {:?}",
        r.headers
    );
    assert!(
        r.header("keep-alive") != Some("timeout=30"),
        "the origin's Keep-Alive header reached the client: {:?}",
        r.headers
    );
    // The connection still works afterwards.
    let again = conn.get("app.local", "/after-hop").expect("second request");
    assert_eq!(again.status, 200);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let rec = RecordingOrigin::start();
    let fast = origins::minihttp("fast");
    let p = Prefork::start(Setup::new(1).body(&format!(
        r#"
[upstreams.slow]
servers = ["{}"]
[upstreams.fast]
servers = ["{fast}"]
[[routes]]
host = "slow.local"
upstream = "slow"
[[routes]]
host = "fast.local"
upstream = "fast"
[[routes]]
host = "status.local"
respond = {{ status = 200, body = "fixed\n" }}
"#,
        rec.addr()
    )));
    let mut conn = Conn::local(p.port()).expect("connect");
    // All in one write: the slow one first, so answering as soon as each
    // upstream replies would reorder them.
    let mut batch = Vec::new();
    batch.extend(http::request("GET", "slow.local", "/delay/300", &[], b""));
    batch.extend(http::request("GET", "fast.local", "/second", &[], b""));
    batch.extend(http::request("GET", "status.local", "/third", &[], b""));
    batch.extend(http::request(
        "POST",
        "fast.local",
        "/fourth",
        &[],
        b"body!",
    ));
    batch.extend(http::request("GET", "fast.local", "/fifth", &[], b""));
    conn.send(&batch).expect("send");
    let mut bodies = Vec::new();
    for i in 0..5 {
        let r = conn
            .read_response()
            .unwrap_or_else(|e| panic!("response {i}: {e} (got so far {bodies:?})\n{}", p.logs()));
        assert_eq!(r.status, 200, "response {i}");
        bodies.push(r.text());
    }
    assert_eq!(
        bodies,
        [
            "delayed 300ms\n",
            "origin=fast method=GET path=/second\n",
            "fixed\n",
            "origin=fast method=POST path=/fourth body=5\n",
            "origin=fast method=GET path=/fifth\n",
        ]
    );
    assert!(wait_until(Duration::from_secs(1), || rec.count() == 1));
}

/// Bodies large enough to be spliced (socket to socket through a pipe)
/// arrive byte-exact both ways, and exactly their length is moved: the
/// upstream connection carries the next request after each.
#[test]
fn large_bodies_arrive_intact_and_the_upstream_connection_is_reused() {
    let origin = ScriptedOrigin::start();
    let len = 3 * 1024 * 1024 + 123;
    let body = prefork_bench::pattern(len);
    let mut big = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes();
    big.extend_from_slice(&body);
    origin.script("/big", &big, false);
    let p = single_upstream(1, origin.addr());
    let mut conn = Conn::local(p.port()).expect("connect");
    conn.set_read_timeout(Duration::from_secs(30)).unwrap();

    let r = conn
        .get("app.local", "/big")
        .unwrap_or_else(|e| panic!("{e}\n{}", p.logs()));
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), len, "body length");
    assert!(r.body == body, "the downloaded body differs");
    let r = conn.get("app.local", "/after-download").expect("next");
    assert_eq!(r.text(), "ok");

    let upload: Vec<u8> = (0..len).map(|i| (i * 13 % 253) as u8).collect();
    conn.send(&http::request("PUT", "app.local", "/up", &[], &upload))
        .expect("send");
    let r = conn.read_response().expect("upload answered");
    assert_eq!(r.status, 200, "{}", p.logs());
    let r = conn.get("app.local", "/after-upload").expect("next");
    assert_eq!(r.text(), "ok");

    let got = origin.requests_for("/up");
    assert_eq!(got.len(), 1);
    assert!(got[0].body == upload, "the uploaded body differs");
    let on = |path| origin.connections_for(path);
    assert_eq!(on("/big").len(), 1);
    assert_eq!(
        [on("/after-download"), on("/up"), on("/after-upload")],
        [on("/big"), on("/big"), on("/big")],
        "every request after a large body reuses the upstream connection"
    );
}

/// An upstream that closes in the middle of a large body: the client gets
/// what came, then the connection closes before the announced length.
#[test]
fn a_large_body_cut_short_closes_the_client_connection() {
    let origin = ScriptedOrigin::start();
    let (len, cut) = (2_000_000, 700_000);
    let body = prefork_bench::pattern(len);
    let mut short = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes();
    short.extend_from_slice(&body[..cut]);
    origin.script("/cut", &short, true);
    let p = single_upstream(1, origin.addr());
    p.expect_log_errors();
    let mut conn = Conn::local(p.port()).expect("connect");
    conn.set_read_timeout(Duration::from_secs(30)).unwrap();
    conn.send(b"GET /cut HTTP/1.1\r\nHost: app.local\r\n\r\n")
        .expect("send");
    let head = conn.read_raw_head().expect("head");
    assert!(head.contains(&format!("Content-Length: {len}")), "{head}");
    let rest = conn.read_to_close().expect("the rest until close");
    assert!(rest.len() < len, "a truncated body never looks complete");
    assert!(rest == body[..rest.len()], "what came is the body's start");
}

/// A client that sends more after a `Connection: close` request (a request
/// it should not have pipelined, say) reads its response, and the
/// connection ends with a FIN, not a reset: prefork finds the unread bytes
/// before it closes and lingers. They arrive while the origin holds its
/// answer, so they were not there when the request was read: only a look
/// at the socket itself, at the close, can find them.
#[test]
fn bytes_sent_after_a_closing_request_get_a_lingering_close_not_a_reset() {
    let origin = RecordingOrigin::start();
    let p = single_upstream(1, origin.addr());
    let mut conn = Conn::local(p.port()).expect("connect");
    conn.set_read_timeout(Duration::from_secs(10)).unwrap();
    conn.send(b"GET /hold HTTP/1.1\r\nHost: app.local\r\nConnection: close\r\n\r\n")
        .expect("send");
    assert!(
        wait_until(Duration::from_secs(10), || origin.count_path("/hold") == 1),
        "the request did not reach the origin\n{}",
        p.logs()
    );
    conn.send(b"GET /next HTTP/1.1\r\nHost: app.local\r\n\r\n")
        .expect("send more");
    assert!(
        wait_until(Duration::from_secs(10), || unacknowledged(conn.stream())
            == 0),
        "the extra bytes were never acknowledged"
    );
    origin.release_holds();
    let r = conn.read_response().expect("the response");
    assert_eq!((r.status, r.closes()), (200, true));
    // Lingering, prefork still reads (and drops) what comes: one more byte
    // is acknowledged. Had it closed with the bytes unread, it would have
    // reset the connection, and would answer that byte with another reset.
    conn.send(b"x").expect("the connection is still open");
    let mut reset = None;
    let acked = wait_until(Duration::from_secs(10), || {
        reset = conn.stream().take_error().ok().flatten();
        reset.is_some() || unacknowledged(conn.stream()) == 0
    });
    assert!(acked, "the last byte was never acknowledged");
    assert!(reset.is_none(), "the connection was reset: {reset:?}");
}

/// Bytes `socket` sent that the peer has not acknowledged yet (`SIOCOUTQ`,
/// which Linux numbers as `TIOCOUTQ`).
fn unacknowledged(socket: &std::net::TcpStream) -> libc::c_int {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int into `n`, valid for the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    assert_eq!(rc, 0, "SIOCOUTQ: {}", std::io::Error::last_os_error());
    n
}

/// Listeners start connections with delayed ACKs (a request's ACK rides on
/// its response). A client that leaves Nagle's algorithm on and writes a
/// request in pieces holds each piece until the one before is ACKed, so
/// prefork must ACK at once whenever it waits for more of a request, head or
/// body: otherwise every such piece waits out a delayed-ACK timeout, 40 ms at
/// the least. The fastest of five tries must beat that; without the prompt
/// ACK, every try is slower.
#[test]
fn a_nagle_client_writing_a_request_in_pieces_waits_for_no_delayed_ack() {
    let origin = RecordingOrigin::start();
    let p = single_upstream(1, origin.addr());
    let head = b"POST /nagle HTTP/1.1\r\nHost: app.local\r\nContent-Length: 5\r\n\r\n";
    let (start_line, fields) = head.split_at(head.len() - 40);
    let rest = [fields, b"hello"].concat();
    let shapes: [(&str, [&[u8]; 2]); 2] = [
        ("a head in two pieces", [start_line, &rest]),
        ("a head, then its body", [head, b"hello"]),
    ];
    for (shape, pieces) in shapes {
        let fastest = fastest_nagle_request(&p, shape, &|_| {}, &pieces);
        assert!(
            fastest < Duration::from_millis(35),
            "{shape}: the fastest of five requests took {fastest:?}: a delayed ACK held it"
        );
    }
}

/// After prefork asks for the body with `100 Continue`, a Nagle client that
/// writes it in two pieces is not held by a delayed ACK between them either
/// (see the test above): sending the `100` may turn delayed ACKs back on.
#[test]
fn a_nagle_client_sending_its_body_after_100_continue_waits_for_no_delayed_ack() {
    use std::io::{Read, Write};
    let origin = RecordingOrigin::start();
    let p = single_upstream(1, origin.addr());
    let head = b"POST /nagle HTTP/1.1\r\nHost: app.local\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
    let ask_for_the_body = |stream: &mut std::net::TcpStream| {
        stream.write_all(head).expect("write the head");
        let mut interim = Vec::new();
        while !interim.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).expect("read the 100");
            interim.push(byte[0]);
        }
        assert!(interim.starts_with(b"HTTP/1.1 100"), "{interim:?}");
    };
    let fastest = fastest_nagle_request(&p, "100 Continue", &ask_for_the_body, &[b"hel", b"lo"]);
    assert!(
        fastest < Duration::from_millis(35),
        "the fastest of five bodies took {fastest:?}: a delayed ACK held it"
    );
}

/// The fastest of five `POST /nagle` requests with a 5-byte body from a
/// client that leaves Nagle's algorithm on (no TCP_NODELAY): on each fresh
/// connection `prelude` runs untimed, then `pieces` are written one by one
/// and the response read.
fn fastest_nagle_request(
    p: &Prefork,
    shape: &str,
    prelude: &dyn Fn(&mut std::net::TcpStream),
    pieces: &[&[u8]],
) -> Duration {
    use std::io::Write;
    (0..5)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(p.addr()).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            prelude(&mut stream);
            let started = Instant::now();
            for piece in pieces {
                stream.write_all(piece).expect("write a piece");
            }
            let r = Conn::from_stream(stream)
                .read_response()
                .unwrap_or_else(|e| panic!("{shape}: {e}\n{}", p.logs()));
            assert_eq!(r.status, 200, "{shape}");
            assert!(r.text().contains("body=5"), "{shape}: {}", r.text());
            started.elapsed()
        })
        .min()
        .expect("five tries")
}

/// The last bytes of a request body are taken from the client buffer, their
/// write upstream fails (the server answered and reset the connection), and
/// the server's answer arrives: the request must not count as fully sent.
/// Otherwise the client connection stays open with those body bytes still
/// buffered, and they are parsed as the client's next request.
#[test]
fn a_body_whose_last_write_upstream_failed_does_not_leave_its_bytes_behind() {
    let origin = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = Prefork::start(Setup::new(1).body(&format!(
        r#"
[upstreams.app]
servers = ["{}"]
[[routes]]
host = "app.local"
upstream = "app"
"#,
        origin.local_addr().unwrap()
    )));
    p.expect_log_errors();
    let worker = p.workers()[0].pid;

    let mut c = Conn::local(p.port()).unwrap();
    c.send(
        b"POST /up HTTP/1.1\r\nHost: app.local\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .unwrap();
    let (mut up, worker_end) = origin.accept().unwrap();
    up.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"hello\r\n") {
        let mut chunk = [0u8; 4096];
        let n = up.read(&mut chunk).unwrap();
        assert!(n > 0, "origin: EOF before the first chunk");
        got.extend_from_slice(&chunk[..n]);
    }

    // Freeze the worker so that the end of the body and the server's answer
    // (then a reset) are both waiting when it runs again.
    kill(Pid::from_raw(worker), Signal::SIGSTOP).unwrap();
    let resume = Continue(worker);
    assert!(wait_until(Duration::from_secs(5), || is_stopped(worker)));
    c.send(b"0\r\n\r\n").unwrap();
    up.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        .unwrap();
    socket2::SockRef::from(&up)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    let origin_port = origin.local_addr().unwrap().port();
    assert!(established(worker_end.port(), origin_port));
    drop(up);
    // The reset may wait for the kernel's softirq thread on a busy machine:
    // a worker resumed before it arrives writes the last chunk successfully.
    assert!(
        wait_until(Duration::from_secs(5), || !established(
            worker_end.port(),
            origin_port
        )),
        "the reset never reached the worker's upstream socket"
    );
    drop(resume);

    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200);
    let rest = c.read_to_close().unwrap();
    assert!(
        rest.is_empty(),
        "after its one response the client got more: {:?}\n{}",
        String::from_utf8_lossy(&rest),
        p.access_log()
    );
}

/// Whether /proc/net/tcp lists the connection from 127.0.0.1:`local` to
/// 127.0.0.1:`remote` as established.
fn established(local: u16, remote: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let (local, remote) = (
        format!("0100007F:{local:04X}"),
        format!("0100007F:{remote:04X}"),
    );
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // st 01 is ESTABLISHED.
        f.len() > 3 && f[1] == local && f[2] == remote && f[3] == "01"
    })
}
