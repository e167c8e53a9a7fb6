//! The connection budget: `max_connections` per worker (parked connections
//! count), the oldest idle connections closed to make room at the limit,
//! accepts failing for want of a file descriptor handled without a flood
//! of log lines, and a hard `RLIMIT_NOFILE` too low refused at the start.

use crate::support::http::{self, Conn};
use crate::support::prefork::{free_port, Prefork, Setup, BIN};
use crate::support::wait_until;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Long enough for connections idle for a second to be parked and for the
/// worker's next report (once a second) to count them.
const PARKED: Duration = Duration::from_secs(15);

const ROUTES: &str = "[[routes]]\npath = \"/\"\nrespond = { body = \"budget\" }\n";

fn admin_table(port: u16) -> String {
    format!("[admin]\naddr = \"127.0.0.1:{port}\"\n")
}

/// The value of `metric{worker="0"}` on the admin listener's `/metrics`.
fn metric(admin: u16, metric: &str) -> u64 {
    let r = http::get(admin, "admin", "/metrics").expect("GET /metrics");
    let prefix = format!("{metric}{{worker=\"0\"}} ");
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Worker 0's `parked_connections` and `active_connections` in `status`.
fn counts(p: &Prefork) -> (u64, u64) {
    let s = p.status_json();
    let w = &s["workers"][0];
    (
        w["parked_connections"].as_u64().unwrap_or(0),
        w["active_connections"].as_u64().unwrap_or(0),
    )
}

/// The error log's lines about `max_connections`.
fn limit_lines(p: &Prefork) -> Vec<String> {
    p.error_log()
        .lines()
        .filter(|l| l.contains("max_connections reached"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn three_hundred_idle_clients_against_a_hundred_leave_room_for_a_new_one_and_the_log_quiet() {
    let admin = free_port();
    let p = Prefork::start(
        Setup::new(1)
            .top("max_connections = 100")
            .body(&format!("{ROUTES}{}", admin_table(admin))),
    );
    let start = Instant::now();
    // All 300 send a request at once: a hundred are served, the others
    // wait in the listener's queue until parked ones close to make room.
    let mut conns: Vec<Conn> = (0..300)
        .map(|_| {
            let mut c = Conn::connect(p.addr()).unwrap();
            c.send(&http::request("GET", "a.test", "/", &[], b""))
                .unwrap();
            c
        })
        .collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.set_read_timeout(PARKED).unwrap();
        let r = c
            .read_response()
            .unwrap_or_else(|e| panic!("client {i}: {e}\n{}", p.logs()));
        assert_eq!(r.status, 200, "client {i}");
    }
    // The last hundred stay, parked; the 200 before them were closed.
    p.wait_parked(100, PARKED);
    assert_eq!(counts(&p), (100, 100));
    // A new client closes the oldest idle one and is answered: without
    // that it would wait for a keep-alive timeout (75 s).
    let mut fresh = Conn::connect(p.addr()).unwrap();
    fresh.set_read_timeout(Duration::from_secs(5)).unwrap();
    let r = fresh
        .get("a.test", "/")
        .unwrap_or_else(|e| panic!("the new client was not served: {e}\n{}", p.logs()));
    assert_eq!((r.status, r.text().as_str()), (200, "budget"));
    let mut closed = 0;
    for c in &mut conns[..200] {
        c.set_read_timeout(Duration::from_millis(200)).unwrap();
        closed += usize::from(c.is_closed_by_peer());
    }
    assert_eq!(closed, 200, "the oldest idle connections were closed");
    // The log: at most a line a second about the limit, with counts.
    let lines = limit_lines(&p);
    let allowed = start.elapsed().as_secs() as usize + 1;
    assert!(
        !lines.is_empty() && lines.len() <= allowed,
        "{} lines about the limit in {allowed} s:\n{}",
        lines.len(),
        lines.join("\n")
    );
    assert!(
        wait_until(PARKED, || metric(
            admin,
            "prefork_connections_evicted_total"
        ) >= 201),
        "evictions counted"
    );
    assert!(metric(admin, "prefork_connection_limit_reached_total") >= 201);
}

#[test]
fn parked_connections_count_toward_max_connections_and_the_oldest_make_room() {
    let p = Prefork::start(Setup::new(1).top("max_connections = 10").body(ROUTES));
    let mut old = p.idle_connections(5, "a.test", "budget");
    p.wait_parked(5, PARKED);
    let mut young = p.idle_connections(5, "a.test", "budget");
    p.wait_parked(10, PARKED);
    assert_eq!(counts(&p), (10, 10), "parked ones are open connections");
    // Five more: each is served once the oldest parked one closes.
    let mut newest = p.idle_connections(5, "a.test", "budget");
    for c in &mut old {
        c.set_read_timeout(PARKED).unwrap();
        assert!(c.is_closed_by_peer(), "the oldest parked closed");
    }
    for c in young.iter_mut().chain(newest.iter_mut()) {
        let r = c.get("a.test", "/").unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(counts(&p).1, 10);
}

#[test]
fn a_client_waiting_at_the_limit_is_let_in_when_a_reload_raises_it() {
    let p = Prefork::start(Setup::new(1).top("max_connections = 2").body(ROUTES));
    let worker = p.workers()[0].pid;
    // Two connections busy sending a request head: nothing to close.
    let mut busy: Vec<Conn> = (0..2)
        .map(|_| {
            let mut c = Conn::connect(p.addr()).unwrap();
            c.send(b"GET / HTTP/1.1\r\nHost: a.test\r\n").unwrap();
            c
        })
        .collect();
    assert!(
        p.wait_status(PARKED, |s| s["workers"][0]["active_connections"].as_u64()
            == Some(2))
            .is_some(),
        "{}",
        p.logs()
    );
    let mut waiting = Conn::connect(p.addr()).unwrap();
    waiting
        .send(&http::request("GET", "a.test", "/", &[], b""))
        .unwrap();
    assert!(
        wait_until(PARKED, || !limit_lines(&p).is_empty()),
        "the limit was met\n{}",
        p.logs()
    );
    p.write_raw_config(
        &p.config_for(ROUTES)
            .replace("max_connections = 2", "max_connections = 3"),
    );
    p.signal(nix::sys::signal::Signal::SIGHUP);
    waiting.set_read_timeout(PARKED).unwrap();
    let r = waiting
        .read_response()
        .unwrap_or_else(|e| panic!("not let in after the reload: {e}\n{}", p.logs()));
    assert_eq!(r.status, 200);
    assert_eq!(p.workers()[0].pid, worker, "a hot reload");
    for c in &mut busy {
        c.send(b"\r\n").unwrap();
        assert_eq!(c.read_response().unwrap().status, 200);
    }
}

/// The soft "Max open files" of `pid`.
fn soft_nofile(pid: i32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    line["Max open files".len()..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a number")
}

#[test]
fn a_worker_raises_its_soft_descriptor_limit_to_cover_max_connections() {
    let (_, hard) = prefork_shared::fd_budget::nofile_limits().unwrap();
    if hard < 1000 {
        return;
    }
    // Started under a soft limit of 256, as a shell with `ulimit -n 256`.
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("prefork-256");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec prlimit --nofile=256:{hard} {BIN} \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let p = Prefork::start(
        Setup::new(1)
            .exe(&wrapper)
            .top("max_connections = 500")
            .body(ROUTES),
    );
    assert_eq!(
        soft_nofile(p.master_pid()),
        256,
        "the master keeps its limit"
    );
    // 500 client connections, 128 reserved, one listener.
    assert_eq!(soft_nofile(p.workers()[0].pid), 629);
}

/// Sets `pid`'s `RLIMIT_NOFILE` (soft and hard) to `n`.
fn set_nofile(pid: i32, n: u64) {
    let limit = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: prlimit reads the struct given and writes nothing (old is null).
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

fn open_fds(pid: i32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

#[test]
fn a_full_descriptor_table_is_logged_once_a_second_and_clients_are_served_once_connections_close() {
    let admin = free_port();
    // The test lowers the worker's limit with prlimit(2), which needs the
    // worker to run as the test does (a root master's workers otherwise
    // run as nobody).
    let root = nix::unistd::geteuid().is_root();
    let user = if root { "user = \"root\"" } else { "" };
    let p = Prefork::start(
        Setup::new(1)
            .top(user)
            .body(&format!("{ROUTES}{}", admin_table(admin))),
    );
    p.expect_log_errors();
    let worker = p.workers()[0].pid;
    // Room for a few connections only: accepts then fail with EMFILE.
    set_nofile(worker, open_fds(worker) + 4);
    let start = Instant::now();
    let held: Vec<Conn> = (0..12)
        .map(|_| {
            let mut c = Conn::connect(p.addr()).unwrap();
            c.send(&http::request("GET", "a.test", "/", &[], b""))
                .unwrap();
            c
        })
        .collect();
    assert!(
        wait_until(PARKED, || metric(
            admin,
            "prefork_accept_fd_exhausted_total"
        ) >= 10),
        "EMFILE counted\n{}",
        p.logs()
    );
    let lines = p
        .error_log()
        .lines()
        .filter(|l| l.contains("accept failed"))
        .count();
    let allowed = start.elapsed().as_secs() as usize + 1;
    assert!(
        (1..=allowed).contains(&lines),
        "{lines} lines about accept failures in {allowed} s\n{}",
        p.logs()
    );
    // Once the clients held close, a new one is served.
    drop(held);
    let r = http::get(p.port(), "a.test", "/").expect("a new client is served");
    assert_eq!(r.status, 200);
}

/// `prefork ARGS` run under a hard `RLIMIT_NOFILE` of `hard`.
fn run_with_hard_limit(args: &[&str], hard: u64) -> std::process::Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: hard,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.output().expect("run prefork")
}

#[test]
fn a_hard_limit_too_low_for_max_connections_is_a_start_error_naming_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prefork.toml");
    let d = dir.path().display();
    std::fs::write(
        &config,
        format!(
            "workers = 1\nmax_connections = 1000\npid_file = \"{d}/prefork.pid\"\n\
             [log]\nerror_log = \"{d}/error.log\"\n\
             [[listen]]\naddr = \"127.0.0.1:{}\"\n{ROUTES}",
            free_port()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    for args in [&["-t", "-c", config][..], &["-c", config][..]] {
        let out = run_with_hard_limit(args, 500);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "prefork {args:?} succeeded: {text}");
        for number in [
            "max_connections",
            "1000 connections",
            "1129 file descriptors",
            "is 500",
        ] {
            assert!(
                text.contains(number),
                "prefork {args:?}: {number:?} in {text}"
            );
        }
    }
    assert!(!dir.path().join("prefork.pid").exists());
    // Under a limit that covers it, -t says what each worker may hold; a
    // config without the key gets what the limit allows.
    let out = run_with_hard_limit(&["-t", "-c", config], 2000);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("max_connections 1000 per worker"), "{text}");
    let written = std::fs::read_to_string(config).unwrap();
    std::fs::write(config, written.replace("max_connections = 1000\n", "")).unwrap();
    let out = run_with_hard_limit(&["-t", "-c", config], 1024);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // 1024, less 128 reserved and one for the listener.
    assert!(text.contains("max_connections 895 per worker"), "{text}");
}
