//! `tls_session_timeout`: how long a TLS client may resume its session,
//! which is also how often the session-ticket keys rotate.

use super::Validator;
use crate::config::locate::KeyPath;
use std::time::Duration;

/// Twelve hours: a day's returning clients resume, and a key seals tickets
/// for half a day at most.
const DEFAULT_TLS_SESSION_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
/// TLS 1.3 caps a ticket's lifetime at 7 days (RFC 8446, 4.6.1).
const MAX_TLS_SESSION_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

impl Validator<'_> {
    pub(super) fn tls_session_timeout(&mut self, path: KeyPath, raw: Option<&str>) -> Duration {
        let timeout = self.duration(path.clone(), raw, DEFAULT_TLS_SESSION_TIMEOUT);
        if timeout > MAX_TLS_SESSION_TIMEOUT {
            self.problem(
                &path,
                "must be at most 7 days: TLS 1.3 tickets live no longer",
            );
            return DEFAULT_TLS_SESSION_TIMEOUT;
        }
        timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{parse_err, parse_ok};

    #[test]
    fn twelve_hours_unless_set() {
        let c = parse_ok("[[listen]]\naddr = \"127.0.0.1:1\"\n");
        assert_eq!(c.tls_session_timeout, DEFAULT_TLS_SESSION_TIMEOUT);
        let c = parse_ok("tls_session_timeout = \"5m\"\n[[listen]]\naddr = \"127.0.0.1:1\"\n");
        assert_eq!(c.tls_session_timeout, Duration::from_secs(300));
    }

    #[test]
    fn longer_than_a_week_or_zero_is_refused_at_its_line() {
        let e = parse_err("workers = 1\ntls_session_timeout = \"8days\"\n");
        assert!(
            e.contains("t.toml:2: tls_session_timeout: must be at most 7 days"),
            "{e}"
        );
        let e = parse_err("tls_session_timeout = \"0s\"\n");
        assert!(
            e.contains("t.toml:1: tls_session_timeout: must be longer than zero"),
            "{e}"
        );
    }
}
