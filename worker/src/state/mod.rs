//! What the worker's tasks share: the snapshot of each configuration, the
//! open connections (for draining and the load board), per-process free
//! lists of buffers, and the session tickets every TLS configuration seals
//! with the master's keys.

pub(crate) mod buffers;
pub(crate) mod load_share;
pub(crate) mod snapshot;
pub(crate) mod tickets;
pub(crate) mod tls;
pub(crate) mod waiters;

pub(crate) use snapshot::{ActiveConnection, Newest, Snapshot};
