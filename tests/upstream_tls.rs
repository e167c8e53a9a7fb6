//! TLS to upstreams: verified against `tls_ca` with `tls_server_name` (or
//! the server's host), pooled like plain connections; a certificate that
//! does not verify is a 502 the error log explains; `prefork -t` refuses a
//! CA file it cannot use.

use crate::support::http::{self, Conn, Response};
use crate::support::prefork::{self, free_port, Prefork, Setup};
use crate::support::wait_until;
use prefork_testkit::tls_origin::{TestCa, TlsOrigin};
use std::fs;
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;

/// Starts one worker proxying `api.local` to `origin` over TLS with the
/// upstream keys `tls_keys`; `ca_pem` is written to `ca.pem` in the test
/// directory first (the master reads it at start).
fn start(origin: &TlsOrigin, ca_pem: &str, tls_keys: &str) -> Prefork {
    start_with(Setup::new(1), origin, ca_pem, tls_keys)
}

/// As [`start`], from `setup`.
fn start_with(setup: Setup, origin: &TlsOrigin, ca_pem: &str, tls_keys: &str) -> Prefork {
    let dir = tempfile::Builder::new()
        .prefix("prefork-test-")
        .tempdir()
        .expect("temp dir");
    let ca = dir.path().join("ca.pem");
    fs::write(&ca, ca_pem).expect("write the CA");
    let body = format!(
        r#"
[upstreams.api]
servers = ["{addr}"]
tls = true
tls_ca = "{ca}"
{tls_keys}

[[routes]]
host = "api.local"
upstream = "api"
"#,
        addr = origin.addr(),
        ca = ca.display()
    );
    Prefork::start_in(dir, setup.body(&body))
}

fn get(p: &Prefork, path: &str) -> Response {
    http::get(p.port(), "api.local", path)
        .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", p.logs()))
}

fn log_shows(p: &Prefork, text: &str) -> bool {
    wait_until(Duration::from_secs(5), || p.error_log().contains(text))
}

#[test]
fn requests_go_over_verified_tls_on_few_pooled_connections() {
    let ca = TestCa::new("prefork test CA");
    let origin = TlsOrigin::start(&ca.leaf(&["api.internal"]));
    let p = start(&origin, &ca.pem(), "tls_server_name = \"api.internal\"");
    for i in 0..20 {
        let r = get(&p, &format!("/r{i}?q=1"));
        assert_eq!(r.status, 200, "{r:?}\n{}", p.logs());
        assert_eq!(r.text(), format!("path=/r{i}?q=1 conn=1"), "{}", p.logs());
    }
    // A request body larger than a socket buffer goes up through rustls.
    let body = vec![b'x'; 300 * 1024];
    let mut conn = Conn::local(p.port()).expect("connect");
    conn.send(&http::request("POST", "api.local", "/upload", &[], &body))
        .expect("send");
    let r = conn.read_response().expect("response to the upload");
    assert_eq!((r.status, r.text()), (200, "path=/upload conn=1".into()));
    // Every request (one worker, one at a time) went over the same
    // connection: one TCP connection, one handshake.
    assert_eq!(
        (origin.accepted(), origin.handshakes()),
        (1, 1),
        "{}",
        p.logs()
    );
}

/// With `splice` on, bodies from and to a TLS upstream are copied (the
/// bytes on its socket are TLS records), whole.
#[test]
fn large_bodies_are_copied_through_tls_with_splice_on() {
    let ca = TestCa::new("prefork test CA");
    let origin = TlsOrigin::start(&ca.leaf(&["api.internal"]));
    let setup = Setup::new(1).top("splice = true");
    let p = start_with(
        setup,
        &origin,
        &ca.pem(),
        "tls_server_name = \"api.internal\"",
    );
    for _ in 0..2 {
        let r = get(&p, "/big");
        assert_eq!(r.status, 200, "{}", p.logs());
        assert_eq!(r.body.len(), prefork_testkit::tls_origin::BIG);
        assert!(r.body.iter().all(|&b| b == b'b'));
    }
    let body = vec![b'x'; 1024 * 1024];
    let mut conn = Conn::local(p.port()).expect("connect");
    conn.send(&http::request("POST", "api.local", "/upload", &[], &body))
        .expect("send");
    let r = conn.read_response().expect("response to the upload");
    assert_eq!((r.status, r.text()), (200, "path=/upload conn=1".into()));
    assert_eq!(origin.accepted(), 1, "{}", p.logs());
}

#[test]
fn the_servers_ip_address_is_verified_when_no_name_is_set() {
    let ca = TestCa::new("prefork test CA");
    let origin = TlsOrigin::start(&ca.leaf(&["127.0.0.1"]));
    let p = start(&origin, &ca.pem(), "");
    let r = get(&p, "/by-ip");
    assert_eq!((r.status, r.text()), (200, "path=/by-ip conn=1".into()));
}

#[test]
fn a_certificate_from_another_ca_is_a_502_the_error_log_explains() {
    let ca = TestCa::new("prefork test CA");
    let origin = TlsOrigin::start(&ca.leaf(&["api.internal"]));
    let other = TestCa::new("another CA");
    let p = start(&origin, &other.pem(), "tls_server_name = \"api.internal\"");
    p.expect_log_errors();
    let r = get(&p, "/x");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(
        log_shows(&p, "certificate verify failed: unknown issuer"),
        "{}",
        p.logs()
    );
    assert!(
        p.error_log().contains("upstream connect failed"),
        "{}",
        p.logs()
    );
}

