//! The request body as the client's connection delivers it: the bytes read
//! with the head first, then reads, or a splice to the upstream's socket.

use crate::http::body::BodyCursor;
use crate::http::chunked::ChunkError;
use crate::io::client_stream::ClientStream;
use crate::io::splice::{self, Failure, Moved, Pipes, SpliceEnd};
use crate::io::timed::within;
use crate::io::BODY_READ;
use crate::observe::stats::Stats;
use crate::proxy::downstream::RequestBody;
use crate::proxy::error::{ClientError, PumpError};
use crate::upstream::error::UpstreamError;
use bytes::{Buf, BytesMut};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The request body of one exchange: what its framing says is left, and
/// the connection's buffer, where the body bytes read so far wait.
pub(crate) struct Body<'a> {
    /// The client's socket.
    client: &'a ClientStream,
    /// The connection's read buffer: body bytes first, maybe the next
    /// request after them.
    buf: &'a mut BytesMut,
    /// Where in the body's framing the bytes taken so far end.
    cursor: BodyCursor,
    /// Body bytes at the front of `buf` that `ready` gave and that have not
    /// gone upstream yet.
    taken: Option<usize>,
    /// Where the bytes read are counted.
    stats: &'a Stats,
    /// Free pipes, when bodies may be spliced.
    pipes: Option<&'a Pipes>,
}

impl<'a> Body<'a> {
    /// The body framed as `cursor` tells, read from `client` into `buf`.
    pub(super) fn new(
        client: &'a ClientStream,
        buf: &'a mut BytesMut,
        cursor: BodyCursor,
        stats: &'a Stats,
        pipes: Option<&'a Pipes>,
    ) -> Self {
        Body {
            client,
            buf,
            cursor,
            taken: None,
            stats,
            pipes,
        }
    }
}

impl RequestBody for Body<'_> {
    fn is_done(&self) -> bool {
        self.cursor.is_done()
    }

    fn ready(&mut self) -> Result<&[u8], ClientError> {
        let n = match self.taken {
            Some(n) => n,
            // The cursor counts the bytes as taken: they are taken once.
            None => *self
                .taken
                .insert(self.cursor.take(self.buf).map_err(|e| match e {
                    ChunkError::TooLarge => ClientError::TooLarge,
                    e => ClientError::BadChunk(e),
                })?),
        };
        Ok(&self.buf[..n])
    }

    fn forwarded(&mut self) {
        if let Some(n) = self.taken.take() {
            self.buf.advance(n);
        }
    }

    async fn receive(&mut self, limit: Duration) -> Result<(), ClientError> {
        self.buf.reserve(BODY_READ);
        let mut client = self.client;
        let n = within(
            limit,
            client.read_buf(self.buf),
            ClientError::Read,
            ClientError::Timeout,
        )
        .await?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        self.stats.read(n);
        Ok(())
    }

    async fn splice_rest<W: SpliceEnd>(
        &mut self,
        upstream: &W,
        limits: splice::Limits,
    ) -> Option<Result<(), PumpError>> {
        let (Some(pipes), Some(client), &BodyCursor::Length(left)) =
            (self.pipes, self.client.plain(), &self.cursor)
        else {
            return None;
        };
        // What is buffered goes first, copied.
        if left < splice::MIN_SPLICE || !self.buf.is_empty() {
            return None;
        }
        let stats = self.stats;
        // Boxed: a splice's state would otherwise weigh on every
        // connection's future, idle ones included (one allocation per body
        // of 64 KiB or more).
        let moved = Box::pin(splice::transfer(
            pipes,
            client,
            upstream,
            left,
            |n| stats.read_u64(n),
            limits,
        ))
        .await;
        Some(match moved {
            Ok(Moved::Whole) => {
                self.cursor = BodyCursor::Done;
                Ok(())
            }
            // Copied instead, from now on.
            Ok(Moved::Unsupported) => {
                self.pipes = None;
                return None;
            }
            Err(Failure::Read(e)) => Err(ClientError::Read(e).into()),
            Err(Failure::ReadTimeout) => Err(ClientError::Timeout.into()),
            Err(Failure::Closed) => Err(ClientError::Closed.into()),
            Err(Failure::Write(e)) => Err(UpstreamError::Write(e).into()),
            Err(Failure::WriteTimeout) => Err(UpstreamError::WriteTimeout.into()),
        })
    }
}
