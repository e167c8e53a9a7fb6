//! Reading one `[[certificates]]` entry: the PEM chain and key, checked
//! against each other and against the clock. Errors name the file and what
//! is wrong with it, never what it holds.

use super::{Certificate, CertificateFiles, KeyFormat, PrivateKey};
use rustls::crypto::aws_lc_rs::sign::any_supported_type;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::time::Duration;
use x509_parser::extensions::GeneralName;

/// What is wrong with a certificate entry, and which of its keys to blame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The certificate file (`cert`).
    #[error("{0}")]
    Cert(String),
    /// The key file (`key`).
    #[error("{0}")]
    Key(String),
}

impl LoadError {
    /// The key of the `[[certificates]]` entry concerned.
    pub fn key(&self) -> &'static str {
        match self {
            LoadError::Cert(_) => "cert",
            LoadError::Key(_) => "key",
        }
    }
}

/// Reads and checks the certificate chain and key `files` name, at Unix
/// time `now`: the PEM parses, the key matches the leaf, the leaf has not
/// expired.
pub fn load(files: &CertificateFiles, now: i64) -> Result<Certificate, LoadError> {
    let chain = read_chain(&files.cert).map_err(LoadError::Cert)?;
    let (names, not_after) = leaf_facts(&chain[0]).map_err(LoadError::Cert)?;
    if not_after < now {
        return Err(LoadError::Cert(format!(
            "{}: the certificate expired on {}",
            files.cert.display(),
            humantime::format_rfc3339_seconds(unix_time(not_after))
        )));
    }
    let key = read_key(&files.key).map_err(LoadError::Key)?;
    check_match(&chain, &key, files)?;
    Ok(Certificate {
        source: files.cert.clone(),
        chain: chain.into_iter().map(|c| c.to_vec()).collect(),
        key,
        names,
        not_after,
    })
}

/// The certificates of `loaded` that expire within `window` of `now`
/// (Unix time), to warn about.
pub fn expiring_within(loaded: &[Certificate], now: i64, window: Duration) -> Vec<&Certificate> {
    let limit = now.saturating_add(window.as_secs() as i64);
    loaded.iter().filter(|c| c.not_after <= limit).collect()
}

fn unix_time(secs: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The PEM certificates of `path`, at least one.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "{}: not a valid PEM certificate chain ({e})",
                path.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no PEM certificate (BEGIN CERTIFICATE) in the file",
            path.display()
        ));
    }
    Ok(chain)
}

/// The leaf's subjectAltName DNS names (lower-cased) and notAfter.
fn leaf_facts(leaf: &[u8]) -> Result<(Vec<String>, i64), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("the first certificate does not parse: {e}"))?;
    let not_after = cert.validity().not_after.timestamp();
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(format!("the subjectAltName does not parse: {e}")),
    };
    Ok((names, not_after))
}

/// The private key of `path`. The PEM library's own messages are not
/// passed on: they may quote the file's lines.
fn read_key(path: &Path) -> Result<PrivateKey, String> {
    let bytes = read(path)?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "{}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in the file",
            path.display()
        ),
        _ => format!("{}: not a valid PEM private key", path.display()),
    })?;
    Ok(match key {
        PrivateKeyDer::Pkcs8(k) => PrivateKey::new(KeyFormat::Pkcs8, k.secret_pkcs8_der().to_vec()),
        PrivateKeyDer::Pkcs1(k) => PrivateKey::new(KeyFormat::Pkcs1, k.secret_pkcs1_der().to_vec()),
        PrivateKeyDer::Sec1(k) => PrivateKey::new(KeyFormat::Sec1, k.secret_sec1_der().to_vec()),
        _ => {
            return Err(format!(
                "{}: unsupported private key encoding",
                path.display()
            ))
        }
    })
}

/// Checks that `key` is the private key of the leaf of `chain`, by
/// comparing the public key derived from it with the leaf's.
fn check_match(
    chain: &[CertificateDer<'static>],
    key: &PrivateKey,
    files: &CertificateFiles,
) -> Result<(), LoadError> {
    let signing = any_supported_type(&key.to_rustls()).map_err(|_| {
        LoadError::Key(format!(
            "{}: unsupported or malformed private key (RSA, ECDSA or Ed25519 expected)",
            files.key.display()
        ))
    })?;
    match CertifiedKey::new(chain.to_vec(), signing).keys_match() {
        Ok(()) => Ok(()),
        Err(_) => Err(LoadError::Key(format!(
            "{}: the private key does not match the certificate in {}",
            files.key.display(),
            files.cert.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};
    use std::path::PathBuf;

    struct Files {
        _dir: tempfile::TempDir,
        files: CertificateFiles,
    }

    fn write(names: &[&str], key_pem: Option<String>) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let cert_path = dir.path().join("c.pem");
        let key_path = dir.path().join("k.pem");
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key_pem.unwrap_or_else(|| key.serialize_pem())).unwrap();
        Files {
            _dir: dir,
            files: CertificateFiles {
                cert: cert_path,
                key: key_path,
            },
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[test]
    fn a_matching_pair_loads_with_its_names_and_expiry() {
        let f = write(&["A.test", "*.b.test"], None);
        let c = load(&f.files, now()).unwrap();
        assert_eq!(c.names, ["a.test", "*.b.test"]);
        assert!(c.not_after > now());
        assert_eq!(c.chain.len(), 1);
        assert_eq!(c.key.format(), KeyFormat::Pkcs8);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_without_showing_it() {
        let other = KeyPair::generate().unwrap().serialize_pem();
        let f = write(&["a.test"], Some(other.clone()));
        let e = load(&f.files, now()).unwrap_err();
        assert_eq!(e.key(), "key");
        assert!(e.to_string().contains("does not match"), "{e}");
        let body: String = other.lines().nth(1).unwrap().chars().take(16).collect();
        assert!(!e.to_string().contains(&body), "{e}");
    }

    #[test]
    fn garbage_missing_files_and_expiry_are_refused() {
        let f = write(&["a.test"], Some("not a key\n".into()));
        assert!(
            matches!(load(&f.files, now()), Err(LoadError::Key(e)) if e.contains("no PEM private key"))
        );
        let missing = CertificateFiles {
            cert: PathBuf::from("/nonexistent/c.pem"),
            key: PathBuf::from("/nonexistent/k.pem"),
        };
        assert!(
            matches!(load(&missing, now()), Err(LoadError::Cert(e)) if e.contains("cannot read"))
        );
        let f = write(&["a.test"], None);
        // rcgen's default notAfter is 4096-01-01.
        let e = load(&f.files, i64::MAX).unwrap_err();
        assert!(
            matches!(&e, LoadError::Cert(m) if m.contains("expired")),
            "{e}"
        );
    }

    #[test]
    fn certificates_near_their_expiry_are_listed() {
        let f = write(&["a.test"], None);
        let c = load(&f.files, now()).unwrap();
        let soon = c.not_after - 3600;
        assert_eq!(
            expiring_within(std::slice::from_ref(&c), soon, Duration::from_secs(7200)).len(),
            1
        );
        assert!(
            expiring_within(std::slice::from_ref(&c), now(), Duration::from_secs(60)).is_empty()
        );
    }
}
