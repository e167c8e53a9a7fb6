//! What to tell systemd, and when: a plain type fed what happens to the
//! master ([`Happening`]), returning the message to send, if any. The
//! master loop sends it (see `notify.rs`); the tests below drive it alone.

/// Something that happened to the master that systemd may need to hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happening {
    /// Every worker of the first generation is Ready. A master started by a
    /// binary upgrade is not in charge yet: it says so at [`Happening::TookOver`].
    Serving,
    /// This master, started by a binary upgrade, took over from the old one.
    TookOver {
        /// Its own pid, systemd's new main pid.
        pid: u32,
    },
    /// A reload begins (SIGHUP or the control socket).
    ReloadBegan {
        /// `CLOCK_MONOTONIC` now, in microseconds.
        monotonic_usec: u64,
    },
    /// The reload was refused; the running configuration stays.
    ReloadRefused {
        /// Why.
        reason: String,
    },
    /// The running workers took the reloaded configuration in place.
    ReloadedInPlace {
        /// The generation that took it.
        generation: u64,
    },
    /// The reload starts a new generation; it is done once that one serves.
    ReloadStarting {
        /// The new generation.
        generation: u64,
    },
    /// The generation that takes the traffic now (fed after every turn of
    /// the loop).
    GenerationServes(u64),
    /// A stop (graceful or fast) begins.
    StopBegan,
    /// This master handed over to the new master of a binary upgrade: it is
    /// no longer systemd's main process and stays quiet from now on.
    HandedOver,
}

/// The decisions: which message each happening sends.
#[derive(Debug)]
pub struct Notices {
    /// Whether this master is the one systemd supervises (a new master of a
    /// binary upgrade becomes it when it takes over; the old one stops
    /// being it when it hands over).
    in_charge: bool,
    /// The generation a reload started, whose serving ends the reload.
    awaiting: Option<u64>,
    stopping: bool,
}

impl Notices {
    /// For a master started afresh (`upgraded` false) or by a binary upgrade.
    pub fn new(upgraded: bool) -> Self {
        Notices {
            in_charge: !upgraded,
            awaiting: None,
            stopping: false,
        }
    }

    /// Whether watchdog pings are this master's to send.
    pub fn sends_watchdog(&self) -> bool {
        self.in_charge
    }

    /// The message `happening` sends, if any (`KEY=value` lines).
    pub fn on(&mut self, happening: Happening) -> Option<String> {
        match happening {
            Happening::TookOver { pid } => {
                self.in_charge = true;
                return Some(format!(
                    "MAINPID={pid}\nREADY=1\nSTATUS=serving (took over from the old master)"
                ));
            }
            Happening::HandedOver => {
                self.in_charge = false;
                return None;
            }
            _ if !self.in_charge || self.stopping => return None,
            _ => {}
        }
        match happening {
            Happening::Serving => Some("READY=1\nSTATUS=serving".into()),
            Happening::ReloadBegan { monotonic_usec } => Some(format!(
                "RELOADING=1\nMONOTONIC_USEC={monotonic_usec}\nSTATUS=reloading"
            )),
            Happening::ReloadRefused { reason } => {
                self.awaiting = None;
                Some(ready(&format!("reload refused: {reason}")))
            }
            Happening::ReloadedInPlace { generation } => {
                self.awaiting = None;
                Some(ready(&format!(
                    "reloaded: the workers of generation {generation} took it in place"
                )))
            }
            Happening::ReloadStarting { generation } => {
                self.awaiting = Some(generation);
                None
            }
            Happening::GenerationServes(serving) => {
                let generation = self.awaiting.filter(|g| serving >= *g)?;
                self.awaiting = None;
                Some(ready(&format!(
                    "reloaded: new generation {generation} ready"
                )))
            }
            Happening::StopBegan => {
                self.stopping = true;
                Some("STOPPING=1\nSTATUS=stopping".into())
            }
            Happening::TookOver { .. } | Happening::HandedOver => None,
        }
    }
}

