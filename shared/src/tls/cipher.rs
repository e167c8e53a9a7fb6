//! The cipher suites a TLS listener may negotiate (`tls_ciphers`): those
//! rustls implements, named as IANA registers them, with OpenSSL's names
//! (nginx's `ssl_ciphers`, HAProxy's `ciphers`) and rustls's accepted too.

use super::TlsVersion;
use serde::{Deserialize, Serialize};

/// A cipher suite rustls implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsCipher {
    /// TLS 1.3, AES-256-GCM with SHA-384.
    Tls13Aes256GcmSha384,
    /// TLS 1.3, AES-128-GCM with SHA-256.
    Tls13Aes128GcmSha256,
    /// TLS 1.3, ChaCha20-Poly1305 with SHA-256.
    Tls13Chacha20Poly1305Sha256,
    /// TLS 1.2, ECDHE key exchange, ECDSA certificate, AES-256-GCM.
    EcdheEcdsaAes256GcmSha384,
    /// TLS 1.2, ECDHE key exchange, ECDSA certificate, AES-128-GCM.
    EcdheEcdsaAes128GcmSha256,
    /// TLS 1.2, ECDHE key exchange, ECDSA certificate, ChaCha20-Poly1305.
    EcdheEcdsaChacha20Poly1305Sha256,
    /// TLS 1.2, ECDHE key exchange, RSA certificate, AES-256-GCM.
    EcdheRsaAes256GcmSha384,
    /// TLS 1.2, ECDHE key exchange, RSA certificate, AES-128-GCM.
    EcdheRsaAes128GcmSha256,
    /// TLS 1.2, ECDHE key exchange, RSA certificate, ChaCha20-Poly1305.
    EcdheRsaChacha20Poly1305Sha256,
}

/// Every suite, in rustls's order of preference: the default.
pub const ALL: [TlsCipher; 9] = [
    TlsCipher::Tls13Aes256GcmSha384,
    TlsCipher::Tls13Aes128GcmSha256,
    TlsCipher::Tls13Chacha20Poly1305Sha256,
    TlsCipher::EcdheEcdsaAes256GcmSha384,
    TlsCipher::EcdheEcdsaAes128GcmSha256,
    TlsCipher::EcdheEcdsaChacha20Poly1305Sha256,
    TlsCipher::EcdheRsaAes256GcmSha384,
    TlsCipher::EcdheRsaAes128GcmSha256,
    TlsCipher::EcdheRsaChacha20Poly1305Sha256,
];

impl TlsCipher {
    /// Its IANA name, the one the config's errors and docs use.
    pub fn name(self) -> &'static str {
        self.names()[0]
    }

    /// The names it is written by: IANA's, then OpenSSL's (the same for
    /// TLS 1.3), then rustls's where it differs.
    fn names(self) -> &'static [&'static str] {
        match self {
            TlsCipher::Tls13Aes256GcmSha384 => {
                &["TLS_AES_256_GCM_SHA384", "TLS13_AES_256_GCM_SHA384"]
            }
            TlsCipher::Tls13Aes128GcmSha256 => {
                &["TLS_AES_128_GCM_SHA256", "TLS13_AES_128_GCM_SHA256"]
            }
            TlsCipher::Tls13Chacha20Poly1305Sha256 => &[
                "TLS_CHACHA20_POLY1305_SHA256",
                "TLS13_CHACHA20_POLY1305_SHA256",
            ],
            TlsCipher::EcdheEcdsaAes256GcmSha384 => &[
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                "ECDHE-ECDSA-AES256-GCM-SHA384",
            ],
            TlsCipher::EcdheEcdsaAes128GcmSha256 => &[
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                "ECDHE-ECDSA-AES128-GCM-SHA256",
            ],
            TlsCipher::EcdheEcdsaChacha20Poly1305Sha256 => &[
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                "ECDHE-ECDSA-CHACHA20-POLY1305",
            ],
            TlsCipher::EcdheRsaAes256GcmSha384 => &[
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "ECDHE-RSA-AES256-GCM-SHA384",
            ],
            TlsCipher::EcdheRsaAes128GcmSha256 => &[
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "ECDHE-RSA-AES128-GCM-SHA256",
            ],
            TlsCipher::EcdheRsaChacha20Poly1305Sha256 => &[
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
                "ECDHE-RSA-CHACHA20-POLY1305",
            ],
        }
    }

    /// The suite written `name` (IANA's, OpenSSL's or rustls's name).
    pub fn from_name(name: &str) -> Option<TlsCipher> {
        ALL.into_iter().find(|c| c.names().contains(&name))
    }

    /// The protocol version it belongs to.
    pub fn version(self) -> TlsVersion {
        match self {
            TlsCipher::Tls13Aes256GcmSha384
            | TlsCipher::Tls13Aes128GcmSha256
            | TlsCipher::Tls13Chacha20Poly1305Sha256 => TlsVersion::Tls13,
            _ => TlsVersion::Tls12,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_suite_is_found_by_each_of_its_names_and_no_name_is_shared() {
        let mut seen = Vec::new();
        for c in ALL {
            for name in c.names() {
                assert_eq!(TlsCipher::from_name(name), Some(c), "{name}");
                assert!(!seen.contains(name), "{name} twice");
                seen.push(name);
            }
        }
        assert_eq!(TlsCipher::from_name("AES128-SHA"), None);
        assert_eq!(
            TlsCipher::from_name("ECDHE-ECDSA-AES128-GCM-SHA256").map(TlsCipher::version),
            Some(TlsVersion::Tls12)
        );
    }
}
