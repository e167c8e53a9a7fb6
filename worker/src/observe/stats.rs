//! Per-worker counters: plain integers behind `Cell`/`RefCell` (one thread),
//! bumped on the hot path, copied into a [`WorkerStats`] and sent to the
//! master about once a second, never per request.

use super::occurrences::Occurrences;
use prefork_shared::config::Config;
use prefork_shared::stats::{
    status_class, ConnectionLimits, Http2Counts, RouteCounters, ServerCounters, TlsHandshakes,
    WorkerStats, UNROUTED,
};
use rustc_hash::FxHashMap;
use std::cell::{Cell, RefCell};
use std::fmt::Display;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use tokio::time::Instant;

/// The counters of one worker. They live as long as the worker process, so
/// they survive hot reloads: requests are counted per route *label* (host
/// and path), so a route that keeps its label keeps its series, a new route
/// gets a new one, and a removed route's series keeps its final values
/// (counters never go backwards). Upstream servers are counted per upstream
/// and address; reports list the servers of the newest configuration.
pub(crate) struct Stats {
    /// One per route label seen (config order, then [`UNROUTED`], then
    /// routes added by hot reloads).
    routes: RefCell<Vec<RouteCounters>>,
    connections: Cell<u64>,
    /// Idle connections parked outside a task now (see `downstream::park`).
    parked: Cell<u64>,
    bytes_in: Cell<u64>,
    bytes_out: Cell<u64>,
    /// TLS handshakes completed and failed (by reason).
    tls: RefCell<TlsHandshakes>,
    /// The connection budget at work.
    limits: Cell<ConnectionLimits>,
    /// `max_connections` reached since the last log line about it.
    limit_log: RefCell<Occurrences>,
    /// Accepts failed since the last log line about them.
    accept_error_log: RefCell<Occurrences>,
    proxy_header_failures: RefCell<[u64; 3]>,
    http2: RefCell<Http2Counts>,
    /// Per upstream and server address (labels are added when reporting).
    /// Each upstream group holds its servers' counters (see
    /// [`Stats::server`]): a request never looks them up. Fx hashing, as the
    /// keys come from the configuration, not from clients.
    servers: RefCell<FxHashMap<(String, SocketAddr), ServerCell>>,
}

/// One upstream server's counters, shared by the groups that name it (one
/// per configuration snapshot).
pub(crate) type ServerCell = Rc<RefCell<ServerCounters>>;

/// Where one configuration's requests are counted: the series of each of
/// its routes (same index as `Config::routes`), then of unrouted requests.
pub(crate) struct RouteSlots(Vec<usize>);

impl RouteSlots {
    /// The series of route `route` of the configuration (`None`: no route).
    fn of(&self, route: Option<usize>) -> usize {
        let last = self.0.len() - 1;
        self.0[route.unwrap_or(last).min(last)]
    }
}

/// One upstream server of the newest configuration, for a report.
pub(crate) struct ServerRef<'a> {
    /// The upstream group's name.
    pub(crate) upstream: &'a str,
    /// The server as written in the config.
    pub(crate) server: &'a str,
    /// Its address.
    pub(crate) addr: SocketAddr,
    /// Whether this worker's health state keeps it out of rotation now.
    pub(crate) down: bool,
}

impl Stats {
    /// Counters for the routes of `config` (and its slots).
    pub(crate) fn new(config: &Config) -> (Self, RouteSlots) {
        let stats = Stats {
            routes: RefCell::new(Vec::new()),
            connections: Cell::new(0),
            parked: Cell::new(0),
            bytes_in: Cell::new(0),
            bytes_out: Cell::new(0),
            tls: RefCell::default(),
            limits: Cell::default(),
            limit_log: RefCell::default(),
            accept_error_log: RefCell::default(),
            proxy_header_failures: RefCell::default(),
            http2: RefCell::default(),
            servers: RefCell::new(FxHashMap::default()),
        };
        let slots = stats.configure(config);
        (stats, slots)
    }

