//! The master's decisions, as a plain state machine.
//!
//! [`Supervisor::handle`] takes an [`Event`] and the current time and returns
//! the [`Action`]s to carry out. It makes no system call: `run.rs` turns
//! signals, child exits and worker messages into events and carries out the
//! actions, so every policy here (restart, backoff, generation switch, stop)
//! is unit-tested by feeding events.

use prefork_shared::exit;
use prefork_shared::ipc::StopMode;
use slog::{error, info, warn, Logger};
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

mod view;
pub use view::{WorkerPhase, WorkerView};

/// A worker position; a restarted worker takes the slot of the one it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(pub u32);

/// A configuration generation; each reload that starts new workers bumps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(pub u64);

/// A worker process id.
pub type Pid = u32;

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// Something that happened, as seen by the master.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The master has bound its listeners and is ready to start workers.
    Started,
    /// A worker process was started for a slot.
    Spawned {
        /// The slot it fills.
        slot: Slot,
        /// Its generation.
        generation: Generation,
        /// Its process id.
        pid: Pid,
    },
    /// Starting a worker process failed.
    SpawnFailed {
        /// The slot it was meant to fill.
        slot: Slot,
        /// Why it failed.
        reason: String,
    },
    /// A worker reported that it is accepting connections.
    WorkerReady(Pid),
    /// A worker process ended.
    WorkerExited(Pid, ExitStatus),
    /// A new, valid configuration with this many workers is ready (the edge
    /// has already bound its listeners).
    Reload {
        /// Worker count of the new configuration.
        workers: usize,
        /// Drain limit of the new configuration.
        shutdown_timeout: Duration,
    },
    /// Stop everything (SIGQUIT: graceful, SIGTERM/SIGINT: fast).
    Stop(StopMode),
    /// Time passed; deadlines may have expired.
    Tick,
}

/// Something the master must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a worker for this slot with the configuration of `generation`.
    Spawn {
        /// The slot to fill.
        slot: Slot,
        /// The generation (and so the configuration) to start it with.
        generation: Generation,
    },
    /// Ask a worker to stop (over IPC, with a signal as fallback).
    Stop(Pid, StopMode),
    /// SIGKILL a worker that did not stop in time.
    Kill(Pid),
    /// Every worker is gone: remove the pid file and exit with this code.
    Exit(i32),
}

/// A worker that has not said Ready after this long is killed and replaced.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(10);
/// A worker that ran at least this long before dying counts as healthy, so
/// its slot restarts at once instead of backing off.
pub const HEALTHY_UPTIME: Duration = Duration::from_secs(5);
/// First backoff delay of a crash-looping slot; doubles with every failure.
pub const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest delay between two restarts of a crash-looping slot.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// How long a fast stop waits before killing what is left.
pub const FAST_STOP_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerState {
    Starting {
        since: Instant,
    },
    Ready,
    Stopping {
        deadline: Instant,
        killed: bool,
    },
    /// Killed because it never became ready: replaced when it exits.
    BootTimedOut,
}

#[derive(Debug)]
struct Worker {
    slot: Slot,
    generation: Generation,
    started: Instant,
    state: WorkerState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    ShuttingDown { mode: StopMode, deadline: Instant },
}

/// The master's state: which workers exist, in which generation and state,
/// which slots wait for a restart, and whether the master is shutting down.
pub struct Supervisor {
    log: Logger,
    generation: Generation,
    workers_wanted: usize,
    shutdown_timeout: Duration,
    workers: BTreeMap<Pid, Worker>,
    /// Slots of the current generation waiting to be (re)started, and when.
    pending: BTreeMap<Slot, Instant>,
    /// Consecutive quick failures per slot of the current generation.
    failures: BTreeMap<Slot, u32>,
    phase: Phase,
    /// Unexpected exits restarted, per slot (for operators).
    restarts: BTreeMap<Slot, u64>,
}

