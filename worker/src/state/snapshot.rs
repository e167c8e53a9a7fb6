//! The state shared by every task of a worker: one immutable [`Snapshot`]
//! per configuration, and what outlives configurations (open connections,
//! counters, free buffers, the load board).
//!
//! A hot reload replaces the configuration without a new process: each
//! configuration gets a snapshot, connections take the latest one between
//! requests (a request in flight finishes under the one it started with),
//! and upstream pools of unchanged upstreams carry over.

use super::buffers::Buffers;
use super::load_share::LoadShare;
use super::tls::TlsServer;
use super::waiters::{Wait, Waiters};
use crate::io::splice::Pipes;
use crate::observe::access_log::AccessLogs;
use crate::observe::request_id::RequestIds;
use crate::observe::stats::{RouteSlots, ServerRef, Stats};
use crate::stop::Stop;
use crate::upstream::health_check::{self, NewestLog};
use crate::upstream::Upstreams;
use prefork_shared::log::{self as plog, LogGuard, Role};
use prefork_shared::route_table::RouteTable;
use prefork_shared::stats::WorkerStats;
use prefork_shared::Config;
use slog::{error, o, Logger};
use std::cell::{Cell, RefCell};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
/// While draining, an idle keep-alive connection is closed only after it has
/// been idle this long, so that a client that got a response a moment ago
/// and is sending its next request does not race the close (nginx's
/// `keepalive_min_timeout`).
pub(crate) const DRAIN_MIN_IDLE: Duration = Duration::from_millis(500);
/// Idle connections of a draining worker are closed spread over this window
/// (at most half the shutdown timeout), not all at once (HAProxy's
/// `close-spread-time`): clients then reconnect gradually.
pub(crate) const DRAIN_SPREAD: Duration = Duration::from_secs(2);
/// How long a connection accepted just before a stop may take to send its
/// first request, which is then answered with `Connection: close`.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// State of one worker process, whatever its configuration.
struct Shared {
    /// Open client connections, for draining.
    active: Cell<usize>,
    /// Open client connections not known to close after their current
    /// request: the load published on the board (a connection that closes
    /// after one request weighs little, however many are open at once).
    staying: Cell<usize>,
    /// Woken when `active` drops to zero.
    drained: Notify,
    /// Woken when a connection closes or parks while an accept loop waits
    /// for room (`waiting_for_room`) at `max_connections`.
    room: Notify,
    waiting_for_room: Cell<bool>,
    /// The newest configuration snapshot.
    latest: RefCell<Weak<Snapshot>>,
    /// Tasks waiting for a stop or a new snapshot.
    waiters: Waiters,
    /// When a stop was first seen, to spread idle closes from it.
    stop_seen: Cell<Option<Instant>>,
    /// Counters reported to the master: they outlive hot reloads.
    stats: Rc<Stats>,
    /// Ids for requests that come without one.
    request_ids: RequestIds,
    /// Free buffers for client connections.
    buffers: Buffers,
    /// Free pipes for splicing bodies.
    pipes: Pipes,
    /// Where the open connections are published for the other workers.
    load: Option<LoadShare>,
}

impl Shared {
    /// Wakes the accept loops waiting for room, if any.
    fn room_made(&self) {
        if self.waiting_for_room.replace(false) {
            self.room.notify_waiters();
        }
    }

    fn set_staying(&self, staying: usize) {
        self.staying.set(staying);
        if let Some(load) = &self.load {
            load.publish(staying);
        }
    }
}

/// One configuration's view of the worker, shared by the tasks using it
/// (one thread: `Rc`, no locks).
pub(crate) struct Snapshot {
    /// The configuration the master sent.
    pub(crate) config: Config,
    /// Which of `config.routes` a request takes.
    pub(crate) routes: RouteTable,
    /// Upstream groups and their connection pools.
    pub(crate) upstreams: Upstreams,
    /// The error log.
    pub(crate) log: Logger,
    /// The access logs of this configuration.
    pub(crate) access: AccessLogs,
    /// Its certificates and the rustls configuration built from them
    /// (`None`: no certificate).
    pub(crate) tls: Option<TlsServer>,
    /// Where this configuration's routes are counted.
    route_slots: RouteSlots,
    /// The run state, watched by accept loops and idle connections.
    pub(crate) stop: watch::Receiver<Stop>,
    shared: Rc<Shared>,
    /// Log threads opened for this configuration by a hot reload; they stop
    /// (flushing) when the last connection using this snapshot is done.
    _logs: Option<Rc<LogGuard>>,
}

