//! Zero-downtime operations: SIGTTIN/SIGTTOU, heartbeats, log reopening
//! and binary upgrades.

use crate::reload::{pids, routes_to};
use crate::support::client_loop::ClientLoop;
use crate::support::http;
use crate::support::origins;
use crate::support::prefork::{self, Prefork, Setup, BIN};
use crate::support::{wait_for, wait_until};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

fn serves(p: &Prefork) -> bool {
    http::get(p.port(), prefork::PROBE_HOST, "/").is_ok_and(|r| r.status == 200)
}

#[test]
fn sigttin_and_sigttou_add_and_remove_one_worker() {
    let p = Prefork::start(Setup::new(1));
    let first = p.workers();
    p.signal(Signal::SIGTTIN);
    let two = p
        .wait_workers(2, Duration::from_secs(10), |_| true)
        .unwrap_or_else(|| panic!("SIGTTIN did not add a worker\n{}", p.logs()));
    p.signal(Signal::SIGTTIN);
    p.wait_workers(3, Duration::from_secs(10), |_| true)
        .unwrap_or_else(|| panic!("SIGTTIN did not add a third worker\n{}", p.logs()));
    p.signal(Signal::SIGTTOU);
    let back = p
        .wait_workers(2, Duration::from_secs(10), |_| true)
        .unwrap_or_else(|| panic!("SIGTTOU did not remove a worker\n{}", p.logs()));
    assert_eq!(
        pids(&back),
        pids(&two),
        "SIGTTOU removes the last slot's worker"
    );
    for _ in 0..3 {
        p.signal(Signal::SIGTTOU);
    }
    let last = p
        .wait_workers(1, Duration::from_secs(10), |_| true)
        .unwrap_or_else(|| panic!("SIGTTOU should leave one worker\n{}", p.logs()));
    assert_eq!(
        pids(&last),
        pids(&first),
        "the first worker is never removed"
    );
    assert!(serves(&p));
}

#[test]
fn a_hung_worker_is_killed_and_replaced() {
    let p = Prefork::start(
        Setup::new(2)
            .top("worker_timeout = \"1s\"")
            .env("PREFORK_TEST_HANG_ON_SIGUSR2", "1"),
    );
    p.expect_log_errors();
    let before = p.workers();
    let hung = before[0].clone();
    kill(Pid::from_raw(hung.pid), Signal::SIGUSR2).expect("signal the worker");
    let after = p
        .wait_workers(2, Duration::from_secs(10), |ws| {
            ws.iter().all(|w| w.pid != hung.pid)
        })
        .unwrap_or_else(|| panic!("the hung worker was not replaced\n{}", p.logs()));
    assert!(!hung.is_alive());
    assert!(
        after.iter().any(|w| w.pid == before[1].pid),
        "the healthy worker stays"
    );
    assert!(
        p.error_log().contains("stopped answering heartbeats"),
        "{}",
        p.logs()
    );
    assert!(serves(&p));
}

/// Renames the error and access logs as logrotate does, sends SIGUSR1, and
/// tells whether a request then shows in a new access log. The worker learns
/// of the signal over IPC, so a request sent at once may still be logged to
/// the old file: numbered requests are sent until one shows in the new file.
fn rotate_logs_and_wait_for_reopen(
    p: &Prefork,
    dir: &std::path::Path,
    reopen: impl FnOnce(),
) -> bool {
    for name in ["error.log", "access.log"] {
        std::fs::rename(dir.join(name), dir.join(format!("{name}.1"))).expect("rotate");
    }
    reopen();
    let mut sent = 0;
    wait_until(Duration::from_secs(10), || {
        sent += 1;
        let _ = http::get(
            p.port(),
            prefork::PROBE_HOST,
            &format!("/after-rotation-{sent}"),
        );
        std::fs::read_to_string(dir.join("access.log"))
            .is_ok_and(|a| a.contains("/after-rotation-"))
    })
}

