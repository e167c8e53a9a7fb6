//! The worker's file-descriptor limit, raised to cover its connection
//! budget (`max_connections`, upstream connections, the reserve; see
//! `prefork_shared::fd_budget`).

use prefork_shared::fd_budget;
use prefork_shared::Config;
use slog::{error, Logger};

/// Raises the soft `RLIMIT_NOFILE` to what `config` needs (at a start and
/// at each hot reload; it is never lowered). The master checked the hard
/// limit, which the worker shares: a failure here is logged, and accepts
/// then meet `EMFILE` sooner (counted and logged as such).
pub(crate) fn raise(config: &Config, log: &Logger) {
    let raised = fd_budget::nofile_limits()
        .map_err(|e| e.to_string())
        .and_then(|(_, hard)| fd_budget::budget(config, hard).map_err(|e| e.to_string()))
        .and_then(|b| fd_budget::raise_nofile(b.nofile).map_err(|e| e.to_string()));
    if let Err(e) = raised {
        error!(log, "cannot raise the file-descriptor limit (RLIMIT_NOFILE)"; "error" => e);
    }
}
