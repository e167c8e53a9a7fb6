//! TLS to an upstream group's servers: one rustls client configuration per
//! group and configuration (its session cache shared by every connection,
//! so reconnects resume), the name each server is verified by, and failures
//! told in words an operator can act on.

use prefork_shared::config::{server_host, Server, TlsRoots, UpstreamTls};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use std::io;
use std::sync::{Arc, OnceLock};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Why an HTTP/2 handshake failed when the server does not take ALPN `h2`.
const NOT_H2: &str =
    "the server does not speak HTTP/2: it did not choose ALPN h2 (the group's protocol is \"h2\")";

/// The TLS side of one upstream group.
pub(crate) struct GroupTls {
    /// The client configuration, or why it could not be made.
    connector: Result<TlsConnector, String>,
    /// The same offering ALPN `h2` alone, for a group whose protocol is
    /// `h2` (its health checks keep the HTTP/1.1 one).
    h2: Option<Result<TlsConnector, String>>,
    /// The name sent and verified for each server (same index as the
    /// group's servers); `None`: not a name TLS can verify.
    names: Vec<Option<ServerName<'static>>>,
    /// Where the trust roots come from, for messages.
    roots: String,
}

impl GroupTls {
    /// The TLS side of a group with `servers`, configured by `tls`; `h2`:
    /// its requests go over HTTP/2 (ALPN `h2`).
    pub(crate) fn new(tls: &UpstreamTls, servers: &[Server], h2: bool) -> Self {
        crate::io::tls_random::seed_random();
        let names = servers
            .iter()
            .map(|s| {
                let name = tls
                    .server_name
                    .clone()
                    .unwrap_or_else(|| server_host(&s.name).to_owned());
                ServerName::try_from(name).ok()
            })
            .collect();
        let (roots, described) = match &tls.roots {
            TlsRoots::System => (system_roots(), "the system's roots".to_owned()),
            TlsRoots::Ca { file, certs } => {
                let mut store = RootCertStore::empty();
                store.add_parsable_certificates(
                    certs.iter().map(|c| CertificateDer::from(c.0.clone())),
                );
                (Arc::new(store), format!("tls_ca {}", file.display()))
            }
        };
        let connector = |alpn: &[u8]| {
            client_config(roots.clone(), alpn).map(|c| TlsConnector::from(Arc::new(c)))
        };
        GroupTls {
            h2: h2.then(|| connector(b"h2")),
            connector: connector(b"http/1.1"),
            names,
            roots: described,
        }
    }

    /// The name server `index` is verified by, for messages.
    pub(crate) fn name(&self, index: usize) -> String {
        match self.names.get(index) {
            Some(Some(name)) => name.to_str().into_owned(),
            _ => "?".to_owned(),
        }
    }

    /// Runs the TLS handshake with server `index` over `tcp`.
    pub(crate) async fn handshake(
        &self,
        index: usize,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, String> {
        self.connect(&self.connector, index, tcp).await
    }

    /// Runs the TLS handshake with server `index` over `tcp` for HTTP/2:
    /// ALPN offers `h2` alone, and a server that does not choose it fails.
    pub(crate) async fn handshake_h2(
        &self,
        index: usize,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, String> {
        let Some(connector) = &self.h2 else {
            return Err("the group does not speak HTTP/2".to_owned());
        };
        match self.connect(connector, index, tcp).await {
            Ok(stream) if stream.get_ref().1.alpn_protocol() == Some(b"h2") => Ok(stream),
            Ok(_) => Err(NOT_H2.to_owned()),
            // A server with ALPN and no h2 among its protocols says so.
            Err(why) if why.contains("NoApplicationProtocol") => Err(NOT_H2.to_owned()),
            Err(why) => Err(why),
        }
    }

    async fn connect(
        &self,
        connector: &Result<TlsConnector, String>,
        index: usize,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, String> {
        let connector = connector.as_ref().map_err(Clone::clone)?;
        let Some(name) = self.names.get(index).cloned().flatten() else {
            return Err("the server's name is not one TLS can verify".to_owned());
        };
        connector
            .connect(name, tcp)
            .await
            .map_err(|e| self.explain(&e))
    }

    /// Why a handshake failed, in words: a certificate problem says what
    /// was checked against what.
    fn explain(&self, e: &io::Error) -> String {
        let tls = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
        match tls {
            Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => format!(
                "certificate verify failed: unknown issuer (not signed by {})",
                self.roots
            ),
            Some(rustls::Error::InvalidCertificate(why)) => {
                format!("certificate verify failed: {why}")
            }
            Some(other) => other.to_string(),
            None => e.to_string(),
        }
    }
}

/// A client configuration with rustls's defaults (TLS 1.2 and 1.3, its
/// cipher suites, a session cache for resumption) and ALPN `alpn`.
fn client_config(roots: Arc<RootCertStore>, alpn: &[u8]) -> Result<ClientConfig, String> {
    let provider = Arc::new(crate::io::tls_suites::provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// The system's trust roots, loaded once per worker process (the files
/// are readable by any user); those that fail to parse are left out.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut store = RootCertStore::empty();
            store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            Arc::new(store)
        })
        .clone()
}