#[test]
fn sigusr1_reopens_the_log_files() {
    let p = Prefork::start(Setup::new(1));
    let dir = p.dir().to_owned();
    assert!(serves(&p));
    let reopened = rotate_logs_and_wait_for_reopen(&p, &dir, || p.signal(Signal::SIGUSR1));
    assert!(reopened, "the access log was not reopened\n{}", p.logs());
    // From then on, every line goes to the new file.
    let r = http::get(p.port(), prefork::PROBE_HOST, "/after-reopen").expect("request");
    assert_eq!(r.status, 200);
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(dir.join("access.log"))
                .is_ok_and(|a| a.contains("/after-reopen"))
        }),
        "{}",
        p.logs()
    );
    let rotated = std::fs::read_to_string(dir.join("access.log.1")).unwrap_or_default();
    assert!(
        !rotated.contains("/after-reopen"),
        "a line went to the rotated file"
    );
    // The master reopens its error log too: make it write a line.
    p.signal(Signal::SIGTTIN);
    assert!(
        wait_until(Duration::from_secs(10), || dir.join("error.log").exists()),
        "the error log was not reopened\n{}",
        p.logs()
    );
}

/// `prefork -s reopen` is nginx's name for SIGUSR1 (logrotate's
/// `postrotate` line), as `reload`, `quit` and `stop` name the others.
#[test]
fn signal_reopen_reopens_the_log_files() {
    let p = Prefork::start(Setup::new(1));
    let dir = p.dir().to_owned();
    assert!(serves(&p));
    let reopened = rotate_logs_and_wait_for_reopen(&p, &dir, || {
        let out = p.cli(&["-s", "reopen"]);
        assert!(
            out.status.success(),
            "-s reopen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("SIGUSR1"), "-s reopen printed {said:?}");
    });
    assert!(reopened, "the access log was not reopened\n{}", p.logs());
}

#[test]
fn sigusr1_lets_unprivileged_workers_reopen_logs_in_a_root_owned_directory() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED sigusr1_lets_unprivileged_workers_reopen_logs_in_a_root_owned_directory: not running as root");
        return;
    }
    let Some(nobody) = nix::unistd::User::from_name("nobody").ok().flatten() else {
        eprintln!("SKIPPED sigusr1_lets_unprivileged_workers_reopen_logs_in_a_root_owned_directory: no user `nobody`");
        return;
    };
    // logrotate's rename leaves no file behind, and the workers cannot
    // create one in a directory only root may write to.
    let dir = prefork::dir_with_logs_for_any_user();
    let p = Prefork::start_in(dir, Setup::new(1).top("user = \"nobody\""));
    let dir = p.dir().to_owned();
    assert!(serves(&p));
    let reopened = rotate_logs_and_wait_for_reopen(&p, &dir, || p.signal(Signal::SIGUSR1));
    assert!(
        reopened,
        "the worker did not reopen its access log\n{}",
        p.logs()
    );
    let owner = std::fs::metadata(dir.join("access.log")).unwrap().uid();
    assert_eq!(owner, nobody.uid.as_raw(), "the new access log's owner");
    // The worker's error log too: a hot reload makes it write a line.
    assert!(p.cli(&["-s", "reload"]).status.success(), "{}", p.logs());
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(dir.join("error.log")).is_ok_and(|e| {
                e.lines()
                    .any(|l| l.contains("role: worker") && l.contains("configuration replaced"))
            })
        }),
        "the worker did not reopen its error log\n{}",
        p.logs()
    );
}

#[test]
fn a_failed_log_reopen_is_reported_and_lines_go_on_to_the_file_kept() {
    let dir = tempfile::Builder::new()
        .prefix("prefork-test-")
        .tempdir()
        .unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let p = Prefork::start_in(
        dir,
        Setup::new(1).body(&format!(
            r#"
[[routes]]
host = "r.test"
access_log = "{}/route.log"
respond = {{ status = 200, body = "r\n" }}
"#,
            logs.display()
        )),
    );
    let get = |path: &str| http::get(p.port(), "r.test", path).is_ok_and(|r| r.status == 200);
    assert!(get("/before"));
    let kept = p.dir().join("logs.old");
    // The directory goes away (an operator's mistake, a volume unmounted):
    // the file cannot be opened again at its path.
    std::fs::rename(&logs, &kept).unwrap();
    p.expect_log_errors();
    p.signal(Signal::SIGUSR1);
    let mut sent = 0;
    let reported = wait_until(Duration::from_secs(10), || {
        sent += 1;
        assert!(get(&format!("/after-{sent}")));
        p.error_log()
            .lines()
            .any(|l| l.contains("role: worker") && l.contains("cannot reopen"))
    });
    assert!(reported, "the failed reopen was not reported\n{}", p.logs());
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(kept.join("route.log"))
                .is_ok_and(|a| a.contains(&format!("/after-{sent}")))
        }),
        "the lines were not kept in the file open before\n{}",
        p.logs()
    );
}

