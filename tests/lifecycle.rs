//! Processes: worker command lines, restart after a crash, graceful and fast
//! stops, privilege drop, orphan handling.

use crate::support::http::{self, Conn};
use crate::support::origins::{self, RecordingOrigin};
use crate::support::prefork::{self, children, uids, Continue, Prefork, Proc, Setup};
use crate::support::{wait_for, wait_until};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, User};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn proxy_to(workers: usize, server: std::net::SocketAddr) -> Prefork {
    Prefork::start(Setup::new(workers).body(&format!(
        r#"
[upstreams.app]
servers = ["{server}"]
[[routes]]
upstream = "app"
"#
    )))
}

/// A request for `path` sent on its own thread, once the origin `rec` has
/// it (it is then in flight); the thread gives its response and when it
/// came.
fn in_flight(
    p: &Prefork,
    rec: &RecordingOrigin,
    path: &str,
) -> std::thread::JoinHandle<std::io::Result<(http::Response, Instant)>> {
    let (port, request) = (p.port(), http::request("GET", "x", path, &[], b""));
    let seen = rec.count();
    let client = std::thread::spawn(move || {
        let mut conn = Conn::local(port)?;
        conn.send(&request)?;
        conn.read_response().map(|r| (r, Instant::now()))
    });
    assert!(
        wait_until(Duration::from_secs(5), || rec.count() > seen),
        "the request for {path} did not reach the origin\n{}",
        p.logs()
    );
    client
}

#[test]
fn workers_run_as_prefork_worker_with_slot_generation_and_ipc() {
    let origin = origins::minihttp("cmd");
    let p = proxy_to(3, origin);
    let workers = p.workers();
    assert_eq!(workers.len(), 3, "{workers:?}");
    let mut slots = BTreeSet::new();
    let mut generations = BTreeSet::new();
    for w in &workers {
        let argv = &w.cmdline;
        assert!(
            argv.first().is_some_and(|a| a.ends_with("prefork"))
                && argv.get(1).map(String::as_str) == Some("worker"),
            "worker {} command line should be `prefork worker ...`: {argv:?}",
            w.pid
        );
        for flag in ["--slot", "--generation", "--ipc"] {
            assert!(
                w.arg(flag)
                    .is_some_and(|v| !v.is_empty() && !v.starts_with("--")),
                "worker {} command line lacks `{flag} VALUE`: {argv:?}",
                w.pid
            );
        }
        slots.insert(
            w.slot()
                .unwrap_or_else(|| panic!("--slot is not a number: {argv:?}")),
        );
        generations.insert(
            w.generation()
                .unwrap_or_else(|| panic!("--generation is not a number: {argv:?}")),
        );
    }
    assert_eq!(slots.len(), 3, "each worker has its own slot: {workers:?}");
    assert_eq!(
        generations.len(),
        1,
        "all workers of a fresh start share a generation: {workers:?}"
    );
    // The master is not itself started as a worker.
    let master_cmdline = std::fs::read(format!("/proc/{}/cmdline", p.master_pid())).unwrap();
    assert!(!String::from_utf8_lossy(&master_cmdline).contains("\0worker\0"));
}

#[test]
fn killed_worker_is_replaced_in_its_slot_within_a_second() {
    let origin = origins::minihttp("respawn");
    let p = proxy_to(2, origin);
    let before = p.workers();
    let (victim, other) = (before[0].clone(), before[1].clone());
    let slot = victim.slot().expect("workers carry --slot");

    kill(Pid::from_raw(victim.pid), Signal::SIGKILL).unwrap();
    let killed_at = Instant::now();

    // The other worker keeps serving meanwhile.
    for i in 0..5 {
        let r = http::get(p.port(), "x", "/")
            .unwrap_or_else(|e| panic!("request {i} after the kill: {e}\n{}", p.logs()));
        assert_eq!(r.status, 200);
    }

    let is_replacement =
        |w: &Proc| w.pid != victim.pid && w.pid != other.pid && w.slot() == Some(slot);
    let after = p
        .wait_workers(
            2,
            Duration::from_secs(1).saturating_sub(killed_at.elapsed()),
            |ws| ws.iter().any(is_replacement),
        )
        .unwrap_or_else(|| {
            panic!(
                "no new worker in slot {slot} within 1s of SIGKILL to {}; workers now: {:?}\n{}",
                victim.pid,
                p.workers(),
                p.logs()
            )
        });
    let replacement = after.iter().find(|w| is_replacement(w)).unwrap().clone();
    eprintln!(
        "replacement {} appeared after {:?}",
        replacement.pid,
        killed_at.elapsed()
    );
    assert!(
        other.is_alive(),
        "the other worker {} should be untouched",
        other.pid
    );
    assert!(after.iter().any(|w| w.pid == other.pid), "{after:?}");

    // Prove the replacement serves: stop the other worker so only the new
    // one can accept. Each try uses a fresh connection with a short timeout.
    kill(Pid::from_raw(other.pid), Signal::SIGSTOP).unwrap();
    let resume = Continue(other.pid);
    let served = wait_for(Duration::from_secs(2), || {
        let mut conn = Conn::local(p.port()).ok()?;
        conn.set_read_timeout(Duration::from_millis(300)).ok()?;
        conn.send(&http::request("GET", "x", "/", &["Connection: close"], b""))
            .ok()?;
        conn.read_response().ok().filter(|r| r.status == 200)
    });
    drop(resume);
    assert!(
        served.is_some(),
        "the replacement worker {} did not serve while the other was stopped\n{}",
        replacement.pid,
        p.logs()
    );
    eprintln!(
        "replacement served {:?} after the kill",
        killed_at.elapsed()
    );
    assert!(
        p.workers().iter().any(|w| w.pid == other.pid),
        "the stopped worker was replaced"
    );
}

