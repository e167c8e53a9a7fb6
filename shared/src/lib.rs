//! Types and helpers shared by the prefork master and its workers: the
//! configuration model and its validation, the route table, the IPC
//! protocol and its link secret, the session-ticket keys, the listener hand-off convention, the load board, CPU pinning,
//! the exit-code contract and logging setup.

pub mod config;
pub mod cpus;
pub mod exit;
pub mod fd_budget;
pub mod fds;
pub mod ipc;
pub mod link_secret;
pub mod load_board;
pub mod log;
pub mod route_table;
pub mod stats;
pub mod ticket_keys;
pub mod tls;
pub mod uri_path;

pub use config::Config;
