//! Per-worker free lists of the buffers client connections use, so that
//! accepting a connection and reading a request allocate nothing once the
//! worker is warm (nginx keeps similar free lists of its buffers).
//!
//! The lists are bounded, and buffers that grew large (a long head, a
//! request body) are freed rather than kept, so idle memory stays small.

use crate::observe::access_log::RequestInfo;
use bytes::BytesMut;
use std::cell::RefCell;

/// Size of a read buffer for request heads (enough for most heads).
pub(crate) const HEAD_BUFFER: usize = 8 * 1024;
/// Most read buffers kept free: those of the connections reading a head
/// at the same moment, not of every idle one.
const MAX_FREE_HEADS: usize = 64;
/// Most sets of per-connection scratch buffers kept free.
const MAX_FREE_SCRATCH: usize = 256;
/// A scratch buffer that grew beyond this is freed instead of kept.
const MAX_SCRATCH_CAPACITY: usize = 4 * 1024;

/// The small buffers a connection rewrites for every request.
#[derive(Default)]
pub(crate) struct Scratch {
    /// The head forwarded upstream (kept for a retry).
    pub(crate) request_head: Vec<u8>,
    /// The head of the response being written to the client.
    pub(crate) response_head: Vec<u8>,
    /// The current request's id.
    pub(crate) request_id: String,
    /// The current request's fields for the access log.
    pub(crate) info: RequestInfo,
}

impl Scratch {
    fn is_small(&self) -> bool {
        self.request_head.capacity() <= MAX_SCRATCH_CAPACITY
            && self.response_head.capacity() <= MAX_SCRATCH_CAPACITY
            && self.info.capacity() <= MAX_SCRATCH_CAPACITY
    }
}

/// The free lists of one worker process.
#[derive(Default)]
pub(crate) struct Buffers {
    heads: RefCell<Vec<BytesMut>>,
    scratch: RefCell<Vec<Scratch>>,
}

impl Buffers {
    /// An empty read buffer with room for at least [`HEAD_BUFFER`] bytes.
    pub(crate) fn take_head(&self) -> BytesMut {
        self.heads
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(HEAD_BUFFER))
    }

    /// Gives back a read buffer whose content was consumed.
    pub(crate) fn put_head(&self, mut buf: BytesMut) {
        buf.clear();
        // Reclaiming moves the start back to the allocation's start (no copy:
        // the buffer is empty), so the capacity seen is the whole allocation.
        if !buf.try_reclaim(HEAD_BUFFER) || buf.capacity() > 2 * HEAD_BUFFER {
            return;
        }
        let mut heads = self.heads.borrow_mut();
        if heads.len() < MAX_FREE_HEADS {
            heads.push(buf);
        }
    }

    /// A set of scratch buffers for a new connection.
    pub(crate) fn take_scratch(&self) -> Scratch {
        self.scratch.borrow_mut().pop().unwrap_or_default()
    }

    /// Gives back the scratch buffers of a closed connection.
    pub(crate) fn put_scratch(&self, mut scratch: Scratch) {
        if !scratch.is_small() {
            return;
        }
        scratch.info.clear();
        let mut free = self.scratch.borrow_mut();
        if free.len() < MAX_FREE_SCRATCH {
            free.push(scratch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    #[test]
    fn a_consumed_head_buffer_is_reused_whole() {
        let buffers = Buffers::default();
        let mut buf = buffers.take_head();
        let at = buf.as_ptr();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        buf.advance(18);
        buffers.put_head(buf);
        let again = buffers.take_head();
        assert_eq!(again.as_ptr(), at);
        assert!(again.is_empty());
        assert!(again.capacity() >= HEAD_BUFFER);
    }

    #[test]
    fn grown_buffers_are_not_kept() {
        let buffers = Buffers::default();
        buffers.put_head(BytesMut::with_capacity(256 * 1024));
        assert!(buffers.heads.borrow().is_empty());
        let mut scratch = buffers.take_scratch();
        scratch.request_head.reserve(64 * 1024);
        buffers.put_scratch(scratch);
        assert!(buffers.scratch.borrow().is_empty());
        let mut scratch = buffers.take_scratch();
        scratch
            .request_head
            .extend_from_slice(b"GET / HTTP/1.1\r\n");
        buffers.put_scratch(scratch);
        assert_eq!(buffers.scratch.borrow().len(), 1);
    }

    #[test]
    fn free_lists_are_bounded() {
        let buffers = Buffers::default();
        for _ in 0..MAX_FREE_HEADS + 5 {
            buffers.put_head(BytesMut::with_capacity(HEAD_BUFFER));
        }
        assert_eq!(buffers.heads.borrow().len(), MAX_FREE_HEADS);
    }
}
