//! TLS termination: certificates chosen by SNI, 421 for another
//! certificate's `Host`, `X-Forwarded-Proto: https`, certificates rotated
//! by `-s reload` without a worker restarted, a bad key refused with the old
//! certificate still served, `-t` checking certificates, and connections
//! that are not TLS or stall. Certificates are made here: a CA, an exact
//! leaf `a.test` and a wildcard leaf `*.b.test`.

use crate::support::http;
use crate::support::origins::RecordingOrigin;
use crate::support::prefork::{self, free_port, run, Prefork, Setup};
use crate::support::wait_until;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A CA that signs the test leaves.
pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub(crate) fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ca {
            issuer: Issuer::new(params, KeyPair::generate().unwrap()),
        }
    }

    /// A leaf for `names` (an IP address among them becomes an IP SAN):
    /// its PEM, its key's PEM and its DER.
    pub(crate) fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

pub(crate) struct Leaf {
    pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Leaf {
    /// Writes the certificate and key as `dir/NAME.pem` and `dir/NAME.key`.
    pub(crate) fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, &self.pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

/// Accepts any server certificate: the tests look at which one came.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client offering `versions`.
pub(crate) fn client_config(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    client_offering(versions, rustls::crypto::aws_lc_rs::DEFAULT_CIPHER_SUITES)
}

/// A client offering `versions` and `suites`, in their order.
fn client_offering(
    versions: &[&'static rustls::SupportedProtocolVersion],
    suites: &[rustls::SupportedCipherSuite],
) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: suites.to_vec(),
        ..rustls::crypto::aws_lc_rs::default_provider()
    });
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A TLS client connection.
struct Tls {
    stream: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

/// A response: status, head and body.
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Tls {
    /// Connects to `port` and completes the handshake; `sni`: the name
    /// sent (none: the client sends no SNI).
    fn connect(port: u16, sni: Option<&str>) -> std::io::Result<Tls> {
        Tls::connect_with(port, sni, rustls::DEFAULT_VERSIONS)
    }

    /// As [`Tls::connect`], offering only `versions`.
    fn connect_with(
        port: u16,
        sni: Option<&str>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> std::io::Result<Tls> {
        Tls::connect_as(port, sni, client_config(versions))
    }

    /// As [`Tls::connect`], as a client configured by `config`.
    fn connect_as(port: u16, sni: Option<&str>, config: Arc<ClientConfig>) -> std::io::Result<Tls> {
        let name = match sni {
            Some(n) => ServerName::try_from(n.to_owned()).unwrap(),
            // rustls sends no SNI for an IP address.
            None => ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into()),
        };
        let conn = ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let tcp = TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Tls {
            stream,
            buf: Vec::new(),
        })
    }

    /// The leaf certificate the server sent.
    fn leaf(&self) -> Vec<u8> {
        self.stream.conn.peer_certificates().unwrap()[0].to_vec()
    }

    /// Sends `GET path` for `host` and reads the response.
    fn get(&mut self, host: &str, path: &str) -> std::io::Result<Reply> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        self.stream.write_all(req.as_bytes())?;
        self.stream.flush()?;
        self.read_reply()
    }

