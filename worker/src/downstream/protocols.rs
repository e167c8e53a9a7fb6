//! What a listener's clients send before HTTP/1.1, and how a plain
//! connection of an `http2` listener is told to be HTTP/2 or HTTP/1.1.

use crate::downstream::h1::Connection;
use crate::downstream::h2;
use crate::downstream::lots::{self, Lots};
use crate::downstream::{local_addr, Carried};
use crate::http::Scheme;
use crate::io::client_socket::ClientSocket;
use crate::state::{ActiveConnection, Snapshot};
use std::net::SocketAddr;
use std::rc::Rc;
use tokio::time::{timeout_at, Instant};

/// What a listener's clients send before HTTP/1.1.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Protocols {
    /// A PROXY protocol header from the load balancer in front, first.
    pub(crate) proxy_protocol: bool,
    /// Then a TLS handshake.
    pub(crate) tls: bool,
    /// HTTP/2 as well as HTTP/1.1: by ALPN over TLS, by its preface
    /// without.
    pub(crate) http2: bool,
}

/// Serves a plain connection of an `http2` listener: HTTP/2 if the client
/// starts with its preface, else HTTP/1.1; `peer`: the client's address
/// and the one it connected to if a PROXY header carried it.
pub(crate) async fn plain_then_serve(
    snapshot: Rc<Snapshot>,
    socket: ClientSocket,
    peer: (SocketAddr, Carried),
    active: ActiveConnection,
    lot: Option<Rc<Lots>>,
) {
    let deadline = Instant::now() + snapshot.config.http.client_header_timeout;
    match timeout_at(deadline, h2::preface::sent(&socket)).await {
        Ok(Ok(true)) => {
            let (client, carried) = peer;
            let destination = destination(&socket, carried);
            h2::set_nodelay(&socket);
            let (scheme, tls) = (Scheme::Http, None);
            let lot = lot.map(|lots| lots.h2c.clone());
            let addrs = (client, destination);
            h2::serve(snapshot, socket, addrs, scheme, tls, active, lot).await;
        }
        Ok(Ok(false)) => {
            let conn = Connection::new(snapshot, socket, peer, active, lots::h1(&lot));
            Box::pin(conn.run()).await;
        }
        // Closed, failed or silent before a first byte: nothing to answer.
        Ok(Err(_)) | Err(_) => {}
    }
}

/// The address a client connected to on `socket`: the one a PROXY header
/// carried, else the socket's own. An HTTP/2 connection learns it once, at
/// its start: its streams run apart from the socket.
pub(crate) fn destination(socket: &ClientSocket, carried: Carried) -> SocketAddr {
    match carried {
        Some(carried) => *carried,
        None => local_addr(socket.sock_ref()),
    }
}
