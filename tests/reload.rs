//! Reloading: SIGHUP and `-s reload`, good and broken configs, and `-s quit`
//! / `-s stop` through the pid file.

use crate::support::client_loop::ClientLoop;
use crate::support::http;
use crate::support::origins::{self, RecordingOrigin};
use crate::support::prefork::{Prefork, Proc, Setup};
use crate::support::wait_until;
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub(crate) fn routes_to(name: &str, server: SocketAddr) -> String {
    format!(
        r#"
[upstreams.{name}]
servers = ["{server}"]
[[routes]]
host = "app.local"
upstream = "{name}"
"#
    )
}

pub(crate) fn pids(workers: &[Proc]) -> BTreeSet<i32> {
    workers.iter().map(|w| w.pid).collect()
}

fn origin_now(p: &Prefork) -> String {
    let r = http::get(p.port(), "app.local", "/").unwrap_or_else(|e| panic!("{e}\n{}", p.logs()));
    assert_eq!(r.status, 200, "{}", p.logs());
    r.header("x-origin").unwrap_or("?").to_owned()
}

/// Waits until a whole new generation of `n` workers runs and every old one
/// has exited.
fn wait_new_generation(p: &Prefork, old: &[Proc], n: usize) -> Vec<Proc> {
    let old_pids = pids(old);
    let new = p.wait_workers(n, Duration::from_secs(10), |ws| {
        ws.iter().all(|w| !old_pids.contains(&w.pid)) && old.iter().all(|w| !w.is_alive())
    });
    new.unwrap_or_else(|| {
        panic!(
            "no complete new generation: old {old_pids:?}, now {:?}\n{}",
            p.workers(),
            p.logs()
        )
    })
}

/// Waits until the route of `app.local` reaches `origin`.
fn wait_origin(p: &Prefork, origin: &str) {
    assert!(
        wait_until(Duration::from_secs(10), || http::get(
            p.port(),
            "app.local",
            "/"
        )
        .is_ok_and(|r| r.header("x-origin") == Some(origin))),
        "requests never reached {origin}\n{}",
        p.logs()
    );
}

/// Checks a client loop's results: none failed, the first reached
/// `before` and every one after `settled` reached `after` (before that,
/// workers switch one by one). `settled` is the count read once every worker
/// had switched; the request then in flight (result number `settled`) may
/// have been routed just before the switch, so it is not checked. Returns
/// how many requests were sent.
fn assert_switched(
    p: &Prefork,
    client: ClientLoop,
    settled: usize,
    before: &str,
    after: &str,
) -> usize {
    let origins = client.finish_without_failures(p, "the reload");
    assert_eq!(origins[0], before);
    let later = &origins[(settled + 1).min(origins.len())..];
    assert!(
        later.iter().all(|o| o == after),
        "once every worker switched, requests still reached the old upstream: {later:?}"
    );
    origins.len()
}

/// Waits until `n` workers logged that they took a new configuration.
fn wait_reconfigured(p: &Prefork, n: usize) {
    assert!(
        wait_until(Duration::from_secs(10), || p
            .error_log()
            .matches("configuration replaced")
            .count()
            >= n),
        "the workers did not all take the new configuration\n{}",
        p.logs()
    );
}

#[test]
fn hot_reload_changes_routing_without_new_workers_or_failed_requests() {
    let a = origins::minihttp("before");
    let b = origins::minihttp("after");
    let p = Prefork::start(Setup::new(2).body(&routes_to("a", a)));
    let old = p.workers();
    assert_eq!(origin_now(&p), "before");

    // A keep-alive client connection opened before the reload.
    let mut kept = http::Conn::local(p.port()).expect("connect");
    assert_eq!(
        kept.get("app.local", "/").unwrap().header("x-origin"),
        Some("before")
    );

    let client = ClientLoop::start(p.port());
    assert!(
        wait_until(Duration::from_secs(5), || client.count() >= 20),
        "the client loop is not running"
    );
    p.write_config(&routes_to("b", b));
    p.signal(Signal::SIGHUP);
    wait_reconfigured(&p, 2);
    let settled = client.wait_more(20, &p, "the reload");
    let sent = assert_switched(&p, client, settled, "before", "after");
    // The idle keep-alive connection's next request follows the new routes.
    let r = kept
        .get("app.local", "/")
        .expect("the kept connection still serves");
    assert_eq!(r.header("x-origin"), Some("after"));

    assert_eq!(
        pids(&p.workers()),
        pids(&old),
        "a hot reload keeps every worker"
    );
    assert!(
        p.error_log().contains("configuration replaced"),
        "{}",
        p.logs()
    );
    eprintln!("{sent} requests during the hot reload, none failed");
}

