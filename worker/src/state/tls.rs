//! The TLS side of one configuration: its certificates by name, the rustls
//! `ServerConfig` built once from them (new connections take the newest
//! configuration's), and which certificate a name belongs to (the SNI
//! choice, and the 421 check of a request's `Host`).

use crate::io::tls_renewal::TicketsOnly;
use crate::io::tls_suites;
use prefork_shared::tls::{Certificate, TlsCipher, TlsSettings, TlsVersion};
use rustc_hash::FxHashMap;
use rustls::crypto::aws_lc_rs::cipher_suite;
use rustls::crypto::aws_lc_rs::sign::any_supported_type;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedCipherSuite};
use std::sync::Arc;

/// The TLS state of one configuration.
pub(crate) struct TlsServer {
    /// What handshakes use.
    pub(crate) config: Arc<ServerConfig>,
    /// What handshakes on `http2` listeners use: ALPN offers `h2` first.
    pub(crate) config_h2: Arc<ServerConfig>,
    /// Which certificate each name belongs to.
    names: Arc<CertNames>,
}

impl TlsServer {
    /// The certificates of `settings` (loaded by the master), with
    /// `ticketer` making session tickets if given (rustls's defaults
    /// otherwise); `None` when there is none.
    pub(crate) fn new(
        settings: &TlsSettings,
        ticketer: Option<Arc<dyn ProducesTickets>>,
    ) -> Result<Option<TlsServer>, rustls::Error> {
        if settings.loaded.is_empty() {
            return Ok(None);
        }
        crate::io::tls_random::seed_random();
        let names = Arc::new(CertNames::new(&settings.loaded));
        let config = server_config(settings, names.clone(), ticketer)?;
        // The same keys, tickets and session store: only ALPN differs.
        let mut h2 = (*config).clone();
        h2.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(TlsServer {
            config,
            config_h2: Arc::new(h2),
            names,
        }))
    }

    /// Whether a request for `host` (lower-cased, without its port) on a
    /// connection whose SNI was `sni` belongs to another certificate than
    /// the one the SNI chose. A connection without SNI, or whose SNI no
    /// certificate covers, is routed by `Host` alone.
    pub(crate) fn misdirected(&self, sni: Option<&str>, host: &str) -> bool {
        let Some(chosen) = sni.and_then(|name| self.names.covering(name)) else {
            return false;
        };
        self.names
            .covering(host)
            .is_some_and(|owner| owner != chosen)
    }
}

/// Builds the rustls configuration for `settings`' certificates, protocol
/// versions and cipher suites (in the server's order if it prefers its
/// own), choosing certificates by SNI through `names`, with ALPN `http/1.1`
/// and the session tickets of `ticketer` (none given: rustls's defaults,
/// tickets per process).
pub(crate) fn server_config(
    settings: &TlsSettings,
    names: Arc<CertNames>,
    ticketer: Option<Arc<dyn ProducesTickets>>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let keys = settings
        .loaded
        .iter()
        .map(certified_key)
        .collect::<Result<Vec<_>, _>>()?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = settings
        .protocols
        .iter()
        .map(|v| match v {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        })
        .collect();
    let provider = CryptoProvider {
        cipher_suites: settings.ciphers.iter().map(|c| suite(*c)).collect(),
        ..tls_suites::provider()
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { names, keys }));
    config.ignore_client_order = settings.prefer_server_ciphers;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if let Some(ticketer) = ticketer {
        config.ticketer = ticketer;
        // Sessions resume by ticket alone, and the store tells the ticketer
        // when a ticket that opened does not resume. (The ticketer's
        // "disabled" within a resumption would read as stateful tickets to
        // rustls's 0-RTT check: early data stays off, max_early_data_size 0.)
        config.session_storage = Arc::new(TicketsOnly);
        // One TLS 1.3 ticket per connection (rustls and OpenSSL send two):
        // a resumed connection gets a fresh one, so a client always holds
        // one, and every connection pays for one ticket less.
        config.send_tls13_tickets = 1;
    }
    Ok(Arc::new(config))
}

