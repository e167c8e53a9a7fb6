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
    /// An HTTP/2 stream or connection failed; `unprocessed`: the server
    /// said it did not process the request (`REFUSED_STREAM`, a graceful
    /// GOAWAY before the stream, or a connection that took no new stream),
    /// so it may be sent again whatever its method (RFC 9113 §8.7).
    #[error("{}HTTP/2: {error}", if *.unprocessed { "request not processed, " } else { "" })]
    Http2 {
        /// What h2 reported (boxed: see [`TlsFailure`]).
        error: Box<h2::Error>,
        /// The request was not processed.
        unprocessed: bool,
    },
    /// The forwarded head has something HTTP/2 cannot carry (named).
    #[error("the request cannot go over HTTP/2: invalid {0}")]
    Http2Head(&'static str),
    /// The HTTP/2 connection preface could not be exchanged within
    /// `connect_timeout`.
    #[error("HTTP/2 handshake timed out")]
    Http2Handshake,
    /// A 101 came before the whole request body was sent: the tunnel could
    /// not carry the rest of the body in order.
    #[error("101 Switching Protocols before the request body was sent")]
    EarlySwitch,
}

/// A failed TLS handshake with an upstream server (boxed in
/// [`UpstreamError`]: errors travel through every poll of an exchange, and
/// this one's size would grow them all; an `h2::Error` too).
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
    /// An HTTP/2 failure, told whether the server processed the request:
    /// not when it refused the stream or went away gracefully before it.
    pub(crate) fn http2(error: h2::Error) -> Self {
        let unprocessed = error.is_remote()
            && matches!(
                (error.is_go_away(), error.reason()),
                (true, Some(h2::Reason::NO_ERROR)) | (false, Some(h2::Reason::REFUSED_STREAM))
            );
        UpstreamError::Http2 {
            error: Box::new(error),
            unprocessed,
        }
    }

    /// An HTTP/2 failure to open a stream: the request never left.
    pub(crate) fn http2_unsent(error: h2::Error) -> Self {
        UpstreamError::Http2 {
            error: Box::new(error),
            unprocessed: true,
        }
    }

    /// Whether the server said it did not process the request (HTTP/2).
    pub(crate) fn unprocessed(&self) -> bool {
        matches!(
            self,
            UpstreamError::Http2 {
                unprocessed: true,
                ..
            }
        )
    }

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