impl Snapshot {
    /// The snapshot of `config`, the first of the worker, stopping when
    /// `stop` says so.
    pub(crate) fn new(
        config: Config,
        log: Logger,
        access: AccessLogs,
        stop: watch::Receiver<Stop>,
        load: Option<LoadShare>,
    ) -> Rc<Self> {
        let (stats, route_slots) = Stats::new(&config);
        let shared = Rc::new(Shared {
            active: Cell::new(0),
            staying: Cell::new(0),
            drained: Notify::new(),
            room: Notify::new(),
            waiting_for_room: Cell::new(false),
            latest: RefCell::new(Weak::new()),
            waiters: Waiters::default(),
            stop_seen: Cell::new(None),
            stats: Rc::new(stats),
            request_ids: RequestIds::new(),
            buffers: Buffers::default(),
            pipes: Pipes::default(),
            load,
        });
        let snapshot = Rc::new(Snapshot {
            tls: tls_server(&config, &log),
            upstreams: Upstreams::new(&config, &shared.stats),
            route_slots,
            routes: RouteTable::new(&config.routes),
            config,
            log,
            access,
            stop,
            shared,
            _logs: None,
        });
        *snapshot.shared.latest.borrow_mut() = Rc::downgrade(&snapshot);
        snapshot
    }

    /// The newest configuration snapshot (`self` if it is the newest, or if
    /// the newest is already gone).
    pub(crate) fn latest(self: &Rc<Self>) -> Rc<Self> {
        self.shared
            .latest
            .borrow()
            .upgrade()
            .unwrap_or_else(|| self.clone())
    }

    /// Whether a newer configuration than this one exists.
    pub(crate) fn superseded(self: &Rc<Self>) -> bool {
        !Rc::ptr_eq(&self.latest(), self)
    }

