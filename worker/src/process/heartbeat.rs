//! The heartbeats that tell the master the event loop runs.

use ipc_channel::ipc::IpcSender;
use prefork_shared::ipc::{heartbeat_interval, WorkerMsg};
use std::time::Duration;
use tokio::sync::watch;

/// Tells the master, from the event loop itself, that the loop runs: a loop
/// blocked by a bug stops the beats and the master replaces the worker.
/// A new interval (a reload changed `worker_timeout`) takes effect at once,
/// with a beat: the master judges the worker by the new limit from the
/// reload on.
pub(crate) async fn heartbeats(
    to_master: IpcSender<WorkerMsg>,
    mut timeout: watch::Receiver<Duration>,
) {
    // False once the configuration updates end: the interval stays as it is.
    let mut follow = true;
    loop {
        let mut tick = tokio::time::interval(heartbeat_interval(*timeout.borrow_and_update()));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = timeout.changed(), if follow => {
                    follow = changed.is_ok();
                    if follow {
                        break;
                    }
                    continue;
                }
            }
            // A failure means the master is gone; the IPC reader stops us.
            if to_master.send(WorkerMsg::Heartbeat).is_err() {
                return;
            }
        }
        // The first tick of the new interval completes at once: a beat now.
    }
}
