//! `tls`, `tls_server_name` and `tls_ca` of an `[upstreams.NAME]` group:
//! the name verified, and the trust roots, read here (by the master, at
//! start, `-t` and every reload) so that workers never open the file.

use super::Validator;
use crate::config::locate::KeyPath;
use crate::config::model::{Der, Server, TlsRoots, UpstreamTls};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::path::{Path, PathBuf};

/// An upstream group's TLS keys, as written.
pub(super) struct RawTls {
    pub(super) tls: Option<bool>,
    pub(super) server_name: Option<String>,
    pub(super) ca: Option<PathBuf>,
}

impl Validator<'_> {
    /// The TLS settings of the group at `path` whose servers are `servers`;
    /// `None` for plain TCP.
    pub(super) fn upstream_tls(
        &mut self,
        path: &KeyPath,
        raw: RawTls,
        servers: &[Server],
    ) -> Option<UpstreamTls> {
        if raw.tls != Some(true) {
            for (key, set) in [
                ("tls_server_name", raw.server_name.is_some()),
                ("tls_ca", raw.ca.is_some()),
            ] {
                if set {
                    self.problem(&path.key(key), "takes effect only with `tls = true`");
                }
            }
            return None;
        }
        match &raw.server_name {
            Some(name) => {
                if ServerName::try_from(name.as_str()).is_err() {
                    self.problem(
                        &path.key("tls_server_name"),
                        format!("invalid name {name:?}: write a DNS name or an IP address"),
                    );
                }
            }
            None => {
                for (i, server) in servers.iter().enumerate() {
                    let host = server_host(&server.name);
                    if ServerName::try_from(host).is_err() {
                        self.problem(
                            &path.key("servers").index(i),
                            format!(
                                "its host {host:?} is not a name TLS can verify: set `tls_server_name`"
                            ),
                        );
                    }
                }
            }
        }
        let roots = match raw.ca {
            None => TlsRoots::System,
            Some(file) => match read_ca(&file) {
                Ok(certs) => TlsRoots::Ca { file, certs },
                Err(why) => {
                    self.problem(&path.key("tls_ca"), why);
                    TlsRoots::Ca {
                        file,
                        certs: Vec::new(),
                    }
                }
            },
        };
        Some(UpstreamTls {
            server_name: raw.server_name,
            roots,
        })
    }
}

/// The host of a server written `host:port` (an IPv6 literal without its
/// brackets): the name TLS verifies when `tls_server_name` is not set.
pub fn server_host(server: &str) -> &str {
    let host = server.rsplit_once(':').map_or(server, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The certificates of the PEM file `file`, each checked to be X.509.
fn read_ca(file: &Path) -> Result<Vec<Der>, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut certs = Vec::new();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| format!("{} is not valid PEM: {e}", file.display()))?;
        if let Err(e) = x509_parser::parse_x509_certificate(&cert) {
            return Err(format!(
                "certificate {} of {} is not valid X.509: {e}",
                certs.len() + 1,
                file.display()
            ));
        }
        certs.push(Der(cert.to_vec()));
    }
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate (PEM \"-----BEGIN CERTIFICATE-----\")",
            file.display()
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::server_host;
    use crate::config::model::TlsRoots;
    use crate::config::testing::{parse_err, parse_ok};

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn server_hosts_lose_port_and_brackets() {
        assert_eq!(server_host("api.internal:8443"), "api.internal");
        assert_eq!(server_host("10.0.0.5:443"), "10.0.0.5");
        assert_eq!(server_host("[::1]:443"), "::1");
    }

    #[test]
    fn tls_reads_the_ca_and_defaults_to_system_roots() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, format!("{}{}", ca_pem(), ca_pem())).unwrap();
        let c = parse_ok(&format!(
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\ntls = true\n\
             tls_server_name = \"api.internal\"\ntls_ca = \"{}\"\n\
             [upstreams.b]\nservers = [\"127.0.0.1:2\"]\ntls = true\n\
             [upstreams.c]\nservers = [\"127.0.0.1:3\"]\ntls = false\n",
            ca.display()
        ));
        let a = c.upstreams["a"].tls.as_ref().unwrap();
        assert_eq!(a.server_name.as_deref(), Some("api.internal"));
        assert!(matches!(&a.roots, TlsRoots::Ca { certs, .. } if certs.len() == 2));
        let b = c.upstreams["b"].tls.as_ref().unwrap();
        assert_eq!(
            (b.server_name.as_deref(), &b.roots),
            (None, &TlsRoots::System)
        );
        assert_eq!(c.upstreams["c"].tls, None);
        // The roots are not dumped in Debug output.
        assert!(format!("{a:?}").contains(" bytes)"), "{a:?}");
    }

    #[test]
    fn bad_tls_settings_name_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let missing = dir.path().join("missing.pem");
        let e = parse_err(&format!(
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\ntls = true\ntls_ca = \"{}\"\n\
             [upstreams.b]\nservers = [\"127.0.0.1:2\"]\ntls = true\ntls_ca = \"{}\"\n\
             [upstreams.c]\nservers = [\"127.0.0.1:3\"]\ntls_server_name = \"x\"\n\
             [upstreams.d]\nservers = [\"127.0.0.1:4\"]\ntls = true\ntls_server_name = \"a b\"\n",
            empty.display(),
            missing.display()
        ));
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 4, "{e}");
        assert_eq!(
            lines[0],
            format!(
                "t.toml:4: upstreams.a.tls_ca: {} holds no certificate (PEM \"-----BEGIN CERTIFICATE-----\")",
                empty.display()
            )
        );
        assert!(
            lines[1].starts_with(&format!(
                "t.toml:8: upstreams.b.tls_ca: cannot read {}: No such file",
                missing.display()
            )),
            "{e}"
        );
        assert_eq!(
            lines[2],
            "t.toml:11: upstreams.c.tls_server_name: takes effect only with `tls = true`"
        );
        assert!(
            lines[3].starts_with("t.toml:15: upstreams.d.tls_server_name: invalid name \"a b\""),
            "{e}"
        );
    }
}
