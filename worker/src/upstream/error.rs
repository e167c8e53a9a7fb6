//! What can go wrong on the upstream side of an exchange, and the status
//! each failure maps to.

use crate::http::chunked::ChunkError;
use crate::http::response::ResponseError;
use std::io;
use std::net::SocketAddr;

/// Something went wrong on the upstream side.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// The TCP connection could not be established.
    #[error("connect to {addr} failed: {source}")]
    Connect {
        /// The server.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The TCP connection was not established within `connect_timeout`.
    #[error("connect to {addr} timed out")]
    ConnectTimeout {
        /// The server.
        addr: SocketAddr,
    },
    /// The TLS handshake failed (a certificate that does not verify, among
    /// others): a connect failure as far as retries and health go.
    #[error("{0}")]
    Tls(Box<TlsFailure>),
    /// The TCP connection and TLS handshake took longer than
    /// `connect_timeout`.
    #[error("connect to {addr} timed out in the TLS handshake")]
    TlsTimeout {
        /// The server.
        addr: SocketAddr,
    },
    /// Writing the request failed.
    #[error("sending the request failed: {0}")]
    Write(io::Error),
    /// A write made no progress within `write_timeout`.
    #[error("sending the request timed out")]
    WriteTimeout,
    /// Reading the response failed.
    #[error("reading the response failed: {0}")]
    Read(io::Error),
    /// No response byte within `read_timeout`.
    #[error("timed out waiting for the response")]
    ReadTimeout,
    /// The connection closed before the response was complete.
    #[error("connection closed before the response was complete")]
    Closed,
    /// The response head is malformed.
    #[error("{0}")]
    BadResponse(ResponseError),
    /// The chunked response body is malformed.
    #[error("malformed chunked response body: {0}")]
    BadChunk(ChunkError),
    /// A 101 came before the whole request body was sent: the tunnel could
    /// not carry the rest of the body in order.
    #[error("101 Switching Protocols before the request body was sent")]
    EarlySwitch,
}

/// A failed TLS handshake with an upstream server (boxed in
/// [`UpstreamError`]: errors travel through every poll of an exchange, and
/// this one's size would grow them all).
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake with {addr} ({name}) failed: {reason}")]
pub(crate) struct TlsFailure {
    /// The server.
    pub(crate) addr: SocketAddr,
    /// The name verified.
    pub(crate) name: String,
    /// Why, in words.
    pub(crate) reason: String,
}

impl UpstreamError {
    /// The status answered to the client when nothing was sent yet.
    pub(crate) fn status(&self) -> u16 {
        match self {
            UpstreamError::ReadTimeout => 504,
            _ => 502,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::UpstreamError;

    /// Errors travel through every poll of an exchange: a variant carrying
    /// more than an address and an `io::Error` would grow them all.
    #[test]
    fn upstream_errors_stay_small() {
        assert!(std::mem::size_of::<UpstreamError>() <= 40);
    }
}
