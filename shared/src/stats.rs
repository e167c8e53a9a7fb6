//! Counters a worker reports to the master ([`crate::ipc::WorkerMsg::Stats`])
//! and the fixed-bucket latency histogram they use.
//!
//! Every counter is cumulative since the worker started, so a lost or late
//! report loses nothing, and the master can add up the reports of workers
//! that come and go. The histogram buckets are fixed (1-2.5-5 steps from
//! 100 µs to 10 s) so that histograms of every worker add up bucket by bucket
//! and render directly as Prometheus histograms.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds (a last bucket
/// without bound follows).
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A latency histogram with the buckets of [`LATENCY_BOUNDS_US`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    pub buckets: [u64; LATENCY_BOUNDS_US.len() + 1],
    /// Sum of all observations, in microseconds.
    pub sum_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: [0; LATENCY_BOUNDS_US.len() + 1],
            sum_us: 0,
        }
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&mut self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_US.partition_point(|bound| *bound < us);
        self.buckets[i] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// How many observations it holds.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds `other`'s observations to this one.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    /// The observations made since `earlier` (a previous state of the same
    /// histogram).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let mut out = self.clone();
        for (a, b) in out.buckets.iter_mut().zip(earlier.buckets.iter()) {
            *a = a.saturating_sub(*b);
        }
        out.sum_us = out.sum_us.saturating_sub(earlier.sum_us);
        out
    }

    /// The `q` quantile (0.0..=1.0), interpolated linearly inside its bucket;
    /// `None` when empty. Values in the last bucket report its lower bound.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut seen = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            if (seen + n) as f64 >= rank {
                let low = if i == 0 { 0 } else { LATENCY_BOUNDS_US[i - 1] };
                let Some(high) = LATENCY_BOUNDS_US.get(i) else {
                    return Some(Duration::from_micros(low));
                };
                let within = (rank - seen as f64) / *n as f64;
                let us = low as f64 + within * (high - low) as f64;
                return Some(Duration::from_micros(us as u64));
            }
            seen += n;
        }
        None
    }
}

/// Status classes counted separately: 1xx to 5xx, and "no response" (the
/// client went away first).
pub const STATUS_CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index in [`STATUS_CLASSES`] of a status code (0 means no response).
pub fn status_class(status: u16) -> usize {
    match status / 100 {
        c @ 1..=5 => c as usize,
        _ => 0,
    }
}

/// Requests of one route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteCounters {
    /// The route's label (`host` + `path`, `*` for any host), or
    /// [`UNROUTED`].
    pub route: String,
    /// Requests by status class (see [`STATUS_CLASSES`]).
    pub by_class: [u64; 6],
    /// Time from a complete request head to the end of the response.
    pub latency: Histogram,
}

/// The label of requests that matched no route (or could not be parsed).
pub const UNROUTED: &str = "-";

impl RouteCounters {
    /// Requests of every class.
    pub fn requests(&self) -> u64 {
        self.by_class.iter().sum()
    }
}

/// What one worker saw of one upstream server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerCounters {
    /// The upstream group.
    pub upstream: String,
    /// The server, as written in the config.
    pub server: String,
    /// Exchanges in progress.
    pub active: u64,
    /// Exchanges started.
    pub requests: u64,
    /// Connects or exchanges that failed on the server's side.
    pub failures: u64,
    /// Failures since the last success (0: the last attempt worked).
    pub consecutive_failures: u64,
    /// The last failure, for operators.
    pub last_error: Option<String>,
    /// Live workers whose upstream health state (passive: `max_fails`
    /// within `fail_timeout`; active: `health_check`) keeps the server out
    /// of rotation now.
    pub down: u64,
    /// Live workers whose configuration names the server (each reports 1).
    pub reporting: u64,
}

impl ServerCounters {
    /// Whether the server was tried at all (a failed connect is no exchange).
    pub fn used(&self) -> bool {
        self.requests > 0 || self.failures > 0
    }

    /// The server's state as operators see it: `down` (every live worker
    /// keeps it out of rotation), `degraded` (some do), otherwise by the
    /// last attempts: `failing` (they failed in every worker that tried),
    /// `up`, or `unused` (never tried).
    pub fn state(&self) -> &'static str {
        if self.down > 0 && self.down >= self.reporting {
            "down"
        } else if self.down > 0 {
            "degraded"
        } else if !self.used() {
            "unused"
        } else if self.consecutive_failures > 0 {
            "failing"
        } else {
            "up"
        }
    }

    /// Whether requests can go to the server (not `down` nor `failing`).
    pub fn is_up(&self) -> bool {
        !matches!(self.state(), "down" | "failing")
    }
}

