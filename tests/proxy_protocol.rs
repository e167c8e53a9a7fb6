//! `proxy_protocol = true` on a listener: the address a PROXY v1 or v2
//! header carries (IPv4, IPv6, TLVs skipped; LOCAL and UNKNOWN keep the
//! connection's own) is the client's in `X-Forwarded-For` and the access
//! log, for every request of the connection, parked or not, on a plain and
//! a TLS listener. A connection without a valid header, or whose header
//! does not come within `client_header_timeout`, is closed unanswered and
//! counted in `/metrics`.

use crate::support::http::{self, Conn};
use crate::support::origins::RecordingOrigin;
use crate::support::prefork::{free_port, Prefork, Setup};
use crate::support::wait_until;
use crate::tls::{client_config, Ca};
use nix::sys::signal::Signal;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv6Addr, TcpStream};
use std::time::Duration;

/// Long enough for workers to report, connections to park, logs to flush.
const WAIT: Duration = Duration::from_secs(10);

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 header: `command` (0 LOCAL, 1 PROXY), `family` (address family
/// and transport) and what follows the fixed part.
fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x20 | command);
    out.push(family);
    out.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A v2 PROXY header for a TCP over IPv4 client `src:port`.
fn v2_ipv4(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut p = src.to_vec();
    p.extend_from_slice(&[10, 0, 0, 1]);
    p.extend_from_slice(&port.to_be_bytes());
    p.extend_from_slice(&443u16.to_be_bytes());
    v2(1, 0x11, &p)
}

/// A v2 PROXY header for a TCP over IPv6 client `src:port`, with an AWS
/// VPC endpoint TLV and a NOOP after the addresses.
fn v2_ipv6_tlvs(src: &str, port: u16) -> Vec<u8> {
    let mut p = src.parse::<Ipv6Addr>().unwrap().octets().to_vec();
    p.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    p.extend_from_slice(&port.to_be_bytes());
    p.extend_from_slice(&80u16.to_be_bytes());
    p.extend_from_slice(b"\xea\x00\x09\x01vpce-abc\x04\x00\x02\x00\x00");
    v2(1, 0x21, &p)
}

/// The tables: a `proxy_protocol` listener on `port` (`tls` besides, with
/// `extra` keys), an upstream at `origin` for every path.
fn body(port: u16, listen_extra: &str, origin: &RecordingOrigin, extra: &str) -> String {
    format!(
        "[[listen]]\naddr = \"127.0.0.1:{port}\"\nproxy_protocol = true\n{listen_extra}\n\
         {extra}\n\
         [upstreams.app]\nservers = [\"{}\"]\n\
         [[routes]]\npath = \"/\"\nupstream = \"app\"\n",
        origin.addr()
    )
}

/// The `X-Forwarded-For` the origin got with the request for `path`.
fn forwarded_for(origin: &RecordingOrigin, path: &str) -> Option<String> {
    origin
        .requests()
        .iter()
        .find(|r| r.request.path == path)
        .and_then(|r| r.request.header("x-forwarded-for").map(str::to_owned))
}

/// The access-log line of the request for `path`, once written.
fn access_line(p: &Prefork, path: &str) -> String {
    let needle = format!(" {path} ");
    assert!(
        wait_until(WAIT, || p.access_log().contains(&needle)),
        "no access-log line for {path}:\n{}",
        p.access_log()
    );
    p.access_log()
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap()
        .to_owned()
}

/// Whether the server closes `stream` without sending a byte (an EOF or a
/// reset: the bytes the client sent may still be unread).
fn closed_unanswered(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 1024];
    match stream.read(&mut buf) {
        Ok(n) => n == 0,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
        ),
    }
}

#[test]
fn v1_and_v2_headers_carry_the_client_address_across_keep_alive_and_parking() {
    let origin = RecordingOrigin::start();
    let port = free_port();
    let p = Prefork::start(Setup::new(1).body(&body(port, "", &origin, "")));
    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "v1-tcp4",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 80\r\n".to_vec(),
            "192.0.2.7",
        ),
        (
            "v1-tcp6",
            b"PROXY TCP6 2001:db8::7 ::1 51000 80\r\n".to_vec(),
            "2001:db8::7",
        ),
        ("v1-unknown", b"PROXY UNKNOWN\r\n".to_vec(), "127.0.0.1"),
        ("v2-ipv4", v2_ipv4([198, 51, 100, 9], 40001), "198.51.100.9"),
        (
            "v2-ipv6-tlvs",
            v2_ipv6_tlvs("2001:db8::9", 40002),
            "2001:db8::9",
        ),
        ("v2-local", v2(0, 0x00, &[]), "127.0.0.1"),
    ];
    let mut conns = Vec::new();
    for (name, header, client) in &cases {
        let mut c = Conn::local(port).unwrap();
        // The header and the request in one segment: exactly the header
        // is taken, the request is left to HTTP.
        let mut bytes = header.clone();
        bytes.extend_from_slice(format!("GET /{name} HTTP/1.1\r\nHost: app\r\n\r\n").as_bytes());
        c.send(&bytes).unwrap();
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 200, "{name}: {}", p.logs());
        assert_eq!(
            forwarded_for(&origin, &format!("/{name}")).as_deref(),
            Some(*client),
            "{name}"
        );
        let line = access_line(&p, &format!("/{name}"));
        assert!(line.starts_with(&format!("{client} ")), "{name}: {line}");
        conns.push(c);
    }
    // Idle, every connection is parked; resumed, it keeps its address.
    assert!(
        wait_until(WAIT, || p.parked() >= cases.len() as u64),
        "parked: {}",
        p.parked()
    );
    for ((name, _, client), c) in cases.iter().zip(&mut conns) {
        let path = format!("/{name}/again");
        assert_eq!(c.get("app", &path).unwrap().status, 200);
        assert_eq!(forwarded_for(&origin, &path).as_deref(), Some(*client));
        let line = access_line(&p, &path);
        assert!(line.starts_with(&format!("{client} ")), "{path}: {line}");
    }
}

