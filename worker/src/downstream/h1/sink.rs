//! The response as the client's connection takes it: heads written as
//! HTTP/1.1 text, the body as it comes (or without its chunked framing for
//! an HTTP/1.0 client), large bodies spliced.

use super::{ack_now, client_result, finish_head, set_nodelay};
use crate::http::heads::{self, ConnectionField};
use crate::http::response::ResponseHead;
use crate::http::{Framing, Version};
use crate::io::client_stream::ClientStream;
use crate::io::splice::{self, Failure, Moved, Pipes, SpliceEnd};
use crate::io::timed::within;
use crate::io::write::{write_last_within, write_two_within};
use crate::proxy::downstream::{BodyPlan, ResponseSink};
use crate::proxy::error::ClientError;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The interim response asking an HTTP/1.1 client for its body.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The response of one exchange, on its way to the client.
pub(crate) struct Sink<'a> {
    /// The client's socket.
    client: &'a ClientStream,
    /// The head being written.
    head: &'a mut Vec<u8>,
    /// The client's version.
    version: Version,
    /// Whether TCP_NODELAY is set yet (see [`set_nodelay`]).
    nodelay: &'a mut bool,
    /// Whether the final head went out.
    head_sent: bool,
    /// Whether the final head announced a chunked body.
    chunked: bool,
    /// Free pipes, when bodies may be spliced.
    pipes: Option<&'a Pipes>,
}

impl<'a> Sink<'a> {
    /// The response to a client of `version` on `client`, its head built
    /// in `head`.
    pub(super) fn new(
        client: &'a ClientStream,
        head: &'a mut Vec<u8>,
        version: Version,
        nodelay: &'a mut bool,
        pipes: Option<&'a Pipes>,
    ) -> Self {
        Sink {
            client,
            head,
            version,
            nodelay,
            head_sent: false,
            chunked: false,
            pipes,
        }
    }
}

impl ResponseSink for Sink<'_> {
    fn forwards_interim(&self) -> bool {
        self.version == Version::Http11
    }

    fn splices(&self) -> bool {
        self.pipes.is_some()
    }

    fn plan_body(&self, framing: Framing) -> BodyPlan {
        // An HTTP/1.0 client cannot take chunks: decode, and close to end.
        let decode = framing == Framing::Chunked && self.version == Version::Http10;
        BodyPlan {
            decode,
            chunked: !decode && framing == Framing::Chunked,
            ends_session: decode || framing == Framing::Close,
        }
    }

    fn start_head(&mut self, head: &ResponseHead<'_, '_>, via: Option<&str>) {
        // An HTTP/1.1 client gets a chunked body's trailers (the body
        // passes as received), so the `Trailer` field announcing them is
        // kept.
        let trailers = self.version == Version::Http11;
        heads::response_head_start(self.head, head, via, trailers);
    }

    async fn send_interim(&mut self, limit: Duration) -> Result<(), ClientError> {
        heads::finish_head(self.head, None, false, ConnectionField::Omit);
        // Another head follows: under Nagle's algorithm it would wait for
        // the ACK of this one, which a client may delay (40 ms).
        set_nodelay(self.client, self.nodelay);
        let mut client = self.client;
        client_result(write_two_within(&mut client, self.head, &[], limit).await)
    }

    async fn send_continue(&mut self, limit: Duration) -> Result<(), ClientError> {
        let mut client = self.client;
        let sent = async {
            client.write_all(CONTINUE).await?;
            client.flush().await
        };
        within(limit, sent, ClientError::Write, ClientError::WriteTimeout).await?;
        // Sending it may have put the connection back to delayed ACKs (the
        // kernel takes it for an interactive exchange).
        ack_now(self.client);
        Ok(())
    }

    fn finish_head(&mut self, content_length: Option<u64>, chunked: bool, close: bool) {
        self.chunked = chunked;
        finish_head(self.head, self.version, content_length, chunked, close);
    }

    fn head_sent(&self) -> bool {
        self.head_sent
    }

    async fn send(&mut self, body: &[u8], last: bool, limit: Duration) -> Result<u64, ClientError> {
        let head: &[u8] = if self.head_sent {
            &[]
        } else {
            self.head_sent = true;
            if !last {
                set_nodelay(self.client, self.nodelay);
            }
            self.head
        };
        let mut client = self.client;
        let written = if last {
            // The FIN leaves with the response (see `write_last_within`).
            write_last_within(&mut client, head, body, limit).await
        } else {
            write_two_within(&mut client, head, body, limit).await
        };
        client_result(written)?;
        Ok((head.len() + body.len()) as u64)
    }

    /// A chunked body ends with the last chunk, carrying the trailers
    /// whether or not the client sent `TE: trailers`: every HTTP/1.1
    /// recipient parses a trailer section (RFC 9112 §7.1.2), and a chunked
    /// body from an HTTP/1.1 upstream reaches the client as received,
    /// trailers included (as HAProxy passes them). A body of known length,
    /// or decoded for an HTTP/1.0 client, drops them.
    async fn send_trailers(
        &mut self,
        fields: &[httparse::Header<'_>],
        limit: Duration,
    ) -> Result<u64, ClientError> {
        if !self.chunked {
            return Ok(0);
        }
        let mut end = Vec::new();
        heads::last_chunk(&mut end, fields);
        self.send(&end, false, limit).await
    }

    fn finished(&mut self, _: bool) {
        // The body's framing, or the close that follows a body cut short,
        // tells the client.
    }

    async fn splice_from<R: SpliceEnd>(
        &mut self,
        upstream: &R,
        left: u64,
        limits: splice::Limits,
    ) -> Option<Result<Moved, Failure>> {
        let (pipes, client) = (self.pipes?, self.client.plain()?);
        // Boxed: a splice's state would otherwise weigh on every
        // connection's future, idle ones included (one allocation per body
        // of 64 KiB or more).
        let moved = Box::pin(splice::transfer(
            pipes,
            upstream,
            client,
            left,
            |_| {},
            limits,
        ))
        .await;
        if matches!(moved, Ok(Moved::Unsupported)) {
            // Copied instead, from now on.
            self.pipes = None;
        }
        Some(moved)
    }
}
