//! The worker process: its start, the master's commands and signals, the
//! serve loop and drain, hot reloads, heartbeats and counter reports.

mod boot;
mod control;
mod fd_limit;
mod heartbeat;
pub(crate) mod inherit;
mod reload;
mod report;
pub(crate) mod serve;
#[cfg(debug_assertions)]
mod test_hooks;

pub use boot::{main, WorkerArgs};