    /// Makes room for the routes and servers of `config` (a hot reload),
    /// keeping every existing series; returns where its requests count.
    pub(crate) fn configure(&self, config: &Config) -> RouteSlots {
        let mut routes = self.routes.borrow_mut();
        // Series by label, looked up rather than searched for: a config may
        // hold many thousands of routes.
        let mut known: FxHashMap<String, usize> = routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.route.clone(), i))
            .collect();
        let mut slot_of = |label: String| {
            *known.entry(label).or_insert_with_key(|label| {
                routes.push(RouteCounters {
                    route: label.clone(),
                    ..RouteCounters::default()
                });
                routes.len() - 1
            })
        };
        let mut slots: Vec<usize> = config.routes.iter().map(|r| slot_of(r.label())).collect();
        slots.push(slot_of(UNROUTED.to_owned()));
        for (name, group) in &config.upstreams {
            for s in &group.servers {
                self.server(name, s.addr);
            }
        }
        RouteSlots(slots)
    }

    /// The counters of server `addr` of upstream `upstream`, kept for the
    /// worker's life (made on first use).
    pub(crate) fn server(&self, upstream: &str, addr: SocketAddr) -> ServerCell {
        self.servers
            .borrow_mut()
            .entry((upstream.to_owned(), addr))
            .or_default()
            .clone()
    }

    /// Counts an accepted client connection.
    /// Counts a TLS handshake completed.
    pub(crate) fn tls_handshake(&self) {
        self.tls.borrow_mut().completed += 1;
    }

    /// Counts an HTTP/2 connection opened (`true`) or closed.
    pub(crate) fn http2_connection(&self, opened: bool) {
        let mut h2 = self.http2.borrow_mut();
        if opened {
            h2.connections += 1;
            h2.open += 1;
        } else {
            h2.open = h2.open.saturating_sub(1);
        }
    }

    /// Counts an HTTP/2 stream a client opened.
    pub(crate) fn http2_stream(&self) {
        self.http2.borrow_mut().streams += 1;
    }

    /// Counts a GOAWAY sent with the error code at `reason` of
    /// [`prefork_shared::stats::GOAWAY_REASONS`].
    pub(crate) fn http2_goaway(&self, reason: usize) {
        if let Some(n) = self.http2.borrow_mut().goaways.get_mut(reason) {
            *n += 1;
        }
    }

    /// Counts a TLS handshake failed for the reason at `reason` of
    /// [`prefork_shared::stats::TLS_FAILURE_REASONS`].
    pub(crate) fn tls_failure(&self, reason: usize) {
        if let Some(n) = self.tls.borrow_mut().failed.get_mut(reason) {
            *n += 1;
        }
    }

    /// Counts a new connection meeting the worker at `max_connections`;
    /// returns how many to report if a log line is due (see
    /// [`Occurrences`]).
    pub(crate) fn limit_reached(&self, now: Instant) -> Option<u64> {
        self.update_limits(|l| l.reached += 1);
        self.limit_log.borrow_mut().note(now)
    }

    /// Counts an idle connection closed to make room.
    pub(crate) fn evicted(&self) {
        self.update_limits(|l| l.evicted += 1);
    }

    /// Counts a failed accept (`fd_exhausted`: for want of a descriptor);
    /// returns how many to report if a log line is due.
    pub(crate) fn accept_failed(&self, fd_exhausted: bool, now: Instant) -> Option<u64> {
        if fd_exhausted {
            self.update_limits(|l| l.fd_exhausted += 1);
        }
        self.accept_error_log.borrow_mut().note(now)
    }

    fn update_limits(&self, f: impl FnOnce(&mut ConnectionLimits)) {
        let mut limits = self.limits.get();
        f(&mut limits);
        self.limits.set(limits);
    }

    /// Counts a connection closed for want of a PROXY protocol header, for
    /// the reason at `reason` of
    /// [`prefork_shared::stats::PROXY_HEADER_FAILURE_REASONS`].
    pub(crate) fn proxy_header_failure(&self, reason: usize) {
        if let Some(n) = self.proxy_header_failures.borrow_mut().get_mut(reason) {
            *n += 1;
        }
    }

    /// Counts `delta` more (or fewer) parked connections.
    pub(crate) fn parked(&self, delta: i64) {
        self.parked
            .set(self.parked.get().saturating_add_signed(delta));
    }

    pub(crate) fn connection(&self) {
        self.connections.set(self.connections.get() + 1);
    }

    /// Counts bytes read from a client.
    pub(crate) fn read(&self, n: usize) {
        self.read_u64(n as u64);
    }

    /// Counts bytes read from a client (a tunnel's total).
    pub(crate) fn read_u64(&self, n: u64) {
        self.bytes_in.set(self.bytes_in.get().saturating_add(n));
    }

    /// Counts one finished request of route `route` (`None`: no route) of
    /// the configuration whose slots are `slots`.
    pub(crate) fn request(
        &self,
        slots: &RouteSlots,
        route: Option<usize>,
        status: u16,
        sent: u64,
        took: Duration,
    ) {
        self.bytes_out.set(self.bytes_out.get() + sent);
        let mut routes = self.routes.borrow_mut();
        let counters = &mut routes[slots.of(route)];
        counters.by_class[status_class(status)] += 1;
        counters.latency.observe(took);
    }

    /// A copy of every counter, with `active` open client connections and
    /// a row for each of `servers` (the newest configuration's).
    pub(crate) fn snapshot<'a>(
        &self,
        active: usize,
        servers: impl IntoIterator<Item = ServerRef<'a>>,
    ) -> WorkerStats {
        let counters = self.servers.borrow();
        let mut rows: Vec<ServerCounters> = servers
            .into_iter()
            .map(|s| ServerCounters {
                upstream: s.upstream.to_owned(),
                server: s.server.to_owned(),
                down: u64::from(s.down),
                reporting: 1,
                ..counters
                    .get(&(s.upstream.to_owned(), s.addr))
                    .map(|c| c.borrow().clone())
                    .unwrap_or_default()
            })
            .collect();
        rows.sort_by(|a, b| (&a.upstream, &a.server).cmp(&(&b.upstream, &b.server)));
        WorkerStats {
            routes: self.routes.borrow().clone(),
            active_connections: active as u64,
            parked_connections: self.parked.get(),
            connections: self.connections.get(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            servers: rows,
            tls: self.tls.borrow().clone(),
            limits: self.limits.get(),
            proxy_header_failures: *self.proxy_header_failures.borrow(),
            http2: self.http2.borrow().clone(),
        }
    }
}

