//! HTTP/1.1 message syntax: request and response heads, body framing, the
//! chunked coding, and the heads prefork writes (forwarded or its own).

pub(crate) mod body;
pub(crate) mod chunked;
pub(crate) mod heads;
pub(crate) mod proxy_protocol;
pub(crate) mod proxy_protocol_encode;
pub(crate) mod request;
pub(crate) mod response;

use std::cell::RefCell;
use std::io::Write;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Header slots kept on the stack for one parse; larger limits use the heap.
const STACK_HEADER_SLOTS: usize = 128;

/// The protocol version of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// HTTP/1.0: keep-alive only when asked for, no chunked coding.
    Http10,
    /// HTTP/1.1.
    Http11,
    /// HTTP/2: a stream of a client's HTTP/2 connection.
    Http2,
}

impl Version {
    fn from_minor(minor: u8) -> Self {
        if minor == 0 {
            Version::Http10
        } else {
            Version::Http11
        }
    }
}

/// The scheme a client speaks to prefork, as `X-Forwarded-Proto` tells
/// the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS: no listener terminates TLS yet; the proxy core's
    /// tests serve a client as if one did.
    #[cfg_attr(not(test), allow(dead_code))]
    Https,
}

/// How the end of a message body is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body at all (no framing header either).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
    /// Everything until the connection closes (responses only).
    Close,
}

/// Runs `f` with `max` uninitialised header slots, on the stack when few.
pub(crate) fn with_header_slots<'b, R>(
    max: usize,
    f: impl FnOnce(&mut [std::mem::MaybeUninit<httparse::Header<'b>>]) -> R,
) -> R {
    if max <= STACK_HEADER_SLOTS {
        let mut slots = [const { std::mem::MaybeUninit::uninit() }; STACK_HEADER_SLOTS];
        f(&mut slots[..max])
    } else {
        let mut slots: Vec<httparse::Header<'b>> = Vec::with_capacity(max);
        f(&mut slots.spare_capacity_mut()[..max])
    }
}

/// The comma-separated, trimmed, non-empty elements of a list header value.
pub(crate) fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|item| item.trim_ascii())
        .filter(|item| !item.is_empty())
}

/// Whether an `Upgrade` protocol token is forwarded: every one but `h2c`
/// (cleartext HTTP/2), whose upgrade would hand the client a raw HTTP/2
/// connection to the upstream, past prefork's routing ("h2c smuggling"; as
/// Envoy does).
pub(crate) fn is_forwarded_upgrade(token: &[u8]) -> bool {
    !token.eq_ignore_ascii_case(b"h2c")
}

/// Why a `Content-Length` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadContentLength;

/// Merges one `Content-Length` field value into `current`.
///
/// A value may be a list of identical lengths (`5, 5`); anything that is not
/// all digits, overflows, or differs from an earlier value is refused,
/// because a proxy that guesses here enables request smuggling.
pub(crate) fn merge_content_length(
    current: Option<u64>,
    value: &[u8],
) -> Result<Option<u64>, BadContentLength> {
    let mut merged = current;
    let mut any = false;
    for item in value.split(|&b| b == b',') {
        let item = item.trim_ascii();
        if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
            return Err(BadContentLength);
        }
        let n = item
            .iter()
            .try_fold(0u64, |n, &d| {
                n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            })
            .ok_or(BadContentLength)?;
        if merged.is_some_and(|m| m != n) {
            return Err(BadContentLength);
        }
        merged = Some(n);
        any = true;
    }
    if any {
        Ok(merged)
    } else {
        Err(BadContentLength)
    }
}

/// The standard reason phrase of a status code (empty when unknown, which
/// the grammar allows).
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Content Too Large",
        421 => "Misdirected Request",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

thread_local! {
    /// The formatted `Date` value, recomputed at most once per second.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Appends a `Date: ...\r\n` header line for the current second.
pub(crate) fn write_date_header(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(cached_secs, text)| {
        if *cached_secs != secs {
            *cached_secs = secs;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

/// Appends `Name: <decimal n>\r\n`.
pub(crate) fn write_number_header(out: &mut Vec<u8>, name: &[u8], n: u64) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal. `itoa` rather than `write!`: the formatting
/// machinery cost ~10 % of a proxied request's instructions.
pub(crate) fn push_decimal(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends `ip` as text (dotted quad for IPv4, without `write!`).
pub(crate) fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_decimal(out, octet);
            }
        }
        // Writing into a Vec cannot fail.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_addresses_as_text() {
        let mut out = Vec::new();
        push_decimal(&mut out, 0u64);
        out.push(b' ');
        push_decimal(&mut out, u64::MAX);
        out.push(b' ');
        push_ip(&mut out, "10.0.255.1".parse().unwrap());
        out.push(b' ');
        push_ip(&mut out, "::ffff:1.2.3.4".parse().unwrap());
        out.push(b' ');
        push_ip(&mut out, "2001:db8::1".parse().unwrap());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0 18446744073709551615 10.0.255.1 ::ffff:1.2.3.4 2001:db8::1"
        );
    }

    #[test]
    fn content_length_merging() {
        assert_eq!(merge_content_length(None, b"42"), Ok(Some(42)));
        assert_eq!(merge_content_length(None, b" 7 , 7"), Ok(Some(7)));
        assert_eq!(merge_content_length(Some(7), b"7"), Ok(Some(7)));
        assert_eq!(merge_content_length(Some(7), b"8"), Err(BadContentLength));
        assert_eq!(merge_content_length(None, b"5, 6"), Err(BadContentLength));
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b"0x10",
            b"1 2",
            b"abc",
            b"99999999999999999999",
            b",",
        ] {
            assert_eq!(
                merge_content_length(None, bad),
                Err(BadContentLength),
                "{bad:?}"
            );
        }
        assert_eq!(
            merge_content_length(None, b"18446744073709551615"),
            Err(BadContentLength)
        );
        assert_eq!(
            merge_content_length(None, b"9999999999999999999"),
            Ok(Some(9_999_999_999_999_999_999))
        );
    }

    #[test]
    fn list_items_trim_and_skip_empty() {
        let items: Vec<&[u8]> = list_items(b" close ,, Keep-Alive,x-foo ").collect();
        assert_eq!(items, vec![&b"close"[..], b"Keep-Alive", b"x-foo"]);
    }

    #[test]
    fn date_header_shape() {
        let mut out = Vec::new();
        write_date_header(&mut out);
        assert!(out.starts_with(b"Date: ") && out.ends_with(b" GMT\r\n"));
        assert_eq!(out.len(), "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n".len());
    }
}
