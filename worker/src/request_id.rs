//! Request ids: the client's `X-Request-Id` when it sent one, else a new
//! one; sent upstream and shown in the access and error logs.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// Makes ids unique across workers and restarts: a random per-process
/// prefix and a counter.
pub(crate) struct RequestIds {
    /// The prefix as 16 hex digits (formatted once).
    prefix: [u8; 16],
    next: Cell<u64>,
}

impl RequestIds {
    /// A generator with a fresh random prefix.
    pub(crate) fn new() -> Self {
        // std's RandomState is seeded from the OS's random source.
        let prefix = RandomState::new().hash_one(std::process::id());
        RequestIds {
            prefix: hex(prefix),
            next: Cell::new(0),
        }
    }

    /// Writes the next id (32 hex digits) into `out`, replacing its content.
    pub(crate) fn next_into(&self, out: &mut String) {
        let n = self.next.get();
        self.next.set(n.wrapping_add(1));
        out.clear();
        let mut id = [0u8; 32];
        id[..16].copy_from_slice(&self.prefix);
        id[16..].copy_from_slice(&hex(n));
        // Hex digits are ASCII: the conversion cannot fail.
        out.push_str(std::str::from_utf8(&id).unwrap_or_default());
    }
}

/// `n` as 16 lowercase hex digits (faster than `format!` on the hot path).
fn hex(n: u64) -> [u8; 16] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, d) in out.iter_mut().enumerate() {
        *d = DIGITS[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
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
    fn hex_is_zero_padded() {
        assert_eq!(&hex(0x2a), b"000000000000002a");
        assert_eq!(&hex(u64::MAX), b"ffffffffffffffff");
        assert_eq!(&hex(0x0123_4567_89ab_cdef), b"0123456789abcdef");
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