/// A copy of the binary under test in the test's directory, which a test
/// may replace on disk before a binary upgrade.
fn private_binary(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("prefork-under-test");
    std::fs::copy(BIN, &path).expect("copy the binary");
    path
}

/// Replaces the file `exe` (in `dir`) with a program that exits at once,
/// as a package update would replace it: renamed into place.
fn replace_with_broken(dir: &std::path::Path, exe: &std::path::Path) {
    let broken = dir.join("broken");
    std::fs::write(&broken, "#!/bin/sh\nexit 1\n").expect("write");
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    std::fs::rename(&broken, exe).expect("replace the binary");
}

#[test]
fn a_binary_upgrade_swaps_the_master_with_zero_failed_requests() {
    let dir = tempfile::Builder::new()
        .prefix("prefork-test-")
        .tempdir()
        .expect("temp dir");
    let exe = private_binary(dir.path());
    let a = origins::minihttp("upgraded");
    // With an admin listener: the new master takes it over with the others.
    let admin = prefork::free_port();
    let body = format!(
        "[admin]\naddr = \"127.0.0.1:{admin}\"\n{}",
        routes_to("a", a)
    );
    let mut p = Prefork::start_in(dir, Setup::new(2).exe(&exe).body(&body));
    let old_workers = p.workers();

    let client = ClientLoop::start(p.port());
    assert!(wait_until(Duration::from_secs(5), || client.count() >= 20));
    let (new_master, new_workers) = p.binary_upgrade();
    assert!(wait_until(Duration::from_secs(5), || old_workers
        .iter()
        .all(|w| !w.is_alive())));

    client.wait_more(20, &p, "the upgrade");
    let served = client.finish_without_failures(&p, "the upgrade");
    assert_eq!(new_workers.len(), 2, "{new_workers:?}");
    assert!(
        prefork::process(new_master).is_some(),
        "the new master runs"
    );
    assert_eq!(p.pid_file_pid(), Some(new_master));
    // The control socket and the admin listener are the new master's now.
    assert_eq!(
        p.status_json()["master_pid"].as_i64(),
        Some(i64::from(new_master))
    );
    let health = http::get(admin, "admin", "/healthz").expect("the admin listener answers");
    assert_eq!(health.status, 200);
    // `-s` now reaches the new master.
    let out = p.cli(&["-s", "quit"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        wait_until(Duration::from_secs(10), || prefork::process(new_master)
            .is_none()),
        "the new master did not stop on -s quit\n{}",
        p.logs()
    );
    eprintln!(
        "{} requests during the binary upgrade, none failed",
        served.len()
    );
}

/// The session-ticket key each master said it seals with, in the order
/// they said it.
fn ticket_keys_logged(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("session-ticket keys"))
        .filter_map(|l| l.split("key: ").nth(1))
        .map(|k| k.chars().take(8).collect())
        .collect()
}

#[test]
fn a_binary_upgrade_hands_the_session_ticket_keys_to_the_new_master() {
    let dir = tempfile::Builder::new()
        .prefix("prefork-test-")
        .tempdir()
        .expect("temp dir");
    let exe = private_binary(dir.path());
    let a = origins::minihttp("upgraded");
    let mut p = Prefork::start_in(dir, Setup::new(1).exe(&exe).body(&routes_to("a", a)));
    let made = wait_for(Duration::from_secs(5), || {
        let made = ticket_keys_logged(&p.error_log());
        (!made.is_empty()).then_some(made)
    })
    .unwrap_or_else(|| panic!("no session-ticket keys logged\n{}", p.logs()));
    assert_eq!(made.len(), 1, "{}", p.logs());
    assert!(p.error_log().contains("session-ticket keys made"));

    p.binary_upgrade();
    assert!(
        wait_until(Duration::from_secs(5), || p
            .error_log()
            .contains("session-ticket keys taken from the old master")),
        "the new master made keys of its own\n{}",
        p.logs()
    );
    assert_eq!(
        ticket_keys_logged(&p.error_log()),
        [made[0].clone(), made[0].clone()]
    );
    let r = http::get(p.port(), "app.local", "/").expect("the new master serves");
    assert_eq!(r.header("x-origin"), Some("upgraded"));
}

