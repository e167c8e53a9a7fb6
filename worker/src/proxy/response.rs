//! Reading an upstream's response head: the final one, after any interim
//! (1xx) responses, which are relayed or dropped.

use super::downstream::ResponseSink;
use crate::http::response::{self, MAX_RESPONSE_HEADERS};
use crate::http::{with_header_slots, Framing};
use crate::upstream::error::UpstreamError;
use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The facts of a final response head, whose status line and end-to-end
/// fields the sink already took.
pub(super) struct ResponseMeta {
    /// The status code.
    pub(super) status: u16,
    /// How its body is framed.
    pub(super) framing: Framing,
    /// The `Content-Length` it announced, if any.
    pub(super) content_length: Option<u64>,
    /// Whether the server keeps the connection open afterwards.
    pub(super) keep_alive: bool,
    /// Bodyless, though its head announces a body (see [`response::ResponseHead`]).
    pub(super) announces_absent_body: bool,
}

/// A response head read from the upstream.
pub(super) enum Head {
    /// An interim response to relay to the client: the sink took its head.
    Interim,
    /// The final response.
    Final(ResponseMeta),
}

/// What the response to a request may be, for reading its head.
#[derive(Clone, Copy)]
pub(super) struct Expecting<'a> {
    /// The request was `HEAD`: the response has no body.
    pub(super) is_head: bool,
    /// The request asked to upgrade: a 101 is its final response.
    pub(super) upgrade: bool,
    /// Interim responses other than 100 are relayed (see
    /// [`ResponseSink::forwards_interim`]).
    pub(super) forward_interim: bool,
    /// The `Via` pseudonym, if any.
    pub(super) via: Option<&'a str>,
    /// Most bytes one read of the head takes: with splicing on, little more
    /// than a head, so that the body bytes read along with it (and so copied)
    /// are few.
    pub(super) read_size: usize,
}

/// Reads the next response head to pass on: the final one, or an interim
/// (1xx) response to relay when `forward_interim` (the others are dropped).
/// On success the sink took the head's status line and end-to-end fields,
/// consumed from `buf`. On failure, tells whether any response byte had
/// arrived.
pub(super) async fn read_response_head<R, S>(
    upstream: &mut R,
    buf: &mut BytesMut,
    sink: &mut S,
    expecting: Expecting<'_>,
) -> Result<Head, (UpstreamError, bool)>
where
    R: AsyncRead + Unpin,
    S: ResponseSink,
{
    let mut any_bytes = !buf.is_empty();
    loop {
        if !buf.is_empty() {
            let parsed = with_header_slots(MAX_RESPONSE_HEADERS, |slots| {
                let Some(head) = response::parse(buf, expecting.is_head, expecting.upgrade, slots)?
                else {
                    return Ok(None);
                };
                sink.start_head(&head, expecting.via);
                let meta = ResponseMeta {
                    status: head.status,
                    framing: head.framing,
                    content_length: head.content_length,
                    keep_alive: head.keep_alive,
                    announces_absent_body: head.announces_absent_body,
                };
                Ok(Some((head.len, meta)))
            });
            match parsed {
                Ok(Some((len, meta))) => {
                    buf.advance(len);
                    if meta.status >= 200 || meta.status == 101 {
                        return Ok(Head::Final(meta));
                    }
                    if expecting.forward_interim && meta.status != 100 {
                        return Ok(Head::Interim);
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Err((UpstreamError::BadResponse(e), true)),
            }
        }
        buf.reserve(expecting.read_size);
        match upstream.read_buf(&mut buf.limit(expecting.read_size)).await {
            Ok(0) => return Err((UpstreamError::Closed, any_bytes)),
            Ok(_) => any_bytes = true,
            Err(e) => return Err((UpstreamError::Read(e), any_bytes)),
        }
    }
}