/// One worker's counters, cumulative since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStats {
    /// Per route, in config order, then [`UNROUTED`].
    pub routes: Vec<RouteCounters>,
    /// Open client connections now.
    pub active_connections: u64,
    /// Of those, idle keep-alive connections parked outside a task now
    /// (they hold a few hundred bytes each instead of their task).
    pub parked_connections: u64,
    /// Client connections accepted.
    pub connections: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Per upstream server.
    pub servers: Vec<ServerCounters>,
    /// TLS handshakes on client connections.
    #[serde(default)]
    pub tls: TlsHandshakes,
    /// Connections refused on `proxy_protocol` listeners, by reason (see
    /// [`PROXY_HEADER_FAILURE_REASONS`]): no valid header came in time, a
    /// header that is not one came, the client closed first.
    #[serde(default)]
    pub proxy_header_failures: [u64; 3],
    /// The connection budget at work (`max_connections`, descriptors).
    #[serde(default)]
    pub limits: ConnectionLimits,
    /// Client HTTP/2 connections and streams.
    #[serde(default)]
    pub http2: Http2Counts,
}

/// Client HTTP/2 connections, their streams, and the GOAWAYs prefork sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Http2Counts {
    /// Connections that completed the HTTP/2 handshake.
    pub connections: u64,
    /// Those open now.
    pub open: u64,
    /// Streams (requests) clients opened.
    pub streams: u64,
    /// GOAWAY frames sent, by error code (see [`GOAWAY_REASONS`]).
    pub goaways: [u64; 7],
}

/// The error codes of the GOAWAY frames prefork sends, as `/metrics`
/// labels them (the order of [`Http2Counts::goaways`]; RFC 9113 §7): a
/// drain or an idle connection's end, then the errors, the last for any
/// other code.
pub const GOAWAY_REASONS: [&str; 7] = [
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "FLOW_CONTROL_ERROR",
    "FRAME_SIZE_ERROR",
    "COMPRESSION_ERROR",
    "ENHANCE_YOUR_CALM",
    "OTHER",
];

/// How often a worker met its connection budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionLimits {
    /// Times a connection waited to be accepted with the worker at
    /// `max_connections` (an idle connection closed to make room, or
    /// accepting paused).
    pub reached: u64,
    /// Idle keep-alive connections closed to make room for new ones.
    pub evicted: u64,
    /// Accepts that failed for want of a file descriptor (`EMFILE`,
    /// `ENFILE`).
    pub fd_exhausted: u64,
}

/// Why a connection on a `proxy_protocol` listener was closed before its
/// PROXY header was read, as `/metrics` labels it (the order of
/// [`WorkerStats::proxy_header_failures`]).
pub const PROXY_HEADER_FAILURE_REASONS: [&str; 3] = ["timeout", "invalid", "closed"];

/// Why a TLS handshake failed, as `/metrics` labels it (the order of
/// [`TlsHandshakes::failed`]).
pub const TLS_FAILURE_REASONS: [&str; 5] =
    ["timeout", "plain_http", "not_tls", "protocol", "closed"];

/// TLS handshakes on client connections.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsHandshakes {
    /// Handshakes completed.
    pub completed: u64,
    /// Handshakes failed, by reason (see [`TLS_FAILURE_REASONS`]): the
    /// handshake timeout passed, a plain HTTP request came, bytes that are
    /// not TLS came, TLS refused (protocol error, version or cipher not
    /// offered), the client closed.
    pub failed: [u64; 5],
}

impl WorkerStats {
    /// Requests of every route.
    pub fn requests(&self) -> u64 {
        self.routes.iter().map(RouteCounters::requests).sum()
    }

    /// The latency histogram of every route together.
    pub fn latency(&self) -> Histogram {
        let mut all = Histogram::default();
        for r in &self.routes {
            all.merge(&r.latency);
        }
        all
    }

    /// Adds `other`'s counters to these, matching routes and servers by
    /// label (see [`Totals`], to add up many).
    pub fn merge(&mut self, other: &WorkerStats) {
        let mut totals = Totals::new(std::mem::take(self));
        totals.add(other);
        *self = totals.finish();
    }

    /// These counters without the gauges (what a stopped worker leaves behind).
    pub fn retired(&self) -> WorkerStats {
        let mut out = self.clone();
        out.active_connections = 0;
        out.parked_connections = 0;
        for s in &mut out.servers {
            s.active = 0;
            s.down = 0;
            s.reporting = 0;
        }
        out
    }
}

/// The counters of many workers added up. Routes are matched by label
/// through one map kept for every worker added, not rebuilt for each: a
/// config may hold many thousands of routes, and `/metrics` adds up every
/// worker. The first of equal labels counts.
#[derive(Debug, Default)]
pub struct Totals {
    sum: WorkerStats,
    /// Where each route label is in `sum.routes`.
    index: FxHashMap<String, usize>,
}