#[test]
fn graceful_sigterm_serves_through_the_shutdown_delay_with_healthz_503_then_drains() {
    let rec = RecordingOrigin::start();
    let admin = prefork::free_port();
    let delay = Duration::from_secs(5);
    let mut p = Prefork::start(
        Setup::new(1)
            .top("sigterm = \"graceful\"")
            .top("shutdown_delay = \"5s\"")
            .body(&format!(
                "[admin]\naddr = \"127.0.0.1:{admin}\"\n[upstreams.app]\nservers = [\"{}\"]\n\
                 [[routes]]\nupstream = \"app\"\n",
                rec.addr()
            )),
    );
    let health = || http::get(admin, "admin", "/healthz").map(|r| r.status).ok();
    assert_eq!(health(), Some(200));
    let port = p.port();
    let held = in_flight(&p, &rec, "/hold");
    let term_at = Instant::now();
    p.signal(Signal::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(2), || health() == Some(503)),
        "/healthz should answer 503 once SIGTERM arrived\n{}",
        p.logs()
    );
    // Still accepting and serving new connections meanwhile.
    let r = http::get(port, "x", "/during-delay").expect("a request during the delay");
    assert_eq!(r.status, 200);
    assert!(
        term_at.elapsed() < delay,
        "the checks above must run inside the delay; took {:?}",
        term_at.elapsed()
    );
    rec.release_holds();
    let (held, _) = held
        .join()
        .expect("client thread")
        .expect("the in-flight request is answered");
    assert_eq!(held.status, 200);
    let status = p
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("the master did not exit after the delay\n{}", p.logs()));
    assert!(status.success(), "graceful stop should exit 0: {status}");
    assert!(
        term_at.elapsed() >= delay,
        "the master drained before shutdown_delay ended: {:?}",
        term_at.elapsed()
    );
}

#[test]
fn sigquit_lets_the_in_flight_request_finish_then_everything_exits() {
    let rec = RecordingOrigin::start();
    let mut p = proxy_to(2, rec.addr());
    let workers = p.workers();
    let client = in_flight(&p, &rec, "/delay/1500");
    let quit_at = Instant::now();
    p.signal(Signal::SIGQUIT);

    let (response, done_at) = client.join().unwrap().unwrap_or_else(|e| {
        panic!(
            "the in-flight request failed during SIGQUIT: {e}\n{}",
            p.logs()
        )
    });
    assert_eq!(response.status, 200, "{}", p.logs());
    assert_eq!(response.text(), "delayed 1500ms\n");
    assert!(done_at > quit_at);

    let status = p
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the master did not exit after SIGQUIT\n{}", p.logs()));
    assert!(
        status.success(),
        "graceful stop should exit 0: {status}\n{}",
        p.logs()
    );
    assert!(
        wait_until(Duration::from_secs(2), || workers
            .iter()
            .all(|w| !w.is_alive())),
        "workers outlived a graceful stop: {workers:?}"
    );
    assert!(
        !p.pid_file().exists(),
        "the pid file should be removed after SIGQUIT"
    );
    assert!(
        std::net::TcpStream::connect(p.addr()).is_err(),
        "the port still accepts connections after the stop"
    );
}

