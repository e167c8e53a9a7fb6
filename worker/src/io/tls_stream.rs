//! A client's TLS stream once its handshake is done: rustls's
//! `ServerConnection` over the client socket. It is ours rather than
//! tokio-rustls's `TlsStream` because an idle connection is parked
//! (`downstream::park`): it comes apart into its socket and its rustls
//! state, and is put together again when the client sends its next request,
//! which tokio-rustls's stream cannot be.
//!
//! Reads and writes follow tokio-rustls's: a read fills from rustls's
//! plaintext, reading and decrypting records from the socket while there
//! is none; a write hands plaintext to rustls and sends records at once,
//! as far as the socket takes them.
//!
//! The handshake is ours too: what rustls queues once it is done (the TLS
//! 1.3 session ticket) is not sent on its own but with the first response,
//! in the same system call, or before the stream first waits for the
//! client.

use super::client_socket::ClientSocket;
use super::tls_renewal;
use rustls::ServerConnection;
use std::io::{self, BufRead, IoSlice, Read, Write};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// TLS over a client socket.
pub(crate) struct TlsIo {
    socket: ClientSocket,
    /// Boxed: it is large, and a parked connection keeps this box as it is.
    conn: Box<ServerConnection>,
    /// The client closed its side (or the read ended in an error).
    read_closed: bool,
    /// `close_notify` was queued.
    write_closed: bool,
}

impl TlsIo {
    /// The stream of `conn`, whose handshake is done, over `socket`.
    pub(crate) fn new(socket: ClientSocket, conn: Box<ServerConnection>) -> Self {
        TlsIo {
            socket,
            conn,
            read_closed: false,
            write_closed: false,
        }
    }

    /// Completes the handshake of `conn`, a new connection on `socket` whose
    /// first bytes, `received`, were read already (to tell TLS from plain
    /// HTTP: see `downstream::tls`). Errors as tokio-rustls's: `InvalidData`
    /// for a TLS error (after the alert saying so, if the socket takes it),
    /// `UnexpectedEof` for a client that closed first.
    pub(crate) async fn accept(
        socket: ClientSocket,
        conn: Box<ServerConnection>,
        received: Vec<u8>,
    ) -> io::Result<TlsIo> {
        let mut io = TlsIo::new(socket, conn);
        let mut received = Some(received);
        std::future::poll_fn(|cx| {
            // Given to rustls before anything is read from the socket, and
            // freed then.
            if let Some(bytes) = received.take() {
                let mut rest = &bytes[..];
                // rustls takes nothing after the client's close_notify.
                while !rest.is_empty() && io.conn.read_tls(&mut rest)? > 0 {
                    io.process(cx)?;
                }
            }
            io.poll_handshake(cx)
        })
        .await?;
        Ok(io)
    }

