//! `prefork status` and `prefork top`: the report the master builds, its
//! JSON form on the control socket, and the table the client prints.

use crate::control_socket;
use crate::metrics::{Observed, ReloadOutcome};
use crate::supervisor::{Slot, WorkerView};
use prefork_shared::config;
use prefork_shared::exit;
use prefork_shared::stats::GOAWAY_REASONS;
use prefork_shared::tls::Certificate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the client waits for the master.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything `prefork status` shows.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusReport {
    /// The master's pid.
    pub master_pid: u32,
    /// Seconds since the master started.
    pub uptime_s: f64,
    /// The config file.
    pub config_file: String,
    /// When the configuration in use was loaded (Unix seconds).
    pub config_loaded_unix: f64,
    /// The newest generation.
    pub generation: u64,
    /// Whether the master is stopping.
    pub shutting_down: bool,
    /// The last reload, if any.
    pub last_reload: Option<ReloadReport>,
    /// One row per live worker.
    pub workers: Vec<WorkerRow>,
    /// One row per upstream server.
    pub upstreams: Vec<ServerRow>,
    /// The certificates in use, in config order (their keys never appear).
    #[serde(default)]
    pub certificates: Vec<CertificateRow>,
    /// Client HTTP/2 over every worker, if any client spoke it.
    #[serde(default)]
    pub http2: Option<Http2Row>,
}

/// Client HTTP/2, over every worker.
#[derive(Debug, Serialize, Deserialize)]
pub struct Http2Row {
    /// Connections that spoke HTTP/2 (live workers' counts).
    pub connections: u64,
    /// Streams they opened.
    pub streams: u64,
    /// GOAWAY frames sent, by error code, those sent at least once.
    pub goaways: BTreeMap<String, u64>,
}

/// One certificate in use.
#[derive(Debug, Serialize, Deserialize)]
pub struct CertificateRow {
    /// The certificate file.
    pub file: String,
    /// Its subjectAltName DNS names.
    pub names: Vec<String>,
    /// Its notAfter (Unix seconds).
    pub not_after_unix: i64,
}

/// How the last reload went.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReloadReport {
    /// When (Unix seconds).
    pub at_unix: f64,
    /// Whether the new configuration was taken.
    pub ok: bool,
    /// The generation started, or the validation error.
    pub message: String,
}

/// One worker.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerRow {
    /// Its slot.
    pub slot: u32,
    /// Its pid.
    pub pid: u32,
    /// Its generation.
    pub generation: u64,
    /// `starting`, `ready` or `draining`.
    pub state: String,
    /// Seconds since it started.
    pub uptime_s: f64,
    /// Restarts of its slot.
    pub restarts: u64,
    /// Open client connections.
    pub active_connections: u64,
    /// Of those, idle ones parked outside a task.
    #[serde(default)]
    pub parked_connections: u64,
    /// Of those, HTTP/2 connections.
    #[serde(default)]
    pub http2_connections: u64,
    /// Requests served.
    pub requests: u64,
    /// Requests per second over the last 10 s.
    pub requests_per_s: Option<f64>,
    /// Median latency over the last 10 s, in milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency over the last 10 s, in milliseconds.
    pub p99_ms: Option<f64>,
}

/// One upstream server, as all workers see it together.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServerRow {
    /// The upstream group.
    pub upstream: String,
    /// The server.
    pub server: String,
    /// `down`, `degraded`, `failing`, `up` or `unused` (see
    /// [`ServerCounters::state`](prefork_shared::stats::ServerCounters::state)).
    pub state: String,
    /// Exchanges in progress.
    pub active: u64,
    /// Exchanges started.
    pub requests: u64,
    /// Failures.
    pub failures: u64,
    /// The last failure.
    pub last_error: Option<String>,
}

