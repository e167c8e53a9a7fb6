//! Request ids: the client's `X-Request-Id` when it sent one, else a new
//! one; sent upstream and shown in the access and error logs.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::hash::BuildHasher;

/// Makes ids unique across workers and restarts: a random per-process
/// prefix and a counter.
pub(crate) struct RequestIds {
    prefix: u64,
    next: Cell<u64>,
}

impl RequestIds {
    /// A generator with a fresh random prefix.
    pub(crate) fn new() -> Self {
        // std's RandomState is seeded from the OS's random source.
        let prefix = RandomState::new().hash_one(std::process::id());
        RequestIds {
            prefix,
            next: Cell::new(0),
        }
    }

    /// Writes the next id (32 hex digits) into `out`, replacing its content.
    pub(crate) fn next_into(&self, out: &mut String) {
        let n = self.next.get();
        self.next.set(n.wrapping_add(1));
        out.clear();
        let _ = write!(out, "{:016x}{n:016x}", self.prefix);
    }
}

/// The value of the client's `X-Request-Id` field, if any.
pub(crate) fn from_client<'b>(headers: &[httparse::Header<'b>]) -> Option<&'b str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("x-request-id"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Adds `X-Request-Id: id` to a forwarded request head: among the fields
/// prefork adds (before `X-Forwarded-For`), else after the request line.
pub(crate) fn add_header(head: &mut Vec<u8>, id: &str) {
    const MARK: &[u8] = b"\r\nX-Forwarded-For: ";
    let at = head
        .windows(MARK.len())
        .rposition(|w| w == MARK)
        .or_else(|| head.windows(2).position(|w| w == b"\r\n"));
    if let Some(at) = at {
        let field = format!("\r\nX-Request-Id: {id}");
        head.splice(at..at, field.bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_hex() {
        let ids = RequestIds::new();
        let (mut a, mut b) = (String::new(), String::new());
        ids.next_into(&mut a);
        ids.next_into(&mut b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn header_joins_the_fields_prefork_adds() {
        let mut head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1\r\n\r\n".to_vec();
        add_header(&mut head, "42");
        assert_eq!(
            head,
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: 42\r\nX-Forwarded-For: 1\r\n\r\n"
        );
        let mut bare = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
        add_header(&mut bare, "7");
        assert_eq!(
            bare,
            b"GET / HTTP/1.1\r\nX-Request-Id: 7\r\nHost: a\r\n\r\n"
        );
    }

    #[test]
    fn client_value_is_kept() {
        let headers = [httparse::Header {
            name: "X-Request-ID",
            value: b" abc ",
        }];
        assert_eq!(from_client(&headers), Some("abc"));
        assert_eq!(from_client(&[]), None);
    }
}
