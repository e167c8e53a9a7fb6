//! Running under systemd: the notifications a fake `NOTIFY_SOCKET` collects
//! across start, reloads, stop, a binary upgrade and the watchdog; socket
//! activation through `systemd-socket-activate`.

use crate::support::http;
use crate::support::prefork::{self, Setup, BIN, PROBE_HOST};
use crate::support::prefork::{Prefork, Proc};
use crate::support::wait_for;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long a notification may take to come (a debug build, busy cores).
const WAIT: Duration = Duration::from_secs(20);

/// A fake systemd notification socket: a datagram socket in a temp dir.
struct Notifications {
    _dir: TempDir,
    path: PathBuf,
    socket: UnixDatagram,
    /// Every message received so far, in order.
    got: Vec<String>,
}

impl Notifications {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        Notifications {
            _dir: dir,
            path,
            socket,
            got: Vec::new(),
        }
    }

    fn name(&self) -> &str {
        self.path.to_str().expect("utf-8 path")
    }

    /// Waits for the next message that starts with `prefix`, after those
    /// received so far.
    fn next(&mut self, prefix: &str) -> String {
        let from = self.got.len();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(m) = self.got[from..].iter().find(|m| m.starts_with(prefix)) {
                return m.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {prefix:?} notification within {WAIT:?}; got {:?}",
                self.got
            );
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.got
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }
}

/// `CLOCK_MONOTONIC` now, in microseconds.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec passed and nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Whether a process's environment names `variable`.
fn has_env(pid: i32, variable: &str) -> bool {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let prefix = format!("{variable}=");
    environ
        .split(|b| *b == 0)
        .any(|entry| entry.starts_with(prefix.as_bytes()))
}

fn assert_no_systemd_env(workers: &[Proc]) {
    for w in workers {
        for variable in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "LISTEN_PID", "LISTEN_FDS"] {
            assert!(
                !has_env(w.pid, variable),
                "worker {} sees {variable}",
                w.pid
            );
        }
    }
}

#[test]
fn systemd_hears_ready_each_reload_begin_and_outcome_and_the_stop() {
    let mut n = Notifications::new();
    let mut p = Prefork::start(Setup::new(2).env("NOTIFY_SOCKET", n.name()));
    let ready = n.next("READY=1");
    assert_eq!(ready, "READY=1\nSTATUS=serving");
    assert_eq!(n.got[0], ready, "nothing before READY=1: {:?}", n.got);
    assert_no_systemd_env(&p.workers());

    // In place.
    p.write_config("");
    let before = monotonic_usec();
    p.signal(Signal::SIGHUP);
    let reloading = n.next("RELOADING=1");
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC: {reloading:?}"));
    assert!(
        usec >= before && usec <= monotonic_usec(),
        "{usec} not between the signal and now"
    );
    let done = n.next("READY=1");
    assert_eq!(
        done,
        "READY=1\nSTATUS=reloaded: the workers of generation 1 took it in place"
    );

    // A new generation: done once it serves.
    let three = p.config_for("").replacen("workers = 2", "workers = 3", 1);
    p.write_raw_config(&three);
    p.signal(Signal::SIGHUP);
    n.next("RELOADING=1");
    let done = n.next("READY=1");
    assert_eq!(done, "READY=1\nSTATUS=reloaded: new generation 2 ready");
    let second = p
        .workers()
        .into_iter()
        .filter(|w| w.generation() == Some(2))
        .count();
    assert_eq!(second, 3, "generation 2 serves with every worker");

    // Refused, with the reason.
    p.expect_log_errors();
    p.write_raw_config("workers = 0\n");
    p.signal(Signal::SIGHUP);
    n.next("RELOADING=1");
    let refused = n.next("READY=1");
    assert!(
        refused.starts_with("READY=1\nSTATUS=reload refused: ") && refused.contains("workers"),
        "{refused:?}"
    );
    assert_eq!(
        refused.lines().count(),
        2,
        "STATUS is one line: {refused:?}"
    );

    p.write_raw_config(&three);
    p.signal(Signal::SIGQUIT);
    assert_eq!(n.next("STOPPING=1"), "STOPPING=1\nSTATUS=stopping");
    assert!(p.wait_exit(WAIT).is_some_and(|s| s.success()));
}

