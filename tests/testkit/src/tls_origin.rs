//! An origin served over TLS, for upstream TLS tests: a test CA made with
//! rcgen, leaf certificates it signs, and a blocking HTTP/1.1 keep-alive
//! server on rustls that counts the connections it accepts.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

/// The length of the body of `/big`.
pub const BIG: usize = 1024 * 1024;

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key, signed by a [`TestCa`].
pub struct Leaf {
    /// The certificate (DER).
    pub cert: CertificateDer<'static>,
    /// Its PKCS#8 key (DER).
    pub key: Vec<u8>,
    /// The certificate and the key, PEM-encoded (what `[[certificates]]`
    /// names).
    pub cert_pem: String,
    pub key_pem: String,
}

impl Leaf {
    /// Writes the certificate and the key as PEM to `dir/c.pem` and
    /// `dir/k.pem` (for `[[certificates]]`), and returns their paths.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&cert, &self.cert_pem).expect("write the certificate");
        std::fs::write(&key, &self.key_pem).expect("write the key");
        (cert, key)
    }
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-sign the CA");
        TestCa { issuer }
    }

    /// The CA's certificate, PEM-encoded (what `tls_ca` names).
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA's certificate (DER), for a client's roots.
    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A leaf for `names` (DNS names or IP addresses), signed by this CA.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).expect("leaf params");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        Leaf {
            cert: cert.der().clone(),
            key: key.serialize_der(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// An HTTP/1.1 origin over TLS. Each response's body names the path and
/// the connection (`path=/x conn=3`), and `X-Conn` holds the connection's
/// number, so tests see which requests shared a connection; `/big` gets
/// [`BIG`] bytes of `b` instead. Connections
/// stay open until the client closes them (keep-alive).
pub struct TlsOrigin {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    handshakes: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl TlsOrigin {
    /// Serves with `leaf` on a free loopback port.
    pub fn start(leaf: &Leaf) -> TlsOrigin {
        let config = server_config(leaf);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the TLS origin");
        let addr = listener.local_addr().expect("local_addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, h, s) = (accepted.clone(), handshakes.clone(), stop.clone());
        thread::Builder::new()
            .name("tls-origin".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if s.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let id = a.fetch_add(1, Ordering::SeqCst) + 1;
                    let (config, h) = (config.clone(), h.clone());
                    thread::spawn(move || serve(stream, config, id, &h));
                }
            })
            .expect("spawn the TLS origin");
        TlsOrigin {
            addr,
            accepted,
            handshakes,
            stop,
        }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the stop.
        let _ = TcpStream::connect(self.addr);
    }
}

/// An HTTP/1.1 server configuration with `leaf`.
pub(crate) fn server_config(leaf: &Leaf) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.cert.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key.clone())),
        )
        .expect("the origin's certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Serves the requests of connection `id` until the client closes it.
fn serve(stream: TcpStream, config: Arc<ServerConfig>, id: usize, handshakes: &AtomicUsize) {
    let Some(tls) = accept_tls(stream, config) else {
        return;
    };
    handshakes.fetch_add(1, Ordering::SeqCst);
    answer_each(tls, id, |path| {
        if path == "/big" {
            "b".repeat(BIG)
        } else {
            format!("path={path} conn={id}")
        }
    });
}

/// The server side of a TLS connection on `stream`, its handshake done;
/// `None` if it failed.
pub(crate) fn accept_tls(
    stream: TcpStream,
    config: Arc<ServerConfig>,
) -> Option<StreamOwned<ServerConnection, TcpStream>> {
    let mut tls = StreamOwned::new(ServerConnection::new(config).ok()?, stream);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).ok()?;
    }
    Some(tls)
}

/// Answers each request on `stream` (connection `id`, named in `X-Conn`)
/// with 200 and the body `body` makes of its target, until the client
/// closes it.
pub(crate) fn answer_each(mut stream: impl Read + Write, id: usize, body: impl Fn(&str) -> String) {
    let mut buf = Vec::new();
    while let Some(path) = read_request(&mut stream, &mut buf) {
        let body = body(&path);
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Conn: {id}\r\n\r\n{body}",
            body.len()
        );
        if stream
            .write_all(response.as_bytes())
            .and_then(|()| stream.flush())
            .is_err()
        {
            return;
        }
    }
}

/// Reads one request (its body skipped, framed by `Content-Length`) and
/// returns its target; `None` at the end of the connection or on garbage.
pub(crate) fn read_request(stream: &mut impl Read, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut slots);
        if let httparse::Status::Complete(len) = request.parse(buf).ok()? {
            let path = request.path.unwrap_or("").to_owned();
            let body = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .unwrap_or(0usize);
            while buf.len() < len + body {
                fill(stream, buf)?;
            }
            buf.drain(..len + body);
            return Some(path);
        }
        fill(stream, buf)?;
    }
}

/// Appends what one read returns; `None` at the end or on an error.
fn fill(stream: &mut impl Read, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk) {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}