    /// Sends `POST path` for `host` with `body` and reads the response.
    fn post(&mut self, host: &str, path: &str, body: &[u8]) -> std::io::Result<Reply> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.stream.write_all(head.as_bytes())?;
        self.stream.write_all(body)?;
        self.stream.flush()?;
        self.read_reply()
    }

    fn read_reply(&mut self) -> std::io::Result<Reply> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let status = head[9..12].parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        while self.buf.len() < end + len {
            self.fill()?;
        }
        let body = String::from_utf8_lossy(&self.buf[end..end + len]).into_owned();
        self.buf.drain(..end + len);
        Ok(Reply { status, head, body })
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// Certificates on disk and a config around a TLS listener.
struct Site {
    dir: tempfile::TempDir,
    ca: Ca,
    a: Leaf,
    b: Leaf,
    tls_port: u16,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new();
        // The first certificate also covers 127.0.0.1, so that a client
        // without SNI can still check what it got.
        let a = ca.leaf(&["a.test", "127.0.0.1"]);
        let b = ca.leaf(&["*.b.test"]);
        a.write(dir.path(), "a");
        b.write(dir.path(), "b");
        Site {
            dir,
            ca,
            a,
            b,
            tls_port: free_port(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The tables: the TLS listener, both certificates and `routes`.
    fn body(&self, routes: &str) -> String {
        format!(
            "[[listen]]\naddr = \"127.0.0.1:{port}\"\ntls = true\n\
             [[certificates]]\ncert = \"{ac}\"\nkey = \"{ak}\"\n\
             [[certificates]]\ncert = \"{bc}\"\nkey = \"{bk}\"\n\
             [[routes]]\nhost = \"a.test\"\nrespond = {{ body = \"a\" }}\n\
             [[routes]]\nhost = \"*.b.test\"\nrespond = {{ body = \"b\" }}\n{routes}",
            port = self.tls_port,
            ac = self.path("a.pem"),
            ak = self.path("a.key"),
            bc = self.path("b.pem"),
            bk = self.path("b.key"),
        )
    }

    fn start(&self, workers: usize, routes: &str) -> Prefork {
        self.start_with(workers, routes, "")
    }

    /// As [`Site::start`], with more top-level keys.
    fn start_with(&self, workers: usize, routes: &str, top: &str) -> Prefork {
        Prefork::start(
            Setup::new(workers)
                .top("tls_handshake_timeout = \"2s\"")
                .top(top)
                .log("access_log_format = \"$ssl_protocol $ssl_cipher $ssl_server_name $host $status\"")
                .body(&self.body(routes)),
        )
    }
}

#[test]
fn certificates_are_chosen_by_sni_and_another_certificate_s_host_gets_421() {
    let site = Site::new();
    let origin = RecordingOrigin::start();
    let p = site.start(
        2,
        &format!(
            "[upstreams.app]\nservers = [\"{}\"]\n[[routes]]\nhost = \"app.b.test\"\nupstream = \"app\"\n",
            origin.addr()
        ),
    );
    let port = site.tls_port;
    let mut exact = Tls::connect(port, Some("a.test")).unwrap();
    assert!(
        exact.leaf() == site.a.der,
        "a.test gets its own certificate"
    );
    let r = exact.get("a.test", "/").unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "a"), "{}", r.head);
    // The same connection asking for the other certificate's name.
    let r = exact.get("x.b.test", "/").unwrap();
    assert_eq!(r.status, 421, "{}\n{}", r.head, p.logs());
    let mut wild = Tls::connect(port, Some("x.b.test")).unwrap();
    assert!(wild.leaf() == site.b.der, "*.b.test covers x.b.test");
    assert_eq!(wild.get("x.b.test", "/").unwrap().body, "b");
    assert_eq!(wild.get("a.test", "/").unwrap().status, 421);
    // Two labels are not covered by the wildcard: the first certificate,
    // routed by Host.
    let mut deep = Tls::connect(port, Some("y.x.b.test")).unwrap();
    assert!(deep.leaf() == site.a.der);
    assert_eq!(deep.get("x.b.test", "/").unwrap().body, "b");
    let mut none = Tls::connect(port, None).unwrap();
    assert!(none.leaf() == site.a.der, "no SNI: the first certificate");
    assert_eq!(none.get("x.b.test", "/").unwrap().body, "b");
    assert_eq!(none.get("a.test", "/").unwrap().body, "a");
    // Forwarded as HTTPS.
    let mut app = Tls::connect(port, Some("app.b.test")).unwrap();
    assert_eq!(app.get("app.b.test", "/x").unwrap().status, 200);
    let seen = origin.requests();
    let forwarded = seen.last().expect("the origin got the request");
    assert_eq!(
        forwarded.request.header("x-forwarded-proto"),
        Some("https"),
        "{:?}",
        forwarded.request
    );
    // The access log shows the TLS version, cipher and SNI.
    assert!(
        wait_until(Duration::from_secs(5), || p.access_log().lines().any(|l| l
            .starts_with("TLSv1.3 TLS13_")
            && l.ends_with(" a.test x.b.test 421"))),
        "{}",
        p.access_log()
    );
}

