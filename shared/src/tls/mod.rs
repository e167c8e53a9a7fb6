//! TLS material: the certificates and private keys the master reads from
//! the files `[[certificates]]` names and sends to the workers inside their
//! configuration, so that workers never open key files and a reload swaps
//! certificates into running workers.
//!
//! - this file: the types ([`Certificate`], [`PrivateKey`], the settings);
//! - `load.rs`: reading and checking one certificate and its key;
//! - `cipher.rs`: the cipher suites `tls_ciphers` names.
//!
//! A private key never reaches a log, an error message or Debug output:
//! [`PrivateKey`]'s Debug is redacted, and load errors name files, never
//! their contents.

mod cipher;
mod load;

pub use cipher::TlsCipher;

/// The IANA names of every cipher suite `tls_ciphers` may name.
pub fn cipher_names() -> impl Iterator<Item = &'static str> {
    cipher::ALL.into_iter().map(TlsCipher::name)
}
pub use load::{expiring_within, load, LoadError};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// How long before a certificate's expiry the master starts warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// The TLS settings of a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSettings {
    /// Time a client has to complete its handshake (`tls_handshake_timeout`).
    pub handshake_timeout: Duration,
    /// The protocol versions offered (`tls_protocols`).
    pub protocols: Vec<TlsVersion>,
    /// The cipher suites offered, in the server's order (`tls_ciphers`).
    pub ciphers: Vec<TlsCipher>,
    /// Whether the server's order of `ciphers` wins over the client's
    /// (`tls_prefer_server_ciphers`, nginx's `ssl_prefer_server_ciphers`).
    pub prefer_server_ciphers: bool,
    /// The certificate and key files, in file order (`[[certificates]]`).
    pub certificates: Vec<CertificateFiles>,
    /// The certificates read from those files, in the same order: filled by
    /// the master after validating the file (start, reload, `-t`), empty
    /// until then.
    pub loaded: Vec<Certificate>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            handshake_timeout: Duration::from_secs(10),
            protocols: vec![TlsVersion::Tls12, TlsVersion::Tls13],
            ciphers: cipher::ALL.to_vec(),
            prefer_server_ciphers: false,
            certificates: Vec::new(),
            loaded: Vec::new(),
        }
    }
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2 (`"TLSv1.2"`).
    Tls12,
    /// TLS 1.3 (`"TLSv1.3"`).
    Tls13,
}

impl TlsVersion {
    /// The version as written in the config (nginx's names).
    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
        }
    }

    /// The version named `name` as nginx writes it.
    pub fn from_name(name: &str) -> Option<TlsVersion> {
        match name {
            "TLSv1.2" => Some(TlsVersion::Tls12),
            "TLSv1.3" => Some(TlsVersion::Tls13),
            _ => None,
        }
    }
}

/// One `[[certificates]]` entry: where the certificate and its key are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateFiles {
    /// PEM: the leaf first, then the chain.
    pub cert: PathBuf,
    /// PEM: PKCS#8, PKCS#1 or SEC1.
    pub key: PathBuf,
}

/// A certificate chain and its private key, checked: they match and the
/// leaf has not expired.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// The certificate file it was read from.
    pub source: PathBuf,
    /// DER certificates, the leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The leaf's private key.
    pub key: PrivateKey,
    /// The DNS names of the leaf's subjectAltName, lower-cased
    /// (`*.example.com` for a wildcard).
    pub names: Vec<String>,
    /// The leaf's notAfter, as Unix time.
    pub not_after: i64,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("source", &self.source)
            .field("chain", &format_args!("{} certificates", self.chain.len()))
            .field("key", &self.key)
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// How a private key is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyFormat {
    /// PKCS#8 (`BEGIN PRIVATE KEY`).
    Pkcs8,
    /// PKCS#1, RSA (`BEGIN RSA PRIVATE KEY`).
    Pkcs1,
    /// SEC1, elliptic curve (`BEGIN EC PRIVATE KEY`).
    Sec1,
}

/// A private key in DER. Its Debug output never shows the key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivateKey {
    format: KeyFormat,
    der: Vec<u8>,
}

impl PrivateKey {
    /// A key of `format` from its DER bytes.
    pub fn new(format: KeyFormat, der: Vec<u8>) -> Self {
        PrivateKey { format, der }
    }

    /// How the key is encoded.
    pub fn format(&self) -> KeyFormat {
        self.format
    }

    /// The key as rustls takes it.
    pub fn to_rustls(&self) -> rustls_pki_types::PrivateKeyDer<'static> {
        use rustls_pki_types::{
            PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
        };
        let der = self.der.clone();
        match self.format {
            KeyFormat::Pkcs8 => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
            KeyFormat::Pkcs1 => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)),
            KeyFormat::Sec1 => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der)),
        }
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("format", &self.format)
            .field("der", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_key() {
        let key = PrivateKey::new(KeyFormat::Pkcs8, vec![0xAB; 32]);
        let cert = Certificate {
            source: "/c.pem".into(),
            chain: vec![vec![1, 2, 3]],
            key,
            names: vec!["a.test".into()],
            not_after: 0,
        };
        let shown = format!("{cert:?} {cert:#?}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(
            !shown.contains("171") && !shown.to_lowercase().contains("ab, "),
            "{shown}"
        );
    }
}
