//! Test-only hooks, compiled into debug builds only (the black-box tests run
//! the debug binary; release builds have none of this).
//!
//! `PREFORK_TEST_HANG_ON_SIGUSR2=1` in the master's environment (workers
//! inherit it) makes a worker block its event loop forever when it receives
//! SIGUSR2: the loop stops answering, as with a bug, so the tests can check
//! that heartbeats catch it.

use slog::{warn, Logger};
use tokio::signal::unix::{signal, SignalKind};

/// The variable that enables the hang hook.
pub(crate) const HANG_ON_SIGUSR2_VAR: &str = "PREFORK_TEST_HANG_ON_SIGUSR2";

/// Installs the hooks enabled in the environment. Must run inside the
/// runtime's `LocalSet`.
pub(crate) fn install(log: &Logger) {
    if std::env::var_os(HANG_ON_SIGUSR2_VAR).is_none() {
        return;
    }
    let Ok(mut usr2) = signal(SignalKind::user_defined2()) else {
        return;
    };
    let log = log.clone();
    tokio::task::spawn_local(async move {
        if usr2.recv().await.is_some() {
            warn!(log, "test hook: blocking the event loop");
            // Deliberately blocks the only thread of the event loop.
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    });
}
