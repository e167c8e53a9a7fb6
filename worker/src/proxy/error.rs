//! Classified failures of one proxied exchange, and the status each maps to.

use crate::http::chunked::ChunkError;
use crate::upstream::error::UpstreamError;
use std::io;

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