impl Totals {
    /// Totals that start with `stats`.
    pub fn new(stats: WorkerStats) -> Totals {
        let mut index = FxHashMap::default();
        for (i, r) in stats.routes.iter().enumerate() {
            index.entry(r.route.clone()).or_insert(i);
        }
        Totals { sum: stats, index }
    }

    /// Adds `other`'s counters, matching routes and servers by label
    /// (gauges add up too: the sum over workers is what is wanted). A route
    /// not seen yet is added after those seen.
    pub fn add(&mut self, other: &WorkerStats) {
        let sum = &mut self.sum;
        for r in &other.routes {
            match self.index.get(&r.route) {
                Some(&i) => {
                    let mine = &mut sum.routes[i];
                    for (a, b) in mine.by_class.iter_mut().zip(r.by_class.iter()) {
                        *a += b;
                    }
                    mine.latency.merge(&r.latency);
                }
                None => {
                    self.index.insert(r.route.clone(), sum.routes.len());
                    sum.routes.push(r.clone());
                }
            }
        }
        sum.active_connections += other.active_connections;
        sum.parked_connections += other.parked_connections;
        sum.connections += other.connections;
        sum.tls.completed += other.tls.completed;
        for (a, b) in sum.tls.failed.iter_mut().zip(other.tls.failed) {
            *a += b;
        }
        sum.http2.connections += other.http2.connections;
        sum.http2.open += other.http2.open;
        sum.http2.streams += other.http2.streams;
        for (a, b) in sum.http2.goaways.iter_mut().zip(other.http2.goaways) {
            *a += b;
        }
        sum.limits.reached += other.limits.reached;
        sum.limits.evicted += other.limits.evicted;
        sum.limits.fd_exhausted += other.limits.fd_exhausted;
        for (a, b) in sum
            .proxy_header_failures
            .iter_mut()
            .zip(other.proxy_header_failures)
        {
            *a += b;
        }
        sum.bytes_in += other.bytes_in;
        sum.bytes_out += other.bytes_out;
        for s in &other.servers {
            match sum
                .servers
                .iter_mut()
                .find(|m| m.upstream == s.upstream && m.server == s.server)
            {
                Some(mine) => {
                    // The server works if it worked for any worker that
                    // used it; a worker that never used it has no opinion.
                    if !mine.used() {
                        mine.consecutive_failures = s.consecutive_failures;
                    } else if s.used() {
                        mine.consecutive_failures =
                            mine.consecutive_failures.min(s.consecutive_failures);
                    }
                    mine.active += s.active;
                    mine.down += s.down;
                    mine.reporting += s.reporting;
                    mine.requests += s.requests;
                    mine.failures += s.failures;
                    if s.last_error.is_some() {
                        mine.last_error.clone_from(&s.last_error);
                    }
                }
                None => sum.servers.push(s.clone()),
            }
        }
    }