/// What the master passes to [`build`].
pub struct MasterState<'a> {
    /// The config file.
    pub config_file: &'a Path,
    /// The newest generation.
    pub generation: u64,
    /// Whether the master is stopping.
    pub shutting_down: bool,
    /// Live workers.
    pub workers: &'a [WorkerView],
    /// Restarts per slot.
    pub restarts: &'a BTreeMap<Slot, u64>,
    /// The certificates of the newest configuration.
    pub certificates: &'a [Certificate],
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn millis(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

/// Builds the report from the master's state.
pub fn build(m: &MasterState<'_>, observed: &Observed, now: Instant) -> StatusReport {
    let workers = m
        .workers
        .iter()
        .map(|w| {
            let latest = observed.latest(w.pid);
            let recent = observed.recent(w.pid);
            WorkerRow {
                slot: w.slot.0,
                pid: w.pid,
                generation: w.generation.0,
                state: w.phase.as_str().to_owned(),
                uptime_s: now.saturating_duration_since(w.started).as_secs_f64(),
                restarts: m.restarts.get(&w.slot).copied().unwrap_or(0),
                active_connections: latest.map_or(0, |s| s.active_connections),
                parked_connections: latest.map_or(0, |s| s.parked_connections),
                http2_connections: latest.map_or(0, |s| s.http2.open),
                requests: latest.map_or(0, |s| s.requests()),
                requests_per_s: recent.rate,
                p50_ms: millis(recent.p50),
                p99_ms: millis(recent.p99),
            }
        })
        .collect();
    let total = observed.total();
    let http2 = (total.http2.connections > 0).then(|| Http2Row {
        connections: total.http2.connections,
        streams: total.http2.streams,
        goaways: GOAWAY_REASONS
            .iter()
            .zip(total.http2.goaways)
            .filter(|(_, n)| *n > 0)
            .map(|(reason, n)| ((*reason).to_owned(), n))
            .collect(),
    });
    let upstreams = total
        .servers
        .into_iter()
        .map(|s| ServerRow {
            state: s.state().to_owned(),
            upstream: s.upstream,
            server: s.server,
            active: s.active,
            requests: s.requests,
            failures: s.failures,
            last_error: s.last_error,
        })
        .collect();
    StatusReport {
        master_pid: std::process::id(),
        uptime_s: SystemTime::now()
            .duration_since(observed.started)
            .map_or(0.0, |d| d.as_secs_f64()),
        config_file: m.config_file.display().to_string(),
        config_loaded_unix: unix(observed.config_loaded),
        generation: m.generation,
        shutting_down: m.shutting_down,
        last_reload: observed
            .last_reload()
            .map(|r: &ReloadOutcome| ReloadReport {
                at_unix: unix(r.at),
                ok: r.ok,
                message: r.message.clone(),
            }),
        workers,
        upstreams,
        certificates: m
            .certificates
            .iter()
            .map(|c| CertificateRow {
                file: c.source.display().to_string(),
                names: c.names.clone(),
                not_after_unix: c.not_after,
            })
            .collect(),
        http2,
    }
}

/// `5s`, `3m12s`, `2h05m`, `4d03h`.
fn age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// The report as a table for a terminal.
pub fn render(r: &StatusReport) -> String {
    let now = unix(SystemTime::now());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "master pid {}  uptime {}  generation {}{}",
        r.master_pid,
        age(r.uptime_s),
        r.generation,
        if r.shutting_down {
            "  SHUTTING DOWN"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "config {} (loaded {} ago)",
        r.config_file,
        age(now - r.config_loaded_unix)
    );
    if let Some(reload) = &r.last_reload {
        let _ = writeln!(
            out,
            "last reload {} ago: {}: {}",
            age(now - reload.at_unix),
            if reload.ok { "ok" } else { "FAILED" },
            reload.message
        );
    }
    let _ = writeln!(
        out,
        "\n{:>4} {:>8} {:>4} {:<9} {:>7} {:>8} {:>6} {:>6} {:>6} {:>10} {:>8} {:>8} {:>8}",
        "SLOT",
        "PID",
        "GEN",
        "STATE",
        "UPTIME",
        "RESTARTS",
        "CONNS",
        "PARKED",
        "HTTP/2",
        "REQUESTS",
        "REQ/S",
        "P50(ms)",
        "P99(ms)"
    );
    for w in &r.workers {
        let _ = writeln!(
            out,
            "{:>4} {:>8} {:>4} {:<9} {:>7} {:>8} {:>6} {:>6} {:>6} {:>10} {:>8} {:>8} {:>8}",
            w.slot,
            w.pid,
            w.generation,
            w.state,
            age(w.uptime_s),
            w.restarts,
            w.active_connections,
            w.parked_connections,
            w.http2_connections,
            w.requests,
            opt(w.requests_per_s, 1),
            opt(w.p50_ms, 2),
            opt(w.p99_ms, 2)
        );
    }
    if let Some(h2) = &r.http2 {
        let goaways: Vec<String> = h2.goaways.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            out,
            "\nHTTP/2: {} connections, {} streams; GOAWAY sent: {}",
            h2.connections,
            h2.streams,
            if goaways.is_empty() {
                "none".to_owned()
            } else {
                goaways.join(", ")
            }
        );
    }
    if !r.upstreams.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<12} {:<22} {:<8} {:>6} {:>10} {:>8}  LAST ERROR",
            "UPSTREAM", "SERVER", "STATE", "ACTIVE", "REQUESTS", "FAILURES"
        );
        for s in &r.upstreams {
            let _ = writeln!(
                out,
                "{:<12} {:<22} {:<8} {:>6} {:>10} {:>8}  {}",
                s.upstream,
                s.server,
                s.state,
                s.active,
                s.requests,
                s.failures,
                s.last_error.as_deref().unwrap_or("-")
            );
        }
    }
    if !r.certificates.is_empty() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let _ = writeln!(out, "\n{:<10} {:<40} FILE", "EXPIRES IN", "NAMES");
        for c in &r.certificates {
            let _ = writeln!(
                out,
                "{:<10} {:<40} {}",
                age((c.not_after_unix - now) as f64),
                c.names.join(","),
                c.file
            );
        }
    }
    out
}