#[test]
fn session_ticket_keys_rotate_on_schedule_while_the_workers_serve() {
    let a = origins::minihttp("rotating");
    let p = Prefork::start(
        Setup::new(2)
            .top("tls_session_timeout = \"1s\"")
            .body(&routes_to("a", a)),
    );
    let workers = p.workers();
    let keys = wait_for(Duration::from_secs(10), || {
        let keys = ticket_keys_logged(&p.error_log());
        (keys.len() >= 3).then_some(keys)
    })
    .unwrap_or_else(|| panic!("the keys did not rotate every second\n{}", p.logs()));
    assert!(keys.windows(2).all(|k| k[0] != k[1]), "{keys:?}");
    let r = http::get(p.port(), "app.local", "/").expect("still serving");
    assert_eq!(r.header("x-origin"), Some("rotating"));
    assert_eq!(pids(&p.workers()), pids(&workers), "no worker replaced");
}

#[test]
fn a_failed_binary_upgrade_leaves_the_old_master_serving() {
    let dir = tempfile::Builder::new()
        .prefix("prefork-test-")
        .tempdir()
        .expect("temp dir");
    let exe = private_binary(dir.path());
    let a = origins::minihttp("kept");
    let p = Prefork::start_in(dir, Setup::new(1).exe(&exe).body(&routes_to("a", a)));
    p.expect_log_errors();
    let workers = p.workers();
    // The "new binary" fails at once.
    replace_with_broken(p.dir(), &exe);
    p.signal(Signal::SIGUSR2);
    assert!(
        wait_until(Duration::from_secs(10), || p
            .error_log()
            .contains("binary upgrade failed")),
        "the failure was not logged\n{}",
        p.logs()
    );
    assert_eq!(p.pid_file_pid(), Some(p.master_pid()));
    assert_eq!(pids(&p.workers()), pids(&workers));
    let r = http::get(p.port(), "app.local", "/").expect("still serving");
    assert_eq!(r.header("x-origin"), Some("kept"));
}

/// `status` asked directly on a control socket file; `None` if nobody
/// answers there.
fn status_at(socket: &std::path::Path) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"status\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    serde_json::from_str(&answer).ok()
}

/// Replaces the binary at `exe` (already running as the old master) with a
/// script that waits for a line on a FIFO before it runs the binary, so a
/// new master started by SIGUSR2 begins only when the test says. Returns
/// the FIFO, opened read-write so that opening it never blocks: writing a
/// line lets the new master start; dropping it unwritten makes it exit.
fn gate_the_binary(exe: &std::path::Path) -> std::fs::File {
    let dir = exe.parent().expect("the binary's directory");
    let real = dir.join("prefork-behind-the-gate");
    let gate = dir.join("gate");
    let script = dir.join("gate.sh");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    std::fs::rename(exe, &real).expect("move the binary aside");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nread go < '{}' && exec '{}' \"$@\"\nexit 1\n",
            gate.display(),
            real.display()
        ),
    )
    .expect("write the gate script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    std::fs::rename(&script, exe).expect("put the gate in the binary's place");
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&gate)
        .expect("open the gate")
}