#[test]
fn hot_reloads_do_not_restart_an_idle_connections_keepalive_timeout() {
    let a = origins::minihttp("a");
    let p = Prefork::start(
        Setup::new(1)
            .top("keepalive_timeout = \"2s\"")
            .body(&routes_to("a", a)),
    );
    let mut conn = http::Conn::local(p.port()).expect("connect");
    assert_eq!(conn.get("app.local", "/").expect("response").status, 200);
    let idle_from = Instant::now();
    conn.stream().set_nonblocking(true).expect("nonblocking");
    let closed = |c: &http::Conn| matches!(c.stream().peek(&mut [0u8; 1]), Ok(0));

    // Hot reloads, one after the other, while the connection idles: each
    // wakes its wait to take the new configuration. Its idle time must keep
    // counting from its last response, so it closes 2 s after it, however
    // often the configuration changes.
    let deadline = idle_from + Duration::from_secs(10);
    let mut reloads = 0;
    while !closed(&conn) {
        assert!(
            Instant::now() < deadline,
            "the idle connection outlived its 2s keepalive_timeout by {reloads} hot reloads\n{}",
            p.logs()
        );
        let applied = p.error_log().matches("configuration replaced").count();
        let name = if reloads % 2 == 0 { "b" } else { "a" };
        p.write_config(&routes_to(name, a));
        p.signal(Signal::SIGHUP);
        reloads += 1;
        wait_reconfigured(&p, applied + 1);
    }
    let idle = idle_from.elapsed();
    assert!(reloads >= 2, "only {reloads} reloads came while idle");
    assert!(idle >= Duration::from_millis(1900), "closed after {idle:?}");
    eprintln!("closed after {idle:?} of idling, through {reloads} hot reloads");
}

/// The upstream `app` at `server` with `extra` settings, routed from
/// `app.local`.
fn app_with(server: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[upstreams.app]
servers = ["{server}"]
{extra}
[[routes]]
host = "app.local"
upstream = "app"
"#
    )
}

#[test]
fn a_replaced_upstreams_pooled_connection_still_expires() {
    let origin = RecordingOrigin::start();
    let p =
        Prefork::start(Setup::new(1).body(&app_with(origin.addr(), "keepalive_timeout = \"3s\"")));
    let r = http::get(p.port(), "app.local", "/").expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(origin.connections(), 1);
    // Same server, one setting changed: the hot reload builds a new group,
    // and the old one's pooled connection must not be left behind open.
    p.write_config(&app_with(
        origin.addr(),
        "keepalive_timeout = \"3s\"\nread_timeout = \"30s\"",
    ));
    p.signal(Signal::SIGHUP);
    wait_reconfigured(&p, 1);
    // 3 s of keepalive_timeout, plus the 1 s sweep, plus slack.
    assert!(
        wait_until(Duration::from_secs(8), || origin.closed() == 1),
        "the pooled upstream connection outlived its 3s keepalive_timeout \
         (open {}, closed {})\n{}",
        origin.connections(),
        origin.closed(),
        p.logs()
    );
}

