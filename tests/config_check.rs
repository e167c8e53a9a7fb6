//! `prefork -t -c FILE`: exit 0 with a success message, or exit 1 with
//! `file:line: key: reason` on stderr.

use crate::support::http;
use crate::support::prefork::{self, free_port};
use crate::support::wait_for;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

fn check(path: &Path) -> (i32, String, String) {
    let out = prefork::run(&["-t", "-c", path.to_str().unwrap()], TIMEOUT);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn good_config(dir: &Path) -> String {
    format!(
        r#"workers = 2
pid_file = "{d}/never.pid"
shutdown_timeout = "5s"

[log]
error_log = "{d}/error.log"
access_log = "off"

[[listen]]
addr = "127.0.0.1:{port}"

[upstreams.app]
servers = ["127.0.0.1:3000", "127.0.0.1:3001"]
connect_timeout = "2s"
read_timeout = "60s"

[[routes]]
host = "app.local"
path = "/"
upstream = "app"

[[routes]]
host = "*.example.com"
path = "/api"
upstream = "app"

[[routes]]
host = "status.local"
respond = {{ status = 200, body = "ok\n" }}
"#,
        d = dir.display(),
        port = free_port()
    )
}

#[test]
fn check_accepts_a_good_config_without_starting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("good.toml");
    let text = good_config(dir.path());
    fs::write(&path, &text).unwrap();
    let port: u16 = text
        .lines()
        .find_map(|l| l.strip_prefix("addr = \"127.0.0.1:"))
        .and_then(|l| l.trim_end_matches('"').parse().ok())
        .unwrap();
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(!all.trim().is_empty(), "-t should print a success message");
    let lower = all.to_ascii_lowercase();
    assert!(
        ["ok", "success", "valid"].iter().any(|w| lower.contains(w))
            && !["invalid", "error"].iter().any(|w| lower.contains(w)),
        "-t should say the config is fine: {all:?}"
    );
    assert!(
        !dir.path().join("never.pid").exists(),
        "-t must not write the pid file"
    );
    // Nothing listens: -t checks, it does not start.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "-t left something listening on the configured port"
    );
}

#[test]
fn check_rejects_bad_configs_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_config(dir.path());
    // (name, config text, line of the problem, text that must follow
    // "file:line:" on stderr)
    let cases: Vec<(&str, String, usize, &str)> = vec![
        (
            "unknown upstream",
            good.replace(
                "upstream = \"app\"\n\n[[routes]]\nhost = \"*.example.com\"",
                "upstream = \"nope\"\n\n[[routes]]\nhost = \"*.example.com\"",
            ),
            line_of(&good, "upstream = \"app\""),
            "routes[0].upstream",
        ),
        (
            "bad duration",
            good.replace("shutdown_timeout = \"5s\"", "shutdown_timeout = \"soon\""),
            3,
            "shutdown_timeout",
        ),
        (
            "zero workers",
            good.replace("workers = 2", "workers = 0"),
            1,
            "workers",
        ),
        (
            "bad listen address",
            good.replace("addr = \"127.0.0.1:", "addr = \"localhost-no-port"),
            line_of(&good, "addr = \"127.0.0.1:"),
            "listen[0].addr",
        ),
        (
            "unknown key",
            good.replace("connect_timeout = \"2s\"", "conect_timeout = \"2s\""),
            line_of(&good, "connect_timeout"),
            "conect_timeout",
        ),
        (
            "syntax error",
            good.replace("[upstreams.app]", "[upstreams.app"),
            line_of(&good, "[upstreams.app]"),
            "",
        ),
        (
            "route with neither upstream nor respond",
            good.replace(
                "respond = { status = 200, body = \"ok\\n\" }",
                "path = \"/x\"",
            ),
            line_of(&good, "host = \"status.local\"") - 1,
            "routes[2]",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (name, text, line, key)) in cases.iter().enumerate() {
        assert_ne!(text, &good, "case {name:?} did not change the config");
        let path = dir.path().join(format!("bad{i}.toml"));
        fs::write(&path, text).unwrap();
        let (code, stdout, stderr) = check(&path);
        let location = format!("{}:{line}:", path.display());
        if code != 1 {
            failures.push(format!(
                "{name}: exit code {code}, want 1 (stderr: {stderr})"
            ));
        }
        match stderr.lines().find(|l| l.contains(&location)) {
            None => failures.push(format!(
                "{name}: stderr does not name {location}\nstderr: {stderr}stdout: {stdout}"
            )),
            Some(l) if !l[l.find(&location).unwrap() + location.len()..].contains(key) => failures
                .push(format!(
                    "{name}: the {location} line does not name {key:?}: {l}"
                )),
            Some(_) => {}
        }
    }
    assert!(
        !dir.path().join("never.pid").exists(),
        "-t must not write the pid file"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn check_fails_on_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let (code, _stdout, stderr) = check(&path);
    assert_eq!(code, 1, "stderr: {stderr}");
    assert!(
        stderr.contains("absent.toml"),
        "stderr should name the file: {stderr}"
    );
}

/// 1-based line of the first line containing `needle`.
/// Asserts that `stderr` has, for each (key, file), a line
/// `path:line: key: ` naming the file, at the line of `text` that names it.
fn assert_located(path: &Path, text: &str, stderr: &str, expected: &[(&str, &PathBuf)]) {
    for (key, file) in expected {
        let line = line_of(text, &file.display().to_string());
        let location = format!("{}:{line}: {key}: ", path.display());
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&location) && l.contains(&file.display().to_string())),
            "no line starting {location:?} naming {}: {stderr}",
            file.display()
        );
    }
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in the config"))
}

