//! Events that may repeat many times a second (a worker at its connection
//! limit, accepts failing with `EMFILE`) logged at most once a second,
//! each line with how many happened since the one before.

use std::time::Duration;
use tokio::time::Instant;

/// Shortest time between two log lines about one kind of event.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Occurrences of one kind of event since its last log line.
#[derive(Debug, Default)]
pub(crate) struct Occurrences {
    /// When the last line was written.
    last_line: Option<Instant>,
    /// Occurrences not reported in a line yet.
    since: u64,
}

impl Occurrences {
    /// Notes one occurrence at `now`: returns how many to report if a line
    /// is due (the first ever, or [`LOG_INTERVAL`] after the last).
    pub(crate) fn note(&mut self, now: Instant) -> Option<u64> {
        self.since += 1;
        let due = self
            .last_line
            .is_none_or(|last| now.saturating_duration_since(last) >= LOG_INTERVAL);
        if !due {
            return None;
        }
        self.last_line = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_occurrence_is_logged_then_at_most_one_line_a_second_with_the_count() {
        let mut o = Occurrences::default();
        let start = Instant::now();
        assert_eq!(o.note(start), Some(1));
        for i in 1..100 {
            assert_eq!(o.note(start + Duration::from_millis(i * 5)), None);
        }
        // 99 more since the first line, and this one.
        assert_eq!(o.note(start + LOG_INTERVAL), Some(100));
        assert_eq!(
            o.note(start + LOG_INTERVAL + Duration::from_millis(1)),
            None
        );
        assert_eq!(o.note(start + 5 * LOG_INTERVAL), Some(2));
    }
}