    /// Moves the handshake on: sends what rustls has for the client, reads
    /// what it needs, until it is done.
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.conn.is_handshaking() {
            if self.conn.wants_write() {
                if ready!(self.write_io(cx))? == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
            } else if ready!(self.read_io(cx))? == 0 {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The socket and rustls's state.
    pub(crate) fn get_ref(&self) -> (&ClientSocket, &ServerConnection) {
        (&self.socket, &self.conn)
    }

    /// Encrypts what `bufs` hold without sending it: the records leave
    /// with the next write, flush or shutdown. How many bytes rustls took
    /// (its buffer is bounded).
    pub(crate) fn queue(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.conn.writer().write_vectored(bufs)
    }

    /// The socket and rustls's state, mutably.
    pub(crate) fn get_mut(&mut self) -> (&mut ClientSocket, &mut ServerConnection) {
        (&mut self.socket, &mut self.conn)
    }

    /// Whether rustls holds nothing for this connection: no plaintext to
    /// read, no record to send.
    pub(crate) fn is_drained(&mut self) -> bool {
        // Processed first: processing may queue a record to send.
        tls_renewal::processing(&mut self.conn)
            .is_ok_and(|state| state.plaintext_bytes_to_read() == 0)
            && !self.conn.wants_write()
    }

    /// The socket and rustls's state, apart.
    pub(crate) fn into_parts(self) -> (ClientSocket, Box<ServerConnection>) {
        (self.socket, self.conn)
    }

    /// Reads and decrypts what the socket has; `Ok(0)` at its end.
    fn read_io(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut reader = SyncAdapter {
            socket: &self.socket,
            cx,
            flags: 0,
        };
        let n = match self.conn.read_tls(&mut reader) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            Err(e) => return Poll::Ready(Err(e)),
        };
        Poll::Ready(self.process(cx).map(|()| n))
    }

    /// Lets rustls process the records read. A TLS error is `InvalidData`,
    /// after the alert rustls queued to say why (if the socket takes it).
    fn process(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if let Err(e) = tls_renewal::processing(&mut self.conn) {
            let _ = self.write_io(cx);
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        Ok(())
    }

    /// Sends queued TLS records.
    fn write_io(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.write_io_with(cx, 0)
    }

    /// Sends queued TLS records with `flags` (`MSG_MORE` for the last ones
    /// before the FIN: the kernel holds a partial last segment for it).
    fn write_io_with(
        &mut self,
        cx: &mut Context<'_>,
        flags: libc::c_int,
    ) -> Poll<io::Result<usize>> {
        let mut writer = SyncAdapter {
            socket: &self.socket,
            cx,
            flags,
        };
        match self.conn.write_tls(&mut writer) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            done => Poll::Ready(done),
        }
    }

    /// Sends queued records until none is left or the socket is full:
    /// whether it was full.
    fn send_queued(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.write_io(cx) {
                Poll::Ready(Ok(0)) | Poll::Pending => return Ok(true),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Err(e),
            }
        }
        Ok(false)
    }
}