#[test]
fn top_refuses_a_delay_that_is_not_a_number_of_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    fs::write(&path, good_config(dir.path())).unwrap();
    for delay in ["nan", "0", "-1", "inf"] {
        let out = prefork::run(
            &[
                "top",
                &format!("--delay={delay}"),
                "-n",
                "1",
                "-c",
                path.to_str().unwrap(),
            ],
            TIMEOUT,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "-d {delay}: {stderr}");
        assert!(!stderr.contains("panicked"), "-d {delay}: {stderr}");
        assert!(stderr.contains("--delay"), "-d {delay}: {stderr}");
    }
}

#[test]
fn signal_refuses_a_stale_pid_file_naming_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    fs::write(&path, good_config(dir.path())).unwrap();
    // The pid file of a master that was killed, its pid since reused.
    let mut bystander = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    fs::write(
        dir.path().join("never.pid"),
        format!("{}\n", bystander.id()),
    )
    .unwrap();
    let out = prefork::run(&["-s", "stop", "-c", path.to_str().unwrap()], TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    std::thread::sleep(Duration::from_millis(200));
    let alive = bystander.try_wait().unwrap().is_none();
    let _ = bystander.kill();
    let _ = bystander.wait();
    assert!(alive, "prefork -s stop killed an unrelated process");
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("not a running prefork"), "{stderr}");
}

/// `-t` checks what a start would refuse beyond the file itself, as
/// `nginx -t` does: a log file in a missing directory and (as root, where
/// workers drop to it) a `user` that does not exist.
#[test]
fn check_refuses_what_a_start_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing").join("access.log");
    let text = good_config(dir.path()).replace(
        "access_log = \"off\"",
        &format!("access_log = \"{}\"", missing.display()),
    );
    let path = dir.path().join("logs.toml");
    fs::write(&path, text).unwrap();
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stderr.contains("log.access_log") && stderr.contains(&missing.display().to_string()),
        "the error should name the key and the file: {stderr}"
    );

    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED the user half of check_refuses_what_a_start_would_refuse: not root");
        return;
    }
    let text = format!(
        "user = \"prefork-no-such-user\"\n{}",
        good_config(dir.path())
    );
    let path = dir.path().join("user.toml");
    fs::write(&path, text).unwrap();
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stderr.contains("user: ") && stderr.contains("prefork-no-such-user"),
        "the error should name the key and the user: {stderr}"
    );
}

/// The README's first command runs prefork on `examples/quickstart.toml`:
/// that file must pass `-t` as shipped and, run as is (only its port and pid
/// file moved into a temporary directory), answer `/` with no backend up.
#[test]
fn the_bundled_quickstart_config_checks_and_serves_its_greeting() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart.toml");
    let (code, stdout, stderr) = check(&shipped);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let pid_file = dir.path().join("quickstart.pid");
    let text = fs::read_to_string(&shipped).unwrap();
    let moved = text
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("/tmp/prefork-quickstart.pid", pid_file.to_str().unwrap());
    assert_ne!(moved, text, "the port and pid file lines moved");
    let path = dir.path().join("quickstart.toml");
    fs::write(&path, moved).unwrap();
    let master = Master::start(&path, dir.path());
    let greeting = wait_for(START, || {
        http::get(port, "localhost", "/")
            .ok()
            .filter(|r| r.status == 200)
    });
    let greeting = greeting.unwrap_or_else(|| panic!("no 200 on /\n{}", master.stderr()));
    assert_eq!(greeting.text(), "Hello from prefork!\n");
    assert_eq!(http::get(port, "status.local", "/").unwrap().text(), "ok\n");
    master.stop_gracefully();
}