#[test]
fn a_hot_reload_stops_the_replaced_groups_health_checks() {
    let origin = RecordingOrigin::start();
    let p = Prefork::start(Setup::new(1).body(&app_with(
        origin.addr(),
        "health_check = { path = \"/health-old\", interval = \"100ms\", timeout = \"1s\" }",
    )));
    assert!(wait_until(Duration::from_secs(5), || origin
        .count_path("/health-old")
        >= 2));
    p.write_config(&app_with(
        origin.addr(),
        "health_check = { path = \"/health-new\", interval = \"1h\", timeout = \"1s\" }",
    ));
    p.signal(Signal::SIGHUP);
    wait_reconfigured(&p, 1);
    assert!(wait_until(Duration::from_secs(5), || origin
        .count_path("/health-new")
        >= 1));
    let old = origin.count_path("/health-old");
    // One check may have been in flight; at 100 ms, 2 s would give ~20 more.
    let kept_checking = wait_until(Duration::from_secs(2), || {
        origin.count_path("/health-old") > old + 2
    });
    assert!(
        !kept_checking,
        "the replaced health check kept running: {} -> {} checks of /health-old",
        old,
        origin.count_path("/health-old")
    );
}

/// The files worker `pid` has open.
fn open_files(pid: i32) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_hot_reload_lets_go_of_the_first_configurations_access_log() {
    let a = origins::minihttp("a");
    let p = Prefork::start(Setup::new(1).body(&routes_to("a", a)));
    let worker = p.workers()[0].pid;
    let old_log = p.dir().join("access.log");
    let new_log = p.dir().join("access2.log");
    assert!(
        open_files(worker).contains(&old_log),
        "{:?}",
        open_files(worker)
    );

    let moved = p
        .config_for(&routes_to("a", a))
        .replace("access.log", "access2.log");
    p.write_raw_config(&moved);
    p.signal(Signal::SIGHUP);
    wait_reconfigured(&p, 1);
    assert_eq!(
        http::get(p.port(), "app.local", "/")
            .expect("response")
            .status,
        200
    );
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(&new_log)
            .is_ok_and(|l| l.contains("GET / "))),
        "the request was not logged to the new access log\n{}",
        p.logs()
    );
    // No connection uses the first configuration any more: its access log
    // must close (the serving and accepting tasks must not keep it).
    assert!(
        wait_until(Duration::from_secs(5), || !open_files(worker)
            .contains(&old_log)),
        "the worker still has the replaced access log open: {:?}",
        open_files(worker)
    );
    assert!(
        p.workers().iter().any(|w| w.pid == worker),
        "a hot reload keeps the worker"
    );
}

#[test]
fn after_a_hot_reload_moves_the_error_log_every_worker_line_goes_there() {
    let origin = RecordingOrigin::start();
    let checked = app_with(
        origin.addr(),
        "health_check = { path = \"/health\", interval = \"100ms\", timeout = \"1s\" }",
    );
    let mut p = Prefork::start(Setup::new(1).body(&checked));
    let moved_log = p.dir().join("error2.log");
    // The upstream is unchanged: its health checks carry over the reload.
    let moved = p.config_for(&checked).replace("error.log", "error2.log");
    p.write_raw_config(&moved);
    p.signal(Signal::SIGHUP);
    let new_log = || std::fs::read_to_string(&moved_log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), || new_log()
            .contains("configuration replaced")),
        "the worker did not take the new configuration\n{}",
        p.logs()
    );
    origin.set_healthy(false);
    assert!(
        wait_until(Duration::from_secs(10), || new_log()
            .contains("health check failed, server marked down")),
        "the carried-over health check did not log to the new error log\n{}\nnew log:\n{}",
        p.logs(),
        new_log()
    );
    p.signal(Signal::SIGQUIT);
    assert!(
        p.wait_exit(Duration::from_secs(10)).is_some(),
        "{}",
        p.logs()
    );
    assert!(
        new_log()
            .lines()
            .any(|l| l.contains(" stopped, ") && l.contains("role: worker")),
        "the worker's last line went elsewhere\nnew log:\n{}",
        new_log()
    );
}