impl Supervisor {
    /// A supervisor for `workers` workers of generation 1.
    pub fn new(log: Logger, workers: usize, shutdown_timeout: Duration) -> Self {
        Supervisor {
            log,
            generation: Generation(1),
            workers_wanted: workers,
            shutdown_timeout,
            workers: BTreeMap::new(),
            pending: BTreeMap::new(),
            failures: BTreeMap::new(),
            phase: Phase::Running,
            restarts: BTreeMap::new(),
        }
    }

    /// The newest generation.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The generation a live worker belongs to.
    pub fn generation_of(&self, pid: Pid) -> Option<Generation> {
        self.workers.get(&pid).map(|w| w.generation)
    }

    /// The oldest generation that still has a live worker.
    pub fn oldest_live_generation(&self) -> Option<Generation> {
        self.workers.values().map(|w| w.generation).min()
    }

    /// When [`Event::Tick`] next needs to be delivered, if ever.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let pending = self.pending.values().copied();
        let workers = self.workers.values().filter_map(|w| match w.state {
            WorkerState::Starting { since } => Some(since + BOOT_TIMEOUT),
            WorkerState::Stopping {
                deadline,
                killed: false,
            } => Some(deadline),
            _ => None,
        });
        pending.chain(workers).min()
    }

    /// Applies one event and returns what to do about it.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match event {
            Event::Started => {
                for slot in 0..self.workers_wanted {
                    self.pending.insert(Slot(slot as u32), now);
                }
            }
            Event::Spawned {
                slot,
                generation,
                pid,
            } => self.on_spawned(slot, generation, pid, now, &mut actions),
            Event::SpawnFailed { slot, reason } => {
                error!(self.log, "cannot start worker"; "slot" => slot.0, "error" => reason);
                self.schedule_restart(slot, true, now);
            }
            Event::WorkerReady(pid) => self.on_ready(pid, now, &mut actions),
            Event::WorkerExited(pid, status) => self.on_exit(pid, status, now, &mut actions),
            Event::Reload {
                workers,
                shutdown_timeout,
            } => self.on_reload(workers, shutdown_timeout, now),
            Event::Stop(mode) => self.on_stop(mode, now, &mut actions),
            Event::Tick => {}
        }
        self.on_tick(now, &mut actions);
        actions
    }

    fn on_spawned(
        &mut self,
        slot: Slot,
        generation: Generation,
        pid: Pid,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        info!(self.log, "worker started"; "slot" => slot.0, "worker_pid" => pid, "worker_generation" => generation.0);
        let mut state = WorkerState::Starting { since: now };
        if let Phase::ShuttingDown { mode, deadline, .. } = self.phase {
            // Started just before a stop arrived: stop it with the others.
            actions.push(Action::Stop(pid, mode));
            state = WorkerState::Stopping {
                deadline,
                killed: false,
            };
        }
        self.workers.insert(
            pid,
            Worker {
                slot,
                generation,
                started: now,
                state,
            },
        );
    }

    fn on_ready(&mut self, pid: Pid, now: Instant, actions: &mut Vec<Action>) {
        let Some(worker) = self.workers.get_mut(&pid) else {
            return;
        };
        if !matches!(worker.state, WorkerState::Starting { .. }) {
            return;
        }
        worker.state = WorkerState::Ready;
        info!(self.log, "worker ready"; "slot" => worker.slot.0, "worker_pid" => pid, "worker_generation" => worker.generation.0);
        if worker.generation == self.generation && self.generation_ready() {
            self.retire_old_generations(now, actions);
        }
    }

    /// Whether every slot of the current generation has a Ready worker.
    fn generation_ready(&self) -> bool {
        let ready = self
            .workers
            .values()
            .filter(|w| w.generation == self.generation && w.state == WorkerState::Ready)
            .count();
        ready >= self.workers_wanted
    }

    fn retire_old_generations(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let deadline = now + self.shutdown_timeout;
        for (pid, w) in &mut self.workers {
            if w.generation < self.generation && !matches!(w.state, WorkerState::Stopping { .. }) {
                info!(self.log, "draining worker of an older generation"; "worker_pid" => *pid, "worker_generation" => w.generation.0);
                w.state = WorkerState::Stopping {
                    deadline,
                    killed: false,
                };
                actions.push(Action::Stop(*pid, StopMode::Graceful));
            }
        }
    }

    fn on_exit(&mut self, pid: Pid, status: ExitStatus, now: Instant, actions: &mut Vec<Action>) {
        let Some(worker) = self.workers.remove(&pid) else {
            return;
        };
        let lived = now.saturating_duration_since(worker.started);
        let asked_to_stop = matches!(worker.state, WorkerState::Stopping { .. });
        if let Phase::ShuttingDown { .. } = self.phase {
            info!(self.log, "worker exited"; "slot" => worker.slot.0, "worker_pid" => pid, "status" => %status);
            if self.workers.is_empty() {
                actions.push(Action::Exit(exit::OK));
            }
            return;
        }
        if asked_to_stop || worker.generation != self.generation {
            info!(self.log, "worker exited"; "slot" => worker.slot.0, "worker_pid" => pid,
                "worker_generation" => worker.generation.0, "status" => %status);
            return;
        }
        let boot_failure = status == ExitStatus::Code(exit::WORKER_BOOT_FAILURE)
            || matches!(
                worker.state,
                WorkerState::Starting { .. } | WorkerState::BootTimedOut
            );
        let quick = boot_failure || lived < HEALTHY_UPTIME;
        let delay = self.schedule_restart(worker.slot, quick, now);
        *self.restarts.entry(worker.slot).or_insert(0) += 1;
        warn!(self.log, "worker exited unexpectedly; restarting";
            "slot" => worker.slot.0, "worker_pid" => pid, "status" => %status,
            "uptime_ms" => lived.as_millis() as u64, "restart_in_ms" => delay.as_millis() as u64);
    }

    /// Queues a restart of `slot`, backing off when it keeps failing quickly.
    fn schedule_restart(&mut self, slot: Slot, quick: bool, now: Instant) -> Duration {
        let failures = self.failures.entry(slot).or_insert(0);
        *failures = if quick { *failures + 1 } else { 1 };
        let delay = backoff(*failures);
        if delay == BACKOFF_CAP {
            error!(self.log, "worker slot keeps crashing; restarting it at the slowest rate";
                "slot" => slot.0, "failures" => *failures, "restart_in_s" => delay.as_secs());
        }
        self.pending.insert(slot, now + delay);
        delay
    }

    fn on_reload(&mut self, workers: usize, shutdown_timeout: Duration, now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        self.generation = Generation(self.generation.0 + 1);
        self.workers_wanted = workers;
        self.shutdown_timeout = shutdown_timeout;
        self.failures.clear();
        self.pending = (0..workers).map(|s| (Slot(s as u32), now)).collect();
        info!(self.log, "starting a new generation of workers"; "new_generation" => self.generation.0, "workers" => workers);
    }

    fn on_stop(&mut self, mode: StopMode, now: Instant, actions: &mut Vec<Action>) {
        let limit = match mode {
            StopMode::Graceful => self.shutdown_timeout,
            StopMode::Fast => FAST_STOP_GRACE,
        };
        if let Phase::ShuttingDown {
            mode: StopMode::Fast,
            ..
        } = self.phase
        {
            return;
        }
        if let Phase::ShuttingDown { deadline, .. } = self.phase {
            if mode == StopMode::Graceful || deadline <= now {
                return;
            }
        }
        info!(self.log, "stopping"; "mode" => format!("{mode:?}").to_lowercase(), "workers" => self.workers.len());
        let deadline = now + limit;
        self.phase = Phase::ShuttingDown { mode, deadline };
        self.pending.clear();
        for (pid, w) in &mut self.workers {
            w.state = WorkerState::Stopping {
                deadline,
                killed: false,
            };
            actions.push(Action::Stop(*pid, mode));
        }
        if self.workers.is_empty() {
            actions.push(Action::Exit(exit::OK));
        }
    }

    fn on_tick(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.phase == Phase::Running {
            let due: Vec<Slot> = self
                .pending
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(s, _)| *s)
                .collect();
            for slot in due {
                self.pending.remove(&slot);
                actions.push(Action::Spawn {
                    slot,
                    generation: self.generation,
                });
            }
        }
        for (pid, w) in &mut self.workers {
            match w.state {
                WorkerState::Starting { since } if now >= since + BOOT_TIMEOUT => {
                    warn!(self.log, "worker did not become ready in time; killing it";
                        "slot" => w.slot.0, "worker_pid" => *pid, "timeout_s" => BOOT_TIMEOUT.as_secs());
                    w.state = WorkerState::BootTimedOut;
                    actions.push(Action::Kill(*pid));
                }
                WorkerState::Stopping {
                    deadline,
                    killed: false,
                } if now >= deadline => {
                    warn!(self.log, "worker did not stop in time; killing it"; "slot" => w.slot.0, "worker_pid" => *pid);
                    w.state = WorkerState::Stopping {
                        deadline,
                        killed: true,
                    };
                    actions.push(Action::Kill(*pid));
                }
                _ => {}
            }
        }
    }
}

