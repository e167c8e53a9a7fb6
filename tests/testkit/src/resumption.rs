//! A TLS client that keeps its sessions between connections, in memory, and
//! says whether each connection resumed one: for tests of session
//! resumption across workers, reloads and binary upgrades.
//!
//! A TLS 1.3 server sends its tickets after the handshake: read from a
//! connection (a response) before the next one, or it has nothing to
//! resume with.

use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, StreamOwned};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Connections sharing one session store.
#[derive(Clone)]
pub struct ResumingClient {
    config: Arc<ClientConfig>,
}

/// One connection of a [`ResumingClient`], its handshake done.
pub struct TlsSession {
    /// The connection, to write a request and read its response.
    pub stream: StreamOwned<ClientConnection, TcpStream>,
}

impl ResumingClient {
    /// A client trusting `roots`, with TLS 1.2 and 1.3.
    pub fn new(roots: impl IntoIterator<Item = CertificateDer<'static>>) -> Self {
        Self::with_versions(roots, rustls::DEFAULT_VERSIONS)
    }

    /// A client trusting `roots`, offering `versions` only.
    pub fn with_versions(
        roots: impl IntoIterator<Item = CertificateDer<'static>>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Self {
        let mut store = rustls::RootCertStore::empty();
        for root in roots {
            store.add(root).expect("a usable root certificate");
        }
        let mut config = ClientConfig::builder_with_protocol_versions(versions)
            .with_root_certificates(store)
            .with_no_client_auth();
        config.resumption = Resumption::in_memory_sessions(64);
        ResumingClient {
            config: Arc::new(config),
        }
    }

    /// The configuration every connection uses (its session store is the
    /// client's).
    pub fn config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.config)
    }

    /// Connects to `addr`, names `server_name` (SNI and verification), and
    /// completes the handshake.
    pub fn connect(&self, addr: SocketAddr, server_name: &str) -> io::Result<TlsSession> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let conn = ClientConnection::new(self.config(), name).map_err(io::Error::other)?;
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(TlsSession { stream })
    }
}

impl TlsSession {
    /// Whether the handshake resumed a session rather than a full one.
    pub fn resumed(&self) -> bool {
        self.stream.conn.handshake_kind() == Some(HandshakeKind::Resumed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::ServerConfig;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A loopback TLS server with rustls's own ticketer, answering `hello`
    /// to each connection; returns its address and certificate.
    fn server(connections: usize) -> (SocketAddr, CertificateDer<'static>) {
        let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = issued.cert.der().clone();
        let key =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.signing_key.serialize_der()));
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for tcp in listener.incoming().take(connections) {
                let conn = rustls::ServerConnection::new(Arc::clone(&config)).unwrap();
                let mut stream = StreamOwned::new(conn, tcp.unwrap());
                let _ = stream.write_all(b"hello");
                stream.conn.send_close_notify();
                let _ = stream.flush();
            }
        });
        (addr, cert)
    }

    fn resumes_after_the_first(versions: &[&'static rustls::SupportedProtocolVersion]) {
        let (addr, cert) = server(3);
        let client = ResumingClient::with_versions([cert], versions);
        let mut resumed = Vec::new();
        for _ in 0..3 {
            let mut session = client.connect(addr, "localhost").unwrap();
            resumed.push(session.resumed());
            let mut got = Vec::new();
            session.stream.read_to_end(&mut got).unwrap();
            assert_eq!(got, b"hello");
        }
        assert_eq!(resumed, [false, true, true]);
    }

    #[test]
    fn tls13_connections_after_the_first_resume() {
        resumes_after_the_first(&[&rustls::version::TLS13]);
    }

    #[test]
    fn tls12_connections_after_the_first_resume() {
        resumes_after_the_first(&[&rustls::version::TLS12]);
    }

    #[test]
    fn another_client_has_nothing_to_resume() {
        let (addr, cert) = server(2);
        let first = ResumingClient::new([cert.clone()]);
        let mut session = first.connect(addr, "localhost").unwrap();
        session.stream.read_to_end(&mut Vec::new()).unwrap();
        let other = ResumingClient::new([cert]);
        assert!(!other.connect(addr, "localhost").unwrap().resumed());
    }
}
