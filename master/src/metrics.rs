//! What the master knows about its workers' traffic: the latest counters
//! each worker reported, the counters of workers that are gone (so totals
//! never go backwards), and the reloads it carried out. Renders them in the
//! Prometheus text format.

use crate::supervisor::{Pid, Slot, WorkerPhase, WorkerView};
use prefork_shared::stats::{
    Histogram, Totals, WorkerStats, GOAWAY_REASONS, LATENCY_BOUNDS_US,
    PROXY_HEADER_FAILURE_REASONS, STATUS_CLASSES, TLS_FAILURE_REASONS,
};
use prefork_shared::tls::Certificate;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Reads one counter of a worker's stats.
type CounterOf = fn(&WorkerStats) -> u64;

/// The window of the request rate and recent latencies in `prefork status`.
pub const RECENT: Duration = Duration::from_secs(10);

/// How the last reload went.
#[derive(Debug, Clone)]
pub struct ReloadOutcome {
    /// When it was asked for.
    pub at: SystemTime,
    /// Whether the new configuration was taken.
    pub ok: bool,
    /// What happened (the generation started, or the validation error).
    pub message: String,
}

struct Reports {
    slot: Slot,
    latest: WorkerStats,
    /// (when, requests so far, latency so far), covering [`RECENT`].
    history: VecDeque<(Instant, u64, Histogram)>,
}

/// A worker's recent activity.
#[derive(Debug, Clone, Default)]
pub struct Recent {
    /// Requests per second over [`RECENT`] (`None` before two reports).
    pub rate: Option<f64>,
    /// Median latency of the requests in the window.
    pub p50: Option<Duration>,
    /// 99th percentile latency of the requests in the window.
    pub p99: Option<Duration>,
}

/// The master's observations.
pub struct Observed {
    live: HashMap<Pid, Reports>,
    /// Final counters of exited workers, per slot.
    retired: BTreeMap<Slot, WorkerStats>,
    reloads_ok: u64,
    reloads_failed: u64,
    last_reload: Option<ReloadOutcome>,
    /// When the master started.
    pub started: SystemTime,
    /// When the configuration in use was loaded.
    pub config_loaded: SystemTime,
}

impl Default for Observed {
    fn default() -> Self {
        let now = SystemTime::now();
        Observed {
            live: HashMap::new(),
            retired: BTreeMap::new(),
            reloads_ok: 0,
            reloads_failed: 0,
            last_reload: None,
            started: now,
            config_loaded: now,
        }
    }
}

impl Observed {
    /// Keeps a worker's latest report.
    pub fn on_report(&mut self, pid: Pid, slot: Slot, stats: WorkerStats, now: Instant) {
        let reports = self.live.entry(pid).or_insert_with(|| Reports {
            slot,
            latest: WorkerStats::default(),
            history: VecDeque::new(),
        });
        reports
            .history
            .push_back((now, stats.requests(), stats.latency()));
        // Keep one sample at or before the window's start as the baseline.
        while reports.history.len() > 2 && reports.history[1].0 + RECENT <= now {
            reports.history.pop_front();
        }
        reports.latest = stats;
    }

    /// A worker exited: its counters stay in its slot's totals.
    pub fn on_exit(&mut self, pid: Pid) {
        if let Some(r) = self.live.remove(&pid) {
            self.retired
                .entry(r.slot)
                .or_default()
                .merge(&r.latest.retired());
        }
    }

    /// Records a reload's outcome.
    pub fn on_reload(&mut self, outcome: ReloadOutcome) {
        if outcome.ok {
            self.reloads_ok += 1;
            self.config_loaded = outcome.at;
        } else {
            self.reloads_failed += 1;
        }
        self.last_reload = Some(outcome);
    }

    /// The last reload, if any.
    pub fn last_reload(&self) -> Option<&ReloadOutcome> {
        self.last_reload.as_ref()
    }

    /// A live worker's latest counters.
    pub fn latest(&self, pid: Pid) -> Option<&WorkerStats> {
        self.live.get(&pid).map(|r| &r.latest)
    }

