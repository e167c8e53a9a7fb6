//! The client side: accepting connections, what their clients send first
//! (`protocols`: the PROXY protocol header on `proxy_protocol` listeners,
//! the TLS handshake on TLS listeners, HTTP/2's preface on `http2` ones),
//! the HTTP/1.1 session that reads requests from a connection and writes
//! the responses, and HTTP/2's connection and streams.

pub(crate) mod accept;
pub(crate) mod h1;
pub(crate) mod h2;
pub(crate) mod limit;
pub(crate) mod lots;
pub(crate) mod park;
pub(crate) mod protocols;
pub(crate) mod proxy_protocol;
pub(crate) mod tls;

use socket2::SockRef;
use std::net::{Ipv4Addr, SocketAddr};

/// The address a client connected to on `socket`, its local address: for
/// the PROXY header a `send_proxy_protocol` group gets when the listener
/// carried none. A socket that cannot tell (no longer connected) gives the
/// unspecified address; its request fails soon anyway.
pub(crate) fn local_addr(socket: SockRef<'_>) -> SocketAddr {
    socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
}

/// The address a client connected to as a PROXY header carried it
/// (`proxy_protocol` listeners; `None`: none was carried, the socket's own
/// address is asked when needed). Boxed: a connection without one keeps
/// only a pointer's room for it, parked or not.
pub(crate) type Carried = Option<Box<SocketAddr>>;
