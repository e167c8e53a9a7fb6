//! The two-way byte tunnel an upgraded connection (WebSocket) becomes after
//! a 101 from the upstream.

use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep, timeout, Instant};

/// Size of each direction's copy buffer.
const TUNNEL_BUFFER: usize = 16 * 1024;

/// Bytes carried each way by a finished tunnel.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Carried {
    /// From the client to the upstream.
    pub(crate) up: u64,
    /// From the upstream to the client.
    pub(crate) down: u64,
}

/// Copies bytes both ways until both sides have closed, either fails, or
/// nothing moves either way for `idle`.
///
/// When one side ends its half (EOF), the other side's write half is shut
/// down so it sees the end too, and the opposite direction keeps flowing:
/// a WebSocket close handshake or a half-closed TCP peer finishes cleanly.
pub(crate) async fn run<CR, CW, UR, UW>(
    client_rd: &mut CR,
    client_wr: &mut CW,
    up_rd: &mut UR,
    up_wr: &mut UW,
    idle: Duration,
) -> Carried
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    UR: AsyncRead + Unpin,
    UW: AsyncWrite + Unpin,
{
    let mut carried = Carried::default();
    let mut from_client = vec![0u8; TUNNEL_BUFFER];
    let mut from_up = vec![0u8; TUNNEL_BUFFER];
    let (mut client_open, mut up_open) = (true, true);
    let deadline = sleep(idle);
    tokio::pin!(deadline);
    while client_open || up_open {
        tokio::select! {
            read = client_rd.read(&mut from_client), if client_open => {
                match forward(read, &from_client, up_wr, idle).await {
                    Ok(0) => client_open = false,
                    Ok(n) => carried.up += n as u64,
                    Err(_) => break,
                }
            }
            read = up_rd.read(&mut from_up), if up_open => {
                match forward(read, &from_up, client_wr, idle).await {
                    Ok(0) => up_open = false,
                    Ok(n) => carried.down += n as u64,
                    Err(_) => break,
                }
            }
            _ = &mut deadline => break,
        }
        deadline.as_mut().reset(Instant::now() + idle);
    }
    carried
}

/// Writes what one read returned to the other side; on EOF shuts that
/// side's write half. Returns the bytes moved (0 at EOF).
async fn forward<W: AsyncWrite + Unpin>(
    read: io::Result<usize>,
    buf: &[u8],
    to: &mut W,
    idle: Duration,
) -> io::Result<usize> {
    let n = read?;
    let write = async {
        if n == 0 {
            to.shutdown().await
        } else {
            to.write_all(&buf[..n]).await?;
            // A TLS stream may hold records back until flushed.
            to.flush().await
        }
    };
    match timeout(idle, write).await {
        Ok(result) => result.map(|()| n),
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test]
    async fn copies_both_ways_and_propagates_each_half_close() {
        let (mut client, client_side) = duplex(64);
        let (mut server, up_side) = duplex(64);
        let (mut c_rd, mut c_wr) = tokio::io::split(client_side);
        let (mut u_rd, mut u_wr) = tokio::io::split(up_side);
        let tunnel = tokio::spawn(async move {
            run(
                &mut c_rd,
                &mut c_wr,
                &mut u_rd,
                &mut u_wr,
                Duration::from_secs(5),
            )
            .await
        });
        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        // The client finishes sending; the server still answers.
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        server.write_all(b"pong!").await.unwrap();
        let mut pong = [0u8; 5];
        client.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"pong!");
        // The server saw the client's EOF, then closes its half too.
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        server.shutdown().await.unwrap();
        assert_eq!(tunnel.await.unwrap(), Carried { up: 4, down: 5 });
        assert_eq!(client.read(&mut pong).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn an_idle_tunnel_ends_after_the_timeout() {
        let (_client, client_side) = duplex(64);
        let (_server, up_side) = duplex(64);
        let (mut c_rd, mut c_wr) = tokio::io::split(client_side);
        let (mut u_rd, mut u_wr) = tokio::io::split(up_side);
        let carried = run(
            &mut c_rd,
            &mut c_wr,
            &mut u_rd,
            &mut u_wr,
            Duration::from_millis(50),
        )
        .await;
        assert_eq!(carried, Carried::default());
    }
}