#[test]
fn plain_http_gets_400_and_garbage_or_a_stalled_handshake_is_closed() {
    let site = Site::new();
    let admin = free_port();
    let p = site.start(1, &format!("[admin]\naddr = \"127.0.0.1:{admin}\"\n"));
    let port = site.tls_port;
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    plain.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.contains("The plain HTTP request was sent to HTTPS port"),
        "{answer}"
    );

    let mut garbage = TcpStream::connect(("127.0.0.1", port)).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    garbage.write_all(b"\x00\x01\x02\x03garbage\r\n").unwrap();
    let mut got = Vec::new();
    let _ = garbage.read_to_end(&mut got);
    assert!(got.is_empty(), "closed without an answer: {got:?}");

    // A handshake that starts and stalls ends at tls_handshake_timeout (2 s).
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let started = Instant::now();
    stalled.write_all(&[0x16, 0x03, 0x01]).unwrap();
    let mut got = Vec::new();
    let _ = stalled.read_to_end(&mut got);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "closed after {took:?}"
    );
    // The server still serves, and logged the failures without crashing.
    let mut ok = Tls::connect(port, Some("a.test")).unwrap();
    assert_eq!(ok.get("a.test", "/").unwrap().status, 200);
    assert!(
        p.error_log().contains("TLS handshake failed"),
        "{}",
        p.logs()
    );
    // Counted by reason (the worker reports once a second).
    let counted = |text: &str| {
        [
            "prefork_tls_handshake_failures_total{reason=\"plain_http\"} 1",
            "prefork_tls_handshake_failures_total{reason=\"not_tls\"} 1",
            "prefork_tls_handshake_failures_total{reason=\"timeout\"} 1",
        ]
        .iter()
        .all(|want| text.lines().any(|l| l == *want))
            && text
                .lines()
                .any(|l| l.starts_with("prefork_tls_handshakes_total{") && !l.ends_with(" 0"))
    };
    let metrics = || {
        http::get(admin, "admin", "/metrics")
            .map(|r| r.text())
            .unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(10), || counted(&metrics())),
        "{}",
        metrics()
    );
    // Each certificate name's expiry, in /metrics and `prefork status`.
    let text = metrics();
    for name in ["a.test", "*.b.test"] {
        let prefix = format!("prefork_certificate_expiry_timestamp_seconds{{name=\"{name}\"}} ");
        assert!(text.lines().any(|l| l.starts_with(&prefix)), "{text}");
    }
    let status = p.status_json();
    let certs = status["certificates"].as_array().expect("certificates");
    assert_eq!(certs.len(), 2, "{status}");
    assert_eq!(certs[1]["names"][0], "*.b.test", "{status}");
    assert!(certs[0]["not_after_unix"].as_i64().unwrap() > 0);
    let table = p.cli(&["status"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("*.b.test"), "{table}");
    assert!(!table.contains("PRIVATE KEY") && !status.to_string().contains("PRIVATE KEY"));
}

/// Rewrites the first certificate's files with `leaf`.
fn replace_a(site: &Site, leaf: &Leaf) {
    leaf.write(site.dir.path(), "a");
}

/// Waits until a new connection for `a.test` on `port` gets `leaf`.
fn wait_served(p: &Prefork, port: u16, leaf: &Leaf) {
    assert!(
        wait_until(Duration::from_secs(10), || Tls::connect(
            port,
            Some("a.test")
        )
        .is_ok_and(|c| c.leaf() == leaf.der)),
        "the renewed certificate is not served\n{}",
        p.logs()
    );
}

