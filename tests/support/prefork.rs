//! Runs the real `prefork` binary: config in a temp dir, free ports, start,
//! readiness by condition, worker listing from /proc, signals by pid, logs,
//! and a `Drop` that stops everything and fails the test if a process was
//! left behind, a log shows a panic, or the error log holds an error the test
//! did not expect.

use super::http;
use super::{wait_for, wait_until};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_prefork");

/// How long a start may take until every worker serves (a debug build on a
/// busy two-core machine).
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the master may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long workers may outlive their master.
const ORPHAN_TIMEOUT: Duration = Duration::from_secs(3);
/// Host of the route the harness adds to every config for its readiness
/// probe (a fixed response, so probes never reach a test's origins).
pub const PROBE_HOST: &str = "readiness-probe.invalid";

/// Set this variable to keep each test's directory (config, logs) for
/// inspection.
pub const KEEP_DIRS_VAR: &str = "PREFORK_TEST_KEEP_DIRS";

/// A free loopback port (bound and released; the caller binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("pick a free port")
        .port()
}

/// What to start: worker count, extra top-level keys and the rest of the
/// config (upstreams, routes). The harness adds `pid_file`, `[log]` and
/// `[[listen]]` itself.
#[derive(Clone)]
pub struct Setup {
    workers: usize,
    top: String,
    body: String,
    env: Vec<(String, String)>,
    exe: Option<PathBuf>,
    /// Extra keys of the harness's `[[listen]]` table.
    listen: String,
    /// Extra keys of the harness's `[log]` table.
    log: String,
    /// An `[admin]` listener on a port the harness picks on each try.
    admin: bool,
}

impl Setup {
    pub fn new(workers: usize) -> Setup {
        Setup {
            workers,
            top: "shutdown_timeout = \"10s\"\n".into(),
            body: String::new(),
            env: Vec::new(),
            exe: None,
            listen: String::new(),
            log: String::new(),
            admin: false,
        }
    }

    /// Adds a variable to the master's environment (its workers inherit it).
    pub fn env(mut self, key: &str, value: &str) -> Setup {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Runs this binary instead of the one under test (a copy a test may
    /// replace, for binary upgrades).
    pub fn exe(mut self, path: &Path) -> Setup {
        self.exe = Some(path.to_owned());
        self
    }

    /// Sets `shutdown_timeout` (10 s otherwise).
    pub fn shutdown_timeout(mut self, value: &str) -> Setup {
        self.top = self.top.replacen(
            "shutdown_timeout = \"10s\"",
            &format!("shutdown_timeout = \"{value}\""),
            1,
        );
        self
    }

    /// Adds a top-level line (`user = "nobody"`) before any table.
    pub fn top(mut self, line: &str) -> Setup {
        self.top.push_str(line);
        self.top.push('\n');
        self
    }

    /// Adds a key to the harness's `[log]` table.
    pub fn log(mut self, line: &str) -> Setup {
        self.log.push_str(line);
        self.log.push('\n');
        self
    }

    /// Gives the harness's listener one `SO_REUSEPORT` socket per slot.
    pub fn reuseport(mut self) -> Setup {
        self.listen.push_str("reuseport = true\n");
        self
    }

    /// Lets the harness's listener take HTTP/2 too (h2c by its preface).
    pub fn http2(mut self) -> Setup {
        self.listen.push_str("http2 = true\n");
        self
    }

    /// Adds an `[admin]` listener on a free port, picked again with the
    /// listener's on each try (see [`Prefork::admin_port`]).
    pub fn admin(mut self) -> Setup {
        self.admin = true;
        self
    }

    /// Sets the tables: upstreams and routes.
    pub fn body(mut self, toml: &str) -> Setup {
        self.body = toml.to_owned();
        self
    }
}

/// One process in the master's process tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    /// Clock ticks since boot when it started: tells a reused pid apart.
    pub start_time: u64,
    pub cmdline: Vec<String>,
}

impl Proc {
    /// The value following `flag` on the command line.
    pub fn arg(&self, flag: &str) -> Option<&str> {
        let i = self.cmdline.iter().position(|a| a == flag)?;
        self.cmdline.get(i + 1).map(String::as_str)
    }

    /// `--slot N`.
    pub fn slot(&self) -> Option<u32> {
        self.arg("--slot")?.parse().ok()
    }

    /// `--generation G`.
    pub fn generation(&self) -> Option<u64> {
        self.arg("--generation")?.parse().ok()
    }

