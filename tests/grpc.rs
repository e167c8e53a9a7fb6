//! Upstreams that speak HTTP/2 (`protocol = "h2c"`), through the real
//! binary: an HTTP/1.1 client's chunked request with trailers and the
//! response's trailers (gRPC's `grpc-status`), and a gRPC-shaped exchange
//! from an HTTP/2 client (h2c listener to h2c origin) with trailers both
//! ways and 1 MiB up and down, every stream on one upstream connection;
//! and an HTTP/1.1 upstream's chunked trailers reaching an HTTP/2 client.

use crate::support::http::{self, Conn};
use crate::support::prefork::{Prefork, Setup};
use prefork_testkit::h2_client::{H2Client, H2Request};
use prefork_testkit::h2_origin::{pattern, H2Origin};
use prefork_testkit::handler::HandlerOrigin;

/// A prefork (its listener taking HTTP/2 too) routing everything to
/// `origin` over h2c.
fn start(origin: &H2Origin) -> Prefork {
    Prefork::start(Setup::new(1).http2().body(&format!(
        "[upstreams.grpc]\nservers = [\"{}\"]\nprotocol = \"h2c\"\n\
         [[routes]]\npath = \"/\"\nupstream = \"grpc\"\n",
        origin.addr()
    )))
}

#[test]
fn an_http1_client_reaches_an_h2c_upstream_with_trailers_both_ways() {
    let origin = H2Origin::start();
    let p = start(&origin);
    let mut c = Conn::local(p.port()).expect("connect");
    c.send(
        b"POST /pkg.Svc/Call HTTP/1.1\r\nHost: grpc.local\r\nTE: trailers\r\n\
          Content-Type: application/grpc\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\nx-checksum: 5\r\n\r\n",
    )
    .expect("send");
    let r = c
        .read_response()
        .unwrap_or_else(|e| panic!("response: {e}\n{}", p.logs()));
    assert_eq!(r.status, 200, "{}", p.logs());
    let echoed = r.text();
    assert!(
        echoed.starts_with("POST /pkg.Svc/Call\nhttp://grpc.local\n"),
        "{echoed}"
    );
    assert!(echoed.contains("\nte: trailers\n"), "{echoed}");
    assert!(echoed.ends_with("\n\nhello"), "{echoed}");
    assert_eq!(r.trailer("x-checksum"), Some("5"));
    assert_eq!(r.trailer("grpc-status"), Some("0"));
    assert_eq!(r.trailer("grpc-message"), Some("ok"));

    let r = http::get(p.port(), "grpc.local", "/length/3").expect("GET");
    assert_eq!((r.status, r.body), (200, pattern(3)));
    assert_eq!(origin.connections(), 1);
}

#[test]
fn an_http2_client_gets_grpc_trailers_and_a_mebibyte_each_way_through_h2c() {
    const MIB: usize = 1 << 20;
    let origin = H2Origin::start();
    let p = start(&origin);
    let mut c = H2Client::connect(p.addr()).unwrap_or_else(|e| panic!("h2c: {e}\n{}", p.logs()));

    let call = H2Request::post("grpc.local", "/pkg.Svc/Call", b"\0\0\0\0\x02hi".to_vec())
        .field("content-type", "application/grpc")
        .field("te", "trailers")
        .trailer("x-checksum", "7");
    let r = c
        .send(call)
        .unwrap_or_else(|e| panic!("call: {e}\n{}", p.logs()));
    assert_eq!(r.status, 200, "{}", p.logs());
    assert!(r.text().ends_with("\n\n\0\0\0\0\x02hi"), "{}", r.text());
    assert_eq!(r.trailer("grpc-status"), Some("0"));
    assert_eq!(r.trailer("grpc-message"), Some("ok"));
    assert_eq!(r.trailer("x-checksum"), Some("7"));

    // A trailers-only answer keeps its status among the fields.
    let r = c
        .send(H2Request::post(
            "grpc.local",
            "/pkg.Svc/trailers-only",
            Vec::new(),
        ))
        .expect("trailers-only");
    assert_eq!((r.status, r.field("grpc-status")), (200, Some("12")));

    // 1 MiB up, echoed back, and 1 MiB down, on streams at once.
    let upload = pattern(MIB);
    let results = c.all(vec![
        H2Request::post("grpc.local", "/upload", upload.clone()),
        H2Request::get("grpc.local", &format!("/big/{MIB}")),
    ]);
    let mut results = results.into_iter();
    let up = results
        .next()
        .expect("the upload")
        .expect("the upload's response");
    assert_eq!(up.status, 200);
    assert!(up.body.ends_with(&upload), "the upload came back different");
    let down = results
        .next()
        .expect("the download")
        .expect("the download's response");
    assert_eq!(down.status, 200);
    assert!(down.body == pattern(MIB), "the download differs");
    assert_eq!(down.trailer("grpc-status"), Some("0"));

    // Many streams at once, all on the one upstream connection.
    let many = (0..50)
        .map(|i| H2Request::get("grpc.local", &format!("/length/{i}")))
        .collect();
    for (i, r) in c.all(many).into_iter().enumerate() {
        let r = r.unwrap_or_else(|e| panic!("stream {i}: {e}\n{}", p.logs()));
        assert_eq!((r.status, r.body.len()), (200, i));
    }
    assert_eq!(origin.connections(), 1);
}

#[test]
fn an_http1_upstreams_chunked_trailers_reach_an_http2_client() {
    let origin = HandlerOrigin::start(|mut conn, _| {
        while let Ok(Some(_)) = conn.read_request_head() {
            let r =
                b"HTTP/1.1 200 OK\r\nTrailer: grpc-status\r\nTransfer-Encoding: chunked\r\n\r\n\
                      5\r\nhello\r\n0\r\ngrpc-status: 0\r\n\r\n";
            if conn.send(r).is_err() {
                return;
            }
        }
    });
    let p = Prefork::start(Setup::new(1).http2().body(&format!(
        "[upstreams.app]\nservers = [\"{}\"]\n[[routes]]\npath = \"/\"\nupstream = \"app\"\n",
        origin.addr()
    )));
    let mut c = H2Client::connect(p.addr()).unwrap_or_else(|e| panic!("h2c: {e}\n{}", p.logs()));
    let r = c
        .send(H2Request::get("app.local", "/x"))
        .unwrap_or_else(|e| panic!("GET: {e}\n{}", p.logs()));
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    assert_eq!(r.trailer("grpc-status"), Some("0"));
}
