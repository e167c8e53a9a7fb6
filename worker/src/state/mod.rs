//! What the worker's tasks share: the snapshot of each configuration, the
//! open connections (for draining and the load board), and per-process free
//! lists of buffers.

pub(crate) mod buffers;
pub(crate) mod load_share;
pub(crate) mod snapshot;
pub(crate) mod tls;
pub(crate) mod waiters;

pub(crate) use snapshot::{ActiveConnection, Newest, Snapshot};
