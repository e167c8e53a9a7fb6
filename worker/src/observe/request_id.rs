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

/// Longest client id kept (UUIDs, trace ids and base64 fit easily).
pub(crate) const MAX_CLIENT_ID: usize = 128;

/// The value of the client's `X-Request-Id` field, if it is a usable id: at
/// most [`MAX_CLIENT_ID`] bytes of ASCII letters, digits and `-_.:+/=@~`.
/// Anything else (spaces, commas, quotes, control or non-ASCII bytes, a huge
/// value) could forge fields of the error log or bloat every log line: such
/// an id is replaced by a new one.
pub(crate) fn from_client<'b>(headers: &[httparse::Header<'b>]) -> Option<&'b str> {
    let value = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("x-request-id"))?
        .value
        .trim_ascii();
    let valid = !value.is_empty()
        && value.len() <= MAX_CLIENT_ID
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=@~".contains(b));
    // Only ASCII passed: the conversion cannot fail.
    valid.then(|| std::str::from_utf8(value).ok()).flatten()
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

    #[test]
    fn unusable_client_values_are_refused() {
        fn id(value: &[u8]) -> Option<&str> {
            from_client(&[httparse::Header {
                name: "x-request-id",
                value,
            }])
        }
        let uuid = b"123e4567-e89b-12d3-a456-426614174000";
        assert_eq!(id(uuid), std::str::from_utf8(uuid).ok());
        assert_eq!(id(b"a+b/c=_.:@~"), Some("a+b/c=_.:@~"));
        let longest = [b'a'; MAX_CLIENT_ID];
        assert!(id(&longest).is_some());
        for bad in [
            &b"x, role: master, pid: 1"[..],
            b"a\"b",
            b"a\\b",
            b"a\tb",
            b"caf\xc3\xa9",
            b"\xff\xfe",
            b"\x1b[31m",
            b"   ",
            &[b'a'; MAX_CLIENT_ID + 1],
        ] {
            assert_eq!(id(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
