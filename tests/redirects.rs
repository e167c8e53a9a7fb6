//! `redirect` routes: the status, a `Location` built from the request, a
//! small body, on a plain listener; counted and logged as any request.

use crate::support::http::{self, Conn};
use crate::support::prefork::{self, free_port, Prefork, Setup};
use std::fs;
use std::time::Duration;
use tempfile::TempDir;

fn start() -> Prefork {
    Prefork::start(Setup::new(1).body(
        r#"
[[routes]]
host = "plain.test"
redirect = { to = "https://$host$request_uri", status = 308 }

[[routes]]
host = "old.test"
redirect = { to = "$scheme://new.test$uri?$args&from=old" }
"#,
    ))
}

#[test]
fn a_redirect_route_answers_its_status_and_a_location_built_from_the_request() {
    let p = start();
    let mut conn = Conn::local(p.port()).expect("connect");
    conn.send(&http::request(
        "GET",
        "Plain.Test:8080",
        "/a/b?x=1&y=2",
        &[],
        b"",
    ))
    .expect("send");
    let r = conn.read_response().expect("response");
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(r.header("location"), Some("https://plain.test/a/b?x=1&y=2"));
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert!(r.text().contains("308 Permanent Redirect"), "{}", r.text());
    // The connection stays open for the next request; HEAD gets no body.
    conn.send(&http::request("HEAD", "plain.test", "/c", &[], b""))
        .expect("send");
    let r = conn.read_response_to(true).expect("response to HEAD");
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("https://plain.test/c"));
    assert!(r.body.is_empty());

    // The default status is 301; `$uri` is the normalised path.
    let r = http::get(p.port(), "old.test", "/x/../p?q=1").expect("GET");
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(r.header("location"), Some("http://new.test/p?q=1&from=old"));

    // Logged as any request.
    assert!(
        crate::support::wait_until(Duration::from_secs(5), || {
            let log = p.access_log();
            log.contains("\"GET /a/b?x=1&y=2 HTTP/1.1\" 308") && log.contains("\" 301 ")
        }),
        "{}",
        p.logs()
    );
}

#[test]
fn prefork_t_refuses_an_unknown_variable_with_file_line_and_key() {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("prefork.toml");
    let text = format!(
        "pid_file = \"{d}/p.pid\"\n[log]\nerror_log = \"{d}/error.log\"\n\
         [[listen]]\naddr = \"127.0.0.1:{port}\"\n\
         [[routes]]\nredirect = {{ to = \"https://$hostname/\" }}\n",
        d = dir.path().display(),
        port = free_port()
    );
    fs::write(&path, &text).expect("write the config");
    let out = prefork::run(
        &["-t", "-c", path.to_str().unwrap()],
        Duration::from_secs(10),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:{}: routes[0].redirect.to: unknown variable $hostname",
            path.display(),
            text.lines().position(|l| l.contains("redirect")).unwrap() + 1
        )),
        "{stderr}"
    );
}
