//! The master loop: one `select!` over signals, worker links, the binary
//! upgrade's links, questions and a timer. It turns what happens into
//! supervisor [`Event`]s and carries out the [`Action`]s the supervisor
//! decides on, with the parts that own each job: the workers' links
//! ([`LinkTable`]), the configuration of each generation ([`Generations`]),
//! the listeners, a reload ([`Reload`]) and the hand-off of a binary
//! upgrade ([`Handoff`]).

use crate::control_socket::ControlSocket;
use crate::generations::{GenerationSetup, Generations};
use crate::handoff::Handoff;
use crate::link::LinkEvent;
use crate::link_table::LinkTable;
use crate::listeners::Listeners;
use crate::metrics::Observed;
use crate::os::{self, Credentials, OwnImage};
use crate::query::{Answer, Asked};
use crate::reload::{self, ReadConfig, Reload};
use crate::resolver;
use crate::signals::Request;
use crate::supervisor::{Action, Event, ExitStatus, Generation, Pid, Slot, Supervisor, Timeouts};
use crate::systemd::{self, Happening, Notices, Systemd};
use crate::ticket_keys::{self, TicketKeys};
use crate::upgrade::Inherited;
use crossbeam_channel::{select, Receiver, Sender};
use nix::sys::signal::Signal;
use prefork_shared::config::SigtermMode;
use prefork_shared::ipc::{StopMode, WorkerMsg};
use prefork_shared::Config;
use slog::{error, info, warn, Logger};
use std::collections::VecDeque;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

mod queries;
#[cfg(test)]
mod tests;

/// Everything the master owns while it runs.
pub struct Master {
    log: Logger,
    /// Shown on every master log line; follows the newest generation.
    log_generation: Arc<AtomicU64>,
    config_path: PathBuf,
    exe: OwnImage,
    listeners: Listeners,
    generations: Generations,
    supervisor: Supervisor,
    links: LinkTable,
    signals: Receiver<Request>,
    /// Questions from the control socket and the admin listener.
    queries: Receiver<Asked>,
    /// The control socket (removed when the master is dropped).
    control: ControlSocket,
    /// The admin listener (served by its own thread), passed on by a binary
    /// upgrade.
    admin: Option<TcpListener>,
    /// Worker counters and reload outcomes.
    observed: Observed,
    handoff: Handoff,
    /// Sent to every worker of every generation, and to a new master.
    ticket_keys: TicketKeys,
    /// Where systemd listens, and what to tell it when.
    systemd: Systemd,
    notices: Notices,
    /// When the systemd watchdog is next pinged, if it is.
    watchdog_at: Option<Instant>,
    /// The reload being read off the loop thread, if any.
    reloading: Reloading,
    /// When the upstream host names are next resolved, if any needs it.
    resolve_at: Option<Instant>,
    /// Where a round of resolving, off the loop thread, reports.
    resolving: Option<Receiver<resolver::Found>>,
}

/// A reload's reading, done on a thread of its own (files, DNS) while the
/// loop goes on; what arrives meanwhile waits for it.
#[derive(Default)]
struct Reloading {
    /// Where the read config arrives.
    read: Option<Receiver<Result<ReadConfig, String>>>,
    /// Another reload was asked while this one was read: it reads again
    /// (the file may have changed since the first read began).
    again: bool,
    /// Control-socket clients waiting for the outcome.
    waiting: Vec<Sender<Answer>>,
}

