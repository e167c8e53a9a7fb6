//! The master's decisions, as a plain state machine.
//!
//! [`Supervisor::handle`] takes an [`Event`] and the current time and returns
//! the [`Action`]s to carry out. It makes no system call: `run.rs` turns
//! signals, child exits and worker messages into events and carries out the
//! actions, so every policy here (restart, backoff, generation switch, stop,
//! which configurations and per-slot listeners the master keeps, the
//! binary-upgrade hand-off) is unit-tested by feeding events.

use prefork_shared::exit;
use prefork_shared::ipc::StopMode;
use slog::{error, info, warn, Logger};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

mod cohort;
mod events;
mod view;
mod worker;
use cohort::Cohort;
pub use events::{Action, Event, ExitStatus, Generation, Pid, Slot, Timeouts};
pub use view::{WorkerPhase, WorkerView};
use worker::{Worker, WorkerState};

/// A worker that has not said Ready after this long is killed and replaced.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(10);
/// A worker that ran at least this long before dying counts as healthy, so
/// its slot restarts at once instead of backing off.
pub const HEALTHY_UPTIME: Duration = Duration::from_secs(5);
/// First backoff delay of a crash-looping slot; doubles with every failure.
pub const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest delay between two restarts of a crash-looping slot.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// How long a fast stop waits before killing what is left; also how long a
/// graceful stop waits past the worker's `shutdown_timeout` (see
/// `Worker::stop_deadline`).
pub const FAST_STOP_GRACE: Duration = Duration::from_secs(3);
/// Most generations draining at once; a reload that would add one more stops
/// the oldest fast, so frequent reloads cannot pile up draining workers.
pub const MAX_DRAINING_GENERATIONS: usize = 4;
/// Most workers SIGTTIN can raise the count to (the config's limit).
pub const MAX_WORKERS: usize = 1024;
/// How long a new master (binary upgrade) may take to serve with all its
/// workers before the old one gives up on it.
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(20);

/// A binary upgrade in progress: the new master and when to give up on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Upgrade {
    pid: Option<Pid>,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// A graceful stop was asked: the workers keep serving (and are kept
    /// running) until `at`, while the master reports itself unhealthy.
    StopDelayed {
        at: Instant,
    },
    ShuttingDown {
        mode: StopMode,
    },
}

/// How far saying that this master serves ([`Action::Serving`]) got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Announcement {
    /// The first generation is not ready yet.
    NotYet,
    /// Made (and, after a binary upgrade, answered or withdrawn).
    Made,
    /// The old master of a binary upgrade was told; its answer is awaited.
    AwaitingAnswer,
}

/// Which generation takes the traffic.
#[derive(Debug)]
enum Serving {
    /// None yet: the first generation is starting.
    Nobody,
    /// The current generation: every slot of it was Ready once.
    Current,
    /// An older generation, while the current one starts: its slots are
    /// kept filled until the current one takes over.
    Older(Cohort),
}

impl Serving {
    /// The older generation serving while the current one starts.
    fn older(&self) -> Option<&Cohort> {
        match self {
            Serving::Older(older) => Some(older),
            _ => None,
        }
    }

    /// The older generation serving while the current one starts, if it is
    /// `generation`.
    fn older_mut(&mut self, generation: Generation) -> Option<&mut Cohort> {
        match self {
            Serving::Older(older) if older.generation == generation => Some(older),
            _ => None,
        }
    }
}

/// The master's state: which workers exist, in which generation and state,
/// which slots wait for a restart, and whether the master is shutting down.
pub struct Supervisor {
    log: Logger,
    /// The newest generation.
    current: Cohort,
    /// How many slots the newest generation runs.
    workers_wanted: usize,
    workers: BTreeMap<Pid, Worker>,
    phase: Phase,
    /// Unexpected exits restarted, per slot (for operators).
    restarts: BTreeMap<Slot, u64>,
    upgrade: Option<Upgrade>,
    /// How far saying that this master serves got.
    announcement: Announcement,
    /// The oldest generation whose configuration the master holds (it
    /// drops older ones on [`Action::ForgetConfigs`]).
    configs_from: Generation,
    /// The newest generation that had every slot Ready: it serves until the
    /// current one does (and keeps its slots filled meanwhile).
    serving: Serving,
}

