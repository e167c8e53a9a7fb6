//! Hot reload: a new configuration from the master becomes the newest
//! snapshot, without a new process.

use crate::state::Snapshot;
use prefork_shared::Config;
use slog::info;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Applies the configurations the master sends after the first one (hot
/// reload) until the channel closes, passing each one's `worker_timeout` on
/// to the heartbeats.
pub(crate) async fn apply_updates(
    snapshot: Rc<Snapshot>,
    mut updates: mpsc::UnboundedReceiver<Box<Config>>,
    worker_timeout: watch::Sender<Duration>,
    slot: u32,
    generation: u64,
) {
    // Only a weak reference is kept to older snapshots: they belong to the
    // connections using them.
    let latest = snapshot.newest();
    // The newest snapshot lives here until the next one replaces it, so it
    // survives moments with no connection using it (and the final counter
    // report after a stop finds it).
    let mut newest = Some(snapshot);
    while let Some(config) = updates.recv().await {
        let Some(current) = latest.get() else {
            return;
        };
        super::fd_limit::raise(&config, &current.log);
        let next = current.reconfigured(*config, slot, generation);
        info!(next.log, "configuration replaced";
            "routes" => next.config.routes.len(), "upstreams" => next.config.upstreams.len());
        // The heartbeats follow the new limit at once.
        worker_timeout.send_replace(next.config.worker_timeout);
        newest.replace(next);
    }
}