const START: Duration = Duration::from_secs(20);

/// A master started on a raw config file, killed by pid if the test fails
/// before it stops it (its workers follow through their parent-death signal).
struct Master {
    child: Child,
    dir: PathBuf,
}

impl Master {
    fn start(config: &Path, dir: &Path) -> Master {
        let child = Command::new(prefork::BIN)
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("stdout")).unwrap())
            .stderr(fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .unwrap();
        Master {
            child,
            dir: dir.to_path_buf(),
        }
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// SIGQUIT, then waits for a clean exit.
    fn stop_gracefully(mut self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGQUIT).unwrap();
        let status = wait_for(START, || self.child.try_wait().ok().flatten());
        let status = status.unwrap_or_else(|| panic!("no exit after SIGQUIT\n{}", self.stderr()));
        assert!(status.success(), "{status}\n{}", self.stderr());
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A log file in a directory that does not exist passes `-t` (the file is
/// only opened at run time) but must stop the start with the key, the path
/// and the reason, not leave the master running with workers that keep
/// failing to open it.
#[test]
fn start_refuses_a_log_file_in_a_missing_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing").join("access.log");
    let text = good_config(dir.path()).replace(
        "access_log = \"off\"",
        &format!("access_log = \"{}\"", missing.display()),
    );
    let path = dir.path().join("prefork.toml");
    fs::write(&path, text).expect("write the config");
    let out = prefork::run(&["-c", path.to_str().unwrap()], TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("log.access_log") && stderr.contains(&missing.display().to_string()),
        "the error should name the key and the file: {stderr}"
    );
    assert!(
        !dir.path().join("never.pid").exists(),
        "pid file left behind"
    );
}

/// What `-t` checks beyond the file (log directories, `user`) is reported
/// like the file's own problems: one `file:line: key: reason` line each,
/// every one of them, not only the first without its line.
#[test]
fn check_names_the_line_of_every_log_file_a_start_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let error_log = dir.path().join("gone").join("error.log");
    let access_log = dir.path().join("missing").join("access.log");
    let text = good_config(dir.path())
        .replace(
            &format!("error_log = \"{}/error.log\"", dir.path().display()),
            &format!("error_log = \"{}\"", error_log.display()),
        )
        .replace(
            "access_log = \"off\"",
            &format!("access_log = \"{}\"", access_log.display()),
        );
    let path = dir.path().join("logs.toml");
    fs::write(&path, &text).unwrap();
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    assert_located(
        &path,
        &text,
        &stderr,
        &[
            ("log.error_log", &error_log),
            ("log.access_log", &access_log),
        ],
    );
}

/// The master creates its pid file and its control socket before it
/// serves: `-t` refuses either in a missing directory, with its line, as a
/// start would (the start failed before with the path alone).
#[test]
fn check_names_the_line_of_a_pid_file_or_control_socket_in_a_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("gone").join("prefork.pid");
    let socket = dir.path().join("missing").join("prefork.sock");
    let text = good_config(dir.path()).replace(
        &format!("pid_file = \"{}/never.pid\"", dir.path().display()),
        &format!(
            "pid_file = \"{}\"\ncontrol_socket = \"{}\"",
            pid_file.display(),
            socket.display()
        ),
    );
    let path = dir.path().join("paths.toml");
    fs::write(&path, &text).unwrap();
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    assert_located(
        &path,
        &text,
        &stderr,
        &[("pid_file", &pid_file), ("control_socket", &socket)],
    );
}

/// The `prefork.toml` of deploy/kubernetes/configmap.yaml, as the pod sees
/// it, with its /run/prefork emptyDir at `run`.
fn kubernetes_config(run: &Path) -> String {
    let manifest = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/configmap.yaml"),
    )
    .expect("read the ConfigMap");
    let (_, block) = manifest
        .split_once("prefork.toml: |\n")
        .expect("the ConfigMap holds prefork.toml");
    block
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("/run/prefork", run.to_str().expect("utf-8 path"))
}

#[test]
fn the_kubernetes_configmap_holds_a_valid_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("prefork.toml");
    fs::write(&path, kubernetes_config(dir.path())).expect("write");
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let text = fs::read_to_string(&path).expect("read");
    for line in ["sigterm = \"graceful\"", "shutdown_delay = \"5s\""] {
        assert!(text.contains(line), "the ConfigMap should set {line}");
    }
}