impl Supervisor {
    /// A supervisor for `workers` workers of generation 1.
    pub fn new(log: Logger, workers: usize, timeouts: Timeouts) -> Self {
        Supervisor {
            log,
            current: Cohort::new(Generation(1), timeouts),
            workers_wanted: workers,
            workers: BTreeMap::new(),
            phase: Phase::Running,
            restarts: BTreeMap::new(),
            upgrade: None,
            announcement: Announcement::NotYet,
            configs_from: Generation(1),
            serving: Serving::Nobody,
        }
    }

    /// The new master of the binary upgrade in progress, if started.
    pub fn upgrade_pid(&self) -> Option<Pid> {
        self.upgrade.and_then(|u| u.pid)
    }

    /// How many older generations are still draining.
    #[cfg(test)]
    fn draining_generations(&self) -> usize {
        self.draining().len()
    }

    /// The generations with a worker asked to stop, excluding the current one.
    fn draining(&self) -> std::collections::BTreeSet<Generation> {
        self.workers
            .values()
            .filter(|w| {
                w.generation < self.current.generation
                    && matches!(w.state, WorkerState::Stopping { fast: false, .. })
            })
            .map(|w| w.generation)
            .collect()
    }

    /// How many per-slot (`reuseport`) listeners a reload must hold: one
    /// for each slot that will run once the reload's event is handled. A
    /// new generation of `workers` slots (`Some`) runs that many, unless
    /// the master is stopping (it starts none); a hot reload (`None`) keeps
    /// the running count, which SIGTTIN and SIGTTOU may have changed. Any
    /// other socket would join the port's `reuseport` group and take
    /// connections that nobody accepts.
    pub fn slots_for_reload(&self, new_generation: Option<usize>) -> usize {
        match new_generation {
            Some(workers) if !self.shutting_down() => workers,
            _ => self.workers_wanted,
        }
    }

    /// The newest generation.
    pub fn generation(&self) -> Generation {
        self.current.generation
    }

    /// The generation a live worker belongs to.
    pub fn generation_of(&self, pid: Pid) -> Option<Generation> {
        self.workers.get(&pid).map(|w| w.generation)
    }

    /// The oldest generation that still has a live worker.
    pub fn oldest_live_generation(&self) -> Option<Generation> {
        self.workers.values().map(|w| w.generation).min()
    }

    /// The oldest generation whose configuration is still needed: one with
    /// a live worker, or with a restart waiting.
    pub fn oldest_needed_generation(&self) -> Option<Generation> {
        let waiting = self
            .serving
            .older()
            .filter(|older| !older.pending.is_empty())
            .map(|older| older.generation);
        self.oldest_live_generation()
            .into_iter()
            .chain(waiting)
            .min()
    }

