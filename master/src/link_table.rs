//! The master's table of worker links: for each worker process it started,
//! its IPC link (see `link`), its command channel once it said hello, and
//! its load board cell. A worker stays in the table until it was reaped
//! *and* its link forwarded everything it sent: SIGCHLD often overtakes the
//! counters a worker sends just before it exits, which must still count.

use crate::generations::GenerationSetup;
use crate::link::{self, LinkEvent, LinkId, PendingLink};
use crate::listeners::Listeners;
use crate::load_cells::LoadCells;
use crate::metrics::Observed;
use crate::os::{self, OwnImage, WorkerCommand};
use crate::supervisor::{Event, Generation, Pid, Slot};
use crossbeam_channel::{Receiver, Sender};
use ipc_channel::ipc::IpcSender;
use nix::sys::signal::Signal;
use prefork_shared::ipc::{MasterMsg, StopMode};
use prefork_shared::load_board::LoadBoard;
use prefork_shared::ticket_keys::TicketKeyRing;
use prefork_shared::Config;
use slog::{debug, error, warn, Logger};
use std::collections::HashMap;
use std::os::fd::AsRawFd;

/// A worker's IPC link as the master sees it.
struct Link {
    /// Its serial number: events tagged with another one come from the
    /// link of an earlier worker that had the same pid.
    serial: u64,
    /// The one-shot server name, to unblock its thread if it never connects.
    name: String,
    /// Its command channel, once it said hello.
    control: Option<IpcSender<MasterMsg>>,
    /// Its load board cell, freed when it is reaped.
    cell: Option<usize>,
    /// The slot its counters count in (also after it was reaped).
    slot: Slot,
    /// Its process was reaped.
    reaped: bool,
    /// Its reader thread forwarded its last message (or never started).
    closed: bool,
}

/// The links of the workers the master started, by pid.
pub struct LinkTable {
    log: Logger,
    links: HashMap<Pid, Link>,
    /// The serial number of the last link started.
    serial: u64,
    /// The workers' load board; `None` if it could not be created (workers
    /// then accept without it).
    load: Option<LoadCells>,
    events_tx: Sender<LinkEvent>,
    events: Receiver<LinkEvent>,
}

impl LinkTable {
    /// An empty table, with the load board its workers will share.
    pub fn new(log: Logger) -> Self {
        let load = match LoadBoard::create() {
            Ok(board) => Some(LoadCells::new(board)),
            Err(e) => {
                warn!(log, "workers will accept without sharing their load"; "error" => %e);
                None
            }
        };
        let (events_tx, events) = crossbeam_channel::unbounded();
        LinkTable {
            log,
            links: HashMap::new(),
            serial: 0,
            load,
            events_tx,
            events,
        }
    }

    /// What the workers' links forward, tagged with the link.
    pub fn events(&self) -> &Receiver<LinkEvent> {
        &self.events
    }

    /// Starts the worker of `slot` in `generation` with its link, its load
    /// cell and its listeners (a per-slot one is bound now if the slot is
    /// new); says how that went, for the supervisor.
    pub fn spawn(
        &mut self,
        exe: &OwnImage,
        slot: Slot,
        generation: Generation,
        setup: &GenerationSetup,
        listeners: &mut Listeners,
        observed: &mut Observed,
    ) -> Event {
        match self.try_spawn(exe, slot, generation, setup, listeners, observed) {
            Ok(pid) => Event::Spawned {
                slot,
                generation,
                pid,
            },
            Err(reason) => Event::SpawnFailed {
                slot,
                generation,
                reason,
            },
        }
    }

