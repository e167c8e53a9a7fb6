//! Tracking where a body ends while its bytes are forwarded unchanged.

use super::chunked::{ChunkError, ChunkedDecoder};
use super::Framing;

/// The part of a body still to come.
#[derive(Debug, Clone)]
pub(crate) enum BodyCursor {
    /// The body is complete.
    Done,
    /// This many bytes remain.
    Length(u64),
    /// A chunked body, validated as it passes.
    Chunked(ChunkedDecoder),
    /// Everything until the connection closes.
    UntilClose,
}

impl BodyCursor {
    /// A cursor at the start of a request body framed by `framing`, whose
    /// chunk data may not exceed `limit` bytes (0: no limit); a length is
    /// checked against the limit before the body is read.
    pub(crate) fn request(framing: Framing, limit: u64) -> Self {
        match framing {
            Framing::Chunked => BodyCursor::Chunked(ChunkedDecoder::with_limit(limit)),
            other => BodyCursor::new(other),
        }
    }

    /// A cursor at the start of a body framed by `framing`.
    pub(crate) fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty | Framing::Length(0) => BodyCursor::Done,
            Framing::Length(n) => BodyCursor::Length(n),
            Framing::Chunked => BodyCursor::Chunked(ChunkedDecoder::default()),
            Framing::Close => BodyCursor::UntilClose,
        }
    }

    /// How many bytes at the start of `input` belong to the body; they may
    /// be forwarded as they are. Fewer than all of `input` only when the body
    /// ends inside it.
    pub(crate) fn take(&mut self, input: &[u8]) -> Result<usize, ChunkError> {
        match self {
            BodyCursor::Done => Ok(0),
            BodyCursor::Length(remaining) => {
                let n = (*remaining).min(input.len() as u64);
                *remaining -= n;
                if *remaining == 0 {
                    *self = BodyCursor::Done;
                }
                // n <= input.len(), so it fits in usize.
                Ok(n as usize)
            }
            BodyCursor::Chunked(decoder) => {
                let n = decoder.consume(input)?;
                if decoder.is_done() {
                    *self = BodyCursor::Done;
                }
                Ok(n)
            }
            BodyCursor::UntilClose => Ok(input.len()),
        }
    }

    /// Whether the whole body has been taken.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self, BodyCursor::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_chunks_stop_at_the_end() {
        let mut c = BodyCursor::new(Framing::Length(5));
        assert_eq!(c.take(b"abc"), Ok(3));
        assert!(!c.is_done());
        assert_eq!(c.take(b"defGET"), Ok(2));
        assert!(c.is_done());
        assert_eq!(c.take(b"more"), Ok(0));

        assert!(BodyCursor::new(Framing::Empty).is_done());
        assert!(BodyCursor::new(Framing::Length(0)).is_done());

        let mut c = BodyCursor::new(Framing::Chunked);
        assert_eq!(c.take(b"1\r\na\r\n0\r\n\r\nNEXT"), Ok(11));
        assert!(c.is_done());

        let mut c = BodyCursor::new(Framing::Close);
        assert_eq!(c.take(b"all of it"), Ok(9));
        assert!(!c.is_done());
    }
}