#[test]
fn the_watchdog_is_pinged_when_it_is_the_masters() {
    let mut n = Notifications::new();
    let p = Prefork::start(
        Setup::new(1)
            .env("NOTIFY_SOCKET", n.name())
            .env("WATCHDOG_USEC", "200000"),
    );
    for _ in 0..3 {
        assert_eq!(n.next("WATCHDOG=1"), "WATCHDOG=1");
    }
    assert!(p.error_log().contains("pinging the systemd watchdog"));
    assert_no_systemd_env(&p.workers());

    // Another process's watchdog (WATCHDOG_PID): not this master's to ping.
    let other = Notifications::new();
    let q = Prefork::start(
        Setup::new(1)
            .env("NOTIFY_SOCKET", other.name())
            .env("WATCHDOG_USEC", "200000")
            .env("WATCHDOG_PID", "1"),
    );
    assert!(!q.error_log().contains("pinging the systemd watchdog"));
}

#[test]
fn the_new_master_of_a_binary_upgrade_names_itself_main_pid_and_the_old_one_stays_quiet() {
    let mut n = Notifications::new();
    let mut p = Prefork::start(Setup::new(2).env("NOTIFY_SOCKET", n.name()));
    n.next("READY=1");
    let (new_master, new_workers) = p.binary_upgrade();
    let took_over = n.next("MAINPID=");
    assert_eq!(
        took_over,
        format!("MAINPID={new_master}\nREADY=1\nSTATUS=serving (took over from the old master)")
    );
    // The old master exited (binary_upgrade waited for it) without saying
    // STOPPING=1, which systemd would take for the service's stop.
    let ready_count = n.got.iter().filter(|m| m.contains("READY=1")).count();
    assert_eq!(ready_count, 2, "{:?}", n.got);
    assert!(!n.got.iter().any(|m| m.contains("STOPPING")), "{:?}", n.got);
    assert!(
        has_env(new_master, "NOTIFY_SOCKET"),
        "the new master notifies"
    );
    assert_no_systemd_env(&new_workers);
    kill(Pid::from_raw(new_master), Signal::SIGQUIT).expect("stop the new master");
    assert_eq!(n.next("STOPPING=1"), "STOPPING=1\nSTATUS=stopping");
}

/// A prefork started by `systemd-socket-activate`, killed when dropped
/// (and so is a new master a binary upgrade started).
struct Activated {
    dir: TempDir,
    child: Child,
}

impl Activated {
    /// Starts `systemd-socket-activate -l 127.0.0.1:PORT --fdname=web
    /// prefork -c FILE`, with `listen_port` in the config.
    fn start(port: u16, listen_port: u16, listen_extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        write_config(dir.path(), listen_port, 2, listen_extra);
        let child = Command::new("systemd-socket-activate")
            .arg("-l")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--fdname=web")
            .arg(BIN)
            .arg("-c")
            .arg(dir.path().join("prefork.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr")).expect("stderr"))
            .spawn()
            .expect("systemd-socket-activate");
        Activated { dir, child }
    }

    fn write_config(&self, listen_port: u16, workers: usize, listen_extra: &str) {
        write_config(self.dir.path(), listen_port, workers, listen_extra);
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    fn pid_file_pid(&self) -> Option<i32> {
        self.file("prefork.pid").trim().parse().ok()
    }

    /// Waits until a request on `port` is answered by prefork.
    fn served(&self, port: u16) {
        let served = wait_for(WAIT, || {
            http::get(port, PROBE_HOST, "/")
                .ok()
                .filter(|r| r.status == 200)
        })
        .unwrap_or_else(|| panic!("not served\n{}", self.file("error.log")));
        assert_eq!(served.body, b"activated\n");
    }
}

/// A config with one listener (and `listen_extra` keys in its table) and
/// the probe route, its files in `dir`.
fn write_config(dir: &Path, listen_port: u16, workers: usize, listen_extra: &str) {
    let d = dir.display();
    let config = format!(
        "workers = {workers}\npid_file = \"{d}/prefork.pid\"\ncontrol_socket = \"{d}/prefork.sock\"\n\
         [log]\nerror_log = \"{d}/error.log\"\n\
         [[listen]]\naddr = \"127.0.0.1:{listen_port}\"\n{listen_extra}\n\
         [[routes]]\nhost = \"{PROBE_HOST}\"\n\
         respond = {{ status = 200, body = \"activated\\n\" }}\n"
    );
    std::fs::write(dir.join("prefork.toml"), config).expect("config");
}

