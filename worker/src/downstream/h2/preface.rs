//! h2c with prior knowledge: on a plain listener with `http2 = true`, a
//! client that starts with HTTP/2's connection preface speaks HTTP/2; any
//! other is served HTTP/1.1. The preface is peeked, never taken: `h2`
//! reads it, or the HTTP/1.1 session reads the request it turned out to be.

use super::meter::PREFACE;
use crate::io::client_socket::ClientSocket;
use std::io;

/// Whether the client's first bytes are the HTTP/2 preface. It waits only
/// while they could still be: a request line differs within its first
/// bytes (no HTTP/1.1 method starts with `PRI `).
pub(crate) async fn sent(socket: &ClientSocket) -> io::Result<bool> {
    let mut buf = [0u8; PREFACE.len()];
    let mut seen = 0;
    loop {
        let n = socket.peek_beyond(&mut buf, seen).await?;
        match verdict(&buf[..n]) {
            Some(is_h2) => return Ok(is_h2),
            None if n == 0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            None => seen = n,
        }
    }
}

/// What the first bytes say: HTTP/2, HTTP/1.1, or `None` while they are
/// a strict beginning of the preface.
fn verdict(first: &[u8]) -> Option<bool> {
    if !PREFACE.starts_with(first) {
        return Some(false);
    }
    (first.len() == PREFACE.len()).then_some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_is_told_from_a_request_as_soon_as_they_differ() {
        assert_eq!(verdict(PREFACE), Some(true));
        assert_eq!(verdict(&PREFACE[..10]), None);
        assert_eq!(verdict(b""), None);
        assert_eq!(verdict(b"GET / HTTP/1.1\r\n"), Some(false));
        assert_eq!(verdict(b"P"), None);
        assert_eq!(verdict(b"POST"), Some(false));
        // What an HTTP/1.1 parser would answer 505: not HTTP/2 either.
        assert_eq!(verdict(b"PRI * HTTP/2.0\r\nHost: x\r\n\r\n"), Some(false));
    }
}