    pub fn is_alive(&self) -> bool {
        matches!(proc_stat(self.pid), Some(s) if s.start_time == self.start_time && s.running())
    }
}

struct Stat {
    state: char,
    ppid: i32,
    start_time: u64,
}

impl Stat {
    /// Not a zombie: a dead child that nobody reaped yet is not "alive".
    fn running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

fn proc_stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ..." where comm may hold spaces and parens.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        // starttime is field 22 of stat; `fields` starts at field 3.
        start_time: fields.get(19)?.parse().ok()?,
    })
}

fn cmdline(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `pid` is stopped by a signal (state `T`, after SIGSTOP).
pub fn is_stopped(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|s| s.state == 'T')
}

/// A live (non-zombie) process.
pub fn process(pid: i32) -> Option<Proc> {
    proc_stat(pid).filter(|s| s.running()).map(|s| Proc {
        pid,
        start_time: s.start_time,
        cmdline: cmdline(pid),
    })
}

/// Live (non-zombie) children of `parent`.
pub fn children(parent: i32) -> Vec<Proc> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        match proc_stat(pid) {
            Some(s) if s.ppid == parent && s.running() => out.push(Proc {
                pid,
                start_time: s.start_time,
                cmdline: cmdline(pid),
            }),
            _ => {}
        }
    }
    out.sort_by_key(|p| p.pid);
    out
}

/// The real and effective uid of a process, from /proc/PID/status.
pub fn uids(pid: i32) -> Option<(u32, u32)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    let mut ids = line["Uid:".len()..]
        .split_whitespace()
        .map(|v| v.parse::<u32>());
    Some((ids.next()?.ok()?, ids.next()?.ok()?))
}

/// Spawns with `spawn`, again while the executable is busy (ETXTBSY): a
/// test that just copied the binary (a binary upgrade) may exec it while
/// another test thread's fork still holds the copy's write descriptor, until
/// that child's own exec closes it.
fn spawn_retrying_busy(
    mut spawn: impl FnMut() -> std::io::Result<Child>,
) -> std::io::Result<Child> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match spawn() {
            Err(e)
                if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            done => return done,
        }
    }
}

/// Runs `prefork ARGS` to completion (killed after `timeout`).
pub fn run(args: &[&str], timeout: Duration) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn prefork");
    let pid = child.id() as i32;
    // Readers so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut buf);
        buf
    });
    let status = match wait_for(timeout, || child.try_wait().ok().flatten()) {
        Some(status) => status,
        None => {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = child.wait();
            panic!(
                "`prefork {}` did not finish within {timeout:?}",
                args.join(" ")
            );
        }
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// A running prefork master and its workers.
pub struct Prefork {
    dir: TempDir,
    setup: Setup,
    port: u16,
    /// The `[admin]` listener's port, if [`Setup::admin`].
    admin_port: Option<u16>,
    child: Child,
    /// Every worker ever seen, by pid, to check none is left behind.
    seen: Mutex<BTreeMap<i32, Proc>>,
    /// Whether error-level lines in the error log are expected (a test of
    /// 502, 504, a rejected reload...). Critical lines never are.
    errors_expected: AtomicBool,
}

/// A test directory laid out as an admin lays out /var/log for workers
/// running as another user: the directory only its owner may write to, the
/// log files (`error.log`, `access.log`) open to every user.
pub fn dir_with_logs_for_any_user() -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("prefork-test-")
        .tempdir()
        .expect("temp dir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod dir");
    for log in ["error.log", "access.log"] {
        let path = dir.path().join(log);
        fs::write(&path, "").expect("create log");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).expect("chmod log");
    }
    dir
}

impl Prefork {
    /// Starts prefork and waits until it serves with all its workers.
    pub fn start(setup: Setup) -> Prefork {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("prefork-test-")
            .tempdir()
            .expect("temp dir");
        // Workers of a root master run as nobody: they open their logs here.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod dir");
        Prefork::start_in(dir, setup)
    }