    /// A live worker's activity over the last [`RECENT`].
    pub fn recent(&self, pid: Pid) -> Recent {
        let Some(r) = self.live.get(&pid) else {
            return Recent::default();
        };
        let (Some(first), Some(last)) = (r.history.front(), r.history.back()) else {
            return Recent::default();
        };
        let span = last.0.saturating_duration_since(first.0);
        if span.is_zero() {
            return Recent::default();
        }
        let window = last.2.since(&first.2);
        Recent {
            rate: Some(last.1.saturating_sub(first.1) as f64 / span.as_secs_f64()),
            p50: window.quantile(0.5),
            p99: window.quantile(0.99),
        }
    }

    /// Counters per slot: exited workers plus live ones.
    pub fn per_slot(&self) -> BTreeMap<Slot, WorkerStats> {
        let mut slots: BTreeMap<Slot, Totals> = self
            .retired
            .iter()
            .map(|(slot, stats)| (*slot, Totals::new(stats.clone())))
            .collect();
        for r in self.live.values() {
            slots.entry(r.slot).or_default().add(&r.latest);
        }
        slots
            .into_iter()
            .map(|(slot, totals)| (slot, totals.finish()))
            .collect()
    }

    /// Counters of every worker together.
    pub fn total(&self) -> WorkerStats {
        let mut all = Totals::default();
        for s in self.per_slot().values() {
            all.add(s);
        }
        all.finish()
    }
}

/// What `/metrics` shows besides the workers' counters.
pub struct MasterFacts<'a> {
    /// The live workers.
    pub workers: &'a [WorkerView],
    /// Restarts per slot.
    pub restarts: &'a BTreeMap<Slot, u64>,
    /// The newest generation.
    pub generation: u64,
    /// The certificates of the newest configuration.
    pub certificates: &'a [Certificate],
}