/// Restart delay after `failures` consecutive quick failures of one slot:
/// the first restart is immediate, then 200 ms doubling up to 30 s.
pub fn backoff(failures: u32) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let factor = 1u32 << (failures - 2).min(16);
    BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sup(workers: usize) -> Supervisor {
        Supervisor::new(
            Logger::root(slog::Discard, slog::o!()),
            workers,
            Duration::from_secs(30),
        )
    }

    fn spawns(actions: &[Action]) -> Vec<(u32, u64)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Spawn { slot, generation } => Some((slot.0, generation.0)),
                _ => None,
            })
            .collect()
    }

    /// Starts `n` workers with pids 100.. and reports them all Ready.
    fn running(n: usize, now: Instant) -> Supervisor {
        let mut s = sup(n);
        let actions = s.handle(Event::Started, now);
        assert_eq!(spawns(&actions).len(), n);
        for i in 0..n {
            s.handle(
                Event::Spawned {
                    slot: Slot(i as u32),
                    generation: Generation(1),
                    pid: 100 + i as u32,
                },
                now,
            );
            s.handle(Event::WorkerReady(100 + i as u32), now);
        }
        s
    }

    #[test]
    fn starts_one_worker_per_slot() {
        let mut s = sup(3);
        let actions = s.handle(Event::Started, Instant::now());
        assert_eq!(spawns(&actions), vec![(0, 1), (1, 1), (2, 1)]);
    }

    #[test]
    fn a_killed_worker_is_restarted_at_once_in_its_slot() {
        let t0 = Instant::now();
        let mut s = running(2, t0);
        let later = t0 + Duration::from_secs(60);
        let actions = s.handle(Event::WorkerExited(101, ExitStatus::Signal(9)), later);
        assert_eq!(spawns(&actions), vec![(1, 1)]);
    }

    #[test]
    fn a_crash_loop_backs_off_exponentially_up_to_a_cap() {
        let t0 = Instant::now();
        let mut s = running(1, t0);
        let mut now = t0 + Duration::from_secs(60);
        let mut pid = 100;
        let mut delays = Vec::new();
        for _ in 0..12 {
            let actions = s.handle(Event::WorkerExited(pid, ExitStatus::Code(101)), now);
            let delay = match spawns(&actions).as_slice() {
                [(0, 1)] => Duration::ZERO,
                [] => {
                    let at = s.next_wakeup().expect("a restart is scheduled");
                    let delay = at - now;
                    assert!(
                        spawns(&s.handle(Event::Tick, at - Duration::from_millis(1))).is_empty()
                    );
                    now = at;
                    assert_eq!(spawns(&s.handle(Event::Tick, now)), vec![(0, 1)]);
                    delay
                }
                other => panic!("unexpected spawns {other:?}"),
            };
            delays.push(delay);
            pid += 1;
            s.handle(
                Event::Spawned {
                    slot: Slot(0),
                    generation: Generation(1),
                    pid,
                },
                now,
            );
            s.handle(Event::WorkerReady(pid), now);
            now += Duration::from_millis(10);
        }
        assert_eq!(delays[0], Duration::ZERO);
        assert_eq!(delays[1], Duration::from_millis(200));
        assert_eq!(delays[2], Duration::from_millis(400));
        assert!(delays.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*delays.last().unwrap(), BACKOFF_CAP);
    }

    #[test]
    fn a_healthy_run_resets_the_backoff() {
        let t0 = Instant::now();
        let mut s = running(1, t0);
        let now = t0 + Duration::from_secs(1);
        s.handle(Event::WorkerExited(100, ExitStatus::Code(1)), now);
        s.handle(
            Event::Spawned {
                slot: Slot(0),
                generation: Generation(1),
                pid: 200,
            },
            now,
        );
        s.handle(Event::WorkerReady(200), now);
        let much_later = now + HEALTHY_UPTIME + Duration::from_secs(1);
        let actions = s.handle(Event::WorkerExited(200, ExitStatus::Signal(9)), much_later);
        assert_eq!(spawns(&actions), vec![(0, 1)]);
    }

    #[test]
    fn reload_drains_old_generation_only_after_new_one_is_ready() {
        let t0 = Instant::now();
        let mut s = running(2, t0);
        let actions = s.handle(
            Event::Reload {
                workers: 2,
                shutdown_timeout: Duration::from_secs(5),
            },
            t0,
        );
        assert_eq!(spawns(&actions), vec![(0, 2), (1, 2)]);
        assert_eq!(s.generation(), Generation(2));
        for (i, pid) in [200, 201].into_iter().enumerate() {
            let a = s.handle(
                Event::Spawned {
                    slot: Slot(i as u32),
                    generation: Generation(2),
                    pid,
                },
                t0,
            );
            assert!(a.is_empty());
        }
        assert!(
            s.handle(Event::WorkerReady(200), t0).is_empty(),
            "one new worker is not enough"
        );
        let actions = s.handle(Event::WorkerReady(201), t0);
        assert_eq!(
            actions,
            vec![
                Action::Stop(100, StopMode::Graceful),
                Action::Stop(101, StopMode::Graceful)
            ]
        );
        // Old workers exiting after being asked to is not a crash.
        let a = s.handle(Event::WorkerExited(100, ExitStatus::Code(0)), t0);
        assert!(a.is_empty());
        // One that ignores the request is killed at the deadline.
        let deadline = t0 + Duration::from_secs(5);
        assert_eq!(s.next_wakeup(), Some(deadline));
        assert_eq!(s.handle(Event::Tick, deadline), vec![Action::Kill(101)]);
        assert_eq!(s.next_wakeup(), None);
    }

    #[test]
    fn a_reload_during_a_reload_drains_both_older_generations() {
        let t0 = Instant::now();
        let mut s = running(1, t0);
        s.handle(
            Event::Reload {
                workers: 1,
                shutdown_timeout: Duration::from_secs(5),
            },
            t0,
        );
        s.handle(
            Event::Spawned {
                slot: Slot(0),
                generation: Generation(2),
                pid: 200,
            },
            t0,
        );
        let actions = s.handle(
            Event::Reload {
                workers: 1,
                shutdown_timeout: Duration::from_secs(5),
            },
            t0,
        );
        assert_eq!(spawns(&actions), vec![(0, 3)]);
        s.handle(
            Event::Spawned {
                slot: Slot(0),
                generation: Generation(3),
                pid: 300,
            },
            t0,
        );
        // The generation-2 worker becoming ready changes nothing.
        assert!(s.handle(Event::WorkerReady(200), t0).is_empty());
        let mut stops = s.handle(Event::WorkerReady(300), t0);
        stops.sort_by_key(|a| format!("{a:?}"));
        assert_eq!(
            stops,
            vec![
                Action::Stop(100, StopMode::Graceful),
                Action::Stop(200, StopMode::Graceful)
            ]
        );
        // A worker of a replaced generation that crashes is not restarted.
        assert!(s
            .handle(Event::WorkerExited(200, ExitStatus::Signal(9)), t0)
            .is_empty());
    }

    #[test]
    fn graceful_stop_waits_for_workers_then_exits() {
        let t0 = Instant::now();
        let mut s = running(2, t0);
        let actions = s.handle(Event::Stop(StopMode::Graceful), t0);
        assert_eq!(
            actions,
            vec![
                Action::Stop(100, StopMode::Graceful),
                Action::Stop(101, StopMode::Graceful)
            ]
        );
        assert!(s
            .handle(Event::WorkerExited(100, ExitStatus::Code(0)), t0)
            .is_empty());
        let a = s.handle(Event::WorkerExited(101, ExitStatus::Code(0)), t0);
        assert_eq!(a, vec![Action::Exit(0)]);
    }

    #[test]
    fn graceful_stop_kills_stragglers_at_the_shutdown_timeout() {
        let t0 = Instant::now();
        let mut s = running(1, t0);
        s.handle(Event::Stop(StopMode::Graceful), t0);
        let deadline = t0 + Duration::from_secs(30);
        assert!(s
            .handle(Event::Tick, deadline - Duration::from_millis(1))
            .is_empty());
        assert_eq!(s.handle(Event::Tick, deadline), vec![Action::Kill(100)]);
        assert_eq!(
            s.handle(Event::WorkerExited(100, ExitStatus::Signal(9)), deadline),
            vec![Action::Exit(0)]
        );
    }

    #[test]
    fn fast_stop_overrides_graceful_and_no_restart_happens_while_stopping() {
        let t0 = Instant::now();
        let mut s = running(2, t0);
        s.handle(Event::Stop(StopMode::Graceful), t0);
        let a = s.handle(Event::Stop(StopMode::Fast), t0);
        assert_eq!(
            a,
            vec![
                Action::Stop(100, StopMode::Fast),
                Action::Stop(101, StopMode::Fast)
            ]
        );
        assert!(s.handle(Event::Stop(StopMode::Graceful), t0).is_empty());
        let a = s.handle(Event::WorkerExited(100, ExitStatus::Signal(9)), t0);
        assert!(spawns(&a).is_empty());
        assert!(s
            .handle(
                Event::Reload {
                    workers: 4,
                    shutdown_timeout: Duration::from_secs(1)
                },
                t0
            )
            .is_empty());
        assert_eq!(
            s.handle(Event::WorkerExited(101, ExitStatus::Code(0)), t0),
            vec![Action::Exit(0)]
        );
    }

    #[test]
    fn a_worker_that_never_becomes_ready_is_killed_and_replaced_with_backoff() {
        let t0 = Instant::now();
        let mut s = sup(1);
        s.handle(Event::Started, t0);
        s.handle(
            Event::Spawned {
                slot: Slot(0),
                generation: Generation(1),
                pid: 100,
            },
            t0,
        );
        assert_eq!(s.next_wakeup(), Some(t0 + BOOT_TIMEOUT));
        assert_eq!(
            s.handle(Event::Tick, t0 + BOOT_TIMEOUT),
            vec![Action::Kill(100)]
        );
        let a = s.handle(
            Event::WorkerExited(100, ExitStatus::Signal(9)),
            t0 + BOOT_TIMEOUT,
        );
        assert_eq!(spawns(&a), vec![(0, 1)]);
    }

    #[test]
    fn spawn_failures_back_off() {
        let t0 = Instant::now();
        let mut s = sup(1);
        s.handle(Event::Started, t0);
        let fail = || Event::SpawnFailed {
            slot: Slot(0),
            reason: "EAGAIN".into(),
        };
        assert_eq!(spawns(&s.handle(fail(), t0)), vec![(0, 1)]);
        assert!(spawns(&s.handle(fail(), t0)).is_empty());
        assert_eq!(s.next_wakeup(), Some(t0 + BACKOFF_BASE));
    }

    #[test]
    fn stop_with_no_worker_exits_at_once() {
        let mut s = sup(1);
        assert_eq!(
            s.handle(Event::Stop(StopMode::Graceful), Instant::now()),
            vec![Action::Exit(0)]
        );
    }

    #[test]
    fn backoff_schedule() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::ZERO);
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(3), Duration::from_millis(400));
        assert_eq!(backoff(8), Duration::from_millis(200 * 64));
        assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
    }
}