    /// Resolves once `changed` holds, checked again at each stop or new
    /// configuration.
    pub(crate) fn on_change<F: Fn() -> bool + Unpin>(&self, changed: F) -> Wait<'_, F> {
        self.shared.waiters.wait(changed)
    }

    /// A snapshot for `config` that becomes the latest: pools of upstreams
    /// whose settings did not change are kept, the error log is reopened
    /// only if its destination changed, access-log destinations still named
    /// stay open, and counters carry on (see [`Stats`] for routes).
    pub(crate) fn reconfigured(
        self: &Rc<Self>,
        config: Config,
        slot: u32,
        generation: u64,
    ) -> Rc<Self> {
        let (log, logs) = if config.log.error_log == self.config.log.error_log {
            (self.log.clone(), self._logs.clone())
        } else {
            match plog::open(&config.log.error_log, Role::Worker, generation) {
                Ok(l) => (l.error.new(o!("slot" => slot)), Some(Rc::new(l.guard))),
                Err(e) => {
                    error!(self.log, "cannot open the new error log; keeping the old one"; "error" => %e);
                    (self.log.clone(), self._logs.clone())
                }
            }
        };
        let (access, failed) = self.access.reconfigured(&config, &log);
        for e in failed {
            error!(log, "cannot open an access log; it is off"; "error" => %e);
        }
        let snapshot = Rc::new(Snapshot {
            tls: tls_server(&config, &log),
            upstreams: self.upstreams.carried_over(&config, &self.shared.stats),
            route_slots: self.shared.stats.configure(&config),
            routes: RouteTable::new(&config.routes),
            config,
            log,
            access,
            stop: self.stop.clone(),
            shared: self.shared.clone(),
            _logs: logs,
        });
        snapshot.start_health_checks(Some(&self.upstreams));
        *self.shared.latest.borrow_mut() = Rc::downgrade(&snapshot);
        self.shared.waiters.wake_all();
        snapshot
    }

    /// Whether a request for `host` on a TLS connection whose SNI was `sni`
    /// belongs to another certificate (see [`TlsServer::misdirected`]).
    pub(crate) fn misdirected(&self, sni: Option<&str>, host: &str) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|tls| tls.misdirected(sni, host))
    }

    /// Whether a stop was requested (responses then close their connection).
    pub(crate) fn stopping(&self) -> bool {
        *self.stop.borrow() != Stop::Running
    }

    /// When a draining worker closes an idle connection that has been idle
    /// since `idle_since`, after serving `served` requests: a fresh one gets
    /// a moment to send its first request; a used one is closed once idle
    /// for [`DRAIN_MIN_IDLE`], at a point spread over [`DRAIN_SPREAD`].
    pub(crate) fn drain_close_at(
        &self,
        idle_since: Instant,
        peer: SocketAddr,
        served: u64,
    ) -> Instant {
        let now = Instant::now();
        let stop_seen = self.shared.stop_seen.get().unwrap_or(now);
        self.shared.stop_seen.set(Some(stop_seen));
        if served == 0 {
            return now + FIRST_REQUEST_GRACE;
        }
        let window = DRAIN_SPREAD.min(self.config.shutdown_timeout / 2);
        let spread_at = stop_seen + spread_offset(peer, window);
        (idle_since + DRAIN_MIN_IDLE).max(spread_at).max(now)
    }

    /// Counts a client connection as open until the guard is dropped.
    pub(crate) fn track(self: &Rc<Self>) -> ActiveConnection {
        let shared = &self.shared;
        shared.active.set(shared.active.get() + 1);
        shared.set_staying(shared.staying.get() + 1);
        shared.stats.connection();
        ActiveConnection {
            shared: shared.clone(),
            closing: false,
            parked: false,
        }
    }

    /// Whether this worker holds clearly more connections than another
    /// accepting worker (see `load_share`; not the one in `ignored`), and
    /// should leave new ones on a shared socket to it for a moment.
    pub(crate) fn busier_than_others(&self, ignored: Option<usize>) -> bool {
        let shared = &self.shared;
        shared
            .load
            .as_ref()
            .is_some_and(|load| load.busier_than_others(shared.staying.get(), ignored))
    }

    /// The cell and count of the least loaded other accepting worker (not
    /// the one in `ignored`).
    pub(crate) fn least_loaded(&self, ignored: Option<usize>) -> Option<(usize, u32)> {
        self.shared
            .load
            .as_ref()
            .and_then(|load| load.least_loaded(ignored))
    }

    /// The count in a board cell now (0 without a board).
    pub(crate) fn load_of(&self, cell: usize) -> u32 {
        self.shared
            .load
            .as_ref()
            .map_or(0, |load| load.load_of(cell))
    }

    /// Open client connections now.
    pub(crate) fn active_connections(&self) -> usize {
        self.shared.active.get()
    }

    /// Most client connections this worker holds (`max_connections`; the
    /// master always sets it, the default covers configs built in tests).
    pub(crate) fn max_connections(&self) -> usize {
        let max = self
            .config
            .max_connections
            .unwrap_or(prefork_shared::fd_budget::DEFAULT_MAX_CONNECTIONS);
        usize::try_from(max).unwrap_or(usize::MAX)
    }

    /// Whether the worker holds `max_connections` client connections.
    pub(crate) fn full(&self) -> bool {
        self.active_connections() >= self.max_connections()
    }

    /// Resolves after a client connection closes or parks (it may then be
    /// closed to make room).
    pub(crate) async fn room_made(&self) {
        let notified = self.shared.room.notified();
        self.shared.waiting_for_room.set(true);
        notified.await;
    }

    /// The worker's counters (shared by every configuration snapshot).
    pub(crate) fn stats(&self) -> &Rc<Stats> {
        &self.shared.stats
    }

    /// The free buffers for client connections (one set per process).
    pub(crate) fn buffers(&self) -> &Buffers {
        &self.shared.buffers
    }

    /// The free pipes for splicing bodies, if `splice` is on.
    pub(crate) fn pipes(&self) -> Option<&Pipes> {
        self.config.http.splice.then_some(&self.shared.pipes)
    }

    /// Writes a new request id into `out` (one generator per process).
    pub(crate) fn next_request_id(&self, out: &mut String) {
        self.shared.request_ids.next_into(out);
    }

    /// Counts a finished request of route `route` of this configuration.
    pub(crate) fn count_request(
        &self,
        route: Option<usize>,
        status: u16,
        sent: u64,
        took: Duration,
    ) {
        self.shared
            .stats
            .request(&self.route_slots, route, status, sent, took);
    }

    /// The counters, with the upstream servers of this configuration and
    /// whether this worker's health state keeps each out of rotation.
    pub(crate) fn stats_snapshot(&self) -> WorkerStats {
        let now = Instant::now();
        let servers = self.config.upstreams.iter().flat_map(|(name, u)| {
            let group = self.upstreams.get(name);
            u.servers.iter().enumerate().map(move |(i, s)| ServerRef {
                upstream: name,
                server: &s.name,
                addr: s.addr,
                down: group.is_some_and(|g| !g.usable(i, now)),
            })
        });
        self.shared
            .stats
            .snapshot(self.active_connections(), servers)
    }

    /// A handle on the newest snapshot that does not keep this one alive.
    pub(crate) fn newest(&self) -> Newest {
        Newest(self.shared.clone())
    }

    /// Starts the health checks of this snapshot's upstream groups, but for
    /// those carried over unchanged from `previous`, whose checks still run.
    /// They log to the newest snapshot's error log.
    pub(crate) fn start_health_checks(&self, previous: Option<&Upstreams>) {
        let newest = self.newest();
        let newest_log: NewestLog = Rc::new(move || newest.get().map(|s| s.log.clone()));
        health_check::spawn(
            &self.upstreams,
            previous,
            &self.stop,
            &newest_log,
            &self.log,
        );
    }

    /// Publishes this worker on the load board as accepting.
    pub(crate) fn start_accepting(&self) {
        let shared = &self.shared;
        shared.set_staying(shared.staying.get());
    }
}