impl AsyncRead for TlsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut pending = false;
        while !this.read_closed && this.conn.wants_read() {
            match this.read_io(cx) {
                Poll::Ready(Ok(0)) => {
                    this.read_closed = true;
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => {
                    pending = true;
                    break;
                }
                Poll::Ready(Err(e)) => {
                    this.read_closed = true;
                    return Poll::Ready(Err(e));
                }
            }
        }
        let mut reader = this.conn.reader();
        let mut filled = false;
        let mut empty = false;
        while buf.remaining() > 0 {
            match reader.fill_buf() {
                Ok([]) => break,
                Ok(chunk) => {
                    let n = chunk.len().min(buf.remaining());
                    buf.put_slice(&chunk[..n]);
                    reader.consume(n);
                    filled = true;
                }
                // Nothing decrypted yet, or more after what was taken.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    empty = !filled;
                    break;
                }
                Err(_) if filled => break,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        if empty {
            if !pending {
                // rustls wants no read yet has nothing: try again.
                cx.waker().wake_by_ref();
            } else if this.conn.wants_write() {
                // Never wait for the client with records it has not got
                // (the session ticket the handshake left).
                this.send_queued(cx)?;
            }
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        loop {
            let written = this.conn.writer().write_vectored(bufs)?;
            let full = this.send_queued(cx)?;
            return match (written, full) {
                (0, true) => Poll::Pending,
                // rustls's send buffer was full: it has room now.
                (0, false) => continue,
                (n, _) => Poll::Ready(Ok(n)),
            };
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.conn.writer().flush()?;
        while this.conn.wants_write() {
            if ready!(this.write_io(cx))? == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !std::mem::replace(&mut this.write_closed, true) {
            this.conn.send_close_notify();
        }
        // The records and the FIN leave in one segment when they fit.
        while this.conn.wants_write() {
            if ready!(this.write_io_with(cx, libc::MSG_MORE))? == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
        }
        Poll::Ready(this.socket.shut_write())
    }
}

/// The socket as rustls's blocking `Read` and `Write`: `WouldBlock` when it
/// must wait (registered to be woken).
struct SyncAdapter<'a, 'b> {
    socket: &'a ClientSocket,
    cx: &'a mut Context<'b>,
    /// `send` flags for writes.
    flags: libc::c_int,
}

impl Read for SyncAdapter<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut &*self.socket).poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for SyncAdapter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self.socket.poll_send_vectored(self.cx, bufs, self.flags) {
            Poll::Ready(done) => done,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, ServerConfig, StreamOwned};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let issued = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        let cert = issued.cert.der().clone();
        let key = PrivatePkcs8KeyDer::from(issued.signing_key.serialize_der());
        let server = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], PrivateKeyDer::Pkcs8(key))
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::clone(&cert)).unwrap();
        let client = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// A client connection to `a.test`.
    fn client(config: Arc<ClientConfig>) -> ClientConnection {
        ClientConnection::new(config, ServerName::try_from("a.test").unwrap()).unwrap()
    }

    /// The stream of the next connection on `listener`, its handshake done,
    /// with its first `read_first` bytes read beforehand (as
    /// `downstream::tls` reads them).
    async fn accepted(
        listener: &TcpListener,
        config: Arc<ServerConfig>,
        read_first: usize,
    ) -> TlsIo {
        let (mut socket, _) = listener.accept().unwrap();
        let mut first = vec![0u8; read_first];
        socket.read_exact(&mut first).unwrap();
        socket.set_nonblocking(true).unwrap();
        let conn = ServerConnection::new(config).unwrap();
        TlsIo::accept(ClientSocket::new(socket), Box::new(conn), first)
            .await
            .expect("the handshake")
    }

    /// A client that sends `sent` over TLS to `addr`, then reads until the
    /// server's close_notify: what it read, or the error a truncation is.
    fn sending(
        addr: std::net::SocketAddr,
        config: Arc<ClientConfig>,
        sent: &'static [u8],
    ) -> std::thread::JoinHandle<io::Result<Vec<u8>>> {
        std::thread::spawn(move || {
            let conn = client(config);
            let mut tls = StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
            tls.write_all(sent).unwrap();
            let mut all = Vec::new();
            tls.read_to_end(&mut all).map(|_| all)
        })
    }

    /// Counts the TLS 1.3 tickets a client was given.
    #[derive(Debug)]
    struct Tickets {
        inner: rustls::client::ClientSessionMemoryCache,
        given: std::sync::atomic::AtomicUsize,
    }

    impl rustls::client::ClientSessionStore for Tickets {
        fn set_kx_hint(&self, name: ServerName<'static>, group: rustls::NamedGroup) {
            self.inner.set_kx_hint(name, group)
        }
        fn kx_hint(&self, name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
            self.inner.kx_hint(name)
        }
        fn set_tls12_session(
            &self,
            name: ServerName<'static>,
            value: rustls::client::Tls12ClientSessionValue,
        ) {
            self.inner.set_tls12_session(name, value)
        }
        fn tls12_session(
            &self,
            name: &ServerName<'_>,
        ) -> Option<rustls::client::Tls12ClientSessionValue> {
            self.inner.tls12_session(name)
        }
        fn remove_tls12_session(&self, name: &ServerName<'static>) {
            self.inner.remove_tls12_session(name)
        }
        fn insert_tls13_ticket(
            &self,
            name: ServerName<'static>,
            value: rustls::client::Tls13ClientSessionValue,
        ) {
            self.given.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.insert_tls13_ticket(name, value)
        }
        fn take_tls13_ticket(
            &self,
            name: &ServerName<'static>,
        ) -> Option<rustls::client::Tls13ClientSessionValue> {
            self.inner.take_tls13_ticket(name)
        }
    }

    #[tokio::test]
    async fn the_ticket_the_handshake_leaves_reaches_a_client_that_waits_for_it() {
        let (server_config, client_config) = configs();
        let tickets = Arc::new(Tickets {
            inner: rustls::client::ClientSessionMemoryCache::new(4),
            given: Default::default(),
        });
        let mut client_config = (*client_config).clone();
        client_config.resumption = rustls::client::Resumption::store(tickets.clone() as Arc<_>);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let given = tickets.clone();
        let client = std::thread::spawn(move || {
            let mut conn = client(Arc::new(client_config));
            let mut socket = TcpStream::connect(addr).unwrap();
            socket
                .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            conn.complete_io(&mut socket).unwrap();
            // Sends nothing until the ticket came: the server must not
            // keep it for a response that never comes.
            while given.given.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                conn.read_tls(&mut socket)
                    .expect("the ticket, before the timeout");
                conn.process_new_packets().unwrap();
            }
            let mut tls = StreamOwned::new(conn, socket);
            tls.write_all(b"thanks").unwrap();
        });
        let mut stream = accepted(&listener, server_config, 0).await;
        assert_eq!(read_exactly(&mut stream, 6).await, b"thanks");
        client.join().unwrap();
    }

    #[tokio::test]
    async fn the_handshake_goes_on_from_the_first_bytes_read_before_it() {
        let (server_config, client_config) = configs();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = sending(listener.local_addr().unwrap(), client_config, b"hello");
        // A part of the ClientHello read first, the rest left on the socket.
        let mut stream = accepted(&listener, server_config, 10).await;
        assert_eq!(read_exactly(&mut stream, 5).await, b"hello");
        stream.shutdown().await.unwrap();
        let rest = client.join().unwrap().expect("a clean end");
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn first_bytes_that_are_not_a_handshake_fail_it_as_invalid_data() {
        let (server_config, _) = configs();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (socket, _) = listener.accept().unwrap();
        socket.set_nonblocking(true).unwrap();
        let conn = ServerConnection::new(server_config).unwrap();
        let first = b"\x16\x03\x01\x00\x05garbage".to_vec();
        let accept = TlsIo::accept(ClientSocket::new(socket), Box::new(conn), first);
        // The client sends nothing: only the bytes given can end it.
        let failed = tokio::time::timeout(std::time::Duration::from_secs(10), accept)
            .await
            .expect("failed from the bytes given, without waiting for more");
        let e = failed.err().expect("no handshake from garbage");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }

    #[tokio::test]
    async fn held_records_and_close_notify_leave_together_and_whole() {
        let (server_config, client_config) = configs();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = sending(listener.local_addr().unwrap(), client_config, b"go");
        let mut stream = accepted(&listener, server_config, 0).await;
        assert_eq!(read_exactly(&mut stream, 2).await, b"go");
        // More than one record's worth, to be held then sent.
        let body = vec![7u8; 40_000];
        let held = stream
            .queue(&[IoSlice::new(b"head:"), IoSlice::new(&body)])
            .unwrap();
        assert_eq!(held, 5 + body.len(), "rustls holds it all");
        stream.shutdown().await.unwrap();
        let got = client.join().unwrap().expect("a clean end");
        assert_eq!(got.len(), 5 + body.len());
        assert!(got.starts_with(b"head:") && got[5..].iter().all(|&b| b == 7));
    }

    /// Reads from `stream` until `want` bytes came.
    async fn read_exactly(stream: &mut TlsIo, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < want {
            let mut chunk = [0u8; 64];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the end after {got:?}");
            got.extend_from_slice(&chunk[..n]);
        }
        got
    }

    #[tokio::test]
    async fn a_stream_taken_apart_and_put_together_again_goes_on_and_ends_with_close_notify() {
        let (server_config, client_config) = configs();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let conn = client(client_config);
            let mut tls = StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
            tls.write_all(b"ping").unwrap();
            let mut pong = [0u8; 4];
            tls.read_exact(&mut pong).unwrap();
            tls.write_all(b"again").unwrap();
            // The server's close_notify reads as the end, not an error.
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest).map(|_| rest)
        });
        let mut stream = accepted(&listener, server_config, 0).await;
        assert_eq!(read_exactly(&mut stream, 4).await, b"ping");
        stream.write_all(b"pong").await.unwrap();
        stream.flush().await.unwrap();
        // Parked: the socket leaves the event loop, rustls's state is kept.
        let (socket, conn) = stream.into_parts();
        let socket = socket.into_std();
        let mut stream = TlsIo::new(ClientSocket::new(socket), conn);
        assert_eq!(read_exactly(&mut stream, 5).await, b"again");
        stream.shutdown().await.unwrap();
        let rest = client.join().unwrap().expect("a clean end");
        assert!(rest.is_empty());
    }
}