/// `READY=1` with `status` on one line (a STATUS= value ends at a newline).
fn ready(status: &str) -> String {
    let line: Vec<&str> = status.lines().map(str::trim).collect();
    format!("READY=1\nSTATUS={}", line.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(n: &mut Notices, happenings: Vec<Happening>) -> Vec<String> {
        happenings.into_iter().filter_map(|h| n.on(h)).collect()
    }

    #[test]
    fn ready_once_serving_then_each_reload_begins_and_ends() {
        let mut n = Notices::new(false);
        assert!(n.sends_watchdog());
        let said = fed(
            &mut n,
            vec![
                Happening::GenerationServes(1),
                Happening::Serving,
                Happening::ReloadBegan { monotonic_usec: 42 },
                Happening::ReloadedInPlace { generation: 1 },
                Happening::ReloadBegan { monotonic_usec: 43 },
                Happening::ReloadRefused {
                    reason: "t.toml:1: workers: must be at least 1\nt.toml:2: x".into(),
                },
            ],
        );
        assert_eq!(
            said,
            [
                "READY=1\nSTATUS=serving",
                "RELOADING=1\nMONOTONIC_USEC=42\nSTATUS=reloading",
                "READY=1\nSTATUS=reloaded: the workers of generation 1 took it in place",
                "RELOADING=1\nMONOTONIC_USEC=43\nSTATUS=reloading",
                "READY=1\nSTATUS=reload refused: t.toml:1: workers: must be at least 1; t.toml:2: x",
            ]
        );
    }

    #[test]
    fn a_reload_to_a_new_generation_ends_when_that_generation_serves() {
        let mut n = Notices::new(false);
        n.on(Happening::Serving);
        let said = fed(
            &mut n,
            vec![
                Happening::ReloadBegan { monotonic_usec: 7 },
                Happening::ReloadStarting { generation: 2 },
                Happening::GenerationServes(1),
                Happening::GenerationServes(1),
            ],
        );
        assert_eq!(said, ["RELOADING=1\nMONOTONIC_USEC=7\nSTATUS=reloading"]);
        assert_eq!(
            n.on(Happening::GenerationServes(2)).as_deref(),
            Some("READY=1\nSTATUS=reloaded: new generation 2 ready")
        );
        // Once only.
        assert_eq!(n.on(Happening::GenerationServes(2)), None);
        // A later generation serving ends a reload to an earlier one too.
        n.on(Happening::ReloadStarting { generation: 3 });
        assert!(n.on(Happening::GenerationServes(4)).is_some());
    }

    #[test]
    fn a_stop_is_said_once_and_then_nothing_else() {
        let mut n = Notices::new(false);
        n.on(Happening::Serving);
        n.on(Happening::ReloadStarting { generation: 2 });
        let said = fed(
            &mut n,
            vec![
                Happening::StopBegan,
                Happening::StopBegan,
                Happening::ReloadBegan { monotonic_usec: 1 },
                Happening::GenerationServes(2),
            ],
        );
        assert_eq!(said, ["STOPPING=1\nSTATUS=stopping"]);
    }

    #[test]
    fn a_new_master_is_quiet_until_it_takes_over_and_the_old_one_after_it_hands_over() {
        let mut new = Notices::new(true);
        assert!(!new.sends_watchdog());
        let said = fed(
            &mut new,
            vec![
                Happening::Serving,
                Happening::ReloadBegan { monotonic_usec: 1 },
                Happening::StopBegan,
            ],
        );
        assert!(said.is_empty(), "{said:?}");
        let mut new = Notices::new(true);
        assert_eq!(
            new.on(Happening::TookOver { pid: 77 }).as_deref(),
            Some("MAINPID=77\nREADY=1\nSTATUS=serving (took over from the old master)")
        );
        assert!(new.sends_watchdog());

        let mut old = Notices::new(false);
        old.on(Happening::Serving);
        let said = fed(&mut old, vec![Happening::HandedOver, Happening::StopBegan]);
        assert!(said.is_empty(), "{said:?}");
        assert!(!old.sends_watchdog());
    }
}
