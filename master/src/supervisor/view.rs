//! A read-only picture of the supervisor's state, for `prefork status`,
//! `/metrics` and `/healthz`.

use super::{Generation, Phase, Pid, Slot, Supervisor, WorkerState};
use std::time::Instant;

/// A worker's state as operators name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerPhase {
    /// Started, not accepting yet.
    Starting,
    /// Accepting connections.
    Ready,
    /// Asked to stop; finishing its requests.
    Draining,
    /// Killed because its heartbeats stopped; replaced once it exits.
    Hung,
}

impl WorkerPhase {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerPhase::Starting => "starting",
            WorkerPhase::Ready => "ready",
            WorkerPhase::Draining => "draining",
            WorkerPhase::Hung => "hung",
        }
    }
}

/// One live worker.
#[derive(Debug, Clone)]
pub struct WorkerView {
    /// Its process id.
    pub pid: Pid,
    /// Its slot.
    pub slot: Slot,
    /// Its generation.
    pub generation: Generation,
    /// Its state.
    pub phase: WorkerPhase,
    /// When it was started.
    pub started: Instant,
}

impl Supervisor {
    /// Every live worker, by pid.
    pub fn worker_views(&self) -> Vec<WorkerView> {
        self.workers
            .iter()
            .map(|(pid, w)| WorkerView {
                pid: *pid,
                slot: w.slot,
                generation: w.generation,
                phase: match w.state {
                    WorkerState::Starting { .. } | WorkerState::BootTimedOut => {
                        WorkerPhase::Starting
                    }
                    WorkerState::Ready { .. } => WorkerPhase::Ready,
                    WorkerState::Stopping { .. } => WorkerPhase::Draining,
                    WorkerState::Hung => WorkerPhase::Hung,
                },
                started: w.started,
            })
            .collect()
    }

    /// Whether a stop is in progress (or asked for and delayed).
    pub fn shutting_down(&self) -> bool {
        matches!(
            self.phase,
            Phase::StopDelayed { .. } | Phase::ShuttingDown { .. }
        )
    }

    /// Whether the master can take traffic: not stopping, and at least one
    /// worker accepting.
    pub fn healthy(&self) -> bool {
        !self.shutting_down()
            && self
                .workers
                .values()
                .any(|w| matches!(w.state, WorkerState::Ready { .. }))
    }

    /// Unexpected worker exits that led to a restart, per slot, since the
    /// master started.
    pub fn restarts(&self) -> &std::collections::BTreeMap<Slot, u64> {
        &self.restarts
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Event, ExitStatus, Generation, Slot, Supervisor, Timeouts};
    use super::WorkerPhase;
    use prefork_shared::ipc::StopMode;
    use slog::Logger;
    use std::time::{Duration, Instant};

    #[test]
    fn health_and_restarts_follow_events() {
        let now = Instant::now();
        let mut s = Supervisor::new(
            Logger::root(slog::Discard, slog::o!()),
            1,
            Timeouts {
                shutdown_timeout: Duration::from_secs(30),
                worker_timeout: Duration::from_secs(30),
                shutdown_delay: Duration::ZERO,
            },
        );
        s.handle(Event::Started, now);
        let spawned = |pid| Event::Spawned {
            slot: Slot(0),
            generation: Generation(1),
            pid,
        };
        s.handle(spawned(10), now);
        assert!(!s.healthy());
        assert_eq!(s.worker_views()[0].phase, WorkerPhase::Starting);
        s.handle(Event::WorkerReady(10), now);
        assert!(s.healthy());
        let later = now + Duration::from_secs(60);
        s.handle(Event::WorkerExited(10, ExitStatus::Signal(9)), later);
        assert_eq!(s.restarts().get(&Slot(0)), Some(&1));
        assert!(!s.healthy());
        s.handle(spawned(11), later);
        s.handle(Event::WorkerReady(11), later);
        s.handle(Event::Stop(StopMode::Graceful), later);
        assert!(!s.healthy());
        assert_eq!(s.worker_views()[0].phase, WorkerPhase::Draining);
    }
}
