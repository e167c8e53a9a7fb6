//! prefork's HTTP test harness, shared by the worker's in-process tests and
//! the black-box tests of the real binary:
//! - [`http`]: a raw HTTP/1.1 client (and the request reader the origins
//!   use), sending exactly the bytes a test gives it;
//! - [`origins`]: upstream servers (recording, silent, closing, may_minihttp)
//!   and an address that refuses connections;
//! - [`scripted`]: an origin answering each path with scripted bytes, and a
//!   WebSocket echo;
//! - [`tls_origin`]: a test CA (rcgen) and an HTTP/1.1 origin over TLS
//!   that counts its connections;
//! - [`h2_origin`]: an HTTP/2 (h2c) origin shaped like a gRPC server,
//!   echoing requests with trailers, counting connections and streams;
//! - [`h2frames`]: a raw HTTP/2 client writing exactly the frames a test
//!   builds (hand-encoded HPACK) and reading typed frames back, for floods
//!   and other misbehaviour;
//! - [`handler`]: an origin running a test's own code on each connection,
//!   and one echoing each request back;
//! - [`resumption`]: a TLS client that keeps its sessions and says whether
//!   each connection resumed one;
//! - [`h2_client`]: a blocking HTTP/2 client (h2c or TLS with ALPN);
//! - [`proxy_origin`]: an origin that reads a PROXY protocol header first
//!   and says in each response what it carried;
//! - [`heap`]: a global allocator counting live heap bytes, for tests that
//!   measure what a connection keeps;
//! - [`wait_until`] and [`wait_for`]: waiting on a condition with a deadline.

pub mod h2_client;
pub mod h2_origin;
pub mod h2frames;
pub mod handler;
pub mod heap;
pub mod http;
pub mod origins;
pub mod proxy_origin;
pub mod resumption;
pub mod scripted;
pub mod tls_origin;

use std::time::{Duration, Instant};

/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(10);

/// Polls `cond` until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    wait_for(timeout, || cond().then_some(())).is_some()
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}
