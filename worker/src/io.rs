//! Small I/O helpers shared by the client and upstream sides.

use std::io::{self, IoSlice};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Size of one body read, and the spare room kept for it.
pub(crate) const BODY_READ: usize = 256 * 1024;

/// Writes `head` then `body` with vectored writes, so a head and the body
/// bytes already at hand usually leave in one system call.
pub(crate) async fn write_two<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut head: &[u8],
    mut body: &[u8],
) -> io::Result<()> {
    while !head.is_empty() || !body.is_empty() {
        let n = if head.is_empty() {
            w.write(body).await?
        } else if body.is_empty() {
            w.write(head).await?
        } else {
            w.write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
                .await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(head.len());
        head = &head[from_head..];
        body = &body[n - from_head..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A writer that accepts at most `chunk` bytes per call.
    struct Trickle {
        chunk: usize,
        written: Vec<u8>,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.chunk);
            self.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn partial_writes_keep_order() {
        for chunk in 1..8 {
            let mut w = Trickle {
                chunk,
                written: Vec::new(),
            };
            write_two(&mut w, b"head", b"body!").await.unwrap();
            assert_eq!(w.written, b"headbody!");
        }
    }
}
