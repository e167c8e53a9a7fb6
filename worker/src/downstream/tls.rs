//! TLS connections: the handshake, in the connection's own task (never in
//! the accept loop) and within `tls_handshake_timeout`, then the HTTP/1.1
//! session over it. A plain HTTP request on a TLS port gets nginx's 400;
//! other bytes that are not TLS, a refused or stalled handshake end the
//! connection. Every failure is counted by reason; the error log gets at
//! most one line a second about them.

use crate::downstream::h1::Connection;
use crate::downstream::h2;
use crate::downstream::lots::{self, Lots};
use crate::downstream::protocols::destination;
use crate::downstream::Carried;
use crate::http::heads::{self, ConnectionField};
use crate::http::Scheme;
use crate::io::client_socket::ClientSocket;
use crate::io::client_stream::ClientStream;
use crate::io::tls_stream::TlsIo;
use crate::io::write::write_last_within;
use crate::observe::access_log::TlsInfo;
use crate::state::{ActiveConnection, Snapshot};
use rustls::ServerConnection;
use slog::info;
use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::{timeout_at, Instant};

/// How long a refused plain HTTP client may go on sending before the close.
const PLAIN_LINGER: Duration = Duration::from_secs(2);
/// Fewest seconds between two log lines about failed handshakes.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Why a handshake failed: the index of its reason in
/// [`prefork_shared::stats::TLS_FAILURE_REASONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Timeout = 0,
    PlainHttp = 1,
    NotTls = 2,
    Protocol = 3,
    Closed = 4,
}

/// What the client's first bytes are.
#[derive(Debug, PartialEq, Eq)]
enum FirstBytes {
    /// A TLS handshake record.
    Tls,
    /// What looks like an HTTP request line (`GET `...).
    PlainHttp,
    /// Anything else.
    Other,
}

/// Starts serving a connection accepted on a TLS listener, in a task of
/// its own.
pub(crate) fn serve(
    snapshot: &Rc<Snapshot>,
    socket: ClientSocket,
    peer: SocketAddr,
    active: ActiveConnection,
    lot: Option<Rc<Lots>>,
    http2: bool,
) {
    // The newest configuration's certificates serve it (hot reload).
    let snapshot = snapshot.latest();
    tokio::task::spawn_local(Box::pin(handshake_then_serve(
        snapshot,
        socket,
        (peer, None),
        active,
        lot,
        http2,
    )));
}

/// The handshake, then the HTTP/1.1 session (or HTTP/2's, if `http2` and
/// the client chose it by ALPN), of a connection from `peer` (with the
/// address it connected to if a PROXY header carried it).
pub(crate) async fn handshake_then_serve(
    snapshot: Rc<Snapshot>,
    socket: ClientSocket,
    peer: (SocketAddr, Carried),
    active: ActiveConnection,
    lot: Option<Rc<Lots>>,
    http2: bool,
) {
    let Some(tls) = snapshot.tls.as_ref() else {
        return;
    };
    let config = if http2 { &tls.config_h2 } else { &tls.config };
    let deadline = Instant::now() + snapshot.config.tls.handshake_timeout;
    let failure = match timeout_at(deadline, first_read(&socket)).await {
        Err(_) => Failure::Timeout,
        Ok(Err(_)) => Failure::Closed,
        Ok(Ok((_, FirstBytes::PlainHttp))) => {
            refuse_plain_http(&snapshot, &socket).await;
            Failure::PlainHttp
        }
        Ok(Ok((_, FirstBytes::Other))) => Failure::NotTls,
        Ok(Ok((received, FirstBytes::Tls))) => match ServerConnection::new(config.clone()) {
            Err(_) => Failure::Protocol,
            Ok(conn) => match timeout_at(deadline, TlsIo::accept(socket, Box::new(conn), received))
                .await
            {
                Err(_) => Failure::Timeout,
                Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => Failure::Protocol,
                Ok(Err(_)) => Failure::Closed,
                Ok(Ok(io)) => {
                    snapshot.stats().tls_handshake();
                    let info = TlsInfo::of(io.get_ref().1);
                    if io.get_ref().1.alpn_protocol() == Some(b"h2") {
                        let (client, carried) = peer;
                        let destination = destination(io.get_ref().0, carried);
                        h2::set_nodelay(io.get_ref().0);
                        let (scheme, tls) = (Scheme::Https, Some(info));
                        let lot = lot.map(|lots| lots.h2_tls.clone());
                        let addrs = (client, destination);
                        h2::serve(snapshot, io, addrs, scheme, tls, active, lot).await;
                        return;
                    }
                    let stream = ClientStream::from(io);
                    let lot = lots::h1(&lot);
                    let conn = Connection::tls(snapshot.clone(), stream, peer, active, info, lot);
                    conn.run().await;
                    return;
                }
            },
        },
    };
    snapshot.stats().tls_failure(failure as usize);
    log_failure(&snapshot, peer.0, failure);
}

