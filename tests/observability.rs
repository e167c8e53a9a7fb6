//! Seeing inside a running prefork: `status`, `top`, `-s reload` over the
//! control socket, `/metrics`, `/healthz`, access-log formats and request ids.

use crate::support::http::{self, Conn};
use crate::support::origins::{self, RecordingOrigin, SilentOrigin};
use crate::support::prefork::{Prefork, Setup};
use crate::support::wait_for;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prometheus_parse::{Sample, Scrape, Value};
use serde_json::Value as Json;
use std::net::TcpListener;
use std::time::Duration;

/// Workers report once a second: a few reports may be needed.
const REPORTED: Duration = Duration::from_secs(10);

/// GET on the admin listener.
fn admin_get(port: u16, path: &str) -> http::Response {
    http::get(port, "admin", path).unwrap_or_else(|e| panic!("GET {path} on the admin port: {e}"))
}

/// `/metrics`, parsed by a Prometheus text-format parser.
fn scrape(port: u16) -> Scrape {
    let r = admin_get(port, "/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.headers
    );
    let text = r.text();
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("/metrics does not parse ({e}):\n{text}"))
}

fn value(s: &Sample) -> f64 {
    match &s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{} is not a plain value: {other:?}", s.metric),
    }
}

/// Sum of the samples of `metric` whose labels include `labels`.
fn sum(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(value)
        .sum()
}

fn requests(status: &Json) -> u64 {
    status["workers"]
        .as_array()
        .map_or(0, |w| w.iter().filter_map(|w| w["requests"].as_u64()).sum())
}

#[test]
fn status_lists_workers_and_upstreams_as_table_and_json() {
    let origin = origins::minihttp("a");
    let p = Prefork::start(Setup::new(2).body(&format!(
        "[upstreams.app]\nservers = [\"{origin}\"]\n[[routes]]\nhost = \"app.test\"\nupstream = \"app\"\n"
    )));
    for _ in 0..5 {
        assert_eq!(http::get(p.port(), "app.test", "/").unwrap().status, 200);
    }
    let status = p
        .wait_status(REPORTED, |s| {
            requests(s) >= 5 && s["upstreams"][0]["requests"].as_u64() >= Some(5)
        })
        .unwrap_or_else(|| panic!("status never counted 5 requests: {}", p.status_json()));
    assert_eq!(status["master_pid"].as_i64(), Some(p.master_pid() as i64));
    assert_eq!(status["generation"].as_u64(), Some(1));
    assert_eq!(status["shutting_down"].as_bool(), Some(false));
    let mut pids: Vec<i64> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            assert_eq!(w["state"], "ready", "{w}");
            assert_eq!(w["restarts"].as_u64(), Some(0), "{w}");
            w["pid"].as_i64().unwrap()
        })
        .collect();
    pids.sort();
    let mut workers: Vec<i64> = p.workers().iter().map(|w| w.pid as i64).collect();
    workers.sort();
    assert_eq!(pids, workers);
    let server = &status["upstreams"][0];
    assert_eq!(server["upstream"], "app");
    assert_eq!(server["server"], origin.to_string());
    assert_eq!(server["state"], "up");
    assert_eq!(server["failures"].as_u64(), Some(0));

    let out = p.cli(&["status"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("master pid {}", p.master_pid())),
        "{table}"
    );
    for pid in &pids {
        let row = table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(&pid.to_string()))
            .unwrap_or_else(|| panic!("no row for worker {pid}:\n{table}"));
        assert!(row.contains(" ready "), "{row}");
    }
    assert!(
        table.lines().any(|l| l.starts_with("app ")
            && l.contains(&origin.to_string())
            && l.contains(" up ")),
        "{table}"
    );
}

#[test]
fn status_without_a_master_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("p.toml");
    std::fs::write(
        &config,
        format!("pid_file = \"{}/p.pid\"\n", dir.path().display()),
    )
    .unwrap();
    let out = crate::support::prefork::run(
        &["status", "-c", config.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the master") && err.contains("p.sock"),
        "{err}"
    );
}

