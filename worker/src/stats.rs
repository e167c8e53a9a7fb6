//! Per-worker counters: plain integers behind `Cell`/`RefCell` (one thread),
//! bumped on the hot path, copied into a [`WorkerStats`] and sent to the
//! master about once a second, never per request.

use crate::server::Worker;
use ipc_channel::ipc::IpcSender;
use prefork_shared::config::Config;
use prefork_shared::ipc::WorkerMsg;
use prefork_shared::stats::{status_class, RouteCounters, ServerCounters, WorkerStats, UNROUTED};
use slog::debug;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// How often a worker reports its counters to the master.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// The counters of one worker.
pub(crate) struct Stats {
    /// One per route of the config, then one for unrouted requests.
    routes: RefCell<Vec<RouteCounters>>,
    connections: Cell<u64>,
    bytes_in: Cell<u64>,
    bytes_out: Cell<u64>,
    /// Per upstream server address (labels are added when reporting).
    servers: RefCell<HashMap<SocketAddr, ServerCounters>>,
}

impl Stats {
    /// Counters for the routes of `config`.
    pub(crate) fn new(config: &Config) -> Self {
        let routes = config
            .routes
            .iter()
            .map(|r| r.label())
            .chain(std::iter::once(UNROUTED.to_owned()))
            .map(|route| RouteCounters {
                route,
                ..RouteCounters::default()
            })
            .collect();
        let mut servers = HashMap::new();
        for (name, group) in &config.upstreams {
            for s in &group.servers {
                servers.entry(s.addr).or_insert_with(|| ServerCounters {
                    upstream: name.clone(),
                    server: s.name.clone(),
                    ..ServerCounters::default()
                });
            }
        }
        Stats {
            routes: RefCell::new(routes),
            connections: Cell::new(0),
            bytes_in: Cell::new(0),
            bytes_out: Cell::new(0),
            servers: RefCell::new(servers),
        }
    }

    /// Counts an accepted client connection.
    pub(crate) fn connection(&self) {
        self.connections.set(self.connections.get() + 1);
    }

    /// Counts bytes read from a client.
    pub(crate) fn read(&self, n: usize) {
        self.bytes_in.set(self.bytes_in.get() + n as u64);
    }

    /// Counts one finished request of route `route` (`None`: no route).
    pub(crate) fn request(&self, route: Option<usize>, status: u16, sent: u64, took: Duration) {
        self.bytes_out.set(self.bytes_out.get() + sent);
        let mut routes = self.routes.borrow_mut();
        let last = routes.len() - 1;
        let counters = &mut routes[route.unwrap_or(last).min(last)];
        counters.by_class[status_class(status)] += 1;
        counters.latency.observe(took);
    }

    /// Marks an exchange with `server` in progress until the guard drops.
    pub(crate) fn upstream_busy(self: &Rc<Self>, server: SocketAddr) -> Busy {
        self.with_server(server, |s| {
            s.active += 1;
            s.requests += 1;
        });
        Busy {
            stats: self.clone(),
            server,
        }
    }

    /// Records a failure of `server` (connect, timeout, bad response).
    pub(crate) fn upstream_failed(&self, server: SocketAddr, error: &dyn Display) {
        self.with_server(server, |s| {
            s.failures += 1;
            s.consecutive_failures += 1;
            s.last_error = Some(error.to_string());
        });
    }

    /// Records a successful exchange with `server`.
    pub(crate) fn upstream_ok(&self, server: SocketAddr) {
        self.with_server(server, |s| s.consecutive_failures = 0);
    }

    fn with_server(&self, server: SocketAddr, f: impl FnOnce(&mut ServerCounters)) {
        if let Some(s) = self.servers.borrow_mut().get_mut(&server) {
            f(s);
        }
    }

    /// A copy of every counter, with `active` open client connections.
    pub(crate) fn snapshot(&self, active: usize) -> WorkerStats {
        let mut servers: Vec<ServerCounters> = self.servers.borrow().values().cloned().collect();
        servers.sort_by(|a, b| (&a.upstream, &a.server).cmp(&(&b.upstream, &b.server)));
        WorkerStats {
            routes: self.routes.borrow().clone(),
            active_connections: active as u64,
            connections: self.connections.get(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            servers,
        }
    }
}

/// An exchange with an upstream server in progress.
pub(crate) struct Busy {
    stats: Rc<Stats>,
    server: SocketAddr,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stats
            .with_server(self.server, |s| s.active = s.active.saturating_sub(1));
    }
}

/// Sends the worker's counters to the master.
pub(crate) fn report(worker: &Worker, to_master: &IpcSender<WorkerMsg>) {
    let snapshot = worker.stats.snapshot(worker.active_connections());
    if let Err(e) = to_master.send(WorkerMsg::Stats(Box::new(snapshot))) {
        debug!(worker.log, "cannot send counters to the master"; "error" => %e);
    }
}

/// Reports the counters every [`REPORT_INTERVAL`], forever.
pub(crate) async fn report_every(worker: Rc<Worker>, to_master: IpcSender<WorkerMsg>) {
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    loop {
        tick.tick().await;
        report(&worker, &to_master);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefork_shared::config_file::parse;
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
        let stats = Stats::new(&config());
        stats.request(Some(0), 200, 100, Duration::from_millis(1));
        stats.request(Some(0), 502, 50, Duration::from_millis(1));
        stats.request(None, 404, 10, Duration::from_millis(1));
        stats.read(30);
        let snap = stats.snapshot(2);
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
    fn tracks_upstream_servers() {
        let stats = Rc::new(Stats::new(&config()));
        let addr: SocketAddr = "127.0.0.1:3000".parse().unwrap();
        let busy = stats.upstream_busy(addr);
        assert_eq!(stats.snapshot(0).servers[0].active, 1);
        stats.upstream_failed(addr, &"connection refused");
        drop(busy);
        let s = &stats.snapshot(0).servers[0];
        assert_eq!((s.upstream.as_str(), s.active, s.requests), ("app", 0, 1));
        assert_eq!((s.failures, s.consecutive_failures), (1, 1));
        assert_eq!(s.last_error.as_deref(), Some("connection refused"));
        stats.upstream_ok(addr);
        assert_eq!(stats.snapshot(0).servers[0].consecutive_failures, 0);
    }
}