#[test]
fn at_the_shutdown_timeout_a_worker_closes_what_is_left_and_exits_with_its_logs_written() {
    let rec = RecordingOrigin::start();
    let mut p = Prefork::start(Setup::new(1).shutdown_timeout("1s").body(&format!(
        "[upstreams.app]\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n",
        rec.addr()
    )));
    let worker = p.workers()[0].pid;
    // A request still waiting for its upstream when the time is up.
    let slow = in_flight(&p, &rec, "/delay/8000");
    p.signal(Signal::SIGQUIT);
    let status = p
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the master did not exit after SIGQUIT\n{}", p.logs()));
    assert!(status.success(), "{status}\n{}", p.logs());
    assert!(slow.join().unwrap().is_err(), "the slow request was cut");
    // The worker closed the request itself, then wrote what it had queued
    // (its last access-log lines and counters, its log lines) and exited:
    // a SIGKILL from the master would have lost them.
    let log = p.error_log();
    let worker_said = |what: &str| {
        let pid = format!("pid: {worker},");
        log.lines()
            .any(|l| l.contains("role: worker") && l.contains(&pid) && l.contains(what))
    };
    assert!(
        worker_said("shutdown timeout reached") && worker_said("stopped"),
        "the worker did not stop by itself\n{}",
        p.logs()
    );
    assert!(
        !log.contains("did not stop in time"),
        "the master killed the worker\n{}",
        p.logs()
    );
}

#[test]
fn sigquit_closes_idle_connections_no_later_than_their_keepalive_timeout() {
    let rec = RecordingOrigin::start();
    let mut p = Prefork::start(
        Setup::new(1)
            .top("keepalive_timeout = \"1s\"")
            .body(&format!(
                "[upstreams.app]\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n",
                rec.addr()
            )),
    );
    // A draining worker closes each idle connection at a point spread over
    // 2 s (by client address): with 16 of them, some fall past the 1 s
    // keepalive_timeout, which must still close them in time.
    let mut idle: Vec<(Conn, Instant)> = (0..16)
        .map(|_| {
            let mut c = Conn::local(p.port()).expect("connect");
            assert_eq!(c.get("x", "/").expect("response").status, 200);
            c.stream().set_nonblocking(true).expect("nonblocking");
            (c, Instant::now())
        })
        .collect();
    p.signal(Signal::SIGQUIT);
    let mut longest = Duration::ZERO;
    let all_closed = wait_until(Duration::from_secs(10), || {
        idle.retain(|(c, since)| {
            let closed = matches!(c.stream().peek(&mut [0u8; 1]), Ok(0));
            if closed {
                longest = longest.max(since.elapsed());
            }
            !closed
        });
        idle.is_empty()
    });
    assert!(all_closed, "{} idle connections never closed", idle.len());
    assert!(
        longest < Duration::from_millis(1500),
        "an idle connection closed {longest:?} after its last response, keepalive_timeout 1s\n{}",
        p.logs()
    );
    assert!(p.wait_exit(Duration::from_secs(10)).is_some());
}

#[test]
fn sigterm_stops_fast_without_waiting_for_slow_requests() {
    let rec = RecordingOrigin::start();
    let mut p = proxy_to(2, rec.addr());
    let workers = p.workers();
    // An upstream answer that would take far longer than a fast stop.
    let client = in_flight(&p, &rec, "/delay/8000");
    // Cutting requests short may be logged as errors.
    p.expect_log_errors();
    let term_at = Instant::now();
    p.signal(Signal::SIGTERM);
    let status = p
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("the master did not exit within 5s of SIGTERM\n{}", p.logs()));
    eprintln!("SIGTERM stop took {:?} ({status})", term_at.elapsed());
    assert!(
        wait_until(Duration::from_secs(2), || workers
            .iter()
            .all(|w| !w.is_alive())),
        "workers outlived a fast stop: {workers:?}"
    );
    // The slow request was cut, not completed.
    let result = client.join().unwrap().map(|(r, _)| r);
    assert!(
        result.as_ref().map_or(true, |r| r.status != 200),
        "the 8s request completed with 200 despite the fast stop: {result:?}"
    );
}

#[test]
fn workers_exit_when_the_master_is_killed() {
    let origin = origins::minihttp("orphan");
    let mut p = proxy_to(2, origin);
    let workers = p.workers();
    p.signal(Signal::SIGKILL);
    assert!(p.wait_exit(Duration::from_secs(5)).is_some());
    assert!(
        wait_until(Duration::from_secs(2), || workers
            .iter()
            .all(|w| !w.is_alive())),
        "workers kept running after their master was killed: {:?}",
        workers.iter().filter(|w| w.is_alive()).collect::<Vec<_>>()
    );
    // The kernel closes a dead process's sockets as it tears it down.
    assert!(
        wait_until(Duration::from_secs(2), || std::net::TcpStream::connect(
            p.addr()
        )
        .is_err()),
        "orphaned workers still accept on the port"
    );
}

