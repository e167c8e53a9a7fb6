//! Routing by Host and path prefix, and balancing across an upstream.

use crate::support::http::{self, Conn, Response};
use crate::support::origins;
use crate::support::prefork::{Prefork, Setup};

fn origin_of(r: &Response) -> String {
    r.header("x-origin").unwrap_or("<none>").to_owned()
}

#[test]
fn routes_by_exact_host_wildcard_host_and_longest_prefix() {
    let a = origins::minihttp("a");
    let b = origins::minihttp("b");
    let c = origins::minihttp("c");
    let d = origins::minihttp("d");
    let p = Prefork::start(Setup::new(2).body(&format!(
        r#"
[upstreams.a]
servers = ["{a}"]
[upstreams.b]
servers = ["{b}"]
[upstreams.c]
servers = ["{c}"]
[upstreams.d]
servers = ["{d}"]

[[routes]]
host = "app.local"
path = "/"
upstream = "a"

[[routes]]
host = "app.local"
path = "/api/v2"
upstream = "c"

[[routes]]
host = "app.local"
path = "/api"
upstream = "b"

[[routes]]
host = "*.example.com"
upstream = "b"

[[routes]]
host = "api.example.com"
upstream = "c"

[[routes]]
host = "*.example.com"
path = "/static"
upstream = "d"

[[routes]]
host = "status.local"
respond = {{ status = 200, body = "status ok\n" }}
"#
    )));

    // (Host header, path, expected origin, why)
    let cases = [
        ("app.local", "/", "a", "exact host, root prefix"),
        ("app.local", "/users/7", "a", "exact host, only / matches"),
        ("app.local", "/api/users", "b", "/api beats /"),
        ("app.local", "/api/v2/users", "c", "/api/v2 beats /api"),
        (
            "app.local",
            "/api/v1/users",
            "b",
            "/api/v2 does not match /api/v1",
        ),
        ("www.example.com", "/", "b", "wildcard host"),
        (
            "deep.sub.example.com",
            "/x",
            "b",
            "wildcard host, deeper name",
        ),
        (
            "www.example.com",
            "/static/app.js",
            "d",
            "wildcard host, longer prefix",
        ),
        ("api.example.com", "/", "c", "exact host beats the wildcard"),
        (
            "api.example.com",
            "/static/x",
            "c",
            "a more specific host wins before a longer prefix",
        ),
        ("APP.Local", "/api/x", "b", "host matching ignores case"),
        (
            "app.local:8080",
            "/api/v2/x",
            "c",
            "host matching ignores the port",
        ),
        (
            "WWW.Example.COM:1234",
            "/static/y",
            "d",
            "wildcard ignores case and port",
        ),
    ];
    let mut failures = Vec::new();
    for (host, path, want, why) in cases {
        match http::get(p.port(), host, path) {
            Ok(r) => {
                let expected_body = if path == "/" {
                    prefork_bench::HELLO.to_owned()
                } else {
                    format!("origin={want} method=GET path={path}\n")
                };
                if r.status != 200 || origin_of(&r) != want || r.text() != expected_body {
                    failures.push(format!(
                        "Host {host:?} {path}: want {want} ({why}), got {} from {} body {:?}",
                        r.status,
                        origin_of(&r),
                        r.text()
                    ));
                }
            }
            Err(e) => failures.push(format!("Host {host:?} {path}: {e}")),
        }
    }

    let fixed = http::get(p.port(), "status.local", "/anything").expect("status.local");
    if fixed.status != 200 || fixed.text() != "status ok\n" {
        failures.push(format!(
            "fixed response: {} {:?}",
            fixed.status,
            fixed.text()
        ));
    }
    for (host, why) in [
        (
            "example.com",
            "*.example.com does not match the bare domain",
        ),
        ("app.local.evil", "exact host is not a prefix match"),
        ("other.local", "no route for this host"),
    ] {
        match http::get(p.port(), host, "/") {
            Ok(r) if r.status == 404 => {}
            Ok(r) => failures.push(format!(
                "Host {host:?}: want 404 ({why}), got {} from {}",
                r.status,
                origin_of(&r)
            )),
            Err(e) => failures.push(format!("Host {host:?}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}\n{}", failures.join("\n"), p.logs());
}

#[test]
fn round_robin_alternates_between_two_origins() {
    let a = origins::minihttp("rr-a");
    let b = origins::minihttp("rr-b");
    // One worker: round-robin state is per worker.
    let p = Prefork::start(Setup::new(1).body(&format!(
        r#"
[upstreams.pair]
servers = ["{a}", "{b}"]
[[routes]]
upstream = "pair"
"#
    )));
    let mut seq = Vec::new();
    for i in 0..6 {
        let r = http::get(p.port(), "any.local", "/")
            .unwrap_or_else(|e| panic!("request {i}: {e}\n{}", p.logs()));
        assert_eq!(r.status, 200, "request {i}\n{}", p.logs());
        assert_eq!(r.text(), prefork_bench::HELLO);
        seq.push(origin_of(&r));
    }
    // The same through one keep-alive client connection.
    let mut conn = Conn::local(p.port()).expect("connect");
    for i in 0..6 {
        let r = conn
            .get("any.local", "/")
            .unwrap_or_else(|e| panic!("keep-alive request {i}: {e}"));
        assert_eq!(r.status, 200);
        seq.push(origin_of(&r));
    }
    let count = |name: &str| seq.iter().filter(|o| *o == name).count();
    assert_eq!((count("rr-a"), count("rr-b")), (6, 6), "sequence: {seq:?}");
    assert!(
        seq.windows(2).all(|w| w[0] != w[1]),
        "round-robin should alternate: {seq:?}"
    );
}
