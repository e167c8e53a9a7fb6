//! The TLS keys: `[[certificates]]` (the files are read by the master
//! later, see [`crate::tls::load`]), `tls_handshake_timeout`,
//! `tls_protocols`, `tls_ciphers`, `tls_prefer_server_ciphers`, and a TLS
//! listener's need of a certificate.

use super::Validator;
use crate::config::locate::KeyPath;
use crate::config::model::Listen;
use crate::config::raw::RawCertificate;
use crate::tls::{CertificateFiles, TlsCipher, TlsSettings, TlsVersion};

/// `tls_protocols`, `tls_ciphers` and `tls_prefer_server_ciphers`, as written.
pub(super) type RawSuites = (Option<Vec<String>>, Option<Vec<String>>, Option<bool>);

impl Validator<'_> {
    pub(super) fn tls(
        &mut self,
        handshake_timeout: Option<&str>,
        (protocols, ciphers, prefer_server_ciphers): RawSuites,
        certificates: Vec<RawCertificate>,
        listen: &[Listen],
    ) -> TlsSettings {
        let root = KeyPath::default();
        let defaults = TlsSettings::default();
        let handshake_timeout = self.duration(
            root.key("tls_handshake_timeout"),
            handshake_timeout,
            defaults.handshake_timeout,
        );
        let protocols = match protocols {
            None => defaults.protocols,
            Some(names) => self.protocols(root.key("tls_protocols"), &names, defaults.protocols),
        };
        let ciphers = match ciphers {
            None => defaults.ciphers,
            Some(names) => self.ciphers(
                root.key("tls_ciphers"),
                &names,
                &protocols,
                defaults.ciphers,
            ),
        };
        if certificates.is_empty() {
            if let Some(i) = listen.iter().position(|l| l.tls) {
                self.problem(
                    &root.key("listen").index(i).key("tls"),
                    "a TLS listener needs a certificate: add a [[certificates]] entry with `cert` and `key`",
                );
            }
        }
        let certificates = certificates
            .into_iter()
            .map(|c| CertificateFiles {
                cert: c.cert,
                key: c.key,
            })
            .collect();
        TlsSettings {
            handshake_timeout,
            protocols,
            ciphers,
            prefer_server_ciphers: prefer_server_ciphers.unwrap_or(defaults.prefer_server_ciphers),
            certificates,
            loaded: Vec::new(),
        }
    }

    fn protocols(
        &mut self,
        path: KeyPath,
        names: &[String],
        default: Vec<TlsVersion>,
    ) -> Vec<TlsVersion> {
        let out = match in_order(names, TlsVersion::from_name) {
            Ok(out) => out,
            Err(name) => {
                self.problem(
                    &path,
                    format!("unknown protocol {name:?}: write \"TLSv1.2\" or \"TLSv1.3\""),
                );
                return default;
            }
        };
        if out.is_empty() {
            self.problem(
                &path,
                "name at least one protocol: \"TLSv1.2\", \"TLSv1.3\"",
            );
            return default;
        }
        out
    }

    /// The suites `names` lists, in its order; each of `protocols` needs
    /// one of them.
    fn ciphers(
        &mut self,
        path: KeyPath,
        names: &[String],
        protocols: &[TlsVersion],
        default: Vec<TlsCipher>,
    ) -> Vec<TlsCipher> {
        let out = match in_order(names, TlsCipher::from_name) {
            Ok(out) => out,
            Err(name) => {
                let known: Vec<&str> = crate::tls::cipher_names().collect();
                self.problem(
                    &path,
                    format!(
                        "unknown cipher suite {name:?}: write one of {} (or OpenSSL's name)",
                        known.join(", ")
                    ),
                );
                return default;
            }
        };
        if let Some(v) = protocols
            .iter()
            .find(|v| !out.iter().any(|c| c.version() == **v))
        {
            self.problem(
                &path,
                format!(
                    "no cipher suite for {}, which tls_protocols offers: add one, or leave {} out of tls_protocols",
                    v.name(),
                    v.name()
                ),
            );
            return default;
        }
        out
    }
}