/// What the master starts with; see `boot.rs` for how each is made.
pub struct Startup {
    /// The error log.
    pub log: Logger,
    /// The generation cell the log shows.
    pub log_generation: Arc<AtomicU64>,
    /// Where the config was read from (re-read on reload).
    pub config_path: PathBuf,
    /// The validated config.
    pub config: Config,
    /// Identity for workers, when running as root with `user` set.
    pub credentials: Option<Credentials>,
    /// The bound listeners.
    pub listeners: Listeners,
    /// Requests from the signal thread.
    pub signals: Receiver<Request>,
    /// The binary this master runs (workers are started from its image).
    pub exe: OwnImage,
    /// Questions from the control socket and the admin listener.
    pub queries: Receiver<Asked>,
    /// The bound control socket.
    pub control: ControlSocket,
    /// A copy of the admin listener, if one runs.
    pub admin: Option<TcpListener>,
    /// What the old master handed over, when started by a binary upgrade.
    pub handoff: Option<Inherited>,
    /// The session-ticket keys every worker gets.
    pub ticket_keys: TicketKeys,
    /// What systemd set up (notifications, the watchdog).
    pub systemd: Systemd,
}

impl Master {
    /// A master ready to run.
    pub fn new(s: Startup) -> Self {
        let supervisor = Supervisor::new(
            s.log.new(slog::o!()),
            s.config.workers,
            Timeouts {
                shutdown_timeout: s.config.shutdown_timeout,
                worker_timeout: s.config.worker_timeout,
                shutdown_delay: s.config.shutdown_delay,
            },
        );
        let first = GenerationSetup {
            config: Arc::new(s.config),
            credentials: s.credentials,
        };
        let notices = Notices::new(s.handoff.is_some());
        let watchdog_at = s.systemd.watchdog.map(|every| Instant::now() + every);
        Master {
            generations: Generations::new(supervisor.generation(), first),
            links: LinkTable::new(s.log.clone()),
            handoff: Handoff::new(s.log.clone(), s.handoff),
            log: s.log,
            log_generation: s.log_generation,
            config_path: s.config_path,
            exe: s.exe,
            listeners: s.listeners,
            supervisor,
            signals: s.signals,
            queries: s.queries,
            control: s.control,
            admin: s.admin,
            observed: Observed::default(),
            ticket_keys: s.ticket_keys,
            systemd: s.systemd,
            notices,
            watchdog_at,
            reloading: Reloading::default(),
            resolve_at: None,
            resolving: None,
        }
    }

    /// Runs until every worker has stopped (and, after a binary upgrade,
    /// the new master took over); returns the exit code and the pid file to
    /// remove (a reload may have moved it).
    pub fn run(mut self) -> (i32, PathBuf) {
        let code = self.serve();
        (code, self.current_config().pid_file.clone())
    }