/// Records a failure of the server counted in `cell` (connect, timeout,
/// bad response).
pub(crate) fn failed(cell: &ServerCell, error: &dyn Display) {
    let mut c = cell.borrow_mut();
    c.failures += 1;
    c.consecutive_failures += 1;
    c.last_error = Some(error.to_string());
}

/// An exchange with an upstream server in progress, counted in the
/// server's counters until dropped.
pub(crate) struct Busy(ServerCell);

impl Busy {
    /// Counts an exchange with the server counted in `cell`.
    pub(crate) fn start(cell: &ServerCell) -> Busy {
        {
            let mut c = cell.borrow_mut();
            c.active += 1;
            c.requests += 1;
        }
        Busy(cell.clone())
    }

    /// Records that the exchange succeeded.
    pub(crate) fn ok(&self) {
        self.0.borrow_mut().consecutive_failures = 0;
    }

    /// Records that the exchange failed.
    pub(crate) fn failed(&self, error: &dyn Display) {
        failed(&self.0, error);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut c = self.0.borrow_mut();
        c.active = c.active.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefork_shared::config::parse;
    use std::path::Path;

    fn config() -> Config {
        parse(
            Path::new("t.toml"),
            r#"
[upstreams.app]
servers = ["127.0.0.1:3000"]
[[routes]]
path = "/api"
upstream = "app"
[[routes]]
host = "a.test"
respond = { body = "x" }
"#,
        )
        .unwrap()
    }

    #[test]
    fn counts_requests_by_route_and_class() {
        let (stats, slots) = Stats::new(&config());
        let ms = Duration::from_millis(1);
        stats.request(&slots, Some(0), 200, 100, ms);
        stats.request(&slots, Some(0), 502, 50, ms);
        stats.request(&slots, None, 404, 10, ms);
        stats.read(30);
        let snap = stats.snapshot(2, []);
        assert_eq!(snap.routes.len(), 3);
        assert_eq!(snap.routes[0].route, "*/api");
        assert_eq!(snap.routes[0].by_class, [0, 0, 1, 0, 0, 1]);
        assert_eq!(snap.routes[1].route, "a.test/");
        assert_eq!(snap.routes[2].route, UNROUTED);
        assert_eq!(snap.routes[2].by_class[4], 1);
        assert_eq!(snap.bytes_out, 160);
        assert_eq!(snap.bytes_in, 30);
        assert_eq!(snap.active_connections, 2);
    }

    #[test]
    fn route_series_follow_labels_across_reconfigurations() {
        let (stats, slots) = Stats::new(&config());
        let ms = Duration::from_millis(1);
        stats.request(&slots, Some(1), 200, 1, ms);
        // The new config drops "*/api", keeps "a.test/" (now first) and adds
        // a route.
        let mut next = config();
        next.routes.remove(0);
        let mut added = next.routes[0].clone();
        added.path = "/new".into();
        next.routes.push(added);
        let slots = stats.configure(&next);
        stats.request(&slots, Some(0), 200, 1, ms);
        stats.request(&slots, Some(1), 200, 1, ms);
        let snap = stats.snapshot(0, []);
        let count = |label: &str| {
            snap.routes
                .iter()
                .find(|r| r.route == label)
                .map(RouteCounters::requests)
        };
        assert_eq!(count("a.test/"), Some(2));
        assert_eq!(count("a.test/new"), Some(1));
        assert_eq!(count("*/api"), Some(0));
        assert_eq!(snap.routes.len(), 4);
    }

    #[test]
    fn tracks_upstream_servers() {
        let (stats, _) = Stats::new(&config());
        let addr: SocketAddr = "127.0.0.1:3000".parse().unwrap();
        let row = |down| ServerRef {
            upstream: "app",
            server: "127.0.0.1:3000",
            addr,
            down,
        };
        let cell = stats.server("app", addr);
        let busy = Busy::start(&cell);
        assert_eq!(stats.snapshot(0, [row(false)]).servers[0].active, 1);
        busy.failed(&"connection refused");
        drop(busy);
        let s = &stats.snapshot(0, [row(true)]).servers[0];
        assert_eq!((s.upstream.as_str(), s.active, s.requests), ("app", 0, 1));
        assert_eq!((s.failures, s.consecutive_failures), (1, 1));
        assert_eq!((s.down, s.reporting), (1, 1));
        assert_eq!(s.last_error.as_deref(), Some("connection refused"));
        Busy::start(&cell).ok();
        assert_eq!(
            stats.snapshot(0, [row(false)]).servers[0].consecutive_failures,
            0
        );
        // A server the newest configuration does not name is not reported.
        assert!(stats.snapshot(0, []).servers.is_empty());
    }

    #[test]
    fn upstreams_sharing_an_address_count_apart() {
        let (stats, _) = Stats::new(&config());
        let addr: SocketAddr = "127.0.0.1:3000".parse().unwrap();
        let row = |upstream| ServerRef {
            upstream,
            server: "127.0.0.1:3000",
            addr,
            down: false,
        };
        drop(Busy::start(&stats.server("app", addr)));
        failed(&stats.server("other", addr), &"refused");
        let s = stats.snapshot(0, [row("app"), row("other")]).servers;
        assert_eq!((s[0].requests, s[0].failures), (1, 0), "app");
        assert_eq!((s[1].requests, s[1].failures), (0, 1), "other");
        // The same upstream and address keep one series (a hot reload).
        assert!(Rc::ptr_eq(
            &stats.server("app", addr),
            &stats.server("app", addr)
        ));
    }
}