#[test]
fn a_reload_rotates_certificates_in_place_and_refuses_a_mismatched_key() {
    let site = Site::new();
    let p = site.start(2, "");
    let port = site.tls_port;
    let workers: Vec<i32> = p.workers().iter().map(|w| w.pid).collect();
    let mut kept = Tls::connect(port, Some("a.test")).unwrap();
    assert_eq!(kept.get("a.test", "/").unwrap().status, 200);

    // Same config text, new files: the reload reads them again.
    let renewed = site.ca.leaf(&["a.test", "127.0.0.1"]);
    replace_a(&site, &renewed);
    p.reload_ok();
    wait_served(&p, port, &renewed);
    let now: Vec<i32> = p.workers().iter().map(|w| w.pid).collect();
    assert_eq!(workers, now, "no worker was replaced");
    // The connection opened before the reload goes on.
    assert_eq!(kept.get("a.test", "/").unwrap().body, "a");

    // A key that belongs to another certificate is refused, located.
    std::fs::write(site.dir.path().join("a.key"), &site.b.key_pem).unwrap();
    let stderr = p.reload_refused();
    let location = format!("{}:", p.config_path().display());
    assert!(stderr.contains(&location), "{stderr}");
    assert!(
        stderr.contains(": certificates[0].key: ") && stderr.contains("does not match"),
        "{stderr}"
    );
    assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
    // Still the renewed certificate, from the same workers.
    let c = Tls::connect(port, Some("a.test")).unwrap();
    assert!(c.leaf() == renewed.der);
    assert_eq!(
        workers,
        p.workers().iter().map(|w| w.pid).collect::<Vec<_>>()
    );
    p.expect_log_errors();
}

