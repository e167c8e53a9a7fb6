//! Relaying a response body from the upstream to the client: as it comes,
//! spliced from socket to socket when large, or without its chunked framing.

use super::downstream::{ResponseSink, Timeouts};
use super::error::{ClientError, PumpError};
use crate::http::body::BodyCursor;
use crate::http::chunked::{parse_trailers, ChunkedDecoder, MAX_TRAILER_FIELDS};
use crate::io::splice::{self, Failure, Moved, SpliceEnd};
use crate::io::timed::within;
use crate::io::BODY_READ;
use crate::upstream::error::UpstreamError;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Fewest body bytes handed to a sink that takes them (see
/// [`ResponseSink::takes_bytes`]) rather than copied: below it, a copy
/// costs less than a new read buffer.
const HAND_OVER: usize = 4096;

/// Sends the final head (with the body bytes read along with it) and
/// streams the body; `last`: the whole response is at hand and the session
/// ends after it; `decode`: a chunked body goes without its framing.
/// Returns the bytes sent, or the failure and whether the head had gone
/// out.
pub(super) async fn relay_body<R, S>(
    upstream: &mut R,
    buf: &mut BytesMut,
    sink: &mut S,
    last: bool,
    body: &mut BodyCursor,
    decode: bool,
    t: Timeouts,
) -> Result<u64, (PumpError, bool)>
where
    R: AsyncRead + Unpin + SpliceEnd,
    S: ResponseSink,
{
    let mut sent = 0u64;
    loop {
        // Forward what the buffer holds; the body bytes that came with the
        // head leave with it.
        if let (true, BodyCursor::Chunked(decoder)) = (decode, &mut *body) {
            if !sink.head_sent() {
                sent += client_write(sink.send(&[], false, t.client_write).await, false)?;
            }
            sent += send_decoded(sink, decoder, buf, t)
                .await
                .map_err(|e| (e, true))?;
            if decoder.is_done() {
                // Boxed: it would weigh on every connection's future.
                sent += Box::pin(send_trailers(sink, decoder, t))
                    .await
                    .map_err(|e| (e, true))?;
                *body = BodyCursor::Done;
            }
        } else {
            let head_sent = sink.head_sent();
            let n = body
                .take(buf)
                .map_err(|e| (UpstreamError::BadChunk(e).into(), head_sent))?;
            let last = last && !head_sent;
            let written = if n >= HAND_OVER && sink.takes_bytes() {
                // Handed over: the next read goes into a new buffer.
                let part = buf.split_to(n).freeze();
                sink.send_bytes(part, last, t.client_write).await
            } else {
                let written = sink.send(&buf[..n], last, t.client_write).await;
                buf.advance(n);
                written
            };
            sent += client_write(written, head_sent)?;
        }
        if body.is_done() {
            return Ok(sent);
        }
        // Everything buffered was forwarded (the head too): a large rest of
        // known length goes from socket to socket.
        if let (false, &mut BodyCursor::Length(left)) = (decode, &mut *body) {
            if left >= splice::MIN_SPLICE && upstream.splices() {
                let limits = splice::Limits {
                    read: t.upstream_read,
                    write: t.client_write,
                };
                match sink.splice_from(&*upstream, left, limits).await {
                    Some(Ok(Moved::Whole)) => {
                        *body = BodyCursor::Done;
                        return Ok(sent + left);
                    }
                    // Copied instead, below.
                    Some(Ok(Moved::Unsupported)) | None => {}
                    Some(Err(f)) => {
                        let error = match f {
                            Failure::Read(e) => UpstreamError::Read(e).into(),
                            Failure::ReadTimeout => UpstreamError::ReadTimeout.into(),
                            Failure::Closed => UpstreamError::Closed.into(),
                            Failure::Write(e) => ClientError::Write(e).into(),
                            Failure::WriteTimeout => ClientError::WriteTimeout.into(),
                        };
                        return Err((error, true));
                    }
                }
            }
        }
        // Everything buffered was forwarded: read the next part.
        buf.clear();
        buf.reserve(BODY_READ);
        let n = within(
            t.upstream_read,
            upstream.read_buf(buf),
            UpstreamError::Read,
            UpstreamError::ReadTimeout,
        )
        .await
        .map_err(|e| (e.into(), true))?;
        if n == 0 {
            if matches!(body, BodyCursor::UntilClose) {
                return Ok(sent);
            }
            return Err((UpstreamError::Closed.into(), true));
        }
    }
}

/// The bytes a send to the client wrote, or its failure and whether the
/// head had gone out before it.
fn client_write(
    written: Result<u64, ClientError>,
    head_sent: bool,
) -> Result<u64, (PumpError, bool)> {
    written.map_err(|e| (e.into(), head_sent))
}

/// Sends the trailer section a decoded chunked body ended with (kept by
/// `decoder`) as fields.
async fn send_trailers<S: ResponseSink>(
    sink: &mut S,
    decoder: &ChunkedDecoder,
    t: Timeouts,
) -> Result<u64, PumpError> {
    let mut slots = vec![httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
    let fields = match decoder.trailers() {
        Some(section) => parse_trailers(section, &mut slots).map_err(UpstreamError::BadChunk)?,
        None => &[],
    };
    Ok(sink.send_trailers(fields, t.client_write).await?)
}

/// Sends the data of the chunks in `buf` (consuming them) without the
/// chunked framing; returns the bytes sent.
async fn send_decoded<S: ResponseSink>(
    sink: &mut S,
    decoder: &mut ChunkedDecoder,
    buf: &mut BytesMut,
    t: Timeouts,
) -> Result<u64, PumpError> {
    let mut written = 0u64;
    while !buf.is_empty() && !decoder.is_done() {
        let (n, data) = decoder.decode(buf).map_err(UpstreamError::BadChunk)?;
        if let Some(range) = data {
            written += sink.send(&buf[range], false, t.client_write).await?;
        }
        buf.advance(n);
        if n == 0 {
            break;
        }
    }
    Ok(written)
}