    /// The counters added up.
    pub fn finish(self) -> WorkerStats {
        self.sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_micros(101));
        h.observe(Duration::from_secs(60));
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[LATENCY_BOUNDS_US.len()], 1);
        assert_eq!(h.count(), 3);
        assert_eq!(h.sum_us, 60_000_201);
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for _ in 0..100 {
            h.observe(Duration::from_micros(2_000));
        }
        // All in the (1 ms, 2.5 ms] bucket.
        let p50 = h.quantile(0.5).unwrap();
        assert!(p50 > Duration::from_millis(1) && p50 <= Duration::from_micros(2_500));
        let p99 = h.quantile(0.99).unwrap();
        assert!(p99 >= p50 && p99 <= Duration::from_micros(2_500));
    }

    #[test]
    fn since_subtracts_an_earlier_state() {
        let mut h = Histogram::default();
        h.observe(Duration::from_millis(1));
        let before = h.clone();
        h.observe(Duration::from_secs(1));
        let recent = h.since(&before);
        assert_eq!(recent.count(), 1);
        assert_eq!(recent.sum_us, 1_000_000);
    }

    #[test]
    fn merge_matches_routes_and_servers_by_label() {
        let route = |name: &str, ok: u64| RouteCounters {
            route: name.into(),
            by_class: [0, 0, ok, 0, 0, 0],
            latency: Histogram::default(),
        };
        let server = |failures| ServerCounters {
            upstream: "app".into(),
            server: "127.0.0.1:1".into(),
            requests: failures,
            failures,
            consecutive_failures: failures,
            ..ServerCounters::default()
        };
        let mut a = WorkerStats {
            routes: vec![route("*/", 2)],
            servers: vec![server(1)],
            bytes_out: 10,
            ..WorkerStats::default()
        };
        let b = WorkerStats {
            routes: vec![route("*/", 3), route("a/", 1)],
            servers: vec![server(2)],
            bytes_out: 5,
            ..WorkerStats::default()
        };
        a.merge(&b);
        assert_eq!(a.routes.len(), 2);
        assert_eq!(a.routes[0].by_class[2], 5);
        assert_eq!(a.requests(), 6);
        assert_eq!(a.servers.len(), 1);
        assert_eq!(a.servers[0].failures, 3);
        assert_eq!(a.servers[0].consecutive_failures, 1);
        // A worker that never used the server does not make it look healthy.
        a.merge(&WorkerStats {
            servers: vec![server(0)],
            ..WorkerStats::default()
        });
        assert_eq!(a.servers[0].consecutive_failures, 1);
        assert_eq!(a.bytes_out, 15);
    }

    /// Several workers, whose routes overlap in part, in another order, or
    /// not at all: each label is added up once, in the order first seen,
    /// and the totals are those of merging them one after the other.
    #[test]
    fn totals_of_many_workers_add_each_label_up_once_in_the_order_first_seen() {
        let route = |name: &str, ok: u64, took_ms: u64| {
            let mut latency = Histogram::default();
            latency.observe(Duration::from_millis(took_ms));
            RouteCounters {
                route: name.into(),
                by_class: [0, 0, ok, 0, 1, 0],
                latency,
            }
        };
        let server = |name: &str, requests| ServerCounters {
            upstream: "app".into(),
            server: name.into(),
            requests,
            reporting: 1,
            ..ServerCounters::default()
        };
        let workers = [
            WorkerStats {
                routes: vec![route("a/", 1, 1), route("*/", 2, 2)],
                servers: vec![server("s1", 1)],
                connections: 1,
                ..WorkerStats::default()
            },
            WorkerStats {
                routes: vec![route("*/", 3, 3), route("b/", 4, 4)],
                servers: vec![server("s2", 2), server("s1", 3)],
                connections: 2,
                ..WorkerStats::default()
            },
            WorkerStats {
                routes: vec![route("c/", 5, 5)],
                connections: 3,
                ..WorkerStats::default()
            },
            WorkerStats {
                routes: vec![route("b/", 6, 6), route("a/", 7, 7), route(UNROUTED, 8, 8)],
                servers: vec![server("s2", 4)],
                connections: 4,
                ..WorkerStats::default()
            },
        ];
        let mut totals = Totals::default();
        for w in &workers {
            totals.add(w);
        }
        let sum = totals.finish();
        let routes: Vec<(&str, u64, u64)> = sum
            .routes
            .iter()
            .map(|r| (r.route.as_str(), r.requests(), r.latency.count()))
            .collect();
        assert_eq!(
            routes,
            vec![
                ("a/", 8 + 2, 2),
                ("*/", 5 + 2, 2),
                ("b/", 10 + 2, 2),
                ("c/", 5 + 1, 1),
                (UNROUTED, 8 + 1, 1)
            ]
        );
        assert_eq!(sum.routes[0].latency.sum_us, 8_000);
        let servers: Vec<(&str, u64, u64)> = sum
            .servers
            .iter()
            .map(|s| (s.server.as_str(), s.requests, s.reporting))
            .collect();
        assert_eq!(servers, vec![("s1", 4, 2), ("s2", 6, 2)]);
        assert_eq!(sum.connections, 10);
        let mut merged = WorkerStats::default();
        for w in &workers {
            merged.merge(w);
        }
        assert_eq!(sum, merged);
        let mut from_first = Totals::new(workers[0].clone());
        for w in &workers[1..] {
            from_first.add(w);
        }
        assert_eq!(from_first.finish(), sum);
    }

    #[test]
    fn server_state_prefers_the_health_state() {
        let mut s = ServerCounters {
            reporting: 2,
            ..ServerCounters::default()
        };
        assert_eq!(s.state(), "unused");
        s.requests = 1;
        assert_eq!(s.state(), "up");
        s.consecutive_failures = 1;
        assert_eq!((s.state(), s.is_up()), ("failing", false));
        s.down = 1;
        assert_eq!((s.state(), s.is_up()), ("degraded", true));
        s.down = 2;
        assert_eq!((s.state(), s.is_up()), ("down", false));
        let gone = WorkerStats {
            servers: vec![s],
            ..WorkerStats::default()
        }
        .retired();
        assert_eq!((gone.servers[0].down, gone.servers[0].reporting), (0, 0));
    }

    #[test]
    fn status_classes() {
        assert_eq!(STATUS_CLASSES[status_class(200)], "2xx");
        assert_eq!(STATUS_CLASSES[status_class(499)], "4xx");
        assert_eq!(STATUS_CLASSES[status_class(0)], "none");
    }
}
