//! The per-worker state shared by every connection, and the serve loop:
//! accept until told to stop, then drain.

use crate::accept::accept_loop;
use crate::access_log::AccessLogs;
use crate::control::Stop;
use crate::request_id::RequestIds;
use crate::stats::Stats;
use crate::upstream::Upstreams;
use prefork_shared::Config;
use slog::{info, warn, Logger};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::time::{sleep_until, Instant};

/// How often idle upstream connections are checked for expiry.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// State shared by the tasks of one worker (one thread: `Rc`, no locks).
pub(crate) struct Worker {
    /// The configuration the master sent.
    pub(crate) config: Config,
    /// Upstream groups and their connection pools.
    pub(crate) upstreams: Upstreams,
    /// The error log.
    pub(crate) log: Logger,
    /// The access logs.
    pub(crate) access: AccessLogs,
    /// Counters reported to the master.
    pub(crate) stats: Rc<Stats>,
    /// Ids for requests that come without one.
    pub(crate) request_ids: RequestIds,
    /// The run state, watched by accept loops and idle connections.
    pub(crate) stop: watch::Receiver<Stop>,
    /// Open client connections, for draining.
    active: Cell<usize>,
    /// Woken when `active` drops to zero.
    drained: Notify,
}

impl Worker {
    /// Worker state for `config`, stopping when `stop` says so.
    pub(crate) fn new(
        config: Config,
        log: Logger,
        access: AccessLogs,
        stop: watch::Receiver<Stop>,
    ) -> Rc<Self> {
        Rc::new(Worker {
            upstreams: Upstreams::new(&config),
            stats: Rc::new(Stats::new(&config)),
            request_ids: RequestIds::new(),
            config,
            log,
            access,
            stop,
            active: Cell::new(0),
            drained: Notify::new(),
        })
    }

    /// Whether a stop was requested (responses then close their connection).
    pub(crate) fn stopping(&self) -> bool {
        *self.stop.borrow() != Stop::Running
    }

    /// Counts a client connection as open until the guard is dropped.
    pub(crate) fn track(self: &Rc<Self>) -> ActiveConnection {
        self.active.set(self.active.get() + 1);
        self.stats.connection();
        ActiveConnection(self.clone())
    }

    /// Open client connections now.
    pub(crate) fn active_connections(&self) -> usize {
        self.active.get()
    }
}

/// Marks one open client connection; dropping it may finish a drain.
pub(crate) struct ActiveConnection(Rc<Worker>);

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        let left = self.0.active.get().saturating_sub(1);
        self.0.active.set(left);
        if left == 0 {
            self.0.drained.notify_waiters();
        }
    }
}

/// Serves on `listeners` until a stop; calls `ready` once accepting.
///
/// Must run inside a `LocalSet`. A graceful stop returns when every
/// connection has finished or after `shutdown_timeout`; a fast stop returns
/// at once. Tasks still running are dropped with the `LocalSet`.
pub(crate) async fn serve(worker: Rc<Worker>, listeners: Vec<TcpListener>, ready: impl FnOnce()) {
    for listener in listeners {
        tokio::task::spawn_local(accept_loop(worker.clone(), listener));
    }
    tokio::task::spawn_local(sweep_pools(worker.clone()));
    ready();

    let mut stop = worker.stop.clone();
    let state = match stop.wait_for(|s| *s != Stop::Running).await {
        Ok(state) => *state,
        // The sender lives as long as the worker; losing it means stop.
        Err(_) => Stop::Fast,
    };
    if state == Stop::Graceful {
        info!(worker.log, "stopping gracefully"; "connections" => worker.active.get());
        drain(&worker, &mut stop).await;
    }
    info!(worker.log, "stopped");
}

/// Waits until no connection is left, the shutdown timeout passes, or a
/// fast stop arrives.
async fn drain(worker: &Worker, stop: &mut watch::Receiver<Stop>) {
    let deadline = Instant::now() + worker.config.shutdown_timeout;
    loop {
        let notified = worker.drained.notified();
        tokio::pin!(notified);
        // Registered before checking, so a wake-up in between is not lost.
        notified.as_mut().enable();
        if worker.active.get() == 0 {
            return;
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = sleep_until(deadline) => {
                warn!(worker.log, "shutdown timeout reached, closing connections";
                    "connections" => worker.active.get());
                return;
            }
            _ = stop.wait_for(|s| *s == Stop::Fast) => return,
        }
    }
}

async fn sweep_pools(worker: Rc<Worker>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        worker.upstreams.sweep(Instant::now());
    }
}
