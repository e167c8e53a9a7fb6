//! Exit codes, a contract between the master, its workers and the CLI.

/// Normal exit.
pub const OK: i32 = 0;
/// The config is invalid, or a CLI action failed.
pub const FAILURE: i32 = 1;
/// Command-line usage error.
pub const USAGE: i32 = 2;
/// A worker could not start (no IPC link, bad inherited sockets, no config):
/// restarting it at once would fail the same way, so the master backs off.
pub const WORKER_BOOT_FAILURE: i32 = 3;
/// A worker stopped because a signal was sent to it, not by the master
/// (an operator's SIGHUP, SIGQUIT or SIGTERM to one worker): the master
/// replaces it at once and does not count it as a crash.
pub const WORKER_STOPPED_BY_SIGNAL: i32 = 4;