#[test]
fn a_connection_without_a_valid_header_in_time_is_closed_unanswered_and_counted() {
    let origin = RecordingOrigin::start();
    let (port, admin) = (free_port(), free_port());
    let p = Prefork::start(
        Setup::new(1)
            .top("client_header_timeout = \"1s\"")
            .body(&body(
                port,
                "",
                &origin,
                &format!("[admin]\naddr = \"127.0.0.1:{admin}\"\n"),
            )),
    );
    p.expect_log_errors();
    let mut long_v1 = b"PROXY UNKNOWN ".to_vec();
    long_v1.resize(200, b'x');
    let mut bad_version = v2_ipv4([192, 0, 2, 1], 1);
    bad_version[12] = 0x11;
    for (what, bytes) in [
        (
            "a plain request",
            b"GET /plain HTTP/1.1\r\nHost: app\r\n\r\n".to_vec(),
        ),
        ("a v1 line too long", long_v1),
        ("a v2 header of version 1", bad_version),
    ] {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(&bytes).unwrap();
        assert!(closed_unanswered(&mut c), "{what}");
    }
    // A header that never comes: closed after client_header_timeout.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    silent.write_all(b"PROXY TCP4 192.0.2.7").unwrap();
    assert!(closed_unanswered(&mut silent), "a header cut short");
    assert_eq!(forwarded_for(&origin, "/plain"), None, "nothing forwarded");
    let counted = |reason: &str, at_least: u64| {
        let line = format!("prefork_proxy_protocol_failures_total{{reason=\"{reason}\"}} ");
        wait_until(WAIT, || {
            http::get(admin, "admin", "/metrics").is_ok_and(|r| {
                r.text().lines().any(|l| {
                    l.strip_prefix(&line)
                        .and_then(|v| v.parse::<f64>().ok())
                        .is_some_and(|v| v >= at_least as f64)
                })
            })
        })
    };
    assert!(counted("invalid", 3), "{}", p.logs());
    assert!(counted("timeout", 1), "{}", p.logs());
    assert!(
        p.error_log().contains("no valid PROXY protocol header"),
        "{}",
        p.error_log()
    );
    // The plain listener of the same prefork is not affected.
    assert_eq!(http::get(p.port(), "app", "/").unwrap().status, 200);
}

#[test]
fn on_a_tls_listener_the_header_comes_before_the_client_hello() {
    let origin = RecordingOrigin::start();
    let dir = tempfile::tempdir().unwrap();
    let leaf = Ca::new().leaf(&["a.test"]);
    let (cert, key) = leaf.write(dir.path(), "a");
    let port = free_port();
    let certificates = format!(
        "[[certificates]]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let p = Prefork::start(Setup::new(1).body(&body(port, "tls = true", &origin, &certificates)));
    for (path, header, client) in [
        (
            "/tls-v1",
            b"PROXY TCP4 203.0.113.5 10.0.0.1 4444 443\r\n".to_vec(),
            "203.0.113.5",
        ),
        ("/tls-v2", v2_ipv6_tlvs("2001:db8::5", 4445), "2001:db8::5"),
    ] {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        tcp.write_all(&header).unwrap();
        let name = ServerName::try_from("a.test").unwrap();
        let conn = ClientConnection::new(client_config(rustls::DEFAULT_VERSIONS), name).unwrap();
        let mut tls = StreamOwned::new(conn, tcp);
        tls.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let mut response = Vec::new();
        // The server's close_notify ends the stream; a reset after it is
        // no failure of the response.
        let _ = tls.read_to_end(&mut response);
        let response = String::from_utf8_lossy(&response);
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "{path}: {response}\n{}",
            p.logs()
        );
        assert_eq!(forwarded_for(&origin, path).as_deref(), Some(client));
        let line = access_line(&p, path);
        assert!(line.starts_with(&format!("{client} ")), "{path}: {line}");
    }
}

#[test]
fn a_graceful_stop_does_not_wait_for_a_header_that_is_late() {
    let origin = RecordingOrigin::start();
    let port = free_port();
    let mut p = Prefork::start(
        Setup::new(1)
            .top("client_header_timeout = \"60s\"")
            .shutdown_timeout("60s")
            .body(&body(port, "", &origin, "")),
    );
    let mut late = TcpStream::connect(("127.0.0.1", port)).unwrap();
    late.write_all(b"PROXY TCP4 192.0.2.7").unwrap();
    // Served by a worker: its connection count shows it.
    assert!(
        wait_until(WAIT, || p.status_json()["workers"][0]["active_connections"]
            .as_u64()
            .is_some_and(|n| n >= 1)),
        "{}",
        p.status_json()
    );
    p.signal(Signal::SIGQUIT);
    // The grace of a first request, not client_header_timeout nor
    // shutdown_timeout.
    assert!(
        p.wait_exit(Duration::from_secs(20)).is_some(),
        "the drain waited for the header\n{}",
        p.logs()
    );
    assert!(closed_unanswered(&mut late));
}
