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
    /// The request body is larger than the route allows.
    #[error("request body larger than the limit")]
    TooLarge,
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
            ClientError::TooLarge => Some(413),
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

/// An exchange with an upstream that failed before a final response head
/// reached the client: the client can still get an error response, and
/// the request may be replayed.
#[derive(Debug)]
pub(crate) struct ExchangeError {
    /// What failed.
    pub(crate) error: PumpError,
    /// No byte of the response had arrived.
    no_response: bool,
    /// Whether the whole request body was forwarded.
    pub(crate) request_done: bool,
}

impl ExchangeError {
    /// A failure; `no_response`: before any byte of the response arrived.
    pub(crate) fn new(error: impl Into<PumpError>, no_response: bool, request_done: bool) -> Self {
        ExchangeError {
            error: error.into(),
            no_response,
            request_done,
        }
    }

    /// A failure on the client's side, before the whole body was forwarded.
    pub(crate) fn client(error: ClientError) -> Self {
        ExchangeError::new(error, false, false)
    }

    /// Whether the request may be replayed: nothing of the response had
    /// arrived, so the server cannot have answered it. Only idempotent
    /// requests without a body are (see `retry`).
    pub(crate) fn may_replay(&self) -> bool {
        self.no_response
    }

    /// Whether the server said it did not process the request (an HTTP/2
    /// stream refused or gone away before it): it may be sent again, once,
    /// whatever its method.
    pub(crate) fn unprocessed(&self) -> bool {
        matches!(&self.error, PumpError::Upstream(e) if e.unprocessed())
    }

    /// Whether the failure counts against the server's health: it did not
    /// answer properly before the response head (a body error does not
    /// count, nor does a client's).
    pub(crate) fn is_server_failure(&self) -> bool {
        matches!(&self.error, PumpError::Upstream(e) if !matches!(e, UpstreamError::BadChunk(_)))
    }
}