#[test]
fn a_listener_change_rolls_a_new_generation_with_zero_failed_requests() {
    let a = origins::minihttp("before");
    let b = origins::minihttp("after");
    let p = Prefork::start(Setup::new(2).body(&routes_to("a", a)));
    let old = p.workers();
    let client = ClientLoop::start(p.port());
    assert!(wait_until(Duration::from_secs(5), || client.count() >= 20));

    let extra = crate::support::prefork::free_port();
    let body = format!(
        "[[listen]]\naddr = \"127.0.0.1:{extra}\"\n{}",
        routes_to("b", b)
    );
    p.write_config(&body);
    p.signal(Signal::SIGHUP);
    let new = wait_new_generation(&p, &old, 2);
    let settled = client.wait_more(20, &p, "the new generation");
    assert_switched(&p, client, settled, "before", "after");
    let old_gen = old[0].generation();
    assert!(new.iter().all(|w| w.generation() > old_gen), "{new:?}");
    let r = http::get(extra, "app.local", "/").expect("the added listener serves");
    assert_eq!(r.header("x-origin"), Some("after"));

    // Removing it again closes it.
    p.write_config(&routes_to("b", b));
    p.signal(Signal::SIGHUP);
    wait_new_generation(&p, &new, 2);
    assert!(
        wait_until(Duration::from_secs(5), || std::net::TcpStream::connect((
            "127.0.0.1",
            extra
        ))
        .is_err()),
        "the removed listener still accepts\n{}",
        p.logs()
    );
}

#[test]
fn a_broken_config_changes_nothing_and_cli_reload_says_why() {
    let a = origins::minihttp("kept");
    let b = origins::minihttp("fixed");
    let p = Prefork::start(Setup::new(2).body(&routes_to("a", a)));
    let before = p.workers();
    let log_len = p.error_log().len();

    // A route naming an upstream that does not exist.
    let broken = p.config_for(
        r#"
[[routes]]
host = "app.local"
upstream = "missing"
"#,
    );
    let line = broken
        .lines()
        .position(|l| l.contains("upstream = \"missing\""))
        .unwrap()
        + 1;
    p.expect_log_errors();
    p.write_raw_config(&broken);
    let path = p.config_path().display().to_string();

    let stderr = p.reload_refused();
    assert!(
        stderr.contains(&format!("{path}:{line}: routes[0].upstream")),
        "-s reload should say what is wrong: {stderr}"
    );

    // A SIGHUP sent anyway is rejected by the master, which logs why.
    p.signal(Signal::SIGHUP);
    let logged = wait_until(Duration::from_secs(5), || {
        let fresh = p.error_log()[log_len..].to_owned();
        fresh.contains("routes[0].upstream") || fresh.contains(&format!("{path}:{line}"))
    });
    assert!(
        logged,
        "the rejected reload should be logged with the problem ({path}:{line}: routes[0].upstream)\n{}",
        p.logs()
    );
    for i in 0..10 {
        assert_eq!(
            origin_now(&p),
            "kept",
            "request {i} after the rejected reload"
        );
    }
    assert_eq!(
        pids(&p.workers()),
        pids(&before),
        "a rejected reload must keep the same workers"
    );

    // The master still reloads once the config is fixed.
    p.write_config(&routes_to("b", b));
    p.signal(Signal::SIGHUP);
    wait_reconfigured(&p, 2);
    assert_eq!(origin_now(&p), "fixed");
    assert_eq!(pids(&p.workers()), pids(&before));
}

