//! The master↔worker protocol, carried by `ipc-channel`.
//!
//! Bootstrap: the master opens an `IpcOneShotServer<WorkerMsg>` and passes its
//! name to the worker on the command line. The worker connects, creates a
//! channel for the other direction and sends [`WorkerMsg::Hello`] with its
//! sending half. The master answers with [`MasterMsg::Configure`]; the worker
//! starts accepting and reports [`WorkerMsg::Ready`].

use crate::config::Config;
use ipc_channel::ipc::IpcSender;
use serde::{Deserialize, Serialize};

/// Bumped whenever a message changes shape; master and worker must agree.
pub const PROTOCOL_VERSION: u32 = 2;

/// Messages from a worker to the master.
#[derive(Debug, Serialize, Deserialize)]
pub enum WorkerMsg {
    /// First message on a new link.
    Hello {
        /// Must equal [`PROTOCOL_VERSION`].
        protocol: u32,
        /// The worker's process id.
        pid: u32,
        /// Where the master sends its commands.
        control: IpcSender<MasterMsg>,
    },
    /// The worker is accepting connections.
    Ready,
    /// The worker's counters, sent about once a second and when it stops.
    Stats(Box<crate::stats::WorkerStats>),
}

/// Messages from the master to a worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum MasterMsg {
    /// The configuration to serve with (the first message a worker receives).
    Configure(Box<Config>),
    /// Stop serving.
    Stop(StopMode),
}

/// How a worker stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopMode {
    /// Stop accepting, finish in-flight requests (until the shutdown timeout),
    /// then exit.
    Graceful,
    /// Exit now, closing every connection.
    Fast,
}
