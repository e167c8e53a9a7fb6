//! Sockets and the ways bytes move through them: client sockets registered
//! with the event loop only when they must wait, time-limited reads and
//! writes, splicing bodies between sockets, and tunnels.

pub(crate) mod client_socket;
pub(crate) mod client_stream;
pub(crate) mod epoll;
pub(crate) mod splice;
pub(crate) mod timed;
pub(crate) mod tls_random;
pub(crate) mod tls_renewal;
pub(crate) mod tls_stream;
pub(crate) mod tls_suites;
pub(crate) mod tunnel;
pub(crate) mod write;

/// Size of one body read, and the spare room kept for it.
pub(crate) const BODY_READ: usize = 256 * 1024;