#[test]
fn cli_reload_and_quit_signal_the_master_named_in_the_pid_file() {
    let a = origins::minihttp("cli-a");
    let b = origins::minihttp("cli-b");
    let mut p = Prefork::start(Setup::new(1).body(&routes_to("a", a)));
    assert_eq!(origin_now(&p), "cli-a");

    p.write_config(&routes_to("b", b));
    let out = p.cli(&["-s", "reload"]);
    assert!(
        out.status.success(),
        "-s reload: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    wait_origin(&p, "cli-b");

    let workers = p.workers();
    let out = p.cli(&["-s", "quit"]);
    assert!(
        out.status.success(),
        "-s quit: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let status = p
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the master did not exit after -s quit\n{}", p.logs()));
    assert!(status.success(), "{status}");
    assert!(wait_until(Duration::from_secs(2), || workers
        .iter()
        .all(|w| !w.is_alive())));
    assert!(
        !p.pid_file().exists(),
        "the pid file should be gone after -s quit"
    );

    // With no master running, -s fails.
    p.reload_refused();
}

#[test]
fn cli_stop_stops_the_master() {
    let a = origins::minihttp("cli-stop");
    let mut p = Prefork::start(Setup::new(2).body(&routes_to("a", a)));
    let workers = p.workers();
    let out = p.cli(&["-s", "stop"]);
    assert!(
        out.status.success(),
        "-s stop: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    p.wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("the master did not exit after -s stop\n{}", p.logs()));
    assert!(wait_until(Duration::from_secs(2), || workers
        .iter()
        .all(|w| !w.is_alive())));
}

#[test]
fn a_hot_reload_that_shortens_worker_timeout_kills_no_healthy_worker() {
    // worker_timeout 30 s: the workers beat every 5 s.
    let p = Prefork::start(Setup::new(2).top("worker_timeout = \"30s\""));
    let before = p.workers();
    // The same config with a 1 s limit: a hot reload.
    let text = p
        .config_for("")
        .replace("worker_timeout = \"30s\"", "worker_timeout = \"1s\"");
    p.write_raw_config(&text);
    p.signal(Signal::SIGHUP);
    wait_reconfigured(&p, 2);
    // Well past the 1 s limit and the old 5 s beat interval.
    let replaced = wait_until(Duration::from_secs(7), || {
        p.error_log().contains("stopped answering heartbeats")
            || pids(&p.workers()) != pids(&before)
    });
    assert!(
        !replaced,
        "healthy workers were killed as hung after the reload: {:?} -> {:?}\n{}",
        pids(&before),
        pids(&p.workers()),
        p.logs()
    );
}

#[test]
fn a_crashed_worker_of_the_serving_generation_is_replaced_while_the_next_one_cannot_start() {
    let p = Prefork::start(Setup::new(1));
    p.expect_log_errors();
    let old = p.workers();
    // A new generation (workers changed) whose workers cannot open their
    // access log (a symlink to itself: its directory exists, so the master
    // takes the reload): they never become ready, generation 1 keeps serving.
    let looping = p.dir().join("loop.log");
    std::os::unix::fs::symlink(&looping, &looping).expect("symlink");
    let text = p
        .config_for("")
        .replace("workers = 1", "workers = 2")
        .replace(
            &format!("{}/access.log", p.dir().display()),
            &looping.display().to_string(),
        );
    p.write_raw_config(&text);
    p.signal(Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || p
            .workers()
            .iter()
            .any(|w| w.generation() == Some(2))),
        "generation 2 never started\n{}",
        p.logs()
    );
    assert!(
        crate::support::http::get(p.port(), crate::support::prefork::PROBE_HOST, "/")
            .is_ok_and(|r| r.status == 200)
    );
    // The serving worker crashes.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old[0].pid), Signal::SIGKILL).unwrap();
    let replaced = wait_until(Duration::from_secs(10), || {
        p.workers()
            .iter()
            .any(|w| w.generation() == Some(1) && w.pid != old[0].pid)
            && crate::support::http::get(p.port(), crate::support::prefork::PROBE_HOST, "/")
                .is_ok_and(|r| r.status == 200)
    });
    assert!(
        replaced,
        "nothing serves: generation 1's worker was not replaced: {:?}\n{}",
        p.workers(),
        p.logs()
    );
}

/// A reload whose `pid_file` cannot be written is refused like any invalid
/// config: the pid file the master runs with stays in place and names it
/// (else `-s quit` could not find it, and its exit would leave that file
/// behind).
#[test]
fn a_reload_to_a_pid_file_that_cannot_be_written_is_refused() {
    let dir = tempfile::Builder::new()
        .prefix("prefork-test-")
        .tempdir()
        .expect("temp dir");
    // Not derived from the pid file, so `-s reload` still finds the master.
    let socket = dir.path().join("control.sock");
    let p = Prefork::start_in(
        dir,
        Setup::new(1).top(&format!("control_socket = \"{}\"", socket.display())),
    );
    p.expect_log_errors();
    let before = p.workers();
    let running = format!("pid_file = \"{}\"", p.pid_file().display());
    let missing = p.dir().join("missing").join("prefork.pid");
    let text = p
        .config_for("")
        .replace(&running, &format!("pid_file = \"{}\"", missing.display()));
    assert!(text.contains(&missing.display().to_string()));
    p.write_raw_config(&text);

    let stderr = p.reload_refused();
    assert!(
        stderr.contains(&format!("pid_file: {}", missing.display())),
        "-s reload should name the pid file and why: {stderr}"
    );
    assert_eq!(p.pid_file_pid(), Some(p.master_pid()));
    assert_eq!(pids(&p.workers()), pids(&before));
    let status = p.status_json();
    assert_eq!(status["last_reload"]["ok"], false, "{status}");
}

/// A reload to a new generation whose access log sits in a missing
/// directory is refused: its workers could never start, and the reload must
/// not be reported as taken.
#[test]
fn a_reload_to_a_log_file_in_a_missing_directory_is_refused() {
    let p = Prefork::start(Setup::new(1));
    p.expect_log_errors();
    let before = p.workers();
    let missing = p.dir().join("missing").join("access.log");
    let text = p
        .config_for("")
        .replace("workers = 1", "workers = 2")
        .replace(
            &format!("access_log = \"{}/access.log\"", p.dir().display()),
            &format!("access_log = \"{}\"", missing.display()),
        );
    assert!(text.contains(&missing.display().to_string()));
    p.write_raw_config(&text);

    let stderr = p.reload_refused();
    assert!(
        stderr.contains("log.access_log") && stderr.contains(&missing.display().to_string()),
        "-s reload should name the key and the file: {stderr}"
    );
    assert_eq!(pids(&p.workers()), pids(&before));
}

/// A reload whose reading blocks (here on a FIFO named as an upstream's
/// `tls_ca`, as a slow network file system or DNS would) leaves the master
/// loop free: status answers and no worker is taken for hung meanwhile;
/// the reload completes once the read does.
#[test]
fn a_slow_reload_read_never_stalls_the_master_loop() {
    let origin = origins::minihttp("slow-read");
    let p = Prefork::start(
        Setup::new(1)
            .top("worker_timeout = \"1s\"")
            .body(&routes_to("a", origin)),
    );
    let worker = p.workers()[0].pid;
    let fifo = p.dir().join("ca.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    p.write_config(&format!(
        "{}[upstreams.slow]\nservers = [\"127.0.0.1:1\"]\ntls = true\ntls_ca = \"{}\"\n",
        routes_to("a", origin),
        fifo.display()
    ));
    p.signal(Signal::SIGHUP);
    // Longer than worker_timeout: the read is still blocked on the FIFO.
    let blocked_until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < blocked_until {
        // The control socket itself: `prefork status -c` would read the
        // config file, FIFO included, to find it.
        let mut socket = std::os::unix::net::UnixStream::connect(p.dir().join("prefork.sock"))
            .expect("the control socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        std::io::Write::write_all(&mut socket, b"status\n").expect("ask");
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut socket, &mut answer).expect("the loop answers");
        assert!(answer.contains("master_pid"), "{answer}");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(p.workers().len(), 1);
    assert_eq!(
        p.workers()[0].pid,
        worker,
        "the worker was replaced while the reload read\n{}",
        p.logs()
    );
    // Unblock the read: the FIFO gives an empty CA file, which is refused.
    drop(
        std::fs::OpenOptions::new()
            .write(true)
            .open(&fifo)
            .expect("open the FIFO"),
    );
    assert!(
        wait_until(Duration::from_secs(10), || p
            .error_log()
            .contains("reload failed")),
        "the reload did not complete\n{}",
        p.logs()
    );
    p.expect_log_errors();
    let r = http::get(p.port(), "app.local", "/").expect("still serving");
    assert_eq!(r.status, 200);
}
