//! A worker process as the supervisor tracks it.

use super::{Action, Generation, Pid, Slot, Timeouts, FAST_STOP_GRACE};
use prefork_shared::ipc::StopMode;
use std::time::Instant;

/// Where a worker is in its life, as the supervisor tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WorkerState {
    /// Started, not Ready yet.
    Starting {
        /// When it was started (it has `BOOT_TIMEOUT` to get Ready).
        since: Instant,
    },
    /// Accepting connections.
    Ready {
        /// Its last heartbeat.
        last_beat: Instant,
    },
    /// Asked to stop.
    Stopping {
        /// When it is killed if it is still there.
        deadline: Instant,
        /// It was killed at the deadline.
        killed: bool,
        /// Asked to stop fast (not counted as draining).
        fast: bool,
    },
    /// Killed because it never became ready: replaced when it exits.
    BootTimedOut,
    /// Killed because its heartbeats stopped: replaced when it exits.
    Hung,
}

/// A live worker process.
#[derive(Debug)]
pub(super) struct Worker {
    /// The slot it fills.
    pub(super) slot: Slot,
    /// The generation (and so the config) it runs.
    pub(super) generation: Generation,
    /// When it was started.
    pub(super) started: Instant,
    pub(super) state: WorkerState,
    /// The limits of the config it runs (not necessarily the newest): it
    /// beats at an interval derived from `worker_timeout` and closes what
    /// is left of a graceful stop at `shutdown_timeout`.
    pub(super) timeouts: Timeouts,
}

impl Worker {
    /// When the worker, told now to stop, is killed if it is still there.
    /// Stopping gracefully, it closes what is left at its own
    /// `shutdown_timeout`, then writes its last access-log lines, log lines
    /// and counters on its way out: a SIGKILL at that very moment would
    /// lose them.
    pub(super) fn stop_deadline(&self, mode: StopMode, now: Instant) -> Instant {
        match mode {
            StopMode::Graceful => now + self.timeouts.shutdown_timeout + FAST_STOP_GRACE,
            StopMode::Fast => now + FAST_STOP_GRACE,
        }
    }

    /// Marks the worker stopping and returns the command that asks it to,
    /// unless it is stopping already and this changes nothing. A stop never
    /// extends a deadline: a worker stopping already keeps an earlier one
    /// (a drain after a reload, the generation limit), but a fast stop
    /// still reaches one that was stopping gracefully.
    pub(super) fn stop(&mut self, pid: Pid, mode: StopMode, now: Instant) -> Option<Action> {
        let deadline = self.stop_deadline(mode, now);
        let fast = mode == StopMode::Fast;
        self.state = match self.state {
            WorkerState::Stopping {
                deadline: own,
                killed,
                fast: was_fast,
            } if own <= deadline => {
                if !fast || was_fast || killed {
                    return None;
                }
                WorkerState::Stopping {
                    deadline: own,
                    killed,
                    fast,
                }
            }
            _ => WorkerState::Stopping {
                deadline,
                killed: false,
                fast,
            },
        };
        Some(Action::Stop(pid, mode))
    }
}