/// Finds the newest configuration snapshot without holding any.
#[derive(Clone)]
pub(crate) struct Newest(Rc<Shared>);

impl Newest {
    /// The newest snapshot, while one is in use.
    pub(crate) fn get(&self) -> Option<Rc<Snapshot>> {
        self.0.latest.borrow().upgrade()
    }

    /// Tells the tasks waiting for a stop (the accept loops and idle
    /// connections wait on the worker's waiters, not on the watch each),
    /// and leaves the load board.
    pub(crate) fn stop_seen(&self) {
        self.0.waiters.wake_all();
        if let Some(load) = &self.0.load {
            load.retire();
        }
    }

    /// Open client connections now.
    pub(crate) fn active_connections(&self) -> usize {
        self.0.active.get()
    }

    /// A connection parked: an accept loop waiting for room may close it
    /// to make room.
    pub(crate) fn parked_one(&self) {
        self.0.room_made();
    }

    /// The guard of a parked connection ([`ActiveConnection::park`]), given
    /// back when it resumes or closes.
    pub(crate) fn parked_guard(&self) -> ActiveConnection {
        ActiveConnection {
            shared: self.0.clone(),
            closing: false,
            parked: false,
        }
    }

    /// Resolves once no client connection is left open.
    pub(crate) async fn drained(&self) {
        let shared = &self.0;
        loop {
            let notified = shared.drained.notified();
            tokio::pin!(notified);
            // Registered before checking, so a wake-up in between is not lost.
            notified.as_mut().enable();
            if shared.active.get() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Where in `window` the connection from `peer` closes: a hash of its
/// address, so closes are spread evenly without a random number generator.
fn spread_offset(peer: SocketAddr, window: Duration) -> Duration {
    let millis = window.as_millis() as u64;
    if millis == 0 {
        return Duration::ZERO;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    peer.hash(&mut h);
    Duration::from_millis(h.finish() % millis)
}

/// Marks one open client connection (WebSocket tunnels included); dropping
/// it may finish a drain.
pub(crate) struct ActiveConnection {
    shared: Rc<Shared>,
    /// Whether it is known to close after its current request.
    closing: bool,
    /// Whether it was parked: it counts on without a guard until
    /// [`Newest::parked_guard`] gives it one again.
    parked: bool,
}

impl ActiveConnection {
    /// The connection is parked outside its task (`downstream::park`): it
    /// keeps counting as open, and as load that stays, with no guard of
    /// its own.
    pub(crate) fn park(mut self) {
        self.parked = true;
    }

    /// Notes that the connection closes after its current request: it no
    /// longer counts as load that stays.
    pub(crate) fn closing(&mut self) {
        if !self.closing {
            self.closing = true;
            let shared = &self.shared;
            shared.set_staying(shared.staying.get().saturating_sub(1));
        }
    }
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        if self.parked {
            return;
        }
        self.closing();
        let shared = &self.shared;
        let left = shared.active.get().saturating_sub(1);
        shared.active.set(left);
        shared.room_made();
        if left == 0 {
            shared.drained.notify_waiters();
        }
    }
}

/// The TLS state of `config`, built once for all its connections; a
/// certificate rustls refuses (the master checked them all) leaves TLS
/// connections closed, with the error logged.
fn tls_server(config: &Config, log: &Logger) -> Option<TlsServer> {
    // Every worker seals tickets with the master's keys: a client resumes
    // on whichever worker accepts it.
    match TlsServer::new(&config.tls, Some(super::tickets::ticketer())) {
        Ok(tls) => tls,
        Err(e) => {
            error!(log, "cannot use the certificates: TLS connections are refused"; "error" => %e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_closes_are_spread_within_the_window() {
        let window = Duration::from_secs(2);
        let offsets: Vec<Duration> = (1000..1100)
            .map(|port| spread_offset(SocketAddr::from(([127, 0, 0, 1], port)), window))
            .collect();
        assert!(offsets.iter().all(|o| *o < window));
        let early = offsets.iter().filter(|o| **o < window / 2).count();
        assert!(
            (20..80).contains(&early),
            "{early} of 100 in the first half"
        );
        assert_eq!(
            spread_offset(SocketAddr::from(([127, 0, 0, 1], 1)), Duration::ZERO),
            Duration::ZERO
        );
    }
}