    fn try_spawn(
        &mut self,
        exe: &OwnImage,
        slot: Slot,
        generation: Generation,
        setup: &GenerationSetup,
        listeners: &mut Listeners,
        observed: &mut Observed,
    ) -> Result<Pid, String> {
        let link = PendingLink::open().map_err(|e| format!("cannot open an IPC server: {e}"))?;
        if let Some(creds) = &setup.credentials {
            os::give_ipc_socket_to(link.name(), creds)
                .map_err(|e| format!("cannot hand the IPC socket to user {}: {e}", creds.name))?;
        }
        let fds = listeners
            .for_worker(&setup.config.listen, slot)
            .map_err(|e| e.to_string())?;
        let secret = os::secret_socket(link.secret())
            .map_err(|e| format!("cannot make the worker's link secret socket: {e}"))?;
        let cell = self.load.as_mut().and_then(LoadCells::assign);
        let command = WorkerCommand {
            image: exe,
            slot,
            generation,
            ipc_name: link.name(),
            secret: secret.as_raw_fd(),
            listeners: &fds,
            load: self
                .load
                .as_ref()
                .zip(cell)
                .map(|(load, cell)| (load.board().fd().as_raw_fd(), cell)),
            credentials: setup.credentials.as_ref(),
        };
        let spawned = os::spawn_worker(&command);
        // The child has its copy; the master keeps none.
        drop(secret);
        let pid = match spawned {
            Ok(pid) => pid,
            Err(e) => {
                if let (Some(load), Some(cell)) = (&mut self.load, cell) {
                    load.release(cell);
                }
                return Err(format!("cannot start {}: {e}", exe.path.display()));
            }
        };
        let name = link.name().to_owned();
        let from = self.add(pid, name, cell, slot, observed);
        if let Err(e) = link.serve(from, self.events_tx.clone()) {
            // Without a link the worker can never be configured: the boot
            // timeout would kill it; do it now instead.
            os::signal_process(&self.log, pid, Signal::SIGKILL);
            error!(self.log, "cannot start an IPC thread"; "worker_pid" => pid, "error" => %e);
            self.closed(pid, observed);
        }
        Ok(pid)
    }

    /// Keeps the link of a worker just started, before its reader thread
    /// starts. A reused pid: the worker that had it is gone (reaped),
    /// though its link may not have reported closed yet; it is forgotten
    /// now, and its late events are ignored.
    fn add(
        &mut self,
        pid: Pid,
        name: String,
        cell: Option<usize>,
        slot: Slot,
        observed: &mut Observed,
    ) -> LinkId {
        if self.links.contains_key(&pid) {
            self.forget(pid, observed);
        }
        self.serial += 1;
        self.links.insert(
            pid,
            Link {
                serial: self.serial,
                name,
                control: None,
                cell,
                slot,
                reaped: false,
                closed: false,
            },
        );
        LinkId {
            pid,
            serial: self.serial,
        }
    }

    /// The worker an event comes from, unless it comes from the link of a
    /// worker that was reaped and whose pid the kernel gave to a worker
    /// started since: that link was forgotten then (see `add`), so what it
    /// still forwards, even its last counters, is dropped rather than taken
    /// for the new worker's.
    pub fn sender(&self, from: LinkId) -> Option<Pid> {
        if self.links.get(&from.pid).map(|l| l.serial) == Some(from.serial) {
            return Some(from.pid);
        }
        debug!(self.log, "event from a replaced worker's link ignored"; "worker_pid" => from.pid);
        None
    }

    /// A worker said hello with its command channel: it gets the
    /// session-ticket `keys` then `config`, its generation's, and the channel
    /// is kept. Without a config (its generation is unknown) the channel is
    /// dropped.
    pub fn hello(
        &mut self,
        pid: Pid,
        control: IpcSender<MasterMsg>,
        config: Option<&Config>,
        keys: &TicketKeyRing,
    ) {
        let Some(config) = config else {
            return;
        };
        // Before the configuration: its TLS listeners seal tickets from the
        // start.
        if let Err(e) = control.send(MasterMsg::TicketKeys(Box::new(keys.clone()))) {
            warn!(self.log, "cannot send the session-ticket keys to a worker"; "worker_pid" => pid, "error" => ?e);
        }
        let configure = MasterMsg::Configure(Box::new(config.clone()));
        if let Err(e) = control.send(configure) {
            warn!(self.log, "cannot send the configuration to a worker"; "worker_pid" => pid, "error" => ?e);
        }
        if let Some(link) = self.links.get_mut(&pid) {
            link.control = Some(control);
        }
    }

    /// Sends a running worker its generation's new configuration (a hot
    /// reload). One that has not said hello yet gets it with hello.
    pub fn configure(&self, pid: Pid, config: &Config) {
        let Some(control) = self.control(pid) else {
            return;
        };
        if let Err(e) = control.send(MasterMsg::Configure(Box::new(config.clone()))) {
            warn!(self.log, "cannot send the new configuration to a worker"; "worker_pid" => pid, "error" => ?e);
        }
    }