/// Most of the client's first bytes read before the handshake: a ClientHello
/// fits (rustls, too, reads 4 KiB at a time).
const FIRST_READ: usize = 4096;

/// Reads the client's first bytes and tells what they are. They are usually
/// there at accept (`TCP_DEFER_ACCEPT`): the read needs no wait, and the
/// socket joins the event loop only if it must wait. Read, not peeked: the
/// handshake goes on from them, without a system call of its own to look.
async fn first_read(socket: &ClientSocket) -> io::Result<(Vec<u8>, FirstBytes)> {
    let mut received = Vec::with_capacity(FIRST_READ);
    let mut reader = socket;
    if reader.read_buf(&mut received).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let kind = classify(&received);
    Ok((received, kind))
}

/// A TLS handshake record starts with 22; an HTTP request with a method
/// in capitals, then a space.
fn classify(first: &[u8]) -> FirstBytes {
    match first {
        [0x16, ..] => FirstBytes::Tls,
        [b'A'..=b'Z', ..] => {
            let method_len = first.iter().take_while(|b| b.is_ascii_uppercase()).count();
            match first.get(method_len) {
                Some(b' ') | None => FirstBytes::PlainHttp,
                Some(_) => FirstBytes::Other,
            }
        }
        _ => FirstBytes::Other,
    }
}

/// Answers nginx's 400 to a plain HTTP request on a TLS port, then closes,
/// reading what the client still sends for a moment so that the answer is
/// not lost to a reset.
async fn refuse_plain_http(snapshot: &Snapshot, socket: &ClientSocket) {
    const TITLE: &str = "400 The plain HTTP request was sent to HTTPS port";
    let body = format!(
        "<html>\r\n<head><title>{TITLE}</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<center>The plain HTTP request was sent to HTTPS port</center>\r\n<hr><center>prefork</center>\r\n</body>\r\n</html>\r\n"
    );
    let mut head = Vec::with_capacity(256);
    heads::own_response_head(
        &mut head,
        400,
        "text/html",
        None,
        body.len(),
        ConnectionField::Close,
    );
    let mut writer = socket;
    let sent = write_last_within(
        &mut writer,
        &head,
        body.as_bytes(),
        snapshot.config.http.send_timeout,
    )
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    let until = Instant::now() + PLAIN_LINGER;
    let mut sink = [0u8; 4096];
    let mut reader = socket;
    while let Ok(Ok(n)) = timeout_at(until, reader.read(&mut sink)).await {
        if n == 0 {
            break;
        }
    }
}

thread_local! {
    /// When the last line about a failed handshake was logged, and how many
    /// failures went unlogged since.
    static LOGGED: Cell<(Option<Instant>, u64)> = const { Cell::new((None, 0)) };
}

/// Logs a failed handshake, at most one line per [`LOG_EVERY`] (with the
/// count of those not logged): a scan or a flood must not flood the log.
fn log_failure(snapshot: &Snapshot, peer: SocketAddr, failure: Failure) {
    let now = Instant::now();
    let (last, skipped) = LOGGED.get();
    if last.is_some_and(|at| now < at + LOG_EVERY) {
        LOGGED.set((last, skipped + 1));
        return;
    }
    LOGGED.set((Some(now), 0));
    let reason = prefork_shared::stats::TLS_FAILURE_REASONS[failure as usize];
    info!(snapshot.log, "TLS handshake failed"; "client" => %peer, "reason" => reason, "not_logged_since" => skipped);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_tls_from_plain_http_and_garbage() {
        assert_eq!(classify(&[0x16, 3, 1, 0, 0xc8]), FirstBytes::Tls);
        assert_eq!(classify(b"GET / HT"), FirstBytes::PlainHttp);
        assert_eq!(classify(b"OPTIONS "), FirstBytes::PlainHttp);
        assert_eq!(classify(b"PO"), FirstBytes::PlainHttp);
        assert_eq!(classify(b"Get / HT"), FirstBytes::Other);
        assert_eq!(classify(b"\x00\x01garbage"), FirstBytes::Other);
        assert_eq!(classify(b"SSH-2.0-"), FirstBytes::Other);
    }
}