/// What `names` name (`parse` reads one), in their order and each once;
/// the first name `parse` does not know, if any.
fn in_order<T: PartialEq>(
    names: &[String],
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, &str> {
    let mut out = Vec::new();
    for name in names {
        let value = parse(name).ok_or(name.as_str())?;
        if !out.contains(&value) {
            out.push(value);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{parse_err, parse_ok};
    use crate::tls::{TlsCipher, TlsVersion};
    use std::time::Duration;

    #[test]
    fn tls_keys_parse_with_defaults() {
        let c = parse_ok("[[listen]]\naddr = \"127.0.0.1:1\"\n");
        assert!(!c.listen[0].tls);
        assert_eq!(c.tls.handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.tls.protocols, [TlsVersion::Tls12, TlsVersion::Tls13]);
        let c = parse_ok(
            "tls_handshake_timeout = \"3s\"\ntls_protocols = [\"TLSv1.3\"]\n[[listen]]\naddr = \"127.0.0.1:1\"\ntls = true\n[[certificates]]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n",
        );
        assert!(c.listen[0].tls);
        assert_eq!(c.tls.handshake_timeout, Duration::from_secs(3));
        assert_eq!(c.tls.protocols, [TlsVersion::Tls13]);
        assert_eq!(c.tls.certificates[0].key.to_str(), Some("/k.pem"));
        assert!(c.tls.loaded.is_empty(), "the master reads the files");
    }

    #[test]
    fn a_tls_listener_without_a_certificate_and_bad_protocols_are_refused() {
        let e = parse_err("[[listen]]\naddr = \"127.0.0.1:1\"\ntls = true\n");
        assert!(
            e.starts_with("t.toml:3: listen[0].tls: a TLS listener needs a certificate"),
            "{e}"
        );
        let e = parse_err("tls_protocols = [\"SSLv3\"]\n");
        assert!(
            e.starts_with("t.toml:1: tls_protocols: unknown protocol \"SSLv3\""),
            "{e}"
        );
        let e = parse_err("tls_protocols = []\n");
        assert!(
            e.starts_with("t.toml:1: tls_protocols: name at least one"),
            "{e}"
        );
        let e = parse_err("[[certificates]]\ncert = \"/c.pem\"\n");
        assert!(e.contains("missing field `key`"), "{e}");
    }

    #[test]
    fn tls_ciphers_keep_their_order_and_take_iana_openssl_and_rustls_names() {
        let c = parse_ok("[[listen]]\naddr = \"127.0.0.1:1\"\n");
        assert_eq!(c.tls.ciphers.len(), 9, "rustls's suites");
        assert_eq!(c.tls.ciphers[0], TlsCipher::Tls13Aes256GcmSha384);
        assert!(!c.tls.prefer_server_ciphers);
        let c = parse_ok(
            "tls_ciphers = [\"TLS13_AES_128_GCM_SHA256\", \"TLS_AES_256_GCM_SHA384\", \
             \"ECDHE-ECDSA-AES128-GCM-SHA256\", \"TLS_AES_128_GCM_SHA256\"]\n\
             tls_prefer_server_ciphers = true\n",
        );
        assert_eq!(
            c.tls.ciphers,
            [
                TlsCipher::Tls13Aes128GcmSha256,
                TlsCipher::Tls13Aes256GcmSha384,
                TlsCipher::EcdheEcdsaAes128GcmSha256,
            ]
        );
        assert!(c.tls.prefer_server_ciphers);
    }

    #[test]
    fn unknown_suites_and_a_protocol_left_without_one_are_refused() {
        let e = parse_err("tls_ciphers = [\"AES128-SHA\"]\n");
        assert!(
            e.starts_with("t.toml:1: tls_ciphers: unknown cipher suite \"AES128-SHA\": write one of TLS_AES_256_GCM_SHA384, "),
            "{e}"
        );
        let e = parse_err("tls_ciphers = [\"TLS_AES_128_GCM_SHA256\"]\n");
        assert!(
            e.starts_with(
                "t.toml:1: tls_ciphers: no cipher suite for TLSv1.2, which tls_protocols offers"
            ),
            "{e}"
        );
        let e = parse_err("tls_ciphers = []\n");
        assert!(e.contains("no cipher suite for TLSv1.2"), "{e}");
        let c =
            parse_ok("tls_protocols = [\"TLSv1.3\"]\ntls_ciphers = [\"TLS_AES_128_GCM_SHA256\"]\n");
        assert_eq!(c.tls.ciphers, [TlsCipher::Tls13Aes128GcmSha256]);
    }
}
