//! What operators see of the requests a worker serves: the access log, the
//! counters reported to the master, and request ids.

pub(crate) mod access_log;
pub(crate) mod access_sink;
pub(crate) mod occurrences;
pub(crate) mod request_id;
pub(crate) mod stats;
