//! The binary-upgrade hand-off as this master takes part in it (`upgrade`
//! has the protocol): as the old master, it starts the new one, hands over
//! once that one serves, and waits on its way out until it took over; as a
//! new master, it tells the old one that it serves, then takes over or
//! withdraws as the supervisor decides.

use crate::control_socket::ControlSocket;
use crate::listeners::Listeners;
use crate::pidfile;
use crate::supervisor::{Event, Pid};
use crate::upgrade::{self, Answer, Inherited, Outcome};
use crossbeam_channel::{Receiver, Sender};
use slog::{error, info, warn, Logger};
use std::net::Shutdown;
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// A master started by a binary upgrade that told the old master it serves.
struct Announced {
    old_master: i32,
    /// The hand-off link (shut down to withdraw).
    link: UnixStream,
}

/// This master's side of binary upgrades.
pub struct Handoff {
    log: Logger,
    /// What the link to a new master this one started says.
    outcomes_tx: Sender<Outcome>,
    outcomes: Receiver<Outcome>,
    /// The link to the new master this one handed over to.
    handed_over: Option<UnixStream>,
    /// Set when this master was started by a binary upgrade, until it serves.
    inherited: Option<Inherited>,
    /// Set once it serves, until the old master answers or it withdraws.
    announced: Option<Announced>,
    /// The old master's answer to the announcement.
    answers_tx: Sender<Answer>,
    answers: Receiver<Answer>,
}

impl Handoff {
    /// The hand-off of a master started by a binary upgrade (`inherited`:
    /// what the old master passed), or of one started afresh.
    pub fn new(log: Logger, inherited: Option<Inherited>) -> Self {
        let (outcomes_tx, outcomes) = crossbeam_channel::unbounded();
        let (answers_tx, answers) = crossbeam_channel::unbounded();
        Handoff {
            log,
            outcomes_tx,
            outcomes,
            handed_over: None,
            inherited,
            announced: None,
            answers_tx,
            answers,
        }
    }

    /// What the new masters this one starts report.
    pub fn outcomes(&self) -> &Receiver<Outcome> {
        &self.outcomes
    }

    /// The old master's answers, once this one said it serves.
    pub fn answers(&self) -> &Receiver<Answer> {
        &self.answers
    }

    /// Starts a new master from the binary on disk (SIGUSR2), handing it
    /// the listeners, the admin listener and the session-ticket keys.
    pub fn start_upgrade(
        &self,
        exe: &Path,
        config_path: &Path,
        listeners: &Listeners,
        admin: Option<RawFd>,
        ticket_keys: &[u8],
    ) -> Event {
        match upgrade::start(
            exe,
            config_path,
            &listeners.all(),
            admin,
            ticket_keys,
            self.outcomes_tx.clone(),
        ) {
            Ok(pid) => Event::UpgradeStarted(pid),
            Err(e) => Event::UpgradeFailed(format!("cannot start {}: {e}", exe.display())),
        }
    }

    /// What the new master's link said. `upgrading` is the new master of
    /// the upgrade in progress: an outcome from another one, which this
    /// master gave up on (and killed), is stale.
    pub fn on_outcome(&mut self, outcome: Outcome, upgrading: Option<Pid>) -> Vec<Event> {
        if upgrading != Some(outcome.pid) {
            return Vec::new();
        }
        let Some(mut link) = outcome.ready else {
            return vec![Event::UpgradeFailed(
                "the new master closed the hand-off link before serving".into(),
            )];
        };
        match upgrade::hand_over(&mut link) {
            Ok(()) => {
                self.handed_over = Some(link);
                vec![Event::UpgradeReady]
            }
            Err(e) => vec![Event::UpgradeFailed(format!(
                "the new master withdrew before taking over: {e}"
            ))],
        }
    }

    /// Every first-generation worker is Ready: a master started by a binary
    /// upgrade tells the old master ([`Event::ServingAnnounced`]), or takes
    /// over at once if it cannot.
    pub fn announce(&mut self, pid_file: &Path, control: &mut ControlSocket) -> Option<Event> {
        let inherited = self.inherited.take()?;
        let old_master = inherited.old_master;
        match inherited.announce(self.answers_tx.clone()) {
            Ok(link) => {
                info!(self.log, "binary upgrade: serving; waiting for the old master to hand over"; "old_master_pid" => old_master);
                self.announced = Some(Announced { old_master, link });
                Some(Event::ServingAnnounced)
            }
            Err(e) => {
                warn!(self.log, "binary upgrade: cannot tell the old master; taking over"; "old_master_pid" => old_master, "error" => %e);
                take_over(&self.log, old_master, pid_file, control);
                None
            }
        }
    }

    /// The old master answered (or went away) after this one said it serves.
    pub fn on_answer(&self, answer: Answer) -> Event {
        // Once withdrawn (this master is stopping), the answer changes
        // nothing (see `Supervisor`).
        if let Some(announced) = &self.announced {
            if answer == Answer::Gone {
                warn!(self.log, "binary upgrade: the old master went away without handing over; taking over"; "old_master_pid" => announced.old_master);
            }
        }
        Event::OldMasterAnswered
    }

    /// Takes the pid file and the control socket over from the old master
    /// that answered.
    pub fn take_over(&mut self, pid_file: &Path, control: &mut ControlSocket) {
        if let Some(announced) = self.announced.take() {
            take_over(&self.log, announced.old_master, pid_file, control);
        }
    }

    /// Withdraws the announcement (this master stops before the old one
    /// answered), so that the old master carries on serving.
    pub fn withdraw(&mut self) {
        if let Some(announced) = self.announced.take() {
            let _ = announced.link.shutdown(Shutdown::Both);
        }
    }

    /// Once every worker is gone: the end of the wait for the new master
    /// this one handed over to, if it did, to take over.
    pub fn leaving(&mut self) -> Option<Receiver<()>> {
        self.handed_over.take().map(upgrade::watch_taken_over)
    }
}

#[cfg(test)]
impl Handoff {
    /// As if this master had handed over to a new master on `link`.
    pub fn set_handed_over(&mut self, link: UnixStream) {
        self.handed_over = Some(link);
    }

    /// As if this master, started by an upgrade from `old_master`, had
    /// told it on `link` that it serves.
    pub fn set_announced(&mut self, old_master: i32, link: UnixStream) {
        self.announced = Some(Announced { old_master, link });
    }
}

/// Takes the pid file and the control socket over from the old master.
fn take_over(log: &Logger, old_master: i32, pid_file: &Path, control: &mut ControlSocket) {
    if let Err(e) = pidfile::take_over(pid_file, old_master) {
        error!(log, "binary upgrade: cannot take over the pid file"; "error" => %e);
    }
    if let Err(e) = control.install() {
        error!(log, "binary upgrade: cannot take over the control socket"; "error" => %e);
    }
    info!(log, "binary upgrade: took over; the old master drains and exits"; "old_master_pid" => old_master);
}