    fn serve(&mut self) -> i32 {
        for setup in self.generations.all() {
            setup.give_logs_to_workers(&self.log);
        }
        if let Some(code) = self.feed(Event::Started) {
            return code;
        }
        // Set once every worker is gone but the new master of a binary
        // upgrade has not taken over yet: the exit code, and the end of
        // that wait.
        let mut leaving: Option<(i32, Receiver<()>)> = None;
        loop {
            let taken_over = match &leaving {
                Some((_, over)) => over.clone(),
                None => crossbeam_channel::never(),
            };
            let timer = match self.supervisor.next_wakeup() {
                Some(at) => crossbeam_channel::at(at),
                None => crossbeam_channel::never(),
            };
            let rotation = crossbeam_channel::at(self.ticket_keys.rotate_at());
            let watchdog = match self.watchdog_at {
                Some(at) => crossbeam_channel::at(at),
                None => crossbeam_channel::never(),
            };
            let reload_read = self
                .reloading
                .read
                .clone()
                .unwrap_or_else(crossbeam_channel::never);
            self.schedule_resolve(Instant::now());
            let resolve_timer = match self.resolve_at {
                Some(at) => crossbeam_channel::at(at),
                None => crossbeam_channel::never(),
            };
            let resolved = self
                .resolving
                .clone()
                .unwrap_or_else(crossbeam_channel::never);
            let events: Vec<Event> = select! {
                recv(self.signals) -> request => match request {
                    Ok(request) => self.on_signal(request),
                    Err(_) => {
                        error!(self.log, "the signal thread stopped; stopping");
                        vec![Event::Stop(StopMode::Fast)]
                    }
                },
                recv(self.links.events()) -> event => match event {
                    Ok(event) => self.on_link(event),
                    Err(_) => Vec::new(),
                },
                recv(self.handoff.outcomes()) -> outcome => match outcome {
                    Ok(outcome) => self.handoff.on_outcome(outcome, self.supervisor.upgrade_pid()),
                    Err(_) => Vec::new(),
                },
                recv(self.handoff.answers()) -> answer => match answer {
                    Ok(answer) => vec![self.handoff.on_answer(answer)],
                    Err(_) => Vec::new(),
                },
                recv(timer) -> _ => self.on_timer(),
                recv(resolve_timer) -> _ => {
                    self.begin_resolve();
                    Vec::new()
                },
                recv(resolved) -> found => match found {
                    Ok(found) => self.finish_resolve(&found).into_iter().collect(),
                    Err(_) => {
                        self.resolving = None;
                        Vec::new()
                    }
                },
                recv(reload_read) -> read => {
                    let read = read.unwrap_or_else(|_| Err("the reload's reader stopped".to_owned()));
                    self.finish_reload(read).into_iter().collect()
                },
                recv(rotation) -> _ => {
                    self.rotate_ticket_keys(Instant::now());
                    Vec::new()
                },
                recv(watchdog) -> _ => {
                    self.ping_watchdog(Instant::now());
                    Vec::new()
                },
                recv(self.queries) -> asked => {
                    if let Ok(asked) = asked {
                        self.on_query(asked);
                    }
                    Vec::new()
                },
                recv(taken_over) -> _ => match leaving {
                    Some((code, _)) => return code,
                    None => Vec::new(),
                },
            };
            // Settled last: what the events led to is carried out.
            for event in events.into_iter().chain([Event::Settled]) {
                if let Some(code) = self.feed(event) {
                    if leaving.is_some() {
                        continue;
                    }
                    match self.handoff.leaving() {
                        Some(over) => leaving = Some((code, over)),
                        None => return code,
                    }
                }
            }
            self.follow_session_timeout(Instant::now());
            if let Some(serving) = self.supervisor.serving_generation() {
                self.notify(Happening::GenerationServes(serving.0));
            }
        }
    }

    /// The supervisor's timer fired. What the workers sent before now comes
    /// first: a loop that was busy (a slow reload) must not take the
    /// heartbeats queued meanwhile for silence and kill healthy workers as
    /// hung, which `select!`'s random pick between two ready channels would
    /// do about half the time.
    fn on_timer(&mut self) -> Vec<Event> {
        let queued: Vec<LinkEvent> = self.links.events().try_iter().collect();
        let mut events: Vec<Event> = queued.into_iter().flat_map(|e| self.on_link(e)).collect();
        events.push(Event::Tick);
        events
    }

    /// Tells systemd what `happening` calls for, if anything.
    fn notify(&mut self, happening: Happening) {
        if let Some(message) = self.notices.on(happening) {
            self.systemd.send(&self.log, &message);
        }
    }

    /// Pings the systemd watchdog from the loop thread: a loop that stalls
    /// stops the pings, and systemd acts on it.
    fn ping_watchdog(&mut self, now: Instant) {
        let Some(every) = self.systemd.watchdog else {
            return;
        };
        if self.notices.sends_watchdog() {
            self.systemd.send(&self.log, "WATCHDOG=1");
        }
        self.watchdog_at = Some(now + every);
    }

