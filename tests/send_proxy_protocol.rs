//! `send_proxy_protocol = "v1" | "v2"` on an upstream group: each new
//! connection to a server starts with a PROXY header naming the client and
//! the address it connected to (the carried pair behind a `proxy_protocol`
//! listener), before TLS and HTTP; a connection is its client's alone, so
//! a keep-alive client reuses its own and another client gets another;
//! health checks send the LOCAL form.

use crate::support::http::{Conn, Response};
use crate::support::prefork::{free_port, Prefork, Setup};
use crate::support::wait_until;
use prefork_testkit::h2_client::{H2Client, H2Request};
use prefork_testkit::proxy_origin::ProxyOrigin;
use prefork_testkit::tls_origin::TestCa;
use std::io::Write;
use std::time::Duration;

/// Long enough for workers to start and checks to run.
const WAIT: Duration = Duration::from_secs(10);

/// The tables: the group `app` at `origin` sending `version` headers
/// (with `extra` keys), for every path.
fn body(origin: &ProxyOrigin, version: &str, extra: &str) -> String {
    format!(
        "[upstreams.app]\nservers = [\"{}\"]\nsend_proxy_protocol = \"{version}\"\n{extra}\n\
         [[routes]]\npath = \"/\"\nupstream = \"app\"\n",
        origin.addr()
    )
}

/// `GET path` on `conn`, answered 200.
fn get(p: &Prefork, conn: &mut Conn, path: &str) -> Response {
    let r = conn
        .get("app", path)
        .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", p.logs()));
    assert_eq!(r.status, 200, "{path}: {}\n{}", r.text(), p.logs());
    r
}

/// The upstream connection that served `r`.
fn upstream_conn(r: &Response) -> String {
    r.header("x-conn").expect("X-Conn").to_owned()
}

#[test]
fn each_client_gets_its_own_connection_named_in_its_header_and_checks_send_local() {
    for (version, number) in [("v1", 1), ("v2", 2)] {
        let origin = ProxyOrigin::start();
        let p = Prefork::start(Setup::new(1).body(&body(
            &origin,
            version,
            "health_check = { path = \"/health\", interval = \"1s\" }",
        )));
        let port = p.port();
        let mut a = Conn::local(port).expect("connect A");
        let mut b = Conn::local(port).expect("connect B");
        let header_of = |c: &Conn| {
            let local = c.stream().local_addr().expect("local_addr");
            format!("v{number} src={local} dst=127.0.0.1:{port}")
        };
        let first = get(&p, &mut a, "/a1");
        assert!(
            first
                .text()
                .ends_with(&format!("{} path=/a1", header_of(&a))),
            "{version}: {}",
            first.text()
        );
        // A keep-alive client's next request goes on its own connection.
        let again = get(&p, &mut a, "/a2");
        assert_eq!(upstream_conn(&again), upstream_conn(&first), "{version}");
        // Another client, with A's connection idle in the pool, gets one
        // of its own, whose header names it.
        let other = get(&p, &mut b, "/b1");
        assert_ne!(upstream_conn(&other), upstream_conn(&first), "{version}");
        assert!(
            other
                .text()
                .ends_with(&format!("{} path=/b1", header_of(&b))),
            "{version}: {}",
            other.text()
        );
        // Both idle now: each takes its own back.
        assert_eq!(
            upstream_conn(&get(&p, &mut a, "/a3")),
            upstream_conn(&first)
        );
        assert_eq!(
            upstream_conn(&get(&p, &mut b, "/b2")),
            upstream_conn(&other)
        );
        // A client of its own connection (a new one after A closed) never
        // gets A's either.
        drop(a);
        let mut c = Conn::local(port).expect("connect C");
        let third = get(&p, &mut c, "/c1");
        assert!(
            third
                .text()
                .ends_with(&format!("{} path=/c1", header_of(&c))),
            "{version}: {}",
            third.text()
        );
        // Every client connection's header was sent once, and the health
        // checks' connections carry the LOCAL form.
        assert!(
            wait_until(WAIT, || origin
                .headers()
                .iter()
                .any(|h| h.version == number && h.source.is_none())),
            "{version}: no LOCAL header: {:?}\n{}",
            origin.headers(),
            p.logs()
        );
        let clients: Vec<_> = origin
            .headers()
            .into_iter()
            .filter(|h| h.source.is_some())
            .collect();
        assert_eq!(clients.len(), 3, "{version}: {clients:?}");
        assert!(clients.iter().all(|h| h.version == number));
        assert_eq!(origin.refused(), 0);
    }
}