/// Asks the master named by the config at `config` for its status.
fn fetch(config: &Path) -> Result<String, String> {
    let config = config::load(config).map_err(|e| e.to_string())?.config;
    control_socket::request(&config.control_socket, "status", CLIENT_TIMEOUT).map_err(|e| {
        format!(
            "prefork: cannot reach the master on {} ({e}); is prefork running?",
            config.control_socket.display()
        )
    })
}

/// `prefork status [--json]`.
pub fn run_status(config: &Path, json: bool) -> i32 {
    let text = match fetch(config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return exit::FAILURE;
        }
    };
    if json {
        print!("{text}");
        return exit::OK;
    }
    match serde_json::from_str::<StatusReport>(&text) {
        Ok(report) => {
            print!("{}", render(&report));
            exit::OK
        }
        Err(e) => {
            eprintln!("prefork: unexpected answer from the master ({e}): {text}");
            exit::FAILURE
        }
    }
}

/// `prefork top`: the status, redrawn every `interval` (`iterations` times,
/// or until interrupted).
pub fn run_top(config: &Path, interval: Duration, iterations: Option<u64>) -> i32 {
    let mut shown = 0u64;
    loop {
        let screen = fetch(config).and_then(|text| {
            serde_json::from_str::<StatusReport>(&text)
                .map(|r| render(&r))
                .map_err(|e| format!("prefork: unexpected answer from the master ({e})"))
        });
        match screen {
            // Home the cursor and clear the screen, like top.
            Ok(table) => print!("\x1b[H\x1b[2J{table}"),
            Err(e) => {
                eprintln!("{e}");
                return exit::FAILURE;
            }
        }
        shown += 1;
        if iterations.is_some_and(|n| shown >= n) {
            return exit::OK;
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_short() {
        assert_eq!(age(5.2), "5s");
        assert_eq!(age(192.0), "3m12s");
        assert_eq!(age(7500.0), "2h05m");
        assert_eq!(age(356_400.0), "4d03h");
    }

    #[test]
    fn table_shows_workers_and_servers() {
        let report = StatusReport {
            master_pid: 7,
            uptime_s: 61.0,
            config_file: "/etc/prefork.toml".into(),
            config_loaded_unix: 0.0,
            generation: 2,
            shutting_down: false,
            last_reload: None,
            workers: vec![WorkerRow {
                slot: 0,
                pid: 42,
                generation: 2,
                state: "ready".into(),
                uptime_s: 3.0,
                restarts: 1,
                active_connections: 4,
                parked_connections: 3,
                http2_connections: 2,
                requests: 1000,
                requests_per_s: Some(99.5),
                p50_ms: Some(0.5),
                p99_ms: None,
            }],
            upstreams: vec![ServerRow {
                upstream: "app".into(),
                server: "127.0.0.1:3000".into(),
                state: "failing".into(),
                active: 0,
                requests: 3,
                failures: 3,
                last_error: Some("connection refused".into()),
            }],
            certificates: vec![CertificateRow {
                file: "/etc/a.pem".into(),
                names: vec!["a.test".into(), "*.a.test".into()],
                not_after_unix: i64::MAX / 2,
            }],
            http2: Some(Http2Row {
                connections: 9,
                streams: 120,
                goaways: [
                    ("ENHANCE_YOUR_CALM".to_owned(), 1),
                    ("NO_ERROR".to_owned(), 7),
                ]
                .into(),
            }),
        };
        let table = render(&report);
        assert!(
            table.contains("master pid 7  uptime 1m01s  generation 2"),
            "{table}"
        );
        let row = table.lines().find(|l| l.contains(" 42 ")).unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols,
            ["0", "42", "2", "ready", "3s", "1", "4", "3", "2", "1000", "99.5", "0.50", "-"]
        );
        assert!(
            table.contains(
                "HTTP/2: 9 connections, 120 streams; GOAWAY sent: ENHANCE_YOUR_CALM 1, NO_ERROR 7"
            ),
            "{table}"
        );
        assert!(table.contains("connection refused"), "{table}");
        assert!(table.contains("a.test,*.a.test"), "{table}");
    }
}
