//! This worker's place on the master's load board (see
//! `prefork_shared::load_board`): it publishes how many client connections
//! it has open, and reads the others' counts to decide whether to leave the
//! next connection on a shared listening socket to a less loaded worker.

use prefork_shared::load_board::{LoadBoard, NOT_ACCEPTING};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long a worker that holds clearly more connections than another holds
/// back from accepting, leaving what is queued to the others (which the
/// kernel wakes as well); tokio's timer makes it 1-2 ms. A connection nobody
/// else took by then it accepts anyway, so a stalled or dead worker's low
/// count costs at most this delay per connection (and see [`HoldBack`]).
pub(crate) const ACCEPT_DEFER: Duration = Duration::from_millis(1);

/// Pauses in a row that no other worker used (a connection still queued
/// afterwards, and the least loaded worker's count unchanged) before a
/// worker stops holding back for a while.
const UNUSED_PAUSES: u32 = 5;

/// How long a worker leaves out a worker that seems stalled when it looks
/// for the least loaded one.
const STALL_SUSPEND: Duration = Duration::from_millis(50);

/// Whether holding back still helps. A pause nobody used suggests that the
/// least loaded worker is stalled: stopped, or stuck until the master
/// replaces it (`worker_timeout`). After a few in a row, the worker leaves
/// that one out for a while, so a stalled worker cannot throttle the others
/// to one connection per pause, while the live ones still share their load.
#[derive(Default)]
pub(crate) struct HoldBack {
    unused: u32,
    /// The cell of the worker that seems stalled, and until when it is
    /// left out.
    stalled: Option<(usize, Instant)>,
}

impl HoldBack {
    /// The cell to leave out when looking for the least loaded worker now.
    pub(crate) fn ignored(&mut self) -> Option<usize> {
        // Asked at every accept: no clock read while nobody is left out.
        self.stalled?;
        self.ignored_at(Instant::now())
    }

    fn ignored_at(&mut self, now: Instant) -> Option<usize> {
        match self.stalled {
            Some((cell, until)) if now < until => Some(cell),
            _ => {
                self.stalled = None;
                None
            }
        }
    }

    /// Notes how a pause for the worker in `cell` ended: `used` when the
    /// queue was empty afterwards (another worker took what waited, or
    /// nothing came) or that worker's count changed (it accepts, while
    /// connections keep coming).
    pub(crate) fn paused(&mut self, cell: usize, used: bool) {
        self.paused_at(cell, used, Instant::now());
    }

    fn paused_at(&mut self, cell: usize, used: bool, now: Instant) {
        if used {
            self.unused = 0;
            return;
        }
        self.unused += 1;
        if self.unused >= UNUSED_PAUSES {
            self.unused = 0;
            self.stalled = Some((cell, now + STALL_SUSPEND));
        }
    }
}

/// The board and this worker's cell on it.
pub(crate) struct LoadShare {
    board: LoadBoard,
    cell: usize,
    /// Set once the worker stops accepting: from then on its cell says so
    /// and its count no longer matters to the others.
    retired: Cell<bool>,
}

impl LoadShare {
    /// This worker's `cell` on `board`.
    pub(crate) fn new(board: LoadBoard, cell: usize) -> Self {
        LoadShare {
            board,
            cell,
            retired: Cell::new(false),
        }
    }

    /// Publishes how many client connections are open (while accepting).
    pub(crate) fn publish(&self, open: usize) {
        if !self.retired.get() {
            // Never NOT_ACCEPTING by accident, however many are open.
            let open = u32::try_from(open)
                .unwrap_or(u32::MAX)
                .min(NOT_ACCEPTING - 1);
            self.board.set(self.cell, open);
        }
    }

    /// Marks the worker as no longer accepting.
    pub(crate) fn retire(&self) {
        self.retired.set(true);
        self.board.set(self.cell, NOT_ACCEPTING);
    }

    /// The cell and count of the least loaded other accepting worker,
    /// leaving out the one in `ignored` (see [`HoldBack`]).
    pub(crate) fn least_loaded(&self, ignored: Option<usize>) -> Option<(usize, u32)> {
        least(
            (0..self.board.in_use())
                .filter(|&cell| cell != self.cell && Some(cell) != ignored)
                .map(|cell| (cell, self.board.get(cell))),
        )
    }

    /// The count in `cell` now.
    pub(crate) fn load_of(&self, cell: usize) -> u32 {
        self.board.get(cell)
    }

    /// Whether a worker with `mine` open connections should leave new ones
    /// to another accepting worker (not the one in `ignored`) for now.
    pub(crate) fn busier_than_others(&self, mine: usize, ignored: Option<usize>) -> bool {
        self.least_loaded(ignored)
            .is_some_and(|(_, least)| busier(u32::try_from(mine).unwrap_or(u32::MAX), least))
    }
}

