//! Connections on `proxy_protocol` listeners: the load balancer's PROXY
//! header (v1 or v2) is read first, within `client_header_timeout`, and the
//! client address it carries replaces the socket's for the connection's
//! whole life (`X-Forwarded-For`, the access log, parking). Exactly the
//! header's bytes are taken: what follows, a request or a TLS ClientHello,
//! is left to the layer that reads it next. A connection without a valid
//! header is closed without a response, counted by reason; the error log
//! gets at most one line a second about them.

use crate::downstream::h1::Connection;
use crate::downstream::lots::{self, Lots};
use crate::downstream::protocols::{plain_then_serve, Protocols};
use crate::downstream::tls;
use crate::http::proxy_protocol::{self, Addresses, ProxyHeaderError};
use crate::io::client_socket::ClientSocket;
use crate::state::{ActiveConnection, Snapshot};
use slog::info;
use std::cell::Cell;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::{timeout_at, Instant};

/// Fewest seconds between two log lines about refused connections.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Why a connection was refused: the index of its reason in
/// [`prefork_shared::stats::PROXY_HEADER_FAILURE_REASONS`].
#[derive(Debug, Clone, Copy)]
enum Failure {
    Timeout = 0,
    Invalid = 1,
    Closed = 2,
}

/// How reading the header failed.
enum ReadError {
    /// Bytes that are not a header.
    Invalid(ProxyHeaderError),
    /// The client closed, or the socket failed, first.
    Closed,
}

/// Starts serving a connection accepted on a `proxy_protocol` listener, in
/// a task of its own; `tls`: the listener speaks TLS after the header.
pub(crate) fn serve(
    snapshot: &Rc<Snapshot>,
    socket: ClientSocket,
    peer: SocketAddr,
    lot: &Option<Rc<Lots>>,
    protocols: Protocols,
) {
    let active = snapshot.track();
    // The newest configuration serves it (hot reload).
    let snapshot = snapshot.latest();
    let lot = lot.clone();
    tokio::task::spawn_local(Box::pin(header_then_serve(
        snapshot, socket, peer, lot, protocols, active,
    )));
}

async fn header_then_serve(
    snapshot: Rc<Snapshot>,
    socket: ClientSocket,
    peer: SocketAddr,
    lot: Option<Rc<Lots>>,
    protocols: Protocols,
    active: ActiveConnection,
) {
    let deadline = Instant::now() + snapshot.config.http.client_header_timeout;
    let read = {
        let mut header = pin!(read_header(&socket));
        tokio::select! {
            biased;
            read = timeout_at(deadline, &mut header) => read,
            () = snapshot.on_change(|| snapshot.stopping()) => {
                // A stop: the header gets the grace a first request gets,
                // so that a drain does not wait for client_header_timeout.
                let grace = snapshot.drain_close_at(Instant::now(), peer, 0);
                timeout_at(grace.min(deadline), &mut header).await
            }
        }
    };
    let (failure, error) = match read {
        Err(_) => (Failure::Timeout, None),
        Ok(Err(ReadError::Invalid(e))) => (Failure::Invalid, Some(e)),
        Ok(Err(ReadError::Closed)) => (Failure::Closed, None),
        Ok(Ok(addresses)) => {
            // LOCAL, UNKNOWN: the balancer's own connection.
            let client = match addresses {
                Some(a) => (a.source, Some(Box::new(a.destination))),
                None => (peer, None),
            };
            // The newest configuration serves it (a reload may have come).
            let snapshot = snapshot.latest();
            if protocols.tls {
                tls::handshake_then_serve(snapshot, socket, client, active, lot, protocols.http2)
                    .await;
            } else if protocols.http2 {
                plain_then_serve(snapshot, socket, client, active, lot).await;
            } else {
                // Boxed as a connection served from the accept loop is.
                let conn = Connection::new(snapshot, socket, client, active, lots::h1(&lot));
                Box::pin(conn.run()).await;
            }
            return;
        }
    };
    snapshot.stats().proxy_header_failure(failure as usize);
    log_failure(&snapshot, peer, failure, error);
}