    /// As [`Prefork::start`], in a directory the caller prepared.
    pub fn start_in(mut dir: TempDir, setup: Setup) -> Prefork {
        let mut last = String::new();
        // The port is free when picked, but another socket (an upstream
        // connection's ephemeral port) may take it before prefork binds.
        for _ in 0..3 {
            let port = free_port();
            let admin_port = setup.admin.then(free_port);
            fs::write(
                dir.path().join("prefork.toml"),
                config_text(dir.path(), port, admin_port, &setup),
            )
            .expect("write the config");
            let child = spawn_retrying_busy(|| {
                Command::new(setup.exe.as_deref().unwrap_or(Path::new(BIN)))
                    .envs(setup.env.iter().map(|(k, v)| (k, v)))
                    .arg("-c")
                    .arg(dir.path().join("prefork.toml"))
                    .stdin(Stdio::null())
                    .stdout(
                        fs::File::create(dir.path().join("master.stdout")).expect("stdout file"),
                    )
                    .stderr(
                        fs::File::create(dir.path().join("master.stderr")).expect("stderr file"),
                    )
                    .spawn()
            })
            .expect("spawn prefork");
            let mut p = Prefork {
                dir,
                setup: setup.clone(),
                port,
                admin_port,
                child,
                seen: Mutex::new(BTreeMap::new()),
                errors_expected: AtomicBool::new(false),
            };
            match p.wait_ready() {
                Ok(()) => return p,
                Err(why) => {
                    let logs = p.logs();
                    let in_use = logs.to_ascii_lowercase().contains("in use");
                    if !in_use {
                        // Drop stops and checks what was started.
                        panic!("prefork did not become ready: {why}\n{logs}");
                    }
                    last = format!("{why}\n{logs}");
                    p.stop_all();
                    dir = std::mem::replace(&mut p.dir, TempDir::new().expect("temp dir"));
                    // The next try starts with fresh logs.
                    for name in ["error.log", "access.log", "prefork.pid"] {
                        let _ = fs::remove_file(dir.path().join(name));
                    }
                }
            }
        }
        panic!("prefork could not bind a free port in 3 tries: {last}");
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let want = self.setup.workers;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("the master exited early ({status})"));
            }
            let pid_ok = self.pid_file_pid() == Some(self.master_pid());
            let workers = self.workers();
            // A worker accepts as soon as it has told the master it is ready,
            // before the master has read that message: wait for the master's
            // own "worker ready" line too, so /healthz and `status` agree.
            if pid_ok
                && workers.len() == want
                && workers.iter().all(|w| self.master_saw_ready(w.pid))
                && http::get(self.port, PROBE_HOST, "/").is_ok_and(|r| r.status == 200)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not ready after {START_TIMEOUT:?}: pid file names {:?} (master {}), {} of {want} workers",
                    self.pid_file_pid(),
                    self.master_pid(),
                    workers.len()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `[admin]` listener's port (see [`Setup::admin`]).
    pub fn admin_port(&self) -> u16 {
        self.admin_port.expect("started with Setup::admin")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("prefork.toml")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.dir.path().join("prefork.pid")
    }

    pub fn error_log_path(&self) -> PathBuf {
        self.dir.path().join("error.log")
    }

    pub fn master_pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The pid the pid file names, if it exists and parses.
    pub fn pid_file_pid(&self) -> Option<i32> {
        fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Rewrites the config with new tables (same port, logs and top keys).
    pub fn write_config(&self, body: &str) {
        let setup = self.setup.clone().body(body);
        fs::write(
            self.config_path(),
            config_text(self.dir(), self.port, self.admin_port, &setup),
        )
        .expect("write the config");
    }

    /// Overwrites the config file with exactly `text`.
    pub fn write_raw_config(&self, text: &str) {
        fs::write(self.config_path(), text).expect("write the config");
    }

    /// The config text the harness would write for `body`.
    pub fn config_for(&self, body: &str) -> String {
        config_text(
            self.dir(),
            self.port,
            self.admin_port,
            &self.setup.clone().body(body),
        )
    }

    /// The master's live worker processes, recorded (with any other child,
    /// such as a new master during a binary upgrade) for the leak check.
    pub fn workers(&self) -> Vec<Proc> {
        self.workers_of(self.master_pid())
    }

    /// The live worker processes of `master`, recorded for the leak check.
    pub fn workers_of(&self, master: i32) -> Vec<Proc> {
        let list = children(master);
        let mut seen = self.seen.lock().unwrap();
        for p in &list {
            seen.entry(p.pid).or_insert_with(|| p.clone());
        }
        list.into_iter()
            .filter(|p| p.cmdline.get(1).is_some_and(|a| a == "worker"))
            .collect()
    }

    /// Records a process (a master started by a binary upgrade) for the
    /// leak check.
    pub fn track(&self, pid: i32) {
        if let Some(p) = process(pid) {
            self.seen.lock().unwrap().entry(pid).or_insert(p);
        }
    }

    /// Waits until exactly `n` workers run and `done` holds for the list.
    pub fn wait_workers(
        &self,
        n: usize,
        timeout: Duration,
        done: impl Fn(&[Proc]) -> bool,
    ) -> Option<Vec<Proc>> {
        wait_for(timeout, || {
            let w = self.workers();
            (w.len() == n && done(&w)).then_some(w)
        })
    }

    /// Declares that this test makes prefork log errors, so the `Drop` check
    /// does not fail on them.
    pub fn expect_log_errors(&self) {
        self.errors_expected.store(true, Ordering::SeqCst);
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.master_pid()), signal)
            .unwrap_or_else(|e| panic!("kill({}, {signal}): {e}", self.master_pid()));
    }

    /// Performs a binary upgrade (SIGUSR2): waits until the pid file names
    /// a new master (tracked for the leak check) and the old master has
    /// exited successfully. Returns the new master's pid and its workers.
    pub fn binary_upgrade(&mut self) -> (i32, Vec<Proc>) {
        let old_master = self.master_pid();
        self.signal(Signal::SIGUSR2);
        let new_master = wait_for(Duration::from_secs(20), || {
            self.pid_file_pid().filter(|pid| *pid != old_master)
        })
        .unwrap_or_else(|| panic!("the pid file never named a new master\n{}", self.logs()));
        self.track(new_master);
        let new_workers = self.workers_of(new_master);
        let status = self
            .wait_exit(Duration::from_secs(15))
            .unwrap_or_else(|| panic!("the old master did not exit\n{}", self.logs()));
        assert!(status.success(), "old master: {status}");
        (new_master, new_workers)
    }

    /// Waits for the master to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_for(timeout, || self.child.try_wait().ok().flatten())
    }

    /// Whether the master still runs.
    pub fn master_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Runs `prefork ARGS -c <this config>` (for `-s` and `-t`).
    pub fn cli(&self, args: &[&str]) -> Output {
        let config = self.config_path();
        let mut all: Vec<&str> = args.to_vec();
        all.push("-c");
        all.push(config.to_str().expect("utf-8 path"));
        run(&all, Duration::from_secs(10))
    }

    /// Whether the master has logged worker `pid` as Ready.
    pub fn master_saw_ready(&self, pid: i32) -> bool {
        let needle = format!("worker_pid: {pid},");
        self.error_log().lines().any(|l| {
            l.contains("worker ready") && l.contains("role: master") && l.contains(&needle)
        })
    }

    pub fn error_log(&self) -> String {
        read_lossy(&self.error_log_path())
    }

    pub fn access_log(&self) -> String {
        read_lossy(&self.dir.path().join("access.log"))
    }

    /// `prefork status --json`, parsed.
    pub fn status_json(&self) -> serde_json::Value {
        let out = self.cli(&["status", "--json"]);
        assert!(
            out.status.success(),
            "prefork status --json failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Polls `prefork status --json` until `done` holds for it.
    pub fn wait_status(
        &self,
        timeout: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        wait_for(timeout, || Some(self.status_json()).filter(|s| done(s)))
    }

    /// Runs `prefork -s reload`, which must succeed; returns its output.
    pub fn reload_ok(&self) -> Output {
        let out = self.cli(&["-s", "reload"]);
        assert!(
            out.status.success(),
            "-s reload: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs `prefork -s reload`, which must fail (exit 1); returns its
    /// stderr.
    pub fn reload_refused(&self) -> String {
        let out = self.cli(&["-s", "reload"]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "-s reload: {stderr}");
        stderr
    }

    /// The parked connections `prefork status` counts, over every worker.
    pub fn parked(&self) -> u64 {
        parked_in(&self.status_json())
    }

    /// Waits (up to `timeout`: a connection parks after a second idle and
    /// workers report once a second) until `n` connections are parked.
    pub fn wait_parked(&self, n: u64, timeout: Duration) {
        assert!(
            self.wait_status(timeout, |s| parked_in(s) == n).is_some(),
            "expected {n} parked connections, status says {}\n{}",
            self.parked(),
            self.logs()
        );
    }

    /// `count` keep-alive connections, each after one request for `host`
    /// answered with `body`.
    pub fn idle_connections(&self, count: usize, host: &str, body: &str) -> Vec<http::Conn> {
        (0..count)
            .map(|_| {
                let mut c = http::Conn::connect(self.addr()).expect("connect");
                let r = c.get(host, "/").expect("a response");
                assert_eq!((r.status, r.text().as_str()), (200, body));
                c
            })
            .collect()
    }

    /// The master's stdout, the error log and the end of the access log, for
    /// failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (name, keep) in [
            ("master.stderr", 6000),
            ("master.stdout", 2000),
            ("error.log", 8000),
            ("access.log", 2000),
        ] {
            let text = read_lossy(&self.dir.path().join(name));
            let start = text.len().saturating_sub(keep);
            let start = (start..text.len())
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(text.len());
            let _ = write!(
                out,
                "----- {name} ({} bytes, last {keep}) -----\n{}\n",
                text.len(),
                &text[start..]
            );
        }
        out
    }

    /// SIGTERM the master (SIGKILL after a deadline), then make sure every
    /// worker ever seen is gone (SIGKILL stragglers). Returns the problems.
    fn stop_all(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        self.workers();
        if self.master_alive() {
            let _ = kill(Pid::from_raw(self.master_pid()), Signal::SIGTERM);
            if self.wait_exit(STOP_TIMEOUT).is_none() {
                problems.push(format!(
                    "the master (pid {}) did not exit within {STOP_TIMEOUT:?} of SIGTERM",
                    self.master_pid()
                ));
                let _ = kill(Pid::from_raw(self.master_pid()), Signal::SIGKILL);
                let _ = self.child.wait();
            }
        }
        // A master started by a binary upgrade outlives the first one: stop
        // it the same way, after noting its workers.
        let masters: Vec<Proc> = self
            .seen
            .lock()
            .unwrap()
            .values()
            .filter(|p| p.is_alive() && p.cmdline.get(1).is_none_or(|a| a != "worker"))
            .cloned()
            .collect();
        for m in masters {
            self.workers_of(m.pid);
            let _ = kill(Pid::from_raw(m.pid), Signal::SIGTERM);
            if !wait_until(STOP_TIMEOUT, || !m.is_alive()) {
                problems.push(format!(
                    "the new master (pid {}) did not exit within {STOP_TIMEOUT:?} of SIGTERM",
                    m.pid
                ));
            }
        }
        let seen: Vec<Proc> = self.seen.lock().unwrap().values().cloned().collect();
        if !wait_until(ORPHAN_TIMEOUT, || seen.iter().all(|p| !p.is_alive())) {
            for p in seen.iter().filter(|p| p.is_alive()) {
                problems.push(format!(
                    "process {} ({}) outlived its master by {ORPHAN_TIMEOUT:?}",
                    p.pid,
                    p.cmdline.join(" ")
                ));
                let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
            }
        }
        problems
    }
}

impl Drop for Prefork {
    fn drop(&mut self) {
        let mut problems = self.stop_all();
        for name in ["master.stderr", "master.stdout", "error.log"] {
            let text = read_lossy(&self.dir.path().join(name));
            if let Some(line) = text.lines().find(|l| l.contains("panicked at")) {
                problems.push(format!("{name} shows a panic: {line}"));
            }
        }
        let errors_expected = self.errors_expected.load(Ordering::SeqCst);
        for line in self.error_log().lines() {
            if line.contains(" CRIT ") || (line.contains(" ERRO ") && !errors_expected) {
                problems.push(format!("unexpected error in the error log: {line}"));
            }
        }
        if std::env::var_os(KEEP_DIRS_VAR).is_some() {
            let dir = std::mem::replace(&mut self.dir, TempDir::new().expect("temp dir"));
            eprintln!("kept test dir {}", dir.keep().display());
        }
        if !problems.is_empty() && !std::thread::panicking() {
            panic!("{}\n{}", problems.join("\n"), self.logs());
        }
    }
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn config_text(dir: &Path, port: u16, admin: Option<u16>, setup: &Setup) -> String {
    let d = dir.display();
    let admin = admin.map_or(String::new(), |port| {
        format!("\n[admin]\naddr = \"127.0.0.1:{port}\"\n")
    });
    format!(
        "# Written by the black-box test harness.\n\
         workers = {workers}\n\
         pid_file = \"{d}/prefork.pid\"\n\
         {top}\n\
         [log]\n\
         error_log = \"{d}/error.log\"\n\
         access_log = \"{d}/access.log\"\n\
         {log}\n\
         [[listen]]\n\
         addr = \"127.0.0.1:{port}\"\n\
         {listen}\n\
         {body}\n\
         \n\
         # The harness's readiness probe.\n\
         [[routes]]\n\
         host = \"{PROBE_HOST}\"\n\
         respond = {{ status = 200, body = \"ready\\n\" }}\n\
         {admin}",
        workers = setup.workers,
        top = setup.top,
        log = setup.log,
        body = setup.body,
        listen = setup.listen,
    )
}

/// Sends SIGCONT to a stopped process when dropped, even if the test fails.
pub struct Continue(pub i32);

impl Drop for Continue {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), Signal::SIGCONT);
    }
}

/// The parked connections of a `prefork status --json` report, over every
/// worker.
fn parked_in(status: &serde_json::Value) -> u64 {
    status["workers"].as_array().map_or(0, |ws| {
        ws.iter()
            .map(|w| w["parked_connections"].as_u64().unwrap_or(0))
            .sum()
    })
}