/// The implementation of `cipher`: rustls's (TLS 1.3's keyed as
/// [`tls_suites`] explains).
fn suite(cipher: TlsCipher) -> SupportedCipherSuite {
    match cipher {
        TlsCipher::Tls13Aes256GcmSha384 => tls_suites::TLS13_AES_256_GCM_SHA384,
        TlsCipher::Tls13Aes128GcmSha256 => tls_suites::TLS13_AES_128_GCM_SHA256,
        TlsCipher::Tls13Chacha20Poly1305Sha256 => tls_suites::TLS13_CHACHA20_POLY1305_SHA256,
        TlsCipher::EcdheEcdsaAes256GcmSha384 => {
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        }
        TlsCipher::EcdheEcdsaAes128GcmSha256 => {
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        }
        TlsCipher::EcdheEcdsaChacha20Poly1305Sha256 => {
            cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        TlsCipher::EcdheRsaAes256GcmSha384 => cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        TlsCipher::EcdheRsaAes128GcmSha256 => cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TlsCipher::EcdheRsaChacha20Poly1305Sha256 => {
            cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
    }
}

fn certified_key(cert: &Certificate) -> Result<Arc<CertifiedKey>, rustls::Error> {
    let chain = cert
        .chain
        .iter()
        .map(|der| CertificateDer::from(der.clone()))
        .collect();
    let key = any_supported_type(&cert.key.to_rustls())?;
    Ok(Arc::new(CertifiedKey::new(chain, key)))
}

/// Which certificate (its index, in file order) covers a name: an exact
/// name beats a wildcard (`*.example.com` covers one label); the first
/// certificate listed wins among equals.
#[derive(Debug, Default)]
pub(crate) struct CertNames {
    exact: FxHashMap<String, usize>,
    /// By the part a wildcard covers: `example.com` for `*.example.com`.
    wildcard: FxHashMap<String, usize>,
}

impl CertNames {
    fn new(certs: &[Certificate]) -> Self {
        let mut names = CertNames::default();
        for (i, cert) in certs.iter().enumerate() {
            for name in &cert.names {
                match name.strip_prefix("*.") {
                    Some(parent) => names.wildcard.entry(parent.to_owned()).or_insert(i),
                    None => names.exact.entry(name.clone()).or_insert(i),
                };
            }
        }
        names
    }

    /// The certificate covering `name` (any case, a trailing dot ignored).
    pub(crate) fn covering(&self, name: &str) -> Option<usize> {
        let name = name.strip_suffix('.').unwrap_or(name);
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            &lower
        } else {
            name
        };
        if let Some(&i) = self.exact.get(name) {
            return Some(i);
        }
        let (label, parent) = name.split_once('.')?;
        if label.is_empty() {
            return None;
        }
        self.wildcard.get(parent).copied()
    }
}

/// Chooses a connection's certificate by its SNI; no SNI, or a name no
/// certificate covers, gets the first.
#[derive(Debug)]
struct SniResolver {
    names: Arc<CertNames>,
    keys: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let i = hello
            .server_name()
            .and_then(|name| self.names.covering(name))
            .unwrap_or(0);
        self.keys.get(i).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefork_shared::tls::{KeyFormat, PrivateKey};

    fn cert(names: &[&str]) -> Certificate {
        Certificate {
            source: "/c.pem".into(),
            chain: Vec::new(),
            key: PrivateKey::new(KeyFormat::Pkcs8, Vec::new()),
            names: names.iter().map(|n| n.to_string()).collect(),
            not_after: 0,
        }
    }

    #[test]
    fn exact_names_beat_wildcards_which_cover_one_label() {
        let names = CertNames::new(&[
            cert(&["a.test"]),
            cert(&["*.b.test", "*.a.test"]),
            cert(&["x.b.test"]),
        ]);
        assert_eq!(names.covering("a.test"), Some(0));
        assert_eq!(names.covering("A.Test."), Some(0));
        assert_eq!(names.covering("y.b.test"), Some(1));
        assert_eq!(names.covering("x.b.test"), Some(2));
        assert_eq!(names.covering("z.y.b.test"), None, "one label only");
        assert_eq!(names.covering("b.test"), None);
        assert_eq!(names.covering(".b.test"), None);
        assert_eq!(names.covering("other.test"), None);
    }
}