/// A stop that reaches the old master just as the new one is ready: the
/// new master must not have taken the pid file and the control socket yet
/// (the old one may still give up on it and kill it), and whichever way
/// the old master decides, the pid file and the control socket end up
/// naming a live master or nothing.
#[test]
fn a_stop_racing_the_hand_over_leaves_a_consistent_master() {
    let dir = tempfile::Builder::new()
        .prefix("prefork-test-")
        .tempdir()
        .expect("temp dir");
    let exe = private_binary(dir.path());
    let mut p = Prefork::start_in(dir, Setup::new(1).exe(&exe));
    // The new master waits at the gate until the old one is frozen: on a
    // loaded machine it could otherwise be ready, and handed over to,
    // before the SIGSTOP below lands.
    let mut gate = gate_the_binary(&exe);
    let old = p.master_pid();
    let socket = p.dir().join("prefork.sock");
    p.signal(Signal::SIGUSR2);
    let new = crate::support::wait_for(Duration::from_secs(10), || {
        prefork::children(old)
            .into_iter()
            .find(|c| c.cmdline.get(1).is_none_or(|a| a != "worker"))
    })
    .unwrap_or_else(|| panic!("no new master started\n{}", p.logs()))
    .pid;
    p.track(new);
    // Freeze the old master: it can neither hand over nor give up now.
    kill(Pid::from_raw(old), Signal::SIGSTOP).expect("SIGSTOP the old master");
    let frozen = prefork::Continue(old);
    assert!(
        wait_until(Duration::from_secs(5), || prefork::is_stopped(old)),
        "the old master did not stop\n{}",
        p.logs()
    );
    gate.write_all(b"go\n").expect("open the gate");
    let beside = p.dir().join(format!("prefork.sock.{new}"));
    // The new master answers `status` from its loop, so once it reports
    // its worker Ready it has done whatever it does when it serves.
    let ready = |s: &serde_json::Value| {
        s["master_pid"].as_i64() == Some(i64::from(new))
            && s["workers"]
                .as_array()
                .is_some_and(|w| w.len() == 1 && w[0]["state"] == "ready")
    };
    let served = wait_until(Duration::from_secs(20), || {
        p.workers_of(new);
        // The frozen old master would leave a question on `socket` unanswered.
        let asked = if p.pid_file_pid() == Some(new) {
            &socket
        } else {
            &beside
        };
        status_at(asked).is_some_and(|s| ready(&s))
    });
    assert!(served, "the new master never served\n{}", p.logs());
    assert_eq!(
        p.pid_file_pid(),
        Some(old),
        "the new master took the pid file before the old one handed over\n{}",
        p.logs()
    );
    assert!(
        beside.exists(),
        "the new master took the control socket before the old one handed over"
    );

    kill(Pid::from_raw(old), Signal::SIGTERM).expect("SIGTERM the old master");
    drop(frozen);
    p.wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("the old master did not exit\n{}", p.logs()));
    if prefork::process(new).is_some() {
        // The old master handed over first: the new one is in charge.
        assert!(
            wait_until(Duration::from_secs(10), || p.pid_file_pid() == Some(new)),
            "the pid file does not name the new master\n{}",
            p.logs()
        );
        let status = status_at(&socket).expect("the new master answers");
        assert_eq!(status["master_pid"].as_i64(), Some(i64::from(new)));
    } else {
        // The stop came first: it took the new master along, and nothing
        // names a master any more.
        assert_eq!(p.pid_file_pid(), None, "a pid file names a dead master");
        assert!(
            !socket.exists(),
            "a control socket file is left behind\n{}",
            p.logs()
        );
    }
}

#[test]
fn a_worker_restarted_after_the_binary_file_was_replaced_runs_the_masters_own_image() {
    let dir = tempfile::Builder::new()
        .prefix("prefork-test-")
        .tempdir()
        .expect("temp dir");
    let exe = private_binary(dir.path());
    let a = origins::minihttp("same-image");
    let p = Prefork::start_in(dir, Setup::new(1).exe(&exe).body(&routes_to("a", a)));
    let victim = p.workers()[0].clone();
    // A package update replaces the file on disk with one that cannot
    // serve: only a binary upgrade may start it.
    replace_with_broken(p.dir(), &exe);

    kill(Pid::from_raw(victim.pid), Signal::SIGKILL).expect("kill the worker");
    let restarted = p
        .wait_workers(1, Duration::from_secs(10), |ws| {
            ws.iter()
                .any(|w| w.pid != victim.pid && p.master_saw_ready(w.pid))
        })
        .unwrap_or_else(|| panic!("no worker restarted and ready\n{}", p.logs()));
    let worker = restarted[0].pid;
    // It runs the image the master started from, whose file is gone.
    let image = std::fs::read_link(format!("/proc/{worker}/exe")).expect("the worker's image");
    assert_eq!(
        image.to_string_lossy(),
        format!("{} (deleted)", exe.display()),
        "the restarted worker should run the master's own image"
    );
    // ps shows the binary's path, not the descriptor it was started from,
    // which the worker closed as it started.
    assert_eq!(restarted[0].cmdline[0], exe.to_string_lossy());
    let open: Vec<_> = std::fs::read_dir(format!("/proc/{worker}/fd"))
        .expect("the worker's descriptors")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .collect();
    assert!(
        !open.contains(&image),
        "the worker keeps its image open: {open:?}"
    );
    let r = http::get(p.port(), "app.local", "/").expect("the restarted worker serves");
    assert_eq!(r.status, 200);
}