    /// Gives an event to the supervisor and carries out what it decides,
    /// including the events that carrying it out produces.
    fn feed(&mut self, event: Event) -> Option<i32> {
        let mut queue = VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            match event {
                Event::Stop(_) => self.notify(Happening::StopBegan),
                Event::UpgradeReady => self.notify(Happening::HandedOver),
                _ => {}
            }
            for action in self.supervisor.handle(event, Instant::now()) {
                match action {
                    Action::Spawn { slot, generation } => {
                        queue.push_back(self.spawn(slot, generation))
                    }
                    Action::Stop(pid, mode) => self.links.stop(pid, mode),
                    Action::Kill(pid) | Action::AbortUpgrade(pid) => {
                        os::signal_process(&self.log, pid, Signal::SIGKILL)
                    }
                    Action::Configure(pid) => {
                        if let Some(setup) = self.setup_of(pid) {
                            self.links.configure(pid, &setup.config);
                        }
                    }
                    Action::StartUpgrade => queue.push_back(self.handoff.start_upgrade(
                        &self.exe.path,
                        &self.config_path,
                        &self.listeners,
                        self.admin.as_ref().map(|l| l.as_raw_fd()),
                        &self.ticket_keys.encode(Instant::now()),
                        &self.systemd.for_new_master(),
                    )),
                    Action::Serving => {
                        let pid_file = self.current_config().pid_file.clone();
                        let upgraded = self.handoff.upgraded();
                        match self.handoff.announce(&pid_file, &mut self.control) {
                            Some(announced) => queue.push_back(announced),
                            // Started afresh, or took over at once.
                            None if upgraded => self.notify(Happening::TookOver {
                                pid: std::process::id(),
                            }),
                            None => self.notify(Happening::Serving),
                        }
                    }
                    Action::TakeOver => {
                        let pid_file = self.current_config().pid_file.clone();
                        self.handoff.take_over(&pid_file, &mut self.control);
                        self.notify(Happening::TookOver {
                            pid: std::process::id(),
                        });
                    }
                    Action::WithdrawServing => self.handoff.withdraw(),
                    Action::Exit(code) => return Some(code),
                    Action::AdoptConfig(generation) => {
                        if self.generations.adopt(generation) {
                            self.log_generation.store(generation.0, Ordering::Relaxed);
                        }
                    }
                    Action::CloseSlotListeners { from } => {
                        for (addr, slot) in self.listeners.retain_slots(from.0 as usize) {
                            info!(self.log, "per-slot listener closed"; "addr" => %addr, "slot" => slot.0);
                        }
                    }
                    Action::ForgetConfigs { older_than } => {
                        self.generations.forget_older_than(older_than)
                    }
                }
            }
        }
        None
    }

    fn on_signal(&mut self, request: Request) -> Vec<Event> {
        match request {
            Request::Reload => {
                self.begin_reload();
                Vec::new()
            }
            Request::GracefulStop => vec![Event::Stop(StopMode::Graceful)],
            Request::FastStop => vec![Event::Stop(StopMode::Fast)],
            Request::Terminate => vec![Event::Stop(match self.current_config().sigterm {
                SigtermMode::Fast => StopMode::Fast,
                SigtermMode::Graceful => StopMode::Graceful,
            })],
            Request::ReapChildren => self.on_reaped(os::reap_children()),
            Request::AddWorker => vec![Event::AddWorker],
            Request::RemoveWorker => vec![Event::RemoveWorker],
            Request::ReopenLogs => {
                info!(self.log, "reopening the log files");
                // Before the workers reopen them (see log_files).
                for setup in self.generations.all() {
                    setup.give_logs_to_workers(&self.log);
                }
                prefork_shared::log::reopen();
                self.links.reopen_logs();
                Vec::new()
            }
            Request::Upgrade => vec![Event::UpgradeRequested],
            Request::Unsupported(signal) => {
                warn!(self.log, "signal not supported by this version; ignored"; "signal" => signal.as_str());
                Vec::new()
            }
        }
    }

    /// Forgets the children `waitpid` returned (their links go once closed:
    /// see `LinkTable`).
    fn on_reaped(&mut self, exited: Vec<(Pid, ExitStatus)>) -> Vec<Event> {
        for (pid, _) in &exited {
            self.links.reaped(*pid, &mut self.observed);
        }
        exited
            .into_iter()
            .map(|(pid, status)| Event::WorkerExited(pid, status))
            .collect()
    }

    fn on_link(&mut self, event: LinkEvent) -> Vec<Event> {
        let Some(pid) = self.links.sender(event.from()) else {
            return Vec::new();
        };
        match event {
            LinkEvent::Hello { control, .. } => {
                let config = self.setup_of(pid).map(|s| Arc::clone(&s.config));
                let keys = self.ticket_keys.ring();
                self.links.hello(pid, control, config.as_deref(), &keys);
                Vec::new()
            }
            LinkEvent::Message(_, msg) => match msg {
                WorkerMsg::Ready => vec![Event::WorkerReady(pid)],
                WorkerMsg::Heartbeat => vec![Event::Heartbeat(pid)],
                WorkerMsg::Stats(stats) => self.on_stats(pid, *stats),
                WorkerMsg::Hello { .. } => {
                    warn!(self.log, "worker said hello twice"; "worker_pid" => pid);
                    Vec::new()
                }
            },
            LinkEvent::Closed { reason, .. } => {
                self.links.link_closed(pid, &reason, &mut self.observed);
                Vec::new()
            }
        }
    }

    /// Rotates the session-ticket keys if due, and sends every worker the
    /// new ring.
    fn rotate_ticket_keys(&mut self, now: Instant) {
        match self.ticket_keys.rotate_if_due(now, ticket_keys::fresh_key) {
            Ok(true) => {
                let key = self.ticket_keys.ring().current.short_name();
                info!(self.log, "session-ticket keys rotated"; "key" => key);
                self.links.ticket_keys(&self.ticket_keys.ring());
            }
            Ok(false) => {}
            Err(e) => {
                error!(self.log, "cannot make a session-ticket key; rotating later"; "error" => %e);
                self.ticket_keys.postpone(now + ticket_keys::RETRY);
            }
        }
    }

    /// Rotates the session-ticket keys at the newest config's
    /// `tls_session_timeout` (a reload may have changed it); the workers get
    /// the lifetime that goes with it.
    fn follow_session_timeout(&mut self, now: Instant) {
        let interval = self.current_config().tls_session_timeout;
        if self.ticket_keys.set_interval(now, interval) {
            self.links.ticket_keys(&self.ticket_keys.ring());
        }
    }

    /// The setup of a live worker's generation.
    fn setup_of(&self, pid: Pid) -> Option<&GenerationSetup> {
        let generation = self.supervisor.generation_of(pid)?;
        self.generations.get(generation)
    }

    fn spawn(&mut self, slot: Slot, generation: Generation) -> Event {
        let Some(setup) = self.generations.get(generation) else {
            let reason = format!("no configuration for generation {}", generation.0);
            return Event::SpawnFailed {
                slot,
                generation,
                reason,
            };
        };
        self.links.spawn(
            &self.exe,
            slot,
            generation,
            setup,
            &mut self.listeners,
            &mut self.observed,
        )
    }

    /// Re-reads the config (see [`Reload`]), telling systemd when it begins
    /// and how it ended (a new generation ends once it serves).
    /// Keeps the next round of resolving due `resolve` after the last one,
    /// while the newest config has host names to resolve.
    fn schedule_resolve(&mut self, now: Instant) {
        match resolver::interval(self.current_config()) {
            None => self.resolve_at = None,
            Some(every) if self.resolve_at.is_none() && self.resolving.is_none() => {
                self.resolve_at = Some(now + every)
            }
            Some(_) => {}
        }
    }

    /// Resolves the upstream host names on a thread of their own.
    fn begin_resolve(&mut self) {
        self.resolve_at = None;
        let names = resolver::names(self.current_config());
        if names.is_empty() {
            return;
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let spawned = std::thread::Builder::new()
            .name("resolve".into())
            .spawn(move || {
                let _ = tx.send(resolver::resolve(&names));
            });
        match spawned {
            Ok(_) => self.resolving = Some(rx),
            Err(e) => warn!(self.log, "cannot start the resolver's thread"; "error" => %e),
        }
    }

    /// Gives the running workers the addresses a round found, as a hot
    /// reload of the same configuration would, if any changed.
    fn finish_resolve(&mut self, found: &resolver::Found) -> Option<Event> {
        self.resolving = None;
        for (name, result) in found {
            if let Err(why) = result {
                warn!(self.log, "cannot resolve an upstream server again; keeping its addresses"; "server" => name, "error" => why);
            }
        }
        let current = self.supervisor.generation();
        let config = resolver::apply(self.current_config(), found)?;
        let credentials = self.generations.get(current)?.credentials.clone();
        info!(
            self.log,
            "upstream addresses changed; reconfiguring the workers"
        );
        let (shutdown_timeout, worker_timeout, shutdown_delay) = (
            config.shutdown_timeout,
            config.worker_timeout,
            config.shutdown_delay,
        );
        self.generations.replace(
            current,
            GenerationSetup {
                config: Arc::new(config),
                credentials,
            },
        );
        Some(Event::Reconfigure {
            shutdown_timeout,
            worker_timeout,
            shutdown_delay,
        })
    }

    /// Starts reading the config on a thread of its own; a reload asked
    /// while one is read is read again once that one is done.
    fn begin_reload(&mut self) {
        if self.reloading.read.is_some() {
            self.reloading.again = true;
            return;
        }
        self.notify(Happening::ReloadBegan {
            monotonic_usec: systemd::monotonic_usec(),
        });
        let (tx, rx) = crossbeam_channel::bounded(1);
        let path = self.config_path.clone();
        let spawned = std::thread::Builder::new()
            .name("reload".into())
            .spawn(move || {
                let _ = tx.send(reload::read(&path));
            });
        match spawned {
            Ok(_) => self.reloading.read = Some(rx),
            Err(e) => {
                // No thread: read here, as a slow loop beats no reload.
                warn!(self.log, "cannot start the reload's thread; reading on the loop"; "error" => %e);
                let read = reload::read(&self.config_path);
                let (tx, rx) = crossbeam_channel::bounded(1);
                let _ = tx.send(read);
                self.reloading.read = Some(rx);
            }
        }
    }

    /// Applies the config a reload read: tells systemd and the waiting
    /// clients the outcome, and reads again if another reload was asked
    /// meanwhile. What the supervisor must hear, if anything.
    fn finish_reload(&mut self, read: Result<ReadConfig, String>) -> Option<Event> {
        self.reloading.read = None;
        let event = Reload {
            log: &self.log,
            config_path: &self.config_path,
            generations: &mut self.generations,
            listeners: &mut self.listeners,
            supervisor: &self.supervisor,
            observed: &mut self.observed,
        }
        .run(read);
        let current = self.supervisor.generation().0;
        let outcome = match &event {
            Some(Event::Reload { .. }) => Happening::ReloadStarting {
                generation: current + 1,
            },
            Some(_) => Happening::ReloadedInPlace {
                generation: current,
            },
            None => Happening::ReloadRefused {
                reason: self
                    .observed
                    .last_reload()
                    .map(|r| r.message.clone())
                    .unwrap_or_default(),
            },
        };
        self.notify(outcome);
        let (ok, message) = match self.observed.last_reload() {
            Some(r) => (r.ok, r.message.clone()),
            None => (false, "no reload was attempted".to_owned()),
        };
        let answer = Answer {
            ok,
            body: format!("{}\n", serde_json::json!({ "ok": ok, "message": message })),
        };
        for client in self.reloading.waiting.drain(..) {
            let _ = client.send(answer.clone());
        }
        if std::mem::take(&mut self.reloading.again) {
            self.begin_reload();
        }
        event
    }

    /// Reloads and waits for the read (tests: the loop is not running).
    #[cfg(test)]
    fn reload_and_wait(&mut self) -> Vec<Event> {
        self.begin_reload();
        let mut events = Vec::new();
        while let Some(read) = self.reloading.read.clone() {
            let read = read.recv().unwrap_or_else(|_| Err("no reader".to_owned()));
            events.extend(self.finish_reload(read));
        }
        events
    }

    /// The newest generation's config.
    fn current_config(&self) -> &Config {
        self.generations.newest_config(self.supervisor.generation())
    }
}