/// Reads the PROXY header: the addresses it carries, if any. Peeks until
/// the header is complete (or known bad), then takes exactly its bytes.
async fn read_header(socket: &ClientSocket) -> Result<Option<Addresses>, ReadError> {
    let mut buf = vec![0u8; proxy_protocol::MAX_LEN];
    let mut seen = 0;
    let header = loop {
        let n = socket
            .peek_beyond(&mut buf, seen)
            .await
            .map_err(|_| ReadError::Closed)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        match proxy_protocol::parse(&buf[..n]) {
            Ok(Some(header)) => break header,
            // A full buffer always decides: MAX_LEN bounds every header.
            Ok(None) => seen = n,
            Err(e) => return Err(ReadError::Invalid(e)),
        }
    };
    // The bytes are queued already: this takes them without waiting.
    let mut reader = socket;
    reader
        .read_exact(&mut buf[..header.len])
        .await
        .map_err(|_| ReadError::Closed)?;
    Ok(header.addresses)
}

thread_local! {
    /// When the last line about a refused connection was logged, and how
    /// many refusals went unlogged since.
    static LOGGED: Cell<(Option<Instant>, u64)> = const { Cell::new((None, 0)) };
}

/// Logs a refused connection, at most one line per [`LOG_EVERY`] (with the
/// count of those not logged): a scan or a misconfigured balancer must not
/// flood the log.
fn log_failure(
    snapshot: &Snapshot,
    peer: SocketAddr,
    failure: Failure,
    error: Option<ProxyHeaderError>,
) {
    let now = Instant::now();
    let (last, skipped) = LOGGED.get();
    if last.is_some_and(|at| now < at + LOG_EVERY) {
        LOGGED.set((last, skipped + 1));
        return;
    }
    LOGGED.set((Some(now), 0));
    let reason = prefork_shared::stats::PROXY_HEADER_FAILURE_REASONS[failure as usize];
    let error = error.map(|e| e.to_string()).unwrap_or_default();
    info!(snapshot.log, "no valid PROXY protocol header, connection closed";
        "client" => %peer, "reason" => reason, "error" => error, "not_logged_since" => skipped);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::{poll_fn, Future};
    use std::io::Write;
    use std::mem::MaybeUninit;
    use std::net::Shutdown;
    use std::task::Poll;
    use tokio::io::AsyncReadExt;
    use tokio::time::timeout;

    /// Bound on every wait here: a bug fails a test instead of hanging it.
    const LIMIT: Duration = Duration::from_secs(10);

    /// A connected pair: a blocking std client and the accepted side.
    fn pair() -> (std::net::TcpStream, ClientSocket) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (client, ClientSocket::new(server))
    }

    /// Waits, without the event loop, until `n` bytes are queued.
    fn wait_queued(socket: &ClientSocket, n: usize) {
        let deadline = std::time::Instant::now() + LIMIT;
        let mut probe = [MaybeUninit::uninit(); 64];
        while !matches!(socket.sock_ref().peek(&mut probe), Ok(got) if got >= n) {
            assert!(std::time::Instant::now() < deadline, "{n} bytes never came");
            std::thread::yield_now();
        }
    }

    #[tokio::test]
    async fn a_header_in_two_segments_is_waited_for_then_taken_exactly() {
        let (mut client, socket) = pair();
        let header = b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 443\r\n";
        client.write_all(&header[..20]).unwrap();
        wait_queued(&socket, 20);
        let mut read = std::pin::pin!(read_header(&socket));
        let first = poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "it waits for the rest");
        client.write_all(&header[20..]).unwrap();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let addresses = match timeout(LIMIT, read).await.unwrap() {
            Ok(addresses) => addresses,
            Err(_) => panic!("the header is refused"),
        };
        assert_eq!(
            addresses,
            Some(Addresses {
                source: "192.0.2.7:40000".parse().unwrap(),
                destination: "10.0.0.1:443".parse().unwrap(),
            })
        );
        // What follows the header is left for HTTP.
        let mut rest = [0u8; 18];
        let mut reader = &socket;
        timeout(LIMIT, reader.read_exact(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&rest, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn garbage_is_refused_and_a_header_cut_by_a_close_ends_the_wait() {
        let (mut client, socket) = pair();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let got = timeout(LIMIT, read_header(&socket)).await.unwrap();
        assert!(matches!(
            got,
            Err(ReadError::Invalid(ProxyHeaderError::Signature))
        ));
        let (mut client, socket) = pair();
        client.write_all(b"PROXY TCP4 192.0.2.7").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let got = timeout(LIMIT, read_header(&socket)).await.unwrap();
        assert!(matches!(got, Err(ReadError::Closed)));
    }
}
