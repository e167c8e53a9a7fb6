//! Reporting the worker's counters to the master.

use crate::state::{Newest, Snapshot};
use ipc_channel::ipc::IpcSender;
use prefork_shared::ipc::WorkerMsg;
use slog::debug;
use std::time::Duration;

/// How often a worker reports its counters to the master.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Sends the worker's counters to the master.
pub(crate) fn report(snapshot: &Snapshot, to_master: &IpcSender<WorkerMsg>) {
    let stats = snapshot.stats_snapshot();
    if let Err(e) = to_master.send(WorkerMsg::Stats(Box::new(stats))) {
        debug!(snapshot.log, "cannot send counters to the master"; "error" => %e);
    }
}

/// Reports the counters of the newest configuration snapshot every
/// [`REPORT_INTERVAL`], forever.
pub(crate) async fn report_every(newest: Newest, to_master: IpcSender<WorkerMsg>) {
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    loop {
        tick.tick().await;
        if let Some(snapshot) = newest.get() {
            report(&snapshot, &to_master);
        }
    }
}
