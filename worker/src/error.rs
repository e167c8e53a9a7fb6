//! Classified failures of one proxied exchange, and the status each maps to.

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

impl UpstreamError {
    /// The status answered to the client when nothing was sent yet.
    pub(crate) fn status(&self) -> u16 {
        match self {
            UpstreamError::ReadTimeout => 504,
            _ => 502,
        }
    }
}

/// Something went wrong on the client side while serving a request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// The client closed the connection mid-request.
    #[error("client closed the connection")]
    Closed,
    /// Reading from the client failed.
    #[error("reading from the client failed: {0}")]
    Read(io::Error),
    /// The client sent nothing for `client_body_timeout`.
    #[error("client body timed out")]
    Timeout,
    /// Writing to the client failed.
    #[error("writing to the client failed: {0}")]
    Write(io::Error),
    /// The client did not read for the send timeout.
    #[error("writing to the client timed out")]
    WriteTimeout,
    /// The chunked request body is malformed.
    #[error("malformed chunked request body: {0}")]
    BadChunk(ChunkError),
}

impl ClientError {
    /// The status answered when nothing was sent yet, or `None` when the
    /// client cannot (or need not) be answered.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            ClientError::Timeout => Some(408),
            ClientError::BadChunk(ChunkError::TooLarge) => Some(413),
            ClientError::BadChunk(_) => Some(400),
            _ => None,
        }
    }
}

/// A failure while moving a body between the two sides.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PumpError {
    /// The client side failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The upstream side failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}