#[test]
fn behind_a_proxy_protocol_listener_the_carried_addresses_go_on_and_http2_streams_work() {
    let origin = ProxyOrigin::start();
    let pp_port = free_port();
    let listener = format!("[[listen]]\naddr = \"127.0.0.1:{pp_port}\"\nproxy_protocol = true\n");
    let p = Prefork::start(
        Setup::new(1)
            .http2()
            .body(&format!("{listener}\n{}", body(&origin, "v2", ""))),
    );
    // The pair the balancer's header carried.
    let mut carried = Conn::local(pp_port).expect("connect");
    carried
        .send(b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 443\r\nGET /carried HTTP/1.1\r\nHost: app\r\n\r\n")
        .expect("send");
    let r = carried.read_response().expect("response");
    assert_eq!(r.status, 200, "{}", p.logs());
    assert!(
        r.text()
            .ends_with("v2 src=192.0.2.7:40000 dst=10.0.0.1:443 path=/carried"),
        "{}",
        r.text()
    );
    // IPv6 too, and the next request of that client keeps it.
    let mut carried6 = Conn::local(pp_port).expect("connect");
    carried6
        .send(b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 80\r\nGET /six HTTP/1.1\r\nHost: app\r\n\r\n")
        .expect("send");
    let six = carried6.read_response().expect("response");
    assert!(
        six.text()
            .ends_with("v2 src=[2001:db8::7]:51000 dst=[2001:db8::1]:80 path=/six"),
        "{}",
        six.text()
    );
    let again = get(&p, &mut carried6, "/six-again");
    assert_eq!(upstream_conn(&again), upstream_conn(&six));
    assert_ne!(upstream_conn(&six), upstream_conn(&r));
    // A balancer's LOCAL header: the connection's own addresses.
    let mut local = Conn::local(pp_port).expect("connect");
    let mut bytes = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec();
    bytes
        .write_all(b"GET /local HTTP/1.1\r\nHost: app\r\n\r\n")
        .unwrap();
    local.send(&bytes).expect("send");
    let r = local.read_response().expect("response");
    let own = local.stream().local_addr().expect("local_addr");
    assert!(
        r.text()
            .ends_with(&format!("v2 src={own} dst=127.0.0.1:{pp_port} path=/local")),
        "{}",
        r.text()
    );
    // HTTP/2 streams of one client go to an HTTP/1.1 server with the
    // client's header, on one connection of its own.
    let mut h2 = H2Client::connect(p.addr()).expect("h2c connect");
    let first = h2.send(H2Request::get("app", "/h2-a")).expect("stream 1");
    let second = h2.send(H2Request::get("app", "/h2-b")).expect("stream 2");
    assert_eq!(first.status, 200, "{}", p.logs());
    let dst = format!("dst=127.0.0.1:{} path=/h2-a", p.port());
    assert!(
        first.text().contains("v2 src=127.0.0.1:"),
        "{}",
        first.text()
    );
    assert!(first.text().ends_with(&dst), "{}", first.text());
    assert_eq!(first.field("x-conn"), second.field("x-conn"));
    assert_eq!(origin.headers().len(), 4, "{:?}", origin.headers());
}

#[test]
fn over_upstream_tls_the_header_comes_before_the_client_hello() {
    let ca = TestCa::new("prefork test CA");
    let origin = ProxyOrigin::start_tls(&ca.leaf(&["api.internal"]));
    let dir = tempfile::Builder::new()
        .prefix("prefork-test-")
        .tempdir()
        .expect("temp dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write the CA");
    let extra = format!(
        "tls = true\ntls_ca = \"{}\"\ntls_server_name = \"api.internal\"",
        ca_file.display()
    );
    let p = Prefork::start_in(dir, Setup::new(1).body(&body(&origin, "v1", &extra)));
    let mut a = Conn::local(p.port()).expect("connect");
    let local = a.stream().local_addr().expect("local_addr");
    let first = get(&p, &mut a, "/tls");
    assert!(
        first.text().ends_with(&format!(
            "v1 src={local} dst=127.0.0.1:{} path=/tls",
            p.port()
        )),
        "{}",
        first.text()
    );
    let again = get(&p, &mut a, "/tls-again");
    assert_eq!(upstream_conn(&again), upstream_conn(&first));
    assert_eq!(origin.headers().len(), 1);
}