/// The `(cell, count)` with the lowest count among those that accept.
fn least(cells: impl Iterator<Item = (usize, u32)>) -> Option<(usize, u32)> {
    cells
        .filter(|&(_, n)| n != NOT_ACCEPTING)
        .min_by_key(|&(_, n)| n)
}

/// Whether `mine` is clearly more than `least`. The margin (4, plus 1/16 of
/// the least) keeps workers from deferring over the small differences that
/// come and go with every connection, while a burst still ends up spread
/// evenly.
fn busier(mine: u32, least: u32) -> bool {
    mine > least.saturating_add(4 + least / 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defers_only_when_clearly_busier_than_an_accepting_worker() {
        assert_eq!(least(std::iter::empty()), None);
        assert_eq!(
            least([(0, NOT_ACCEPTING), (1, NOT_ACCEPTING)].into_iter()),
            None
        );
        assert_eq!(
            least([(0, NOT_ACCEPTING), (1, 3), (2, 9)].into_iter()),
            Some((1, 3))
        );
        assert!(!busier(4, 0));
        assert!(busier(5, 0));
        // The margin grows with the load: 1,000 against 1,060 is close enough.
        assert!(!busier(1_066, 1_000));
        assert!(busier(1_067, 1_000));
        assert!(!busier(u32::MAX - 1, u32::MAX - 2));
    }

    #[test]
    fn leaves_a_worker_out_for_a_while_after_pauses_nobody_used() {
        let mut hold = HoldBack::default();
        let t0 = Instant::now();
        assert_eq!(hold.ignored_at(t0), None);
        // A used pause resets the count.
        for _ in 0..UNUSED_PAUSES - 1 {
            hold.paused_at(3, false, t0);
        }
        hold.paused_at(3, true, t0);
        for _ in 0..UNUSED_PAUSES - 1 {
            hold.paused_at(3, false, t0);
            assert_eq!(hold.ignored_at(t0), None);
        }
        hold.paused_at(3, false, t0);
        assert_eq!(hold.ignored_at(t0), Some(3));
        assert_eq!(
            hold.ignored_at(t0 + STALL_SUSPEND - Duration::from_millis(1)),
            Some(3)
        );
        assert_eq!(hold.ignored_at(t0 + STALL_SUSPEND), None);
        // And starts counting afresh.
        hold.paused_at(3, false, t0 + STALL_SUSPEND);
        assert_eq!(hold.ignored_at(t0 + STALL_SUSPEND), None);
    }

    /// Whether a worker holding `mine` connections holds back now, as the
    /// accept loop decides it.
    fn holds_back(share: &LoadShare, hold: &mut HoldBack, mine: usize, now: Instant) -> bool {
        share.busier_than_others(mine, hold.ignored_at(now))
    }

    #[test]
    fn a_stalled_worker_does_not_keep_the_others_from_sharing() {
        let master = LoadBoard::create().unwrap();
        let share = |cell| {
            let file = std::fs::File::from(master.fd().try_clone_to_owned().unwrap());
            LoadShare::new(LoadBoard::open(file).unwrap(), cell)
        };
        let (a, b, c) = (share(0), share(1), share(2));
        master.set_in_use(3);
        a.publish(20);
        b.publish(5);
        c.publish(0);
        let mut hold = HoldBack::default();
        let t0 = Instant::now();
        // c stalls: every pause a makes for it goes unused.
        for _ in 0..UNUSED_PAUSES {
            assert!(holds_back(&a, &mut hold, 20, t0));
            assert_eq!(a.least_loaded(hold.ignored_at(t0)), Some((2, 0)));
            hold.paused_at(2, false, t0);
        }
        assert!(
            holds_back(&a, &mut hold, 20, t0),
            "a no longer leaves connections to b, which holds far fewer"
        );
        b.publish(18);
        assert!(
            !holds_back(&a, &mut hold, 20, t0),
            "only the stalled c holds fewer"
        );
        // After a while c counts again.
        assert!(holds_back(&a, &mut hold, 20, t0 + STALL_SUSPEND));
    }

    #[test]
    fn publishes_its_count_until_retired_and_reads_the_others() {
        let master = LoadBoard::create().unwrap();
        let share = |cell| {
            let file = std::fs::File::from(master.fd().try_clone_to_owned().unwrap());
            LoadShare::new(LoadBoard::open(file).unwrap(), cell)
        };
        let (a, b) = (share(0), share(1));
        master.set_in_use(2);
        // Until b accepts, a has nobody to leave connections to.
        a.publish(10);
        assert!(!a.busier_than_others(10, None));
        b.publish(0);
        assert!(a.busier_than_others(10, None));
        assert!(!a.busier_than_others(10, Some(1)));
        b.publish(2);
        assert_eq!(a.least_loaded(None), Some((1, 2)));
        assert_eq!(a.load_of(1), 2);
        assert!(!b.busier_than_others(0, None));
        b.retire();
        b.publish(0);
        assert_eq!(master.get(1), NOT_ACCEPTING);
        assert!(!a.busier_than_others(10, None));
        assert_eq!(master.get(0), 10);
    }
}
