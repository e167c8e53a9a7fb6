//! Entry points for the fuzz targets in `worker/fuzz` (feature `fuzzing`,
//! never enabled by the proxy itself). Each one checks invariants and panics
//! when one breaks, which the fuzzer reports as a crash.

use crate::http::body::BodyCursor;
use crate::http::chunked::ChunkedDecoder;
use crate::http::proxy_protocol;
use crate::http::{heads, request, with_header_slots, Framing};
use prefork_shared::config::HttpLimits;
use std::net::{IpAddr, Ipv4Addr};

/// Parses `data` as a request head. When it is accepted, the head prefork
/// would forward must parse again with the same method, target, host and
/// body framing: a proxy and its upstream must never disagree on where a
/// message ends.
pub fn request_head(data: &[u8]) {
    let limits = HttpLimits {
        max_request_headers: 32,
        max_request_header_size: 8 * 1024,
        max_uri_length: 4 * 1024,
        ..HttpLimits::default()
    };
    with_header_slots(limits.max_request_headers, |slots| {
        let Ok(Some(head)) = request::parse(data, &limits, slots) else {
            return;
        };
        assert!(head.len <= data.len());
        let mut forwarded = Vec::new();
        let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
        heads::request_head(
            &mut forwarded,
            &head,
            client,
            crate::http::Scheme::Http,
            Some("prefork"),
            Some("42"),
        );
        let relaxed = HttpLimits {
            max_request_headers: 64,
            max_request_header_size: 64 * 1024,
            max_uri_length: 64 * 1024,
            ..HttpLimits::default()
        };
        with_header_slots(relaxed.max_request_headers, |again| {
            let reparsed = match request::parse(&forwarded, &relaxed, again) {
                Ok(Some(h)) => h,
                other => panic!(
                    "forwarded head refused: {other:?}\n{:?}",
                    String::from_utf8_lossy(&forwarded)
                ),
            };
            assert_eq!(reparsed.len, forwarded.len());
            assert_eq!(reparsed.method, head.method);
            assert_eq!(reparsed.body, head.body, "framing changed");
            assert_eq!(reparsed.upgrade, head.upgrade);
            assert_eq!(reparsed.host.unwrap_or(""), head.host.unwrap_or(""));
            let target = reparsed.target.trim_start_matches('/');
            assert_eq!(target, head.target.trim_start_matches('/'));
        });
    });
}

/// Decodes `data` (after a first byte choosing where to split it) as a
/// chunked body, whole and in two pieces: both must agree on the data, the
/// bytes consumed and where the body ends, and the validating cursor used
/// for forwarding must stop at the same byte.
pub fn chunked(data: &[u8]) {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let whole = decode(body, &[]);
    let at = usize::from(split) % (body.len() + 1);
    let pieces = decode(body, &[at]);
    assert_eq!(whole, pieces, "split at {at}");

    let mut cursor = BodyCursor::new(Framing::Chunked);
    let taken = cursor.take(body);
    match (&whole, taken) {
        (Ok((_, used, done)), Ok(n)) => {
            assert_eq!(n, *used);
            assert_eq!(cursor.is_done(), *done);
        }
        (Err(a), Err(b)) => assert_eq!(*a, b),
        (a, b) => panic!("decoder {a:?} and cursor {b:?} disagree"),
    }
}

/// Parses `data` as a PROXY protocol header, and every prefix of it as the
/// bytes arrived so far: a prefix never decides differently from the whole
/// (a shorter one may only ask for more), a complete header does not depend
/// on the bytes after it, and a buffer of `MAX_LEN` bytes always decides (a
/// reader waiting for more would otherwise wait forever).
pub fn proxy_header(data: &[u8]) {
    let whole = proxy_protocol::parse(data);
    match whole {
        Ok(Some(header)) => {
            assert!(header.len <= data.len() && header.len <= proxy_protocol::MAX_LEN);
            assert_eq!(proxy_protocol::parse(&data[..header.len]), whole);
            for cut in 0..header.len {
                assert_eq!(
                    proxy_protocol::parse(&data[..cut]),
                    Ok(None),
                    "cut at {cut}"
                );
            }
        }
        Ok(None) => {
            assert!(
                data.len() < proxy_protocol::MAX_LEN,
                "a full buffer undecided"
            );
            for cut in 0..data.len() {
                assert_eq!(
                    proxy_protocol::parse(&data[..cut]),
                    Ok(None),
                    "cut at {cut}"
                );
            }
        }
        Err(_) => {
            for cut in 0..data.len() {
                assert!(
                    !matches!(proxy_protocol::parse(&data[..cut]), Ok(Some(_))),
                    "a prefix accepted at {cut}"
                );
            }
        }
    }
}

type Decoded = Result<(Vec<u8>, usize, bool), crate::http::chunked::ChunkError>;

/// Decodes `input` fed in pieces split at `cuts`: the data, the bytes
/// consumed, and whether the body ended.
fn decode(input: &[u8], cuts: &[usize]) -> Decoded {
    let mut decoder = ChunkedDecoder::default();
    let mut data = Vec::new();
    let mut used = 0;
    let mut start = 0;
    for end in cuts.iter().copied().chain([input.len()]) {
        let piece = &input[start..end];
        let mut at = 0;
        while at < piece.len() && !decoder.is_done() {
            let (n, range) = decoder.decode(&piece[at..])?;
            if let Some(r) = range {
                assert!(r.end <= n, "data beyond the consumed bytes");
                data.extend_from_slice(&piece[at + r.start..at + r.end]);
            }
            if n == 0 {
                break;
            }
            at += n;
        }
        used += at;
        if decoder.is_done() {
            break;
        }
        start = end;
    }
    Ok((data, used, decoder.is_done()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds of both targets hold their invariants (so the targets are
    /// exercised by `cargo test` even where the fuzzer cannot run).
    #[test]
    fn seeds_hold_the_invariants() {
        for seed in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"POST http://h/x?y HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /ws HTTP/1.1\nHost: h\nConnection: upgrade, x\nUpgrade: websocket\nX: 1\n\n",
            b"PUT /p HTTP/1.0\r\nContent-Length: 5, 5\r\nVia: 1.1 a\r\nExpect: 100-continue\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: [::1]:80\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n",
            b"GET http://h HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            request_head(seed);
        }
        for seed in [
            &b"\x07a;x=\"y\"\r\n0123456789\r\n0\r\nT: v\r\n\r\nrest"[..],
            b"\x00ffffffffffffffff\r\n",
            b"\x03 5\r\n",
            b"\xff0\r\n\r\n",
            b"",
        ] {
            chunked(seed);
        }
    }

    /// The PROXY header target's seed files hold its invariants.
    #[test]
    fn proxy_header_seeds_hold_the_invariants() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/proxy_header");
        let mut seeds = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let seed = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(matches!(proxy_protocol::parse(&seed), Ok(Some(_))));
            proxy_header(&seed);
            seeds += 1;
        }
        assert!(seeds >= 5, "the seeds are missing");
        for other in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 1.2.3",
            b"\r\n\r\n\0\r\nQUIT\n\x21",
        ] {
            proxy_header(other);
        }
    }
}