impl Drop for Activated {
    fn drop(&mut self) {
        let master = self.child.id() as i32;
        if let Some(other) = self.pid_file_pid().filter(|pid| *pid != master) {
            let _ = kill(Pid::from_raw(other), Signal::SIGKILL);
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(master), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

#[test]
fn a_socket_passed_by_systemd_socket_activate_is_served() {
    let port = prefork::free_port();
    let mut a = Activated::start(port, port, "");
    // systemd-socket-activate execs prefork at the first connection: this
    // request waits in the socket's queue meanwhile.
    a.served(port);
    let master = a.child.id() as i32;
    assert!(
        a.file("error.log")
            .contains("listening on the socket systemd passed"),
        "{}",
        a.file("error.log")
    );
    let workers = prefork::children(master);
    assert_eq!(workers.len(), 2, "{workers:?}");
    assert_no_systemd_env(&workers);
    kill(Pid::from_raw(master), Signal::SIGTERM).expect("stop");
    let status = wait_for(WAIT, || a.child.try_wait().ok().flatten()).expect("the master exits");
    assert!(status.success(), "{status}");
}

#[test]
fn a_passed_socket_matching_no_listen_entry_is_a_start_error_naming_it() {
    let port = prefork::free_port();
    let configured = prefork::free_port();
    let mut a = Activated::start(port, configured, "");
    // The connection that makes systemd-socket-activate start prefork (once
    // it listens).
    let _trigger = wait_for(WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .expect("systemd-socket-activate listens");
    let status = wait_for(WAIT, || a.child.try_wait().ok().flatten()).expect("prefork exits");
    assert!(!status.success());
    let stderr = a.file("stderr");
    assert!(
        stderr.contains(&format!(
            "prefork: socket activation: the socket passed for 127.0.0.1:{port} (fd 3 \"web\") matches no [[listen]] entry"
        )),
        "{stderr}"
    );
}

#[test]
fn an_activated_socket_stays_shared_across_a_reload_and_a_binary_upgrade() {
    let port = prefork::free_port();
    let mut a = Activated::start(port, port, "reuseport = true");
    a.served(port);
    let master = a.child.id() as i32;
    assert!(
        a.file("error.log").contains("`reuseport` is ignored"),
        "{}",
        a.file("error.log")
    );

    // A new generation keeps the activated socket.
    a.write_config(port, 3, "reuseport = true");
    kill(Pid::from_raw(master), Signal::SIGHUP).expect("reload");
    let second = wait_for(WAIT, || {
        let w = prefork::children(master);
        (w.iter().filter(|w| w.generation() == Some(2)).count() == 3).then_some(w)
    })
    .unwrap_or_else(|| panic!("no generation 2\n{}", a.file("error.log")));
    a.served(port);
    for w in second.iter().filter(|w| w.generation() == Some(2)) {
        let fds = std::fs::read_to_string(format!("/proc/{}/environ", w.pid)).unwrap_or_default();
        assert!(
            fds.contains(&format!("PREFORK_LISTEN_FDS=127.0.0.1:{port}\0")),
            "worker {} does not get the one shared socket: {fds:?}",
            w.pid
        );
    }

    // A binary upgrade hands it over, still shared.
    kill(Pid::from_raw(master), Signal::SIGUSR2).expect("upgrade");
    let new_master = wait_for(WAIT, || a.pid_file_pid().filter(|pid| *pid != master))
        .unwrap_or_else(|| panic!("no new master\n{}", a.file("error.log")));
    let status =
        wait_for(WAIT, || a.child.try_wait().ok().flatten()).expect("the old master exits");
    assert!(status.success(), "{status}");
    a.served(port);
    let workers = prefork::children(new_master);
    assert_eq!(workers.len(), 3, "{workers:?}");
    for w in &workers {
        let fds = std::fs::read_to_string(format!("/proc/{}/environ", w.pid)).unwrap_or_default();
        assert!(
            fds.contains(&format!("PREFORK_LISTEN_FDS=127.0.0.1:{port}\0")),
            "worker {} of the new master: {fds:?}",
            w.pid
        );
    }
    let activated_lines = a
        .file("error.log")
        .matches("listening on the socket systemd passed")
        .count();
    assert_eq!(activated_lines, 2, "both masters say so");
    kill(Pid::from_raw(new_master), Signal::SIGTERM).expect("stop");
    assert!(
        wait_for(WAIT, || prefork::process(new_master)
            .is_none()
            .then_some(()))
        .is_some(),
        "the new master exits"
    );
}
