//! The health of one upstream server as one worker sees it: passive (real
//! requests failing, nginx's `max_fails`/`fail_timeout`) and active (health
//! check results). Time is passed in, so the state machine is tested
//! without waiting.

use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// What a change of state was, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// The server is no longer used.
    Down,
    /// The server is used again.
    Up,
}

/// One server's health.
#[derive(Debug)]
pub(crate) struct Health {
    max_fails: u32,
    fail_timeout: Duration,
    /// When the recent failures happened (those less than `fail_timeout`
    /// ago, at most `max_fails`), oldest first.
    failures: VecDeque<Instant>,
    /// Set when `max_fails` was reached: skipped until then. Kept once past
    /// so that the first request after it acts as a probe.
    down_until: Option<Instant>,
    /// A request was picked as the probe after a pause (which `down_until`
    /// then extends, so that the others skip the server meanwhile).
    probing: bool,
    /// Whether active checks consider the server down.
    checked_down: bool,
    /// Consecutive check results that disagree with `checked_down`.
    streak: u32,
}

impl Health {
    /// A healthy server with these passive-health settings.
    pub(crate) fn new(max_fails: u32, fail_timeout: Duration) -> Self {
        Health {
            max_fails,
            fail_timeout,
            failures: VecDeque::new(),
            down_until: None,
            probing: false,
            checked_down: false,
            streak: 0,
        }
    }

    /// Whether requests may go to the server at `now`.
    pub(crate) fn usable(&self, now: Instant) -> bool {
        self.usable_with(|| now)
    }

    /// As [`Health::usable`], reading the clock only for a paused server.
    pub(crate) fn usable_with(&self, now: impl FnOnce() -> Instant) -> bool {
        !self.checked_down && self.down_until.is_none_or(|t| now() >= t)
    }

