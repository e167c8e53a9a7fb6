//! prefork's worker: one process, one tokio current-thread event loop,
//! proxying HTTP/1.1 on the listening sockets the master passed down.
//!
//! The master runs `prefork worker --slot N --generation G --ipc NAME`; its
//! `main` calls [`main`] and exits with the returned code.
//!
//! The crate is layered; each folder uses only the ones listed before it
//! (`tests/layers.rs` checks it, and that no module uses one that uses it
//! back):
//! - `stop`: the worker's run state, which every layer may watch;
//! - `http`: the HTTP/1.1 codec (heads, framing, the chunked coding);
//! - `io`: sockets and timed reads and writes, splicing, tunnels;
//! - `observe`: access logs, counters, request ids;
//! - `upstream`: upstream groups, their connection pools, balancing and
//!   health;
//! - `state`: what the worker's tasks share: the per-configuration
//!   snapshot, connection counts, free buffers, session tickets;
//! - `proxy`: the protocol-neutral proxy core: routing, the exchange with an
//!   upstream, retries;
//! - `downstream`: the client side: accepting, and the HTTP/1.1 session;
//! - `process`: the worker process: boot, the master's commands, the serve
//!   loop, hot reloads, reports.

mod downstream;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod http;
mod io;
mod observe;
mod process;
mod proxy;
mod state;
mod stop;
mod upstream;

#[cfg(test)]
mod testing;

pub use process::{main, WorkerArgs};