#[test]
fn workers_run_as_the_configured_user_when_started_as_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "SKIPPED workers_run_as_the_configured_user_when_started_as_root: not running as root"
        );
        return;
    }
    let Some(nobody) = User::from_name("nobody").ok().flatten() else {
        eprintln!(
            "SKIPPED workers_run_as_the_configured_user_when_started_as_root: no user `nobody`"
        );
        return;
    };
    let origin = origins::minihttp("priv");
    let dir = prefork::dir_with_logs_for_any_user();
    let p = Prefork::start_in(
        dir,
        Setup::new(2).top("user = \"nobody\"").body(&format!(
            r#"
[upstreams.app]
servers = ["{origin}"]
[[routes]]
upstream = "app"
"#
        )),
    );
    let uid = nobody.uid.as_raw();
    let gid = nobody.gid.as_raw();
    assert_eq!(uids(p.master_pid()), Some((0, 0)), "the master stays root");
    let workers = p.workers();
    assert_eq!(workers.len(), 2);
    for w in &workers {
        assert_eq!(
            uids(w.pid),
            Some((uid, uid)),
            "worker {} real and effective uid",
            w.pid
        );
        let status = std::fs::read_to_string(format!("/proc/{}/status", w.pid)).unwrap();
        let gids: Vec<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix("Gid:"))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            gids.first(),
            Some(&gid),
            "worker {} real gid: {status}",
            w.pid
        );
        assert_eq!(gids.get(1), Some(&gid), "worker {} effective gid", w.pid);
    }
    // Unprivileged workers still serve.
    let r = http::get(p.port(), "x", "/").expect("request");
    assert_eq!((r.status, r.text().as_str()), (200, prefork_bench::HELLO));
    // Every process the master started runs as nobody.
    for c in children(p.master_pid()) {
        assert_eq!(uids(c.pid).map(|u| u.1), Some(uid), "child {c:?}");
    }
}

/// Kills (by pid) a process the test started, even when the test fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_root_master_without_user_runs_its_workers_as_nobody_and_user_root_keeps_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: not running as root");
        return;
    }
    let Some(nobody) = User::from_name("nobody").ok().flatten() else {
        eprintln!("SKIPPED: no user `nobody`");
        return;
    };
    let p = Prefork::start(Setup::new(1));
    let worker = p.workers()[0].pid;
    assert_eq!(uids(p.master_pid()), Some((0, 0)), "the master stays root");
    let uid = nobody.uid.as_raw();
    assert_eq!(
        uids(worker),
        Some((uid, uid)),
        "no `user`: workers as nobody"
    );
    drop(p);
    let p = Prefork::start(Setup::new(1).top("user = \"root\""));
    assert_eq!(
        uids(p.workers()[0].pid),
        Some((0, 0)),
        "user = \"root\" is kept"
    );
}

#[test]
fn prefork_dash_s_refuses_a_control_socket_served_by_another_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: not running as root");
        return;
    }
    let Some(nobody) = User::from_name("nobody").ok().flatten() else {
        eprintln!("SKIPPED: no user `nobody`");
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let d = dir.path().display();
    let config = dir.path().join("prefork.toml");
    std::fs::write(
        &config,
        format!(
            "workers = 1\npid_file = \"{d}/prefork.pid\"\n[log]\nerror_log = \"{d}/error.log\"\n\
             access_log = \"off\"\n[[listen]]\naddr = \"127.0.0.1:{}\"\n[[routes]]\n\
             respond = {{ body = \"x\" }}\n",
            prefork::free_port()
        ),
    )
    .expect("write config");
    // Another user's master (here nobody's) owns the socket the config names.
    let other = KillOnDrop(
        std::process::Command::new(prefork::BIN)
            .arg("-c")
            .arg(&config)
            .uid(nobody.uid.as_raw())
            .gid(nobody.gid.as_raw())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start a master as nobody"),
    );
    let socket = dir.path().join("prefork.sock");
    assert!(
        wait_until(Duration::from_secs(10), || socket.exists()),
        "nobody's master did not open its control socket"
    );
    let out = prefork::run(
        &["-s", "reload", "-c", config.to_str().expect("utf-8")],
        Duration::from_secs(10),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "root trusted nobody's socket: {stderr}"
    );
    assert!(stderr.contains("neither root nor you"), "{stderr}");
    drop(other);
}
