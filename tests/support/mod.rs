//! The black-box test harness: starting the real binary and a client loop
//! here; the raw HTTP/1.1 client, the test origins and the wait helpers come
//! from `prefork-testkit`, shared with the worker's in-process tests.

pub mod client_loop;
pub mod prefork;

pub use prefork_testkit::{http, origins, scripted, wait_for, wait_until};