    /// Asks a worker to stop over its link; a signal is the fallback.
    pub fn stop(&self, pid: Pid, mode: StopMode) {
        let sent = self
            .control(pid)
            .is_some_and(|c| c.send(MasterMsg::Stop(mode)).is_ok());
        if !sent {
            let signal = match mode {
                StopMode::Graceful => Signal::SIGQUIT,
                StopMode::Fast => Signal::SIGTERM,
            };
            os::signal_process(&self.log, pid, signal);
        }
    }

    /// Sends every worker that said hello the session-ticket keys (after a
    /// rotation); one that has not said hello yet gets them with hello.
    pub fn ticket_keys(&self, keys: &TicketKeyRing) {
        for (pid, link) in &self.links {
            let Some(control) = &link.control else {
                continue;
            };
            if let Err(e) = control.send(MasterMsg::TicketKeys(Box::new(keys.clone()))) {
                warn!(self.log, "cannot send the session-ticket keys to a worker"; "worker_pid" => pid, "error" => ?e);
            }
        }
    }

    /// Tells every worker that said hello to reopen its log files.
    pub fn reopen_logs(&self) {
        for control in self.links.values().filter_map(|l| l.control.as_ref()) {
            let _ = control.send(MasterMsg::ReopenLogs);
        }
    }

    /// The command channel of a worker that said hello.
    fn control(&self, pid: Pid) -> Option<&IpcSender<MasterMsg>> {
        self.links.get(&pid).and_then(|l| l.control.as_ref())
    }

    /// The slot a worker's counters count in.
    pub fn slot(&self, pid: Pid) -> Option<Slot> {
        self.links.get(&pid).map(|l| l.slot)
    }

    /// A worker was reaped: its cell is freed at once, its link forgotten
    /// once it closed (now, if it did already).
    pub fn reaped(&mut self, pid: Pid, observed: &mut Observed) {
        let Some(link) = self.links.get_mut(&pid) else {
            observed.on_exit(pid);
            return;
        };
        link.reaped = true;
        if link.control.is_none() {
            // Unblocks its reader thread, which then reports it closed.
            link::abandon(&link.name);
        }
        if let (Some(load), Some(cell)) = (&mut self.load, link.cell.take()) {
            load.release(cell);
        }
        if link.closed {
            self.forget(pid, observed);
        }
    }

    /// A worker's link closed, for `reason`. If the worker never got a
    /// command channel and is still running (a bad hello, from it or from an
    /// impostor that connected first), it can never be configured: it is
    /// killed now rather than at the boot timeout, and replaced as any
    /// worker that fails to start is. Says whether it was killed.
    pub fn link_closed(&mut self, pid: Pid, reason: &str, observed: &mut Observed) -> bool {
        let unconfigured = self
            .links
            .get(&pid)
            .is_some_and(|link| link.control.is_none() && !link.reaped);
        if unconfigured {
            warn!(self.log, "worker link closed before the worker was configured; killing it";
                "worker_pid" => pid, "reason" => reason);
            os::signal_process(&self.log, pid, Signal::SIGKILL);
        } else {
            debug!(self.log, "worker link closed"; "worker_pid" => pid, "reason" => reason);
        }
        self.closed(pid, observed);
        unconfigured
    }

    /// A worker's link forwarded its last message: forgotten once the
    /// worker was reaped (now, if it was already).
    pub fn closed(&mut self, pid: Pid, observed: &mut Observed) {
        if let Some(link) = self.links.get_mut(&pid) {
            link.closed = true;
            if link.reaped {
                self.forget(pid, observed);
            }
        }
    }

    /// Drops a worker that was reaped and whose link closed: nothing more
    /// can come from it, so its counters join its slot's totals.
    fn forget(&mut self, pid: Pid, observed: &mut Observed) {
        self.links.remove(&pid);
        observed.on_exit(pid);
    }
}

#[cfg(test)]
impl LinkTable {
    /// Keeps a link for `pid` as `spawn` does, without a process or a
    /// reader thread: tests forward its events themselves.
    pub fn add_for_test(&mut self, pid: Pid, slot: Slot, observed: &mut Observed) -> LinkId {
        self.add(pid, String::new(), None, slot, observed)
    }

    /// Queues `event` as a link's reader thread would.
    pub fn queue_for_test(&self, event: LinkEvent) {
        self.events_tx
            .send(event)
            .expect("the table holds the receiver");
    }

    /// How many workers the table holds.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Whether the table holds no worker.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }
}