#[test]
fn config_test_reports_a_bad_certificate_at_its_line() {
    let site = Site::new();
    std::fs::write(site.dir.path().join("b.pem"), "not a certificate\n").unwrap();
    let config = site.dir.path().join("t.toml");
    let text = format!(
        "pid_file = \"{d}/p.pid\"\n[log]\nerror_log = \"{d}/e.log\"\n{body}",
        d = site.dir.path().display(),
        body = site.body("")
    );
    std::fs::write(&config, &text).unwrap();
    let out = run(
        &["-t", "-c", config.to_str().unwrap()],
        Duration::from_secs(10),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let line = text
        .lines()
        .position(|l| l.starts_with("cert = ") && l.contains("b.pem"))
        .unwrap()
        + 1;
    let want = format!("{}:{line}: certificates[1].cert: ", config.display());
    assert!(stderr.contains(&want), "want {want}\n{stderr}");
    // A good pair passes.
    site.b.write(site.dir.path(), "b");
    let out = run(
        &["-t", "-c", config.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn requests_never_fail_while_certificates_rotate() {
    let site = Site::new();
    let p = site.start(2, "");
    let port = site.tls_port;
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let served = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..2)
        .map(|i| {
            let (stop, failures, served) = (stop.clone(), failures.clone(), served.clone());
            std::thread::spawn(move || {
                // One client keeps its connection, the other opens one per request.
                let mut kept: Option<Tls> = None;
                while !stop.load(Ordering::SeqCst) {
                    let got = match (i, kept.as_mut()) {
                        (0, Some(c)) => c.get("a.test", "/"),
                        _ => Tls::connect(port, Some("a.test")).and_then(|mut c| {
                            let r = c.get("a.test", "/");
                            if i == 0 {
                                kept = Some(c);
                            }
                            r
                        }),
                    };
                    match got {
                        Ok(r) if r.status == 200 => {
                            served.fetch_add(1, Ordering::SeqCst);
                            // `keepalive_requests` ends the kept connection
                            // now and then: the next request opens another.
                            if r.head.to_ascii_lowercase().contains("connection: close") {
                                kept = None;
                            }
                        }
                        Ok(r) => failures.lock().unwrap().push(r.head),
                        Err(e) => {
                            failures.lock().unwrap().push(e.to_string());
                            kept = None;
                        }
                    }
                }
            })
        })
        .collect();
    let workers: Vec<i32> = p.workers().iter().map(|w| w.pid).collect();
    for _ in 0..4 {
        let renewed = site.ca.leaf(&["a.test"]);
        replace_a(&site, &renewed);
        let before = served.load(Ordering::SeqCst);
        p.reload_ok();
        wait_served(&p, port, &renewed);
        assert!(wait_until(Duration::from_secs(10), || served
            .load(Ordering::SeqCst)
            > before + 20));
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "{failures:?}\n{}", p.logs());
    assert!(served.load(Ordering::SeqCst) > 80);
    assert_eq!(
        workers,
        p.workers().iter().map(|w| w.pid).collect::<Vec<_>>()
    );
}

#[test]
fn a_root_only_key_serves_with_workers_running_as_nobody() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "SKIPPED a_root_only_key_serves_with_workers_running_as_nobody: not running as root"
        );
        return;
    }
    if nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .is_none()
    {
        eprintln!(
            "SKIPPED a_root_only_key_serves_with_workers_running_as_nobody: no user `nobody`"
        );
        return;
    }
    let site = Site::new();
    for key in ["a.key", "b.key"] {
        let path = site.dir.path().join(key);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let p = Prefork::start_in(
        prefork::dir_with_logs_for_any_user(),
        Setup::new(2).top("user = \"nobody\"").body(&site.body("")),
    );
    let mut c = Tls::connect(site.tls_port, Some("x.b.test")).unwrap();
    assert!(c.leaf() == site.b.der);
    assert_eq!(c.get("x.b.test", "/").unwrap().body, "b");
    // A reload reads them again, as root.
    p.reload_ok();
    assert_eq!(
        Tls::connect(site.tls_port, Some("a.test"))
            .unwrap()
            .get("a.test", "/")
            .unwrap()
            .status,
        200
    );
}

#[test]
fn large_bodies_cross_tls_both_ways_on_one_connection() {
    let site = Site::new();
    let recorder = RecordingOrigin::start();
    let bytes = crate::support::origins::minihttp("tls-bytes");
    let p = site.start(
        1,
        &format!(
            "[upstreams.rec]\nservers = [\"{}\"]\n[upstreams.bytes]\nservers = [\"{bytes}\"]\n\
             [[routes]]\nhost = \"rec.b.test\"\nupstream = \"rec\"\n\
             [[routes]]\nhost = \"bytes.b.test\"\nupstream = \"bytes\"\n",
            recorder.addr()
        ),
    );
    let mut c = Tls::connect(site.tls_port, Some("rec.b.test")).unwrap();
    let body = vec![b'x'; 2 << 20];
    for _ in 0..2 {
        let r = c.post("rec.b.test", "/up", &body).unwrap();
        assert_eq!(r.status, 200, "{}\n{}", r.head, p.logs());
        assert!(r.body.contains("body=2097152"), "{}", r.body);
    }
    for len in [3_000_000, 10, 70_000] {
        let r = c.get("bytes.b.test", &format!("/bytes/{len}")).unwrap();
        assert_eq!(r.status, 200, "{}\n{}", r.head, p.logs());
        assert_eq!(r.body.len(), len);
    }
}

#[test]
fn tls_protocols_limits_the_versions_and_a_refused_one_is_counted() {
    let site = Site::new();
    let admin = free_port();
    let p = site.start_with(
        1,
        &format!("[admin]\naddr = \"127.0.0.1:{admin}\"\n"),
        "tls_protocols = [\"TLSv1.2\"]",
    );
    let port = site.tls_port;
    let mut c = Tls::connect(port, Some("a.test")).unwrap();
    assert_eq!(
        c.stream.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(c.get("a.test", "/").unwrap().body, "a");
    assert!(
        wait_until(Duration::from_secs(5), || p.access_log().lines().any(|l| l
            .starts_with("TLSv1.2 ")
            && l.ends_with(" a.test a.test 200"))),
        "{}",
        p.access_log()
    );
    // A client that speaks TLS 1.3 alone is refused, and counted.
    assert!(Tls::connect_with(port, Some("a.test"), &[&rustls::version::TLS13]).is_err());
    let want = "prefork_tls_handshake_failures_total{reason=\"protocol\"} 1";
    let metrics = || {
        http::get(admin, "admin", "/metrics")
            .map(|r| r.text())
            .unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(10), || metrics()
            .lines()
            .any(|l| l == want)),
        "{}",
        metrics()
    );
}

#[test]
fn tls_ciphers_limit_the_suites_the_servers_order_wins_when_preferred_and_a_reload_changes_it() {
    use rustls::crypto::aws_lc_rs::cipher_suite::*;
    use rustls::version::{TLS12, TLS13};
    let site = Site::new();
    let p = site.start_with(
        1,
        "",
        "tls_ciphers = [\"TLS_AES_128_GCM_SHA256\", \"TLS_AES_256_GCM_SHA384\", \
         \"ECDHE-ECDSA-AES128-GCM-SHA256\"]\ntls_prefer_server_ciphers = true",
    );
    let negotiated = |versions: &[&'static rustls::SupportedProtocolVersion],
                      suites: &[rustls::SupportedCipherSuite]| {
        Tls::connect_as(
            site.tls_port,
            Some("a.test"),
            client_offering(versions, suites),
        )
        .map(|mut c| {
            assert_eq!(c.get("a.test", "/").unwrap().body, "a");
            c.stream.conn.negotiated_cipher_suite().unwrap().suite()
        })
    };
    let aes256_first = [TLS13_AES_256_GCM_SHA384, TLS13_AES_128_GCM_SHA256];
    // The client prefers AES-256; the server's order wins.
    assert_eq!(
        negotiated(&[&TLS13], &aes256_first).unwrap(),
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
        "{}",
        p.logs()
    );
    // TLS 1.2: only the suite listed.
    let ecdsa = [
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ];
    assert_eq!(
        negotiated(&[&TLS12], &ecdsa).unwrap(),
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    );
    // A suite left out is refused.
    assert!(negotiated(&[&TLS13], &[TLS13_CHACHA20_POLY1305_SHA256]).is_err());
    assert!(
        wait_until(Duration::from_secs(5), || p.access_log().lines().any(|l| {
            l == "TLSv1.2 TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 a.test a.test 200"
        })),
        "{}",
        p.access_log()
    );

    // The client's order, after a reload.
    let config = std::fs::read_to_string(p.config_path()).unwrap();
    p.write_raw_config(&config.replace(
        "tls_prefer_server_ciphers = true",
        "tls_prefer_server_ciphers = false",
    ));
    p.reload_ok();
    assert!(
        wait_until(Duration::from_secs(10), || negotiated(
            &[&TLS13],
            &aes256_first
        )
        .is_ok_and(|s| s == rustls::CipherSuite::TLS13_AES_256_GCM_SHA384)),
        "{}",
        p.logs()
    );
}

/// Parked TLS connections: an idle TLS keep-alive connection leaves its
/// task with its rustls state, and behaves as one that did not.
mod parked {
    use super::*;
    use nix::sys::signal::Signal;

    /// Long enough for a connection idle for a second to be parked and for
    /// its worker's next report (once a second) to count it.
    const PARKED: Duration = Duration::from_secs(10);

    /// The parked connections `/metrics` counts, over every worker.
    fn parked(admin: u16) -> Option<u64> {
        let text = http::get(admin, "admin", "/metrics").ok()?.text();
        let sum = text
            .lines()
            .filter(|l| l.starts_with("prefork_parked_connections{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        Some(sum as u64)
    }

    fn wait_parked(p: &Prefork, admin: u16, n: u64) {
        assert!(
            wait_until(PARKED, || parked(admin) == Some(n)),
            "expected {n} parked connections, /metrics says {:?}\n{}",
            parked(admin),
            p.logs()
        );
    }

    fn admin(port: u16) -> String {
        format!("[admin]\naddr = \"127.0.0.1:{port}\"\n")
    }

    /// `count` TLS connections, each after one request answered.
    fn idle_connections(port: u16, count: usize) -> Vec<Tls> {
        (0..count)
            .map(|_| {
                let mut c = Tls::connect(port, Some("a.test")).unwrap();
                assert_eq!(c.get("a.test", "/").unwrap().body, "a");
                c
            })
            .collect()
    }

    /// Whether the server ended the connection politely: a `close_notify`
    /// (rustls then reads the end), never a reset or a bare FIN.
    fn closed_politely(c: &mut Tls) -> Result<(), String> {
        let mut rest = [0u8; 64];
        match c.stream.read(&mut rest) {
            Ok(0) => Ok(()),
            Ok(n) => Err(format!("{n} bytes more: {:?}", &rest[..n])),
            Err(e) => Err(format!("not closed politely: {e}")),
        }
    }

    #[test]
    fn idle_tls_connections_are_parked_and_answered_when_a_request_comes() {
        let site = Site::new();
        let admin_port = free_port();
        let p = site.start(1, &admin(admin_port));
        let mut conns = idle_connections(site.tls_port, 40);
        wait_parked(&p, admin_port, 40);
        for c in &mut conns {
            let r = c.get("a.test", "/again").unwrap();
            assert_eq!((r.status, r.body.as_str()), (200, "a"), "{}", p.logs());
            assert!(!r.head.contains("close"), "kept alive: {}", r.head);
        }
        // Idle again: parked again, and woken again.
        wait_parked(&p, admin_port, 40);
        for c in &mut conns {
            assert_eq!(c.get("x.b.test", "/").unwrap().status, 421);
        }
        // A woken connection logs as the TLS connection it is.
        assert!(
            wait_until(Duration::from_secs(5), || p
                .access_log()
                .lines()
                .filter(|l| l.starts_with("TLSv1.3 ") && l.ends_with(" a.test a.test 200"))
                .count()
                == 80),
            "{}",
            p.access_log()
        );
    }

    #[test]
    fn a_parked_tls_connection_closes_politely_at_its_keepalive_timeout() {
        let site = Site::new();
        let admin_port = free_port();
        let p = site.start_with(1, &admin(admin_port), "keepalive_timeout = \"3s\"");
        let mut conns = idle_connections(site.tls_port, 3);
        wait_parked(&p, admin_port, 3);
        for c in &mut conns {
            if let Err(e) = closed_politely(c) {
                panic!("{e}\n{}", p.logs());
            }
        }
        wait_parked(&p, admin_port, 0);
    }

    #[test]
    fn a_graceful_stop_closes_parked_tls_connections_with_close_notify() {
        let site = Site::new();
        let admin_port = free_port();
        let mut p = Prefork::start(
            Setup::new(2)
                .shutdown_timeout("10s")
                .body(&site.body(&admin(admin_port))),
        );
        let mut conns = idle_connections(site.tls_port, 20);
        wait_parked(&p, admin_port, 20);
        p.signal(Signal::SIGQUIT);
        for c in &mut conns {
            if let Err(e) = closed_politely(c) {
                panic!("{e}\n{}", p.logs());
            }
        }
        assert!(
            p.wait_exit(Duration::from_secs(15)).is_some(),
            "{}",
            p.logs()
        );
    }

    #[test]
    fn a_new_generation_drains_the_old_ones_parked_tls_connections() {
        let site = Site::new();
        let admin_port = free_port();
        let body = site.body(&admin(admin_port));
        let p = Prefork::start(Setup::new(1).shutdown_timeout("10s").body(&body));
        let mut conns = idle_connections(site.tls_port, 10);
        wait_parked(&p, admin_port, 10);
        // `workers` changed: a new generation takes over and the old one drains.
        p.write_raw_config(&p.config_for(&body).replace("workers = 1", "workers = 2"));
        p.signal(Signal::SIGHUP);
        for c in &mut conns {
            if let Err(e) = closed_politely(c) {
                panic!("{e}\n{}", p.logs());
            }
        }
        let mut fresh = Tls::connect(site.tls_port, Some("a.test")).unwrap();
        assert_eq!(fresh.get("a.test", "/").unwrap().body, "a");
    }

    #[test]
    fn requests_sent_as_tls_connections_park_are_answered() {
        let site = Site::new();
        let p = site.start(1, "");
        // Requests land around the moment each connection parks (a second
        // idle): whichever side of it they fall, they are answered.
        let mut conns = idle_connections(site.tls_port, 12);
        let idle_since = Instant::now();
        for (i, c) in conns.iter_mut().enumerate() {
            let at = idle_since + Duration::from_millis(940 + 10 * i as u64);
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            let r = c.get("a.test", "/").unwrap();
            assert_eq!((r.status, r.body.as_str()), (200, "a"), "{}", p.logs());
        }
        // A request whose TLS record is cut in two, the connection parking
        // between the halves: rustls keeps the first half while parked.
        let mut c = Tls::connect(site.tls_port, Some("a.test")).unwrap();
        assert_eq!(c.get("a.test", "/").unwrap().body, "a");
        c.stream
            .conn
            .writer()
            .write_all(b"GET /split HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .unwrap();
        let mut record = Vec::new();
        while c.stream.conn.wants_write() {
            c.stream.conn.write_tls(&mut record).unwrap();
        }
        let (first, rest) = record.split_at(record.len() / 2);
        c.stream.sock.write_all(first).unwrap();
        // Long past the moment it parks (the second half still answers if
        // it has not).
        std::thread::sleep(Duration::from_millis(1500));
        c.stream.sock.write_all(rest).unwrap();
        let r = c.read_reply().unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "a"), "{}", p.logs());
    }
}
