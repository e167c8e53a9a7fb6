//! What the supervisor hears ([`Event`]) and decides ([`Action`]), and the
//! ids and limits they name.

use prefork_shared::ipc::StopMode;
use std::fmt;
use std::time::Duration;

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
        /// The generation it was meant to run.
        generation: Generation,
        /// Why it failed.
        reason: String,
    },
    /// A worker reported that it is accepting connections.
    WorkerReady(Pid),
    /// A worker process ended.
    WorkerExited(Pid, ExitStatus),
    /// A new, valid configuration that needs new workers is ready (the edge
    /// has already bound its listeners).
    Reload {
        /// Worker count of the new configuration.
        workers: usize,
        /// Drain limit of the new configuration.
        shutdown_timeout: Duration,
        /// Heartbeat limit of the new configuration.
        worker_timeout: Duration,
        /// Serving time left after a graceful stop is asked, in the new
        /// configuration.
        shutdown_delay: Duration,
    },
    /// A new, valid configuration that the running workers can take as it is
    /// (only routes, upstreams, timeouts or logs changed).
    Reconfigure {
        /// Drain limit of the new configuration.
        shutdown_timeout: Duration,
        /// Heartbeat limit of the new configuration.
        worker_timeout: Duration,
        /// Serving time left after a graceful stop is asked, in the new
        /// configuration.
        shutdown_delay: Duration,
    },
    /// A worker's event loop said it is alive.
    Heartbeat(Pid),
    /// SIGTTIN: run one more worker.
    AddWorker,
    /// SIGTTOU: run one worker less (never fewer than one).
    RemoveWorker,
    /// SIGUSR2: start a new master from the binary on disk.
    UpgradeRequested,
    /// The new master process was started.
    UpgradeStarted(Pid),
    /// The new master could not be started, or failed before taking over.
    UpgradeFailed(String),
    /// The new master serves with all its workers: hand over and exit.
    UpgradeReady,
    /// This master, started by a binary upgrade, told the old master that
    /// it serves (on [`Action::Serving`]) and waits for its answer.
    ServingAnnounced,
    /// The old master answered that announcement (it hands over), or went
    /// away.
    OldMasterAnswered,
    /// Stop everything (SIGQUIT: graceful, SIGINT: fast, SIGTERM: as the
    /// config's `sigterm` says). A graceful stop first waits out the
    /// `shutdown_delay`, serving.
    Stop(StopMode),
    /// Time passed; deadlines may have expired.
    Tick,
    /// The master carried out everything the events so far led to: every
    /// spawn asked for was answered, so each generation still needed has a
    /// live worker or a restart waiting. (No time passes: no deadline is
    /// checked.)
    Settled,
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
    /// Send the current configuration to this running worker (hot reload).
    Configure(Pid),
    /// Start a new master from the binary on disk, handing it the listeners.
    StartUpgrade,
    /// Kill a new master that failed to take over in time.
    AbortUpgrade(Pid),
    /// Every worker of the first generation is Ready (sent once): a master
    /// started by a binary upgrade now tells the old master to hand over
    /// ([`Event::ServingAnnounced`]).
    Serving,
    /// Every worker is gone: remove the pid file and exit with this code.
    Exit(i32),
    /// The old master answered the announcement: take the pid file and the
    /// control socket over from it.
    TakeOver,
    /// Stopping before the old master answered: withdraw the announcement,
    /// so that it carries on serving instead of draining.
    WithdrawServing,
    /// Run the configuration a reload staged as this (new) generation's,
    /// before any of its workers is spawned.
    AdoptConfig(Generation),
    /// Close the master's copy of the per-slot (`reuseport`) listeners of
    /// slot `from` and above: those slots are given up, or were never the
    /// current generation's. Comes before their workers are told to stop:
    /// the worker's copy is then the last, and it accepts what is queued
    /// before closing it.
    CloseSlotListeners {
        /// The lowest slot closed.
        from: Slot,
    },
    /// Drop the configurations of generations older than this one: none of
    /// their workers is left, nor a restart waiting.
    ForgetConfigs {
        /// The oldest generation whose configuration is kept.
        older_than: Generation,
    },
}

/// The timeouts a configuration gives the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long draining workers may take.
    pub shutdown_timeout: Duration,
    /// How long a Ready worker may go without a heartbeat.
    pub worker_timeout: Duration,
    /// How long the workers keep serving after a graceful stop is asked,
    /// while `/healthz` answers 503, before they drain (`shutdown_delay`):
    /// a load balancer withdraws the instance meanwhile.
    pub shutdown_delay: Duration,
}
