//! The master↔worker protocol, carried by `ipc-channel`.
//!
//! Bootstrap: the master opens an `IpcOneShotServer<WorkerMsg>` and passes its
//! name to the worker on the command line, and a fresh [`LinkSecret`] on an
//! inherited descriptor (see [`crate::link_secret`]). The worker reads the
//! secret, connects, creates a channel for the other direction and sends
//! [`WorkerMsg::Hello`] with the secret, its pid and the sending half. The
//! name is public and the socket open to the workers' user, so the master
//! trusts the first connection only if its secret and pid are the child's:
//! otherwise it closes the link, and that worker, unconfigured, is replaced.
//! To a trusted worker the master answers with [`MasterMsg::TicketKeys`] and
//! [`MasterMsg::Configure`] (both carry secrets); the worker starts accepting
//! and reports [`WorkerMsg::Ready`]. From then on the worker sends
//! [`WorkerMsg::Heartbeat`] from its event loop, and the master may send a
//! new [`MasterMsg::Configure`] (hot reload) or new
//! [`MasterMsg::TicketKeys`] (a rotation) at any time.

use crate::config::Config;
use crate::link_secret::LinkSecret;
use crate::ticket_keys::TicketKeyRing;
use ipc_channel::ipc::IpcSender;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Bumped whenever a message changes shape; master and worker must agree.
pub const PROTOCOL_VERSION: u32 = 7;

/// How often a worker sends a heartbeat when the master allows it
/// `worker_timeout` of silence: several beats fit in the timeout, so one late
/// beat on a busy machine is not taken for a hung worker.
pub fn heartbeat_interval(worker_timeout: Duration) -> Duration {
    (worker_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
}

/// Messages from a worker to the master.
#[derive(Debug, Serialize, Deserialize)]
pub enum WorkerMsg {
    /// First message on a new link.
    Hello {
        /// Must equal [`PROTOCOL_VERSION`].
        protocol: u32,
        /// The worker's process id.
        pid: u32,
        /// The secret the master handed this worker as it started.
        secret: LinkSecret,
        /// Where the master sends its commands.
        control: IpcSender<MasterMsg>,
    },
    /// The worker is accepting connections.
    Ready,
    /// The worker's counters, sent about once a second and when it stops.
    Stats(Box<crate::stats::WorkerStats>),
    /// The worker's event loop is running (sent every
    /// [`heartbeat_interval`]).
    Heartbeat,
}

/// Messages from the master to a worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum MasterMsg {
    /// The configuration to serve with. The first one starts the worker; a
    /// later one replaces the routes, upstreams, timeouts and logs between
    /// requests (its listeners, worker count and user are the same).
    Configure(Box<Config>),
    /// The session-ticket keys to use from now on: sent before the first
    /// `Configure` and after every rotation, the same to every worker. Its
    /// `Debug` shows no secret.
    TicketKeys(Box<TicketKeyRing>),
    /// Reopen the log files (after logrotate moved them).
    ReopenLogs,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_fit_several_times_in_the_timeout() {
        assert_eq!(
            heartbeat_interval(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_secs(600)),
            Duration::from_secs(5)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_millis(1)),
            Duration::from_millis(50)
        );
    }
}
