//! A generation whose slots the supervisor keeps filled.

use super::{Generation, Slot, Timeouts, BACKOFF_BASE, BACKOFF_CAP};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The current generation, or an older one serving while it starts: the
/// limits of its configuration, the slots waiting for a (re)start and the
/// quick failures of each slot, which set its backoff.
#[derive(Debug)]
pub(super) struct Cohort {
    pub(super) generation: Generation,
    /// The limits of its configuration.
    pub(super) timeouts: Timeouts,
    /// Slots waiting to be (re)started, and when.
    pub(super) pending: BTreeMap<Slot, Instant>,
    /// Consecutive quick failures per slot.
    pub(super) failures: BTreeMap<Slot, u32>,
}

impl Cohort {
    /// A generation with nothing waiting.
    pub(super) fn new(generation: Generation, timeouts: Timeouts) -> Self {
        Cohort {
            generation,
            timeouts,
            pending: BTreeMap::new(),
            failures: BTreeMap::new(),
        }
    }

    /// Queues a restart of `slot`, backing off when it keeps failing
    /// quickly; returns the delay.
    pub(super) fn schedule_restart(&mut self, slot: Slot, quick: bool, now: Instant) -> Duration {
        let failures = self.failures.entry(slot).or_insert(0);
        *failures = if quick { *failures + 1 } else { 1 };
        let delay = backoff(*failures);
        self.pending.insert(slot, now + delay);
        delay
    }

    /// Consecutive quick failures of `slot`.
    pub(super) fn failures(&self, slot: Slot) -> u32 {
        self.failures.get(&slot).copied().unwrap_or(0)
    }

    /// Takes the slots whose (re)start is due at `now`.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<Slot> {
        let due: Vec<Slot> = self
            .pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(s, _)| *s)
            .collect();
        for slot in &due {
            self.pending.remove(slot);
        }
        due
    }
}

/// Restart delay after `failures` consecutive quick failures of one slot:
/// the first restart is immediate, then 200 ms doubling up to 30 s.
pub(super) fn backoff(failures: u32) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let factor = 1u32 << (failures - 2).min(16);
    BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_CAP)
}