    /// Records a failed request; returns `Down` when it takes the server
    /// out of rotation.
    pub(crate) fn failure(&mut self, now: Instant) -> Option<Change> {
        if self.max_fails == 0 {
            return None;
        }
        if self.down_until.is_some() {
            // A probe after the pause failed (or a request that started
            // before the pause): pause again at once.
            self.down_until = Some(now + self.fail_timeout);
            self.probing = false;
            return None;
        }
        // A sliding window: `max_fails` failures less than `fail_timeout`
        // apart pause the server, wherever they fall.
        while self
            .failures
            .front()
            .is_some_and(|&t| now.duration_since(t) >= self.fail_timeout)
        {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        if self.failures.len() < self.max_fails as usize {
            return None;
        }
        self.failures.clear();
        self.down_until = Some(now + self.fail_timeout);
        Some(Change::Down)
    }

    /// Records that a request was sent to the server at `now`: the first
    /// after a pause is its probe, and the server is skipped while it runs
    /// (for at most `fail_timeout`), as in nginx.
    pub(crate) fn picked(&mut self, now: impl FnOnce() -> Instant) {
        if let Some(until) = self.down_until {
            let now = now();
            if now >= until {
                self.down_until = Some(now + self.fail_timeout);
                self.probing = true;
            }
        }
    }

    /// Records a request that got a response head, `now` giving the time
    /// (read only during a pause); returns `Up` when it ends a pause. A
    /// response to a request sent before the pause (one that was not the
    /// probe) does not end it early.
    pub(crate) fn success(&mut self, now: impl FnOnce() -> Instant) -> Option<Change> {
        if let Some(until) = self.down_until {
            if !self.probing && now() < until {
                return None;
            }
        }
        self.failures.clear();
        self.probing = false;
        self.down_until.take().map(|_| Change::Up)
    }

    /// Records a health check result; `passes` consecutive passes bring a
    /// down server back, `fails` consecutive failures take it down.
    pub(crate) fn checked(&mut self, pass: bool, passes: u32, fails: u32) -> Option<Change> {
        if pass != self.checked_down {
            // The result agrees with the current state.
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if pass { passes } else { fails };
        if self.streak < needed.max(1) {
            return None;
        }
        self.streak = 0;
        self.checked_down = !pass;
        Some(if pass { Change::Up } else { Change::Down })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn max_fails_within_fail_timeout_pauses_the_server() {
        let t0 = Instant::now();
        let mut h = Health::new(3, 10 * S);
        assert_eq!(h.failure(t0), None);
        assert_eq!(h.failure(t0 + S), None);
        assert!(h.usable(t0 + S));
        assert_eq!(h.failure(t0 + 2 * S), Some(Change::Down));
        assert!(!h.usable(t0 + 2 * S));
        assert!(!h.usable(t0 + 11 * S));
        // After fail_timeout the server is tried again.
        assert!(h.usable(t0 + 12 * S));
        // One failed probe pauses it again, without max_fails more.
        assert_eq!(h.failure(t0 + 12 * S), None);
        assert!(!h.usable(t0 + 13 * S));
        assert!(h.usable(t0 + 22 * S));
        // A success ends the pause for good.
        assert_eq!(h.success(|| t0 + 22 * S), Some(Change::Up));
        assert!(h.usable(t0 + 22 * S));
        assert_eq!(h.failure(t0 + 23 * S), None);
        assert!(h.usable(t0 + 23 * S));
    }

    #[test]
    fn failures_spread_wider_than_fail_timeout_do_not_add_up() {
        let t0 = Instant::now();
        let mut h = Health::new(2, 10 * S);
        assert_eq!(h.failure(t0), None);
        // The window of the first failure has closed: this one starts anew.
        assert_eq!(h.failure(t0 + 10 * S), None);
        assert!(h.usable(t0 + 10 * S));
        assert_eq!(h.failure(t0 + 15 * S), Some(Change::Down));
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut h = Health::new(2, 10 * S);
        assert_eq!(h.failure(t0), None);
        assert_eq!(h.success(|| t0), None);
        assert_eq!(h.failure(t0 + S), None);
        assert!(h.usable(t0 + S));
    }

    #[test]
    fn max_fails_zero_never_pauses() {
        let t0 = Instant::now();
        let mut h = Health::new(0, 10 * S);
        for i in 0..100 {
            assert_eq!(h.failure(t0 + i * S / 10), None);
        }
        assert!(h.usable(t0 + 10 * S));
    }

    #[test]
    fn checks_flip_the_state_after_their_streaks() {
        let now = Instant::now();
        let mut h = Health::new(1, 10 * S);
        // fails = 2: one failed check is not enough, a pass resets it.
        assert_eq!(h.checked(false, 3, 2), None);
        assert_eq!(h.checked(true, 3, 2), None);
        assert_eq!(h.checked(false, 3, 2), None);
        assert!(h.usable(now));
        assert_eq!(h.checked(false, 3, 2), Some(Change::Down));
        assert!(!h.usable(now));
        // passes = 3.
        assert_eq!(h.checked(true, 3, 2), None);
        assert_eq!(h.checked(true, 3, 2), None);
        assert!(!h.usable(now));
        assert_eq!(h.checked(true, 3, 2), Some(Change::Up));
        assert!(h.usable(now));
    }

    #[test]
    fn a_server_down_by_checks_stays_down_despite_passive_successes() {
        let now = Instant::now();
        let mut h = Health::new(1, 10 * S);
        assert_eq!(h.checked(false, 1, 1), Some(Change::Down));
        assert_eq!(h.success(|| now), None);
        assert!(!h.usable(now));
    }

    #[test]
    fn a_response_to_a_request_sent_before_the_pause_does_not_end_it() {
        let t0 = Instant::now();
        let mut h = Health::new(1, 10 * S);
        // Two requests in flight; one fails and pauses the server, then the
        // other (sent before the pause) gets its response head.
        assert_eq!(h.failure(t0), Some(Change::Down));
        assert_eq!(h.success(|| t0 + S), None);
        assert!(!h.usable(t0 + 5 * S), "skipped for the whole fail_timeout");
        assert!(h.usable(t0 + 10 * S));
    }

    #[test]
    fn only_one_request_probes_a_server_after_its_pause() {
        let t0 = Instant::now();
        let mut h = Health::new(1, 10 * S);
        assert_eq!(h.failure(t0), Some(Change::Down));
        assert!(h.usable(t0 + 10 * S));
        h.picked(|| t0 + 10 * S);
        // While the probe is in flight, other requests skip the server.
        assert!(!h.usable(t0 + 11 * S));
        // The probe's response brings it back.
        assert_eq!(h.success(|| t0 + 12 * S), Some(Change::Up));
        assert!(h.usable(t0 + 12 * S));
    }

    #[test]
    fn max_fails_within_any_fail_timeout_span_pause_the_server() {
        let t0 = Instant::now();
        let mut h = Health::new(3, 10 * S);
        assert_eq!(h.failure(t0), None);
        assert_eq!(h.failure(t0 + 8 * S), None);
        assert_eq!(h.failure(t0 + 12 * S), None);
        // 8 s, 12 s and 14 s: three failures within 10 s.
        assert_eq!(h.failure(t0 + 14 * S), Some(Change::Down));
    }
}