#[test]
fn a_certificate_for_another_name_is_a_502_the_error_log_explains() {
    let ca = TestCa::new("prefork test CA");
    let origin = TlsOrigin::start(&ca.leaf(&["api.internal"]));
    let p = start(&origin, &ca.pem(), "tls_server_name = \"db.internal\"");
    p.expect_log_errors();
    let r = get(&p, "/x");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(
        log_shows(&p, "certificate not valid for name \"db.internal\""),
        "{}",
        p.logs()
    );
}

/// The line of the first line of `text` that contains `needle` (1-based).
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle")
        + 1
}

fn check(dir: &Path, text: &str) -> (i32, String) {
    let path = dir.join("prefork.toml");
    fs::write(&path, text).expect("write the config");
    let out = prefork::run(
        &["-t", "-c", path.to_str().unwrap()],
        Duration::from_secs(10),
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn prefork_t_refuses_a_ca_file_it_cannot_use_with_file_line_and_key() {
    let dir = TempDir::new().expect("temp dir");
    let d = dir.path().display();
    let config = |ca: &str| {
        format!(
            "pid_file = \"{d}/p.pid\"\n[log]\nerror_log = \"{d}/error.log\"\n\
             [[listen]]\naddr = \"127.0.0.1:{port}\"\n\
             [upstreams.api]\nservers = [\"127.0.0.1:8443\"]\ntls = true\ntls_ca = \"{ca}\"\n\
             [[routes]]\nupstream = \"api\"\n",
            port = free_port()
        )
    };
    let path = dir.path().join("prefork.toml");
    let missing = dir.path().join("missing.pem");
    let text = config(&missing.display().to_string());
    let (code, stderr) = check(dir.path(), &text);
    assert_eq!(code, 1, "{stderr}");
    let location = format!(
        "{}:{}: upstreams.api.tls_ca: cannot read {}",
        path.display(),
        line_of(&text, "tls_ca"),
        missing.display()
    );
    assert!(stderr.contains(&location), "{stderr}");

    let empty = dir.path().join("empty.pem");
    fs::write(&empty, "").expect("write");
    let text = config(&empty.display().to_string());
    let (code, stderr) = check(dir.path(), &text);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:{}: upstreams.api.tls_ca: {} holds no certificate",
            path.display(),
            line_of(&text, "tls_ca"),
            empty.display()
        )),
        "{stderr}"
    );

    let good = dir.path().join("ca.pem");
    fs::write(&good, TestCa::new("CA").pem()).expect("write");
    let (code, stderr) = check(dir.path(), &config(&good.display().to_string()));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_server_whose_certificate_fails_is_skipped_as_a_connect_failure() {
    let ca = TestCa::new("prefork test CA");
    let good = TlsOrigin::start(&ca.leaf(&["api.internal"]));
    let bad = TlsOrigin::start(&TestCa::new("another CA").leaf(&["api.internal"]));
    let dir = tempfile::Builder::new()
        .prefix("prefork-test-")
        .tempdir()
        .expect("temp dir");
    let ca_file = dir.path().join("ca.pem");
    fs::write(&ca_file, ca.pem()).expect("write the CA");
    let body = format!(
        r#"
[upstreams.api]
servers = ["{bad}", "{good}"]
tls = true
tls_server_name = "api.internal"
tls_ca = "{ca}"
max_fails = 1
fail_timeout = "60s"

[[routes]]
host = "api.local"
upstream = "api"
"#,
        bad = bad.addr(),
        good = good.addr(),
        ca = ca_file.display()
    );
    let p = Prefork::start_in(dir, Setup::new(1).body(&body));
    p.expect_log_errors();
    // Each request the bad server gets goes on to the good one, and the
    // first failure takes the bad server out.
    for i in 0..6 {
        let r = get(&p, &format!("/{i}"));
        assert_eq!(r.status, 200, "{r:?}\n{}", p.logs());
    }
    assert!(log_shows(&p, "upstream server marked down"), "{}", p.logs());
    assert_eq!(bad.handshakes(), 0);
    assert_eq!(bad.accepted(), 1, "tried once, then skipped");
}

/// A reload reads `tls_ca` again, even when the config text is the same:
/// an unusable file is refused (the running roots keep serving), a new CA
/// takes effect.
#[test]
fn a_reload_reads_the_ca_file_again() {
    let ca = TestCa::new("prefork test CA");
    let origin = TlsOrigin::start(&ca.leaf(&["api.internal"]));
    let p = start(&origin, &ca.pem(), "tls_server_name = \"api.internal\"");
    assert_eq!(get(&p, "/before").status, 200);
    let ca_file = p.dir().join("ca.pem");
    let config = fs::read_to_string(p.config_path()).expect("read the config");

    fs::write(&ca_file, "").expect("empty the CA file");
    let stderr = p.reload_refused();
    let location = format!(
        "{}:{}: upstreams.api.tls_ca: {} holds no certificate",
        p.config_path().display(),
        line_of(&config, "tls_ca"),
        ca_file.display()
    );
    assert!(stderr.contains(&location), "{stderr}");
    assert_eq!(get(&p, "/still").status, 200, "{}", p.logs());

    // Another CA: the origin's certificate no longer verifies.
    p.expect_log_errors();
    fs::write(&ca_file, TestCa::new("another CA").pem()).expect("write");
    p.reload_ok();
    assert!(
        wait_until(Duration::from_secs(5), || get(&p, "/after").status == 502),
        "{}",
        p.logs()
    );
    assert!(log_shows(&p, "unknown issuer"), "{}", p.logs());
}