/// Renders everything in the Prometheus text exposition format (0.0.4).
pub fn render_prometheus(observed: &Observed, facts: &MasterFacts<'_>) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let per_slot = observed.per_slot();
    let total = observed.total();

    family(
        &mut out,
        "prefork_requests_total",
        "counter",
        "Requests served, by route, status class and worker slot.",
    );
    for (slot, stats) in &per_slot {
        for r in &stats.routes {
            for (class, n) in STATUS_CLASSES.iter().zip(r.by_class.iter()) {
                if *n > 0 {
                    sample(
                        &mut out,
                        "prefork_requests_total",
                        &[
                            ("route", &r.route),
                            ("status_class", class),
                            ("worker", &slot.0.to_string()),
                        ],
                        *n as f64,
                    );
                }
            }
        }
    }

    family(
        &mut out,
        "prefork_request_duration_seconds",
        "histogram",
        "Time from a complete request head to the end of its response, by route.",
    );
    for r in &total.routes {
        histogram(
            &mut out,
            "prefork_request_duration_seconds",
            &r.route,
            &r.latency,
        );
    }

    family(
        &mut out,
        "prefork_active_connections",
        "gauge",
        "Open client connections, by worker slot.",
    );
    for (slot, stats) in &per_slot {
        sample(
            &mut out,
            "prefork_active_connections",
            &[("worker", &slot.0.to_string())],
            stats.active_connections as f64,
        );
    }
    family(
        &mut out,
        "prefork_parked_connections",
        "gauge",
        "Idle keep-alive client connections parked outside a task, by worker slot.",
    );
    for (slot, stats) in &per_slot {
        sample(
            &mut out,
            "prefork_parked_connections",
            &[("worker", &slot.0.to_string())],
            stats.parked_connections as f64,
        );
    }
    let limits: [(&str, &str, CounterOf); 3] = [
        (
            "prefork_connection_limit_reached_total",
            "New connections met a worker at max_connections (an idle one closed to make room, or accepting paused), by worker slot.",
            |s| s.limits.reached,
        ),
        (
            "prefork_connections_evicted_total",
            "Idle keep-alive client connections closed to make room at max_connections, by worker slot.",
            |s| s.limits.evicted,
        ),
        (
            "prefork_accept_fd_exhausted_total",
            "Accepts that failed for want of a file descriptor (EMFILE, ENFILE), by worker slot.",
            |s| s.limits.fd_exhausted,
        ),
    ];
    for (name, help, value) in limits {
        family(&mut out, name, "counter", help);
        for (slot, stats) in &per_slot {
            sample(
                &mut out,
                name,
                &[("worker", &slot.0.to_string())],
                value(stats) as f64,
            );
        }
    }
    family(
        &mut out,
        "prefork_connections_total",
        "counter",
        "Client connections accepted, by worker slot.",
    );
    for (slot, stats) in &per_slot {
        sample(
            &mut out,
            "prefork_connections_total",
            &[("worker", &slot.0.to_string())],
            stats.connections as f64,
        );
    }
    family(
        &mut out,
        "prefork_tls_handshakes_total",
        "counter",
        "TLS handshakes completed on client connections, by worker slot.",
    );
    for (slot, stats) in &per_slot {
        sample(
            &mut out,
            "prefork_tls_handshakes_total",
            &[("worker", &slot.0.to_string())],
            stats.tls.completed as f64,
        );
    }
    for (name, kind, help, value) in [
        (
            "prefork_http2_connections_total",
            "counter",
            "Client connections that spoke HTTP/2, by worker slot.",
            (|s: &WorkerStats| s.http2.connections) as fn(&WorkerStats) -> u64,
        ),
        (
            "prefork_http2_connections",
            "gauge",
            "Client HTTP/2 connections open now, by worker slot.",
            |s: &WorkerStats| s.http2.open,
        ),
        (
            "prefork_http2_streams_total",
            "counter",
            "Streams (requests) opened on client HTTP/2 connections, by worker slot.",
            |s: &WorkerStats| s.http2.streams,
        ),
    ] {
        family(&mut out, name, kind, help);
        for (slot, stats) in &per_slot {
            sample(
                &mut out,
                name,
                &[("worker", &slot.0.to_string())],
                value(stats) as f64,
            );
        }
    }
    family(
        &mut out,
        "prefork_http2_goaways_total",
        "counter",
        "GOAWAY frames sent to HTTP/2 clients, by error code (NO_ERROR: a drain or an idle connection).",
    );
    for (reason, n) in GOAWAY_REASONS.iter().zip(total.http2.goaways) {
        sample(
            &mut out,
            "prefork_http2_goaways_total",
            &[("reason", reason)],
            n as f64,
        );
    }
    family(
        &mut out,
        "prefork_tls_handshake_failures_total",
        "counter",
        "TLS handshakes failed on client connections, by reason.",
    );
    for (reason, n) in TLS_FAILURE_REASONS.iter().zip(total.tls.failed) {
        sample(
            &mut out,
            "prefork_tls_handshake_failures_total",
            &[("reason", reason)],
            n as f64,
        );
    }
    family(
        &mut out,
        "prefork_proxy_protocol_failures_total",
        "counter",
        "Connections on proxy_protocol listeners closed without a valid PROXY header, by reason.",
    );
    for (reason, n) in PROXY_HEADER_FAILURE_REASONS
        .iter()
        .zip(total.proxy_header_failures)
    {
        sample(
            &mut out,
            "prefork_proxy_protocol_failures_total",
            &[("reason", reason)],
            n as f64,
        );
    }
    family(
        &mut out,
        "prefork_received_bytes_total",
        "counter",
        "Bytes read from clients, by worker slot.",
    );
    for (slot, stats) in &per_slot {
        sample(
            &mut out,
            "prefork_received_bytes_total",
            &[("worker", &slot.0.to_string())],
            stats.bytes_in as f64,
        );
    }
    family(
        &mut out,
        "prefork_sent_bytes_total",
        "counter",
        "Bytes written to clients, by worker slot.",
    );
    for (slot, stats) in &per_slot {
        sample(
            &mut out,
            "prefork_sent_bytes_total",
            &[("worker", &slot.0.to_string())],
            stats.bytes_out as f64,
        );
    }

    let servers =
        |out: &mut String,
         name: &str,
         kind: &str,
         help: &str,
         value: &dyn Fn(&prefork_shared::stats::ServerCounters) -> f64| {
            family(out, name, kind, help);
            for s in &total.servers {
                sample(
                    out,
                    name,
                    &[("upstream", &s.upstream), ("server", &s.server)],
                    value(s),
                );
            }
        };
    servers(
        &mut out,
        "prefork_upstream_up",
        "gauge",
        "0 while every worker keeps the server out of rotation (max_fails, health checks) or the last attempt of every worker to use it failed; else 1.",
        &|s| if s.is_up() { 1.0 } else { 0.0 },
    );
    servers(
        &mut out,
        "prefork_upstream_down_workers",
        "gauge",
        "Workers whose health state keeps the server out of rotation now.",
        &|s| s.down as f64,
    );
    servers(
        &mut out,
        "prefork_upstream_active_requests",
        "gauge",
        "Exchanges in progress with the server.",
        &|s| s.active as f64,
    );
    servers(
        &mut out,
        "prefork_upstream_requests_total",
        "counter",
        "Exchanges started with the server.",
        &|s| s.requests as f64,
    );
    servers(
        &mut out,
        "prefork_upstream_failures_total",
        "counter",
        "Connects and exchanges that failed on the server's side.",
        &|s| s.failures as f64,
    );

    family(
        &mut out,
        "prefork_workers",
        "gauge",
        "Live worker processes, by state.",
    );
    for phase in [
        WorkerPhase::Starting,
        WorkerPhase::Ready,
        WorkerPhase::Draining,
        WorkerPhase::Hung,
    ] {
        let n = facts.workers.iter().filter(|w| w.phase == phase).count();
        sample(
            &mut out,
            "prefork_workers",
            &[("state", phase.as_str())],
            n as f64,
        );
    }
    family(
        &mut out,
        "prefork_worker_restarts_total",
        "counter",
        "Unexpected worker exits that were restarted, by slot.",
    );
    // Every slot with a live worker shows its count, 0 included: a counter
    // that appears only once it moves hides its first increase from rate().
    let slots: BTreeSet<Slot> = facts
        .workers
        .iter()
        .map(|w| w.slot)
        .chain(facts.restarts.keys().copied())
        .collect();
    for slot in slots {
        let n = facts.restarts.get(&slot).copied().unwrap_or(0);
        sample(
            &mut out,
            "prefork_worker_restarts_total",
            &[("worker", &slot.0.to_string())],
            n as f64,
        );
    }
    family(
        &mut out,
        "prefork_reloads_total",
        "counter",
        "Configuration reloads, by outcome.",
    );
    sample(
        &mut out,
        "prefork_reloads_total",
        &[("outcome", "ok")],
        observed.reloads_ok as f64,
    );
    sample(
        &mut out,
        "prefork_reloads_total",
        &[("outcome", "failed")],
        observed.reloads_failed as f64,
    );
    family(
        &mut out,
        "prefork_certificate_expiry_timestamp_seconds",
        "gauge",
        "When each certificate in use expires (notAfter, Unix seconds), by name.",
    );
    for c in facts.certificates {
        for name in &c.names {
            sample(
                &mut out,
                "prefork_certificate_expiry_timestamp_seconds",
                &[("name", name)],
                c.not_after as f64,
            );
        }
    }
    family(
        &mut out,
        "prefork_config_generation",
        "gauge",
        "The newest configuration generation.",
    );
    sample(
        &mut out,
        "prefork_config_generation",
        &[],
        facts.generation as f64,
    );
    family(
        &mut out,
        "prefork_config_load_timestamp_seconds",
        "gauge",
        "When the configuration in use was loaded.",
    );
    sample(
        &mut out,
        "prefork_config_load_timestamp_seconds",
        &[],
        unix(observed.config_loaded),
    );
    family(
        &mut out,
        "prefork_start_timestamp_seconds",
        "gauge",
        "When the master started.",
    );
    sample(
        &mut out,
        "prefork_start_timestamp_seconds",
        &[],
        unix(observed.started),
    );
    out
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

fn histogram(out: &mut String, name: &str, route: &str, h: &Histogram) {
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0;
    for (i, n) in h.buckets.iter().enumerate() {
        cumulative += n;
        let le = match LATENCY_BOUNDS_US.get(i) {
            Some(us) => (*us as f64 / 1e6).to_string(),
            None => "+Inf".to_owned(),
        };
        sample(
            out,
            &bucket,
            &[("route", route), ("le", &le)],
            cumulative as f64,
        );
    }
    sample(
        out,
        &format!("{name}_sum"),
        &[("route", route)],
        h.sum_us as f64 / 1e6,
    );
    sample(
        out,
        &format!("{name}_count"),
        &[("route", route)],
        cumulative as f64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::Generation;
    use prefork_shared::stats::{ConnectionLimits, RouteCounters};

    fn stats(requests: u64) -> WorkerStats {
        let mut latency = Histogram::default();
        for _ in 0..requests {
            latency.observe(Duration::from_millis(2));
        }
        WorkerStats {
            routes: vec![RouteCounters {
                route: "*/".into(),
                by_class: [0, 0, requests, 0, 0, 0],
                latency,
            }],
            active_connections: 1,
            ..WorkerStats::default()
        }
    }

    #[test]
    fn totals_keep_the_counters_of_exited_workers() {
        let mut o = Observed::default();
        let now = Instant::now();
        o.on_report(1, Slot(0), stats(5), now);
        o.on_exit(1);
        o.on_report(2, Slot(0), stats(3), now);
        let slot = &o.per_slot()[&Slot(0)];
        assert_eq!(slot.requests(), 8);
        // A gone worker has no open connection.
        assert_eq!(slot.active_connections, 1);
    }

    #[test]
    fn recent_rate_and_latency() {
        let mut o = Observed::default();
        let now = Instant::now();
        assert!(o.recent(1).rate.is_none());
        o.on_report(1, Slot(0), stats(0), now);
        o.on_report(1, Slot(0), stats(20), now + Duration::from_secs(2));
        let r = o.recent(1);
        assert_eq!(r.rate, Some(10.0));
        assert!(r.p50.is_some_and(|p| p <= Duration::from_micros(2_500)));
    }

    #[test]
    fn prometheus_text_has_families_and_escaped_labels() {
        let mut o = Observed::default();
        let mut s = stats(2);
        s.routes[0].route = "a\"b/".into();
        o.on_report(1, Slot(0), s, Instant::now());
        let text = render_prometheus(
            &o,
            &MasterFacts {
                workers: &[],
                restarts: &BTreeMap::from([(Slot(0), 2)]),
                generation: 1,
                certificates: &[],
            },
        );
        assert!(
            text.contains(
                "prefork_requests_total{route=\"a\\\"b/\",status_class=\"2xx\",worker=\"0\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "prefork_request_duration_seconds_bucket{route=\"a\\\"b/\",le=\"+Inf\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("prefork_worker_restarts_total{worker=\"0\"} 2\n"),
            "{text}"
        );
    }

    #[test]
    fn connection_budget_counters_add_up_across_a_slots_workers() {
        let mut o = Observed::default();
        let now = Instant::now();
        let with_limits = |reached, evicted, fd_exhausted| WorkerStats {
            limits: ConnectionLimits {
                reached,
                evicted,
                fd_exhausted,
            },
            ..stats(1)
        };
        o.on_report(1, Slot(0), with_limits(3, 2, 1), now);
        o.on_exit(1);
        o.on_report(2, Slot(0), with_limits(4, 4, 0), now);
        let text = render_prometheus(
            &o,
            &MasterFacts {
                workers: &[],
                restarts: &BTreeMap::new(),
                generation: 1,
                certificates: &[],
            },
        );
        for line in [
            "prefork_connection_limit_reached_total{worker=\"0\"} 7\n",
            "prefork_connections_evicted_total{worker=\"0\"} 6\n",
            "prefork_accept_fd_exhausted_total{worker=\"0\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn a_slot_never_restarted_shows_zero_restarts() {
        let worker = WorkerView {
            pid: 7,
            slot: Slot(1),
            generation: Generation(1),
            phase: WorkerPhase::Ready,
            started: Instant::now(),
        };
        let text = render_prometheus(
            &Observed::default(),
            &MasterFacts {
                workers: &[worker],
                restarts: &BTreeMap::from([(Slot(0), 2)]),
                generation: 1,
                certificates: &[],
            },
        );
        assert!(
            text.contains("prefork_worker_restarts_total{worker=\"1\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("prefork_worker_restarts_total{worker=\"0\"} 2\n"),
            "{text}"
        );
    }
}
