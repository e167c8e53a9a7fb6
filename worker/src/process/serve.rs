//! The serve loop: accept until told to stop, then drain.

use crate::downstream::accept::{accept_loop, Listener};
use crate::downstream::lots::Lots;
use crate::state::{Newest, Snapshot};
use crate::stop::Stop;
use slog::{info, warn};
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

/// How often idle upstream connections are checked for expiry.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Serves on `listeners` until a stop; calls `ready` once accepting.
///
/// Must run inside a `LocalSet`. A graceful stop returns when every
/// connection has finished or after `shutdown_timeout`; a fast stop returns
/// at once. Tasks still running are dropped with the `LocalSet`.
pub(crate) async fn serve(snapshot: Rc<Snapshot>, listeners: Vec<Listener>, ready: impl FnOnce()) {
    // Seen by the other workers as accepting from now on.
    snapshot.start_accepting();
    // Idle keep-alive connections wait there without a task of their own.
    let lot = match Lots::start(&snapshot.newest(), snapshot.stats(), &snapshot.stop) {
        Ok(lots) => Some(lots),
        Err(e) => {
            warn!(snapshot.log, "idle connections wait in their tasks: cannot make a parking lot"; "error" => %e);
            None
        }
    };
    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            tokio::task::spawn_local(accept_loop(snapshot.clone(), listener, lot.clone()))
        })
        .collect();
    drop(lot);
    tokio::task::spawn_local(sweep_pools(snapshot.newest()));
    snapshot.start_health_checks(None);
    ready();

    // From here on only the newest snapshot is looked up: this first one
    // belongs to the connections using it (see `apply_updates`). The error
    // log it was opened with stays open in any case (the worker's main
    // keeps it), so it still serves when no snapshot is left.
    let newest = snapshot.newest();
    let mut stop = snapshot.stop.clone();
    let first_log = snapshot.log.clone();
    drop(snapshot);
    let state = match stop.wait_for(|s| *s != Stop::Running).await {
        Ok(state) => *state,
        // The sender lives as long as the worker; losing it means stop.
        Err(_) => Stop::Fast,
    };
    newest.stop_seen();
    if state == Stop::Graceful {
        // The accept loops first take what is queued (see accept_loop).
        for accept in accepting {
            let _ = accept.await;
        }
        if let Some(snapshot) = newest.get() {
            info!(snapshot.log, "stopping gracefully"; "connections" => newest.active_connections());
            drain(&snapshot, &newest, &mut stop).await;
        }
    }
    let log = newest.get().map_or(first_log, |s| s.log.clone());
    info!(log, "stopped");
}

/// Waits until no connection is left, the shutdown timeout of `snapshot`
/// passes, or a fast stop arrives.
async fn drain(snapshot: &Snapshot, newest: &Newest, stop: &mut watch::Receiver<Stop>) {
    let deadline = Instant::now() + snapshot.config.shutdown_timeout;
    tokio::select! {
        // Drained first: a worker with nothing left to close stops quietly.
        biased;
        () = newest.drained() => {}
        _ = sleep_until(deadline) => {
            warn!(snapshot.log, "shutdown timeout reached, closing connections";
                "connections" => newest.active_connections());
        }
        _ = stop.wait_for(|s| *s == Stop::Fast) => {}
    }
}

/// Closes expired idle upstream connections of the newest snapshot, every
/// [`SWEEP_INTERVAL`], until no snapshot is left.
async fn sweep_pools(newest: Newest) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        let Some(latest) = newest.get() else {
            return;
        };
        latest.upstreams.sweep(Instant::now());
    }
}

#[cfg(test)]
mod tests;
