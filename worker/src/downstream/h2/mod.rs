//! HTTP/2 from clients, with the `h2` crate: a connection (`connection`)
//! whose streams (`stream`) each go through the proxy core as an HTTP/1.1
//! request does, their heads read as the core reads one (`request`). A
//! meter on the bytes read (`meter`) ends the floods `h2` lets through.
//! TLS clients choose HTTP/2 by ALPN; plain ones by sending its preface
//! (h2c with prior knowledge, `preface`).

mod connection;
mod meter;
mod parked;
pub(crate) mod preface;
mod request;
mod responder;
mod shared;
mod stream;

pub(crate) use connection::serve;
pub(crate) use parked::Parked;

use crate::io::client_socket::ClientSocket;

/// Readies a client's socket for HTTP/2: every frame leaves as `h2` writes
/// it. With Nagle's algorithm a small frame written while earlier data is
/// unacknowledged (a response's last DATA or its END_STREAM, an ACK of the
/// client's SETTINGS or PING) waits for the client's ACK, which a client
/// that delays its ACKs sends up to 40 ms later. nginx and HAProxy set it
/// on HTTP/2 connections too.
pub(crate) fn set_nodelay(socket: &ClientSocket) {
    // A failure costs latency only; the connection goes on.
    let _ = socket.sock_ref().set_tcp_nodelay(true);
}
