//! The worker's run state: serving, stopping gracefully, or stopping fast.

use prefork_shared::ipc::StopMode;
use tokio::sync::watch;

/// The worker's run state; it only ever moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stop {
    /// Serving.
    Running,
    /// Stop accepting, finish in-flight requests, then exit.
    Graceful,
    /// Exit now.
    Fast,
}

impl From<StopMode> for Stop {
    fn from(mode: StopMode) -> Self {
        match mode {
            StopMode::Graceful => Stop::Graceful,
            StopMode::Fast => Stop::Fast,
        }
    }
}

/// Moves the run state to `to`, unless it is already further along.
pub(crate) fn request_stop(state: &watch::Sender<Stop>, to: Stop) {
    state.send_if_modified(|current| {
        let advance = to > *current;
        if advance {
            *current = to;
        }
        advance
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_only_moves_forward() {
        let (tx, rx) = watch::channel(Stop::Running);
        request_stop(&tx, Stop::Graceful);
        assert_eq!(*rx.borrow(), Stop::Graceful);
        request_stop(&tx, Stop::Fast);
        assert_eq!(*rx.borrow(), Stop::Fast);
        request_stop(&tx, Stop::Graceful);
        assert_eq!(*rx.borrow(), Stop::Fast);
    }
}