#[test]
fn top_redraws_the_status() {
    let p = Prefork::start(Setup::new(1));
    let out = p.cli(&["top", "-n", "2", "-d", "0.1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(screen.matches("\x1b[H\x1b[2J").count(), 2, "{screen}");
    assert_eq!(screen.matches("SLOT").count(), 2, "{screen}");
}

#[test]
fn reload_over_the_control_socket_reports_success_and_the_masters_error() {
    let p = Prefork::start(Setup::new(1));
    let first = p.workers()[0].pid;
    // Nothing that needs new workers changed: the hot path.
    let hot = p.cli(&["-s", "reload"]);
    let stdout = String::from_utf8_lossy(&hot.stdout);
    assert!(
        hot.status.success(),
        "{}",
        String::from_utf8_lossy(&hot.stderr)
    );
    assert!(
        stdout.contains("configuration reloaded: the workers of generation 1 took it in place"),
        "{stdout}"
    );
    assert_eq!(p.status_json()["generation"].as_u64(), Some(1));
    assert_eq!(p.workers()[0].pid, first);

    // The worker count changed: a new generation.
    p.write_raw_config(&p.config_for("").replace("workers = 1\n", "workers = 2\n"));
    let rolled = p.cli(&["-s", "reload"]);
    let stdout = String::from_utf8_lossy(&rolled.stdout);
    assert!(
        rolled.status.success(),
        "{}",
        String::from_utf8_lossy(&rolled.stderr)
    );
    assert!(
        stdout.contains("configuration reloaded: starting generation 2 (workers changed)"),
        "{stdout}"
    );
    p.wait_workers(2, Duration::from_secs(15), |w| {
        w.iter().all(|w| w.generation() == Some(2))
    })
    .expect("generation 2 replaces generation 1");

    // Valid for the client, refused by the master: the port is taken.
    p.expect_log_errors();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    p.write_config(&format!("[[listen]]\naddr = \"127.0.0.1:{port}\"\n"));
    let refused = p.cli(&["-s", "reload"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("reload failed"), "{stderr}");
    let status = p.status_json();
    assert_eq!(status["generation"].as_u64(), Some(2));
    assert_eq!(
        status["last_reload"]["ok"].as_bool(),
        Some(false),
        "{status}"
    );

    // Invalid for the client too: the file, line and key are named.
    p.write_raw_config(&p.config_for("[[routes]]\nupstream = \"nope\"\n"));
    let invalid = p.cli(&["-s", "reload"]);
    let stderr = String::from_utf8_lossy(&invalid.stderr);
    assert_eq!(invalid.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("routes[0].upstream: no upstream named \"nope\""),
        "{stderr}"
    );
}

#[test]
fn metrics_count_requests_by_route_status_and_worker_and_upstream_failures() {
    let origin = origins::minihttp("a");
    let dead = origins::refused_addr();
    let p = Prefork::start(Setup::new(2).admin().body(&format!(
        "[upstreams.app]\nservers = [\"{origin}\"]\n[upstreams.down]\nservers = [\"{dead}\"]\n\
         [[routes]]\nhost = \"app.test\"\nupstream = \"app\"\n\
         [[routes]]\nhost = \"down.test\"\nupstream = \"down\"\n"
    )));
    let admin = p.admin_port();
    p.expect_log_errors();
    for _ in 0..3 {
        assert_eq!(http::get(p.port(), "app.test", "/").unwrap().status, 200);
    }
    for _ in 0..2 {
        assert_eq!(
            http::get(p.port(), "nowhere.test", "/").unwrap().status,
            404
        );
    }
    assert_eq!(http::get(p.port(), "down.test", "/").unwrap().status, 502);

    // Each worker reports on its own clock: wait until both have reported
    // every request (they may have served any of them).
    let scraped = wait_for(REPORTED, || {
        let s = scrape(admin);
        let count = |route: &str, class: &str| {
            sum(
                &s,
                "prefork_requests_total",
                &[("route", route), ("status_class", class)],
            )
        };
        let all = count("down.test/", "5xx") >= 1.0
            && count("app.test/", "2xx") >= 3.0
            && count("-", "4xx") >= 2.0;
        all.then_some(s)
    })
    .expect("every request shows up in /metrics");
    let s = &scraped;
    assert_eq!(
        sum(
            s,
            "prefork_requests_total",
            &[("route", "app.test/"), ("status_class", "2xx")]
        ),
        3.0
    );
    assert_eq!(
        sum(
            s,
            "prefork_requests_total",
            &[("route", "-"), ("status_class", "4xx")]
        ),
        2.0
    );
    // Every request sample names its worker slot.
    assert!(s
        .samples
        .iter()
        .filter(|x| x.metric == "prefork_requests_total")
        .all(|x| matches!(x.labels.get("worker"), Some("0" | "1"))));
    // The histogram's count matches the requests of its route.
    let count = s
        .samples
        .iter()
        .find(|x| {
            x.metric == "prefork_request_duration_seconds"
                && x.labels.get("route") == Some("app.test/")
        })
        .map(|x| match &x.value {
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            other => panic!("not a histogram: {other:?}"),
        })
        .expect("a latency histogram for app.test/");
    assert!(count >= 3.0, "{count}");
    let down = [("upstream", "down")];
    assert!(sum(s, "prefork_upstream_failures_total", &down) >= 1.0);
    assert_eq!(sum(s, "prefork_upstream_up", &down), 0.0);
    assert_eq!(sum(s, "prefork_upstream_up", &[("upstream", "app")]), 1.0);
    assert_eq!(sum(s, "prefork_workers", &[("state", "ready")]), 2.0);
    assert!(sum(s, "prefork_sent_bytes_total", &[]) > 0.0);
    assert!(sum(s, "prefork_received_bytes_total", &[]) > 0.0);
    assert!(sum(s, "prefork_connections_total", &[]) >= 6.0);
    assert_eq!(sum(s, "prefork_reloads_total", &[("outcome", "ok")]), 0.0);

    let health = admin_get(admin, "/healthz");
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
    assert_eq!(admin_get(admin, "/nope").status, 404);
}

#[test]
fn a_killed_worker_is_counted_as_a_restart_in_status_and_metrics() {
    let p = Prefork::start(Setup::new(1).admin());
    let admin = p.admin_port();
    let victim = p.workers()[0].clone();
    kill(Pid::from_raw(victim.pid), Signal::SIGKILL).unwrap();
    p.wait_workers(1, Duration::from_secs(10), |w| w[0].pid != victim.pid)
        .expect("the killed worker is replaced");
    let status = p
        .wait_status(REPORTED, |s| s["workers"][0]["state"] == "ready")
        .expect("the replacement becomes ready");
    assert_eq!(
        status["workers"][0]["restarts"].as_u64(),
        Some(1),
        "{status}"
    );
    assert_eq!(status["workers"][0]["slot"].as_u64(), Some(0));
    let s = scrape(admin);
    assert_eq!(
        sum(&s, "prefork_worker_restarts_total", &[("worker", "0")]),
        1.0
    );
}

/// SIGHUP, SIGQUIT or SIGTERM sent to one worker (the README's "to one
/// worker" column, nginx's way to recycle a worker) asks for a fresh one:
/// not a crash, so no restart is counted, nothing is logged as unexpected,
/// and no crash-loop backoff delays the replacement, even right after the
/// previous one started.
#[test]
fn a_worker_stopped_by_an_operators_signal_is_replaced_without_counting_a_restart() {
    let p = Prefork::start(Setup::new(1).admin());
    let admin = p.admin_port();
    for signal in [Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGTERM] {
        let ready = p
            .wait_status(REPORTED, |s| s["workers"][0]["state"] == "ready")
            .expect("a ready worker");
        let victim = ready["workers"][0]["pid"].as_i64().expect("its pid") as i32;
        kill(Pid::from_raw(victim), signal).unwrap();
        p.wait_workers(1, Duration::from_secs(10), |w| w[0].pid != victim)
            .unwrap_or_else(|| panic!("the worker stopped by {signal} is replaced"));
    }
    let status = p
        .wait_status(REPORTED, |s| s["workers"][0]["state"] == "ready")
        .expect("the last replacement becomes ready");
    assert_eq!(
        status["workers"][0]["restarts"].as_u64(),
        Some(0),
        "{status}\n{}",
        p.logs()
    );
    let s = scrape(admin);
    assert_eq!(
        sum(&s, "prefork_worker_restarts_total", &[("worker", "0")]),
        0.0
    );
    assert!(
        !p.error_log().contains("unexpectedly"),
        "an operator's signal logged as a crash:\n{}",
        p.error_log()
    );
}

#[test]
fn healthz_turns_503_while_draining() {
    let silent = SilentOrigin::start();
    let mut p = Prefork::start(Setup::new(1).admin().body(&format!(
        "[upstreams.slow]\nservers = [\"{}\"]\nread_timeout = \"30s\"\n[[routes]]\nhost = \"slow.test\"\nupstream = \"slow\"\n",
        silent.addr()
    )));
    let admin = p.admin_port();
    assert_eq!(admin_get(admin, "/healthz").status, 200);
    // A request in flight keeps the worker draining after SIGQUIT.
    let mut c = Conn::local(p.port()).unwrap();
    c.send(&http::request("GET", "slow.test", "/", &[], b""))
        .unwrap();
    assert!(crate::support::wait_until(
        Duration::from_secs(5),
        || silent.accepted() == 1
    ));
    p.signal(Signal::SIGQUIT);
    let r = wait_for(Duration::from_secs(5), || {
        Some(admin_get(admin, "/healthz")).filter(|r| r.status == 503)
    })
    .expect("/healthz says 503 while draining");
    assert_eq!(r.text(), "shutting down\n");
    assert!(p.master_alive());
}

#[test]
fn access_log_json_with_request_ids_sent_upstream_and_routes_turned_off() {
    let origin = RecordingOrigin::start();
    let p = Prefork::start(Setup::new(1).body(&format!(
        "[upstreams.app]\nservers = [\"{}\"]\n\
         [[routes]]\nhost = \"app.test\"\nupstream = \"app\"\n\
         [[routes]]\nhost = \"quiet.test\"\nrespond = {{ body = \"q\" }}\naccess_log = \"off\"\n",
        origin.addr()
    )));
    // The format key lives in [log], which the harness writes: add it there.
    let text = std::fs::read_to_string(p.config_path()).unwrap();
    p.write_raw_config(&text.replace("[log]\n", "[log]\naccess_log_format = \"json\"\n"));
    let reload = p.cli(&["-s", "reload"]);
    assert!(
        reload.status.success(),
        "{}",
        String::from_utf8_lossy(&reload.stderr)
    );
    // Only a log setting changed: the worker swaps the configuration in
    // (hot reload) shortly after the master answers; probe until a request
    // is logged in the new format.
    let mut probes = 0;
    let swapped = crate::support::wait_until(Duration::from_secs(10), || {
        probes += 1;
        let _ = http::get(
            p.port(),
            crate::support::prefork::PROBE_HOST,
            &format!("/json-probe-{probes}"),
        );
        p.access_log()
            .lines()
            .any(|l| l.starts_with('{') && l.contains("/json-probe-"))
    });
    assert!(
        swapped,
        "the JSON format never applied:\n{}",
        p.access_log()
    );

    let mut c = Conn::local(p.port()).unwrap();
    c.send(&http::request(
        "GET",
        "app.test",
        "/given",
        &["X-Request-Id: client-id-1"],
        b"",
    ))
    .unwrap();
    assert_eq!(c.read_response().unwrap().status, 200);
    c.send(&http::request(
        "GET",
        "app.test",
        "/generated",
        &["User-Agent: t/1"],
        b"",
    ))
    .unwrap();
    assert_eq!(c.read_response().unwrap().status, 200);
    assert_eq!(http::get(p.port(), "quiet.test", "/").unwrap().status, 200);

    let upstream = origin.requests();
    let given = upstream
        .iter()
        .find(|r| r.request.path == "/given")
        .unwrap();
    assert_eq!(given.request.header_values("x-request-id"), ["client-id-1"]);
    let generated = upstream
        .iter()
        .find(|r| r.request.path == "/generated")
        .unwrap();
    let id = generated
        .request
        .header("x-request-id")
        .expect("an id is sent upstream");
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );

    let lines = wait_for(Duration::from_secs(5), || {
        let lines: Vec<Json> = p
            .access_log()
            .lines()
            .filter(|l| l.starts_with('{') && !l.contains("/json-probe-"))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        (lines.len() >= 2).then_some(lines)
    })
    .unwrap_or_else(|| panic!("no JSON lines:\n{}", p.access_log()));
    assert_eq!(lines.len(), 2, "the quiet route logs nothing: {lines:?}");
    assert_eq!(lines[0]["request_id"], "client-id-1");
    assert_eq!(lines[1]["request_id"], id);
    assert_eq!(lines[1]["uri"], "/generated");
    assert_eq!(lines[1]["status"].as_u64(), Some(200));
    assert_eq!(lines[1]["route"], "app.test/");
    assert_eq!(lines[1]["http_user_agent"], "t/1");
    assert_eq!(lines[1]["upstream_addr"], origin.addr().to_string());

    // Before the reload, lines had the default, combined, format.
    let combined = p
        .access_log()
        .lines()
        .find(|l| l.contains("\"GET / HTTP/1.1\" 200"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no combined line:\n{}", p.access_log()));
    assert!(combined.starts_with("127.0.0.1 - - ["), "{combined}");
}

#[test]
fn client_bytes_cannot_forge_log_lines_and_bad_request_ids_are_replaced() {
    let origin = RecordingOrigin::start();
    let refused = origins::refused_addr();
    let p = Prefork::start(
        Setup::new(1)
            .log("access_log_format = \"json\"")
            .body(&format!(
                "[upstreams.app]\nservers = [\"{}\"]\n\
                 [upstreams.dead]\nservers = [\"{refused}\"]\n\
                 [[routes]]\nhost = \"app.test\"\nupstream = \"app\"\n\
                 [[routes]]\nhost = \"dead.test\"\nupstream = \"dead\"\n",
                origin.addr()
            )),
    );
    p.expect_log_errors();
    let is_ours = |id: &str| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());

    // An id that would add fields to the error log, a User-Agent that is
    // not UTF-8, quotes, backslashes and a tab.
    let mut c = Conn::local(p.port()).unwrap();
    c.send(
        b"GET /hostile HTTP/1.1\r\nHost: app.test\r\n\
          X-Request-Id: x\", role: master, pid: 1\r\n\
          User-Agent: a\"b\\c\td\xffe\r\nReferer: \"}\r\n\r\n",
    )
    .unwrap();
    assert_eq!(c.read_response().unwrap().status, 200);
    let sent = origin
        .requests()
        .into_iter()
        .find(|r| r.request.path == "/hostile")
        .unwrap();
    let ids = sent.request.header_values("x-request-id");
    assert!(ids.len() == 1 && is_ours(ids[0]), "{ids:?}");
    let id = ids[0].to_owned();

    // A proxied request whose error-log line shows its id.
    let mut c = Conn::local(p.port()).unwrap();
    c.send(b"GET / HTTP/1.1\r\nHost: dead.test\r\nX-Request-Id: y, role: master, pid: 1\r\n\r\n")
        .unwrap();
    assert_eq!(c.read_response().unwrap().status, 502);
    let failed = wait_for(Duration::from_secs(5), || {
        p.error_log()
            .lines()
            .find(|l| l.contains("upstream connect failed"))
            .map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("no error line:\n{}", p.error_log()));
    assert!(
        !failed.contains("pid: 1,") && !failed.contains("y, "),
        "{failed}"
    );

    let line = wait_for(Duration::from_secs(5), || {
        p.access_log()
            .lines()
            .find(|l| l.contains("/hostile"))
            .map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("no access-log line:\n{}", p.access_log()));
    let json: Json = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(json["request_id"], id.as_str());
    assert_eq!(json["http_user_agent"], "a\"b\\c\td\u{fffd}e");
    assert_eq!(json["http_referer"], "\"}");
}