    /// When [`Event::Tick`] next needs to be delivered, if ever.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let older = self.serving.older().into_iter();
        let pending = self
            .current
            .pending
            .values()
            .chain(older.flat_map(|older| older.pending.values()))
            .copied();
        let workers = self.workers.values().filter_map(|w| match w.state {
            WorkerState::Starting { since } => Some(since + BOOT_TIMEOUT),
            WorkerState::Stopping {
                deadline,
                killed: false,
                ..
            } => Some(deadline),
            WorkerState::Ready { last_beat } => Some(last_beat + w.timeouts.worker_timeout),
            _ => None,
        });
        let upgrade = self.upgrade.map(|u| u.deadline);
        let stop = match self.phase {
            Phase::StopDelayed { at } => Some(at),
            _ => None,
        };
        pending.chain(workers).chain(upgrade).chain(stop).min()
    }

    /// Applies one event and returns what to do about it.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match event {
            Event::Started => {
                // A master started by a binary upgrade may have been handed
                // the sockets of more slots than its config runs.
                actions.push(self.close_slots_given_up());
                for slot in 0..self.workers_wanted {
                    self.current.pending.insert(Slot(slot as u32), now);
                }
            }
            Event::Spawned {
                slot,
                generation,
                pid,
            } => self.on_spawned(slot, generation, pid, now, &mut actions),
            Event::SpawnFailed {
                slot,
                generation,
                reason,
            } => {
                error!(self.log, "cannot start worker"; "slot" => slot.0, "error" => reason);
                if generation == self.current.generation {
                    self.schedule_restart(slot, true, now);
                } else if let Some(older) = self.serving.older_mut(generation) {
                    older.schedule_restart(slot, true, now);
                }
            }
            Event::WorkerReady(pid) => self.on_ready(pid, now, &mut actions),
            Event::WorkerExited(pid, status) => self.on_exit(pid, status, now, &mut actions),
            Event::Reload {
                workers,
                shutdown_timeout,
                worker_timeout,
                shutdown_delay,
            } => self.on_reload(
                workers,
                Timeouts {
                    shutdown_timeout,
                    worker_timeout,
                    shutdown_delay,
                },
                now,
                &mut actions,
            ),
            Event::Reconfigure {
                shutdown_timeout,
                worker_timeout,
                shutdown_delay,
            } => self.on_reconfigure(
                Timeouts {
                    shutdown_timeout,
                    worker_timeout,
                    shutdown_delay,
                },
                now,
                &mut actions,
            ),
            Event::Heartbeat(pid) => {
                if let Some(w) = self.workers.get_mut(&pid) {
                    if let WorkerState::Ready { last_beat } = &mut w.state {
                        *last_beat = now;
                    }
                }
            }
            Event::AddWorker => self.on_add_worker(now),
            Event::RemoveWorker => self.on_remove_worker(now, &mut actions),
            Event::UpgradeRequested => self.on_upgrade_requested(now, &mut actions),
            Event::UpgradeStarted(pid) => {
                if let Some(u) = &mut self.upgrade {
                    info!(self.log, "binary upgrade: new master started"; "new_master_pid" => pid);
                    u.pid = Some(pid);
                }
            }
            Event::UpgradeFailed(reason) => self.upgrade_failed(&reason),
            Event::UpgradeReady => self.on_upgrade_ready(now, &mut actions),
            Event::ServingAnnounced => match self.phase {
                Phase::Running => self.announcement = Announcement::AwaitingAnswer,
                // Stopping already: the old master must carry on.
                Phase::StopDelayed { .. } | Phase::ShuttingDown { .. } => {
                    actions.push(Action::WithdrawServing)
                }
            },
            Event::OldMasterAnswered => {
                if self.announcement == Announcement::AwaitingAnswer {
                    self.announcement = Announcement::Made;
                    actions.push(Action::TakeOver);
                }
            }
            Event::Stop(mode) => self.on_stop(mode, now, &mut actions),
            Event::Tick => {}
            Event::Settled => return self.forget_unneeded_configs().into_iter().collect(),
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
        let mut worker = Worker {
            slot,
            generation,
            started: now,
            state: WorkerState::Starting { since: now },
            timeouts: match self.serving.older() {
                Some(older) if generation != self.current.generation => older.timeouts,
                _ => self.current.timeouts,
            },
        };
        if let Phase::ShuttingDown { mode } = self.phase {
            // Started just before a stop arrived: stop it with the others.
            actions.extend(worker.stop(pid, mode, now));
        }
        self.workers.insert(pid, worker);
    }

    fn on_ready(&mut self, pid: Pid, now: Instant, actions: &mut Vec<Action>) {
        let Some(worker) = self.workers.get_mut(&pid) else {
            return;
        };
        if !matches!(worker.state, WorkerState::Starting { .. }) {
            return;
        }
        worker.state = WorkerState::Ready { last_beat: now };
        info!(self.log, "worker ready"; "slot" => worker.slot.0, "worker_pid" => pid, "worker_generation" => worker.generation.0);
        if worker.generation == self.current.generation {
            self.on_generation_ready(now, actions);
        }
    }

    /// Once every slot of the current generation is Ready: announces
    /// [`Action::Serving`] (once) and drains the older generations.
    fn on_generation_ready(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if !self.generation_ready() {
            return;
        }
        if self.announcement == Announcement::NotYet {
            self.announcement = Announcement::Made;
            actions.push(Action::Serving);
        }
        self.serving = Serving::Current;
        self.retire_old_generations(now, actions);
    }

    /// Whether every slot of the current generation has a Ready worker.
    fn generation_ready(&self) -> bool {
        let ready = self
            .workers
            .values()
            .filter(|w| {
                w.generation == self.current.generation
                    && matches!(w.state, WorkerState::Ready { .. })
            })
            .count();
        ready >= self.workers_wanted
    }

    fn retire_old_generations(&mut self, now: Instant, actions: &mut Vec<Action>) {
        for (pid, w) in &mut self.workers {
            if w.generation < self.current.generation
                && !matches!(w.state, WorkerState::Stopping { .. })
            {
                info!(self.log, "draining worker of an older generation"; "worker_pid" => *pid, "worker_generation" => w.generation.0);
                actions.extend(w.stop(*pid, StopMode::Graceful, now));
            }
        }
        self.cap_draining(now, actions);
    }

    /// Stops the oldest draining generations fast while more than
    /// [`MAX_DRAINING_GENERATIONS`] drain.
    fn cap_draining(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let draining = self.draining();
        let excess = draining.len().saturating_sub(MAX_DRAINING_GENERATIONS);
        for generation in draining.into_iter().take(excess) {
            warn!(self.log, "too many generations draining; stopping the oldest now";
                "worker_generation" => generation.0, "limit" => MAX_DRAINING_GENERATIONS);
            for (pid, w) in &mut self.workers {
                if w.generation == generation && matches!(w.state, WorkerState::Stopping { .. }) {
                    actions.extend(w.stop(*pid, StopMode::Fast, now));
                }
            }
        }
    }

    fn on_exit(&mut self, pid: Pid, status: ExitStatus, now: Instant, actions: &mut Vec<Action>) {
        if self.upgrade_pid() == Some(pid) {
            self.upgrade_failed(&format!("the new master exited ({status})"));
            return;
        }
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
        // An operator's SIGHUP, SIGQUIT or SIGTERM to this worker asks for a
        // fresh one (as in nginx): no crash, so no count and no backoff.
        let signalled = status == ExitStatus::Code(exit::WORKER_STOPPED_BY_SIGNAL);
        let boot_failure = status == ExitStatus::Code(exit::WORKER_BOOT_FAILURE)
            || matches!(
                worker.state,
                WorkerState::Starting { .. } | WorkerState::BootTimedOut
            );
        let quick = boot_failure || lived < HEALTHY_UPTIME;
        let older = self
            .serving
            .older_mut(worker.generation)
            .filter(|_| !asked_to_stop);
        if let Some(older) = older {
            // The generation serving while the current one starts: it must
            // keep its slots filled until the current one takes over.
            if signalled {
                info!(self.log, "worker of the serving generation stopped by a signal; replacing it";
                    "slot" => worker.slot.0, "worker_pid" => pid, "worker_generation" => worker.generation.0);
                older.pending.insert(worker.slot, now);
                return;
            }
            let delay = older.schedule_restart(worker.slot, quick, now);
            *self.restarts.entry(worker.slot).or_insert(0) += 1;
            warn!(self.log, "worker of the serving generation exited unexpectedly; restarting";
                "slot" => worker.slot.0, "worker_pid" => pid, "worker_generation" => worker.generation.0,
                "status" => %status, "restart_in_ms" => delay.as_millis() as u64);
            return;
        }
        if asked_to_stop
            || worker.generation != self.current.generation
            || worker.slot.0 as usize >= self.workers_wanted
        {
            info!(self.log, "worker exited"; "slot" => worker.slot.0, "worker_pid" => pid,
                "worker_generation" => worker.generation.0, "status" => %status);
            return;
        }
        if signalled {
            info!(self.log, "worker stopped by a signal; replacing it";
                "slot" => worker.slot.0, "worker_pid" => pid, "uptime_ms" => lived.as_millis() as u64);
            self.current.pending.insert(worker.slot, now);
            return;
        }
        if worker.state == WorkerState::Hung {
            warn!(self.log, "replacing a worker that stopped answering"; "slot" => worker.slot.0, "worker_pid" => pid);
        }
        let delay = self.schedule_restart(worker.slot, quick, now);
        *self.restarts.entry(worker.slot).or_insert(0) += 1;
        warn!(self.log, "worker exited unexpectedly; restarting";
            "slot" => worker.slot.0, "worker_pid" => pid, "status" => %status,
            "uptime_ms" => lived.as_millis() as u64, "restart_in_ms" => delay.as_millis() as u64);
    }

    /// Queues a restart of `slot` of the current generation, backing off
    /// when it keeps failing quickly.
    fn schedule_restart(&mut self, slot: Slot, quick: bool, now: Instant) -> Duration {
        let delay = self.current.schedule_restart(slot, quick, now);
        if delay == BACKOFF_CAP {
            error!(self.log, "worker slot keeps crashing; restarting it at the slowest rate";
                "slot" => slot.0, "failures" => self.current.failures(slot), "restart_in_s" => delay.as_secs());
        }
        delay
    }

    fn on_reload(
        &mut self,
        workers: usize,
        timeouts: Timeouts,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        if self.phase != Phase::Running {
            return;
        }
        if workers < self.workers_wanted {
            actions.push(Action::CloseSlotListeners {
                from: Slot(workers as u32),
            });
        }
        let superseded = self.current.generation;
        let mut next = Cohort::new(Generation(superseded.0 + 1), timeouts);
        next.pending = (0..workers).map(|s| (Slot(s as u32), now)).collect();
        let previous = std::mem::replace(&mut self.current, next);
        if let Serving::Current = self.serving {
            // It serves until the new one is ready; its restarts waiting
            // are dropped with the slots the new one starts.
            self.serving = Serving::Older(Cohort::new(previous.generation, previous.timeouts));
        }
        self.workers_wanted = workers;
        info!(self.log, "starting a new generation of workers"; "new_generation" => self.current.generation.0, "workers" => workers);
        // Before the workers of the new generation are spawned (at the
        // end of this event, see `on_tick`).
        actions.push(Action::AdoptConfig(self.current.generation));
        // Workers of a generation that never finished starting are replaced
        // already: stop those still booting instead of letting them pile up.
        for (pid, w) in &mut self.workers {
            if w.generation == superseded && matches!(w.state, WorkerState::Starting { .. }) {
                actions.extend(w.stop(*pid, StopMode::Graceful, now));
            }
        }
        self.cap_draining(now, actions);
    }

    /// Closes the per-slot listeners the current generation does not run.
    fn close_slots_given_up(&self) -> Action {
        Action::CloseSlotListeners {
            from: Slot(self.workers_wanted as u32),
        }
    }

    /// Drops, once the master is settled, the configurations of
    /// generations that have no worker left nor a restart waiting.
    fn forget_unneeded_configs(&mut self) -> Option<Action> {
        let current = self.current.generation;
        let needed = self.oldest_needed_generation().unwrap_or(current);
        let older_than = needed.min(current);
        if older_than <= self.configs_from {
            return None;
        }
        self.configs_from = older_than;
        Some(Action::ForgetConfigs { older_than })
    }

    fn on_reconfigure(&mut self, timeouts: Timeouts, now: Instant, actions: &mut Vec<Action>) {
        if self.phase != Phase::Running {
            return;
        }
        self.current.timeouts = timeouts;
        let current = self.current.generation;
        let live = self.workers.iter().filter(|(_, w)| {
            w.generation == current
                && matches!(
                    w.state,
                    WorkerState::Starting { .. } | WorkerState::Ready { .. }
                )
        });
        let pids: Vec<Pid> = live.map(|(pid, _)| *pid).collect();
        for pid in &pids {
            if let Some(w) = self.workers.get_mut(pid) {
                w.timeouts = timeouts;
                // Its last beat followed the old limit's interval: the new
                // limit counts from now, time enough for it to take the new
                // config (and beat at once, at the new interval).
                if let WorkerState::Ready { last_beat } = &mut w.state {
                    *last_beat = now;
                }
            }
        }
        info!(self.log, "reconfiguring the running workers"; "workers" => pids.len());
        actions.extend(pids.into_iter().map(Action::Configure));
    }

    fn on_add_worker(&mut self, now: Instant) {
        if self.phase != Phase::Running || self.workers_wanted >= MAX_WORKERS {
            return;
        }
        let slot = Slot(self.workers_wanted as u32);
        self.workers_wanted += 1;
        self.current.failures.remove(&slot);
        self.current.pending.insert(slot, now);
        info!(self.log, "adding a worker"; "slot" => slot.0, "workers" => self.workers_wanted);
    }

    fn on_remove_worker(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.phase != Phase::Running || self.workers_wanted <= 1 {
            return;
        }
        self.workers_wanted -= 1;
        let slot = Slot(self.workers_wanted as u32);
        self.current.pending.remove(&slot);
        self.current.failures.remove(&slot);
        info!(self.log, "removing a worker"; "slot" => slot.0, "workers" => self.workers_wanted);
        actions.push(self.close_slots_given_up());
        let current = self.current.generation;
        for (pid, w) in &mut self.workers {
            let stopping = matches!(w.state, WorkerState::Stopping { .. });
            if w.generation == current && w.slot == slot && !stopping {
                actions.extend(w.stop(*pid, StopMode::Graceful, now));
            }
        }
        // The slot removed may have been the last one missing.
        self.on_generation_ready(now, actions);
    }

    fn on_upgrade_requested(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.phase != Phase::Running {
            return;
        }
        if let Some(u) = self.upgrade {
            warn!(self.log, "a binary upgrade is already in progress; ignored"; "new_master_pid" => u.pid);
            return;
        }
        info!(self.log, "binary upgrade: starting a new master");
        self.upgrade = Some(Upgrade {
            pid: None,
            deadline: now + UPGRADE_TIMEOUT,
        });
        actions.push(Action::StartUpgrade);
    }

    fn upgrade_failed(&mut self, reason: &str) {
        if self.upgrade.take().is_some() {
            error!(self.log, "binary upgrade failed; the old master carries on serving"; "reason" => reason);
        }
    }

    fn on_upgrade_ready(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let Some(upgrade) = self.upgrade.take() else {
            return;
        };
        if self.phase != Phase::Running {
            return;
        }
        info!(self.log, "binary upgrade: the new master serves; draining and exiting";
            "new_master_pid" => upgrade.pid);
        // No shutdown_delay: the new master serves the same sockets.
        self.stop_now(StopMode::Graceful, now, actions);
    }

    fn on_stop(&mut self, mode: StopMode, now: Instant, actions: &mut Vec<Action>) {
        match self.phase {
            // Only a fast stop following a graceful one changes anything.
            Phase::ShuttingDown { mode: stopping }
                if stopping == StopMode::Fast || mode == StopMode::Graceful =>
            {
                return
            }
            Phase::StopDelayed { .. } if mode == StopMode::Graceful => return,
            Phase::Running if mode == StopMode::Graceful => {
                let delay = self.current.timeouts.shutdown_delay;
                if !delay.is_zero() {
                    info!(self.log, "stopping after shutdown_delay: serving meanwhile, /healthz answers 503";
                        "shutdown_delay_ms" => delay.as_millis() as u64);
                    self.phase = Phase::StopDelayed { at: now + delay };
                    return;
                }
            }
            _ => {}
        }
        self.stop_now(mode, now, actions);
    }

    /// Stops every worker in `mode`, now.
    fn stop_now(&mut self, mode: StopMode, now: Instant, actions: &mut Vec<Action>) {
        info!(self.log, "stopping"; "mode" => format!("{mode:?}").to_lowercase(), "workers" => self.workers.len());
        if self.announcement == Announcement::AwaitingAnswer {
            // First, before anything stops: the old master must carry on
            // serving rather than hand over to a master that stops.
            self.announcement = Announcement::Made;
            actions.push(Action::WithdrawServing);
        }
        if let Some(upgrade) = self.upgrade.take() {
            // The new master is not in charge yet: it goes with the old one.
            if let Some(pid) = upgrade.pid {
                warn!(self.log, "binary upgrade abandoned: stopping"; "new_master_pid" => pid);
                actions.push(Action::AbortUpgrade(pid));
            }
        }
        self.phase = Phase::ShuttingDown { mode };
        self.current.pending.clear();
        if let Serving::Older(older) = &mut self.serving {
            older.pending.clear();
        }
        for (pid, w) in &mut self.workers {
            actions.extend(w.stop(*pid, mode, now));
        }
        if self.workers.is_empty() {
            actions.push(Action::Exit(exit::OK));
        }
    }

    fn on_tick(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if let Phase::StopDelayed { at } = self.phase {
            if now >= at {
                self.stop_now(StopMode::Graceful, now, actions);
            }
        }
        if matches!(self.phase, Phase::Running | Phase::StopDelayed { .. }) {
            for slot in self.current.take_due(now) {
                actions.push(Action::Spawn {
                    slot,
                    generation: self.current.generation,
                });
            }
            if let Serving::Older(older) = &mut self.serving {
                let due = older.take_due(now);
                let beyond = due.iter().any(|s| s.0 as usize >= self.workers_wanted);
                for slot in due {
                    actions.push(Action::Spawn {
                        slot,
                        generation: older.generation,
                    });
                }
                if beyond {
                    // A slot the current generation does not run: its new
                    // worker's socket is the only one left to it.
                    actions.push(self.close_slots_given_up());
                }
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
                WorkerState::Ready { last_beat }
                    if now >= last_beat + w.timeouts.worker_timeout =>
                {
                    error!(self.log, "worker stopped answering heartbeats; killing it";
                        "slot" => w.slot.0, "worker_pid" => *pid,
                        "silent_ms" => now.saturating_duration_since(last_beat).as_millis() as u64);
                    w.state = WorkerState::Hung;
                    actions.push(Action::Kill(*pid));
                }
                WorkerState::Stopping {
                    deadline,
                    killed: false,
                    fast,
                } if now >= deadline => {
                    warn!(self.log, "worker did not stop in time; killing it"; "slot" => w.slot.0, "worker_pid" => *pid);
                    w.state = WorkerState::Stopping {
                        deadline,
                        killed: true,
                        fast,
                    };
                    actions.push(Action::Kill(*pid));
                }
                _ => {}
            }
        }
        if let Some(Upgrade {
            pid: Some(pid),
            deadline,
        }) = self.upgrade
        {
            if now >= deadline {
                self.upgrade_failed(&format!(
                    "the new master did not serve within {}s",
                    UPGRADE_TIMEOUT.as_secs()
                ));
                actions.push(Action::AbortUpgrade(pid));
            }
        }
    }
}

#[cfg(test)]
mod tests;
