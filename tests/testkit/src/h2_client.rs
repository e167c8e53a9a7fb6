//! A blocking HTTP/2 client for tests, on the `h2` crate: h2c with prior
//! knowledge, or TLS with ALPN `h2`. It sends requests one at a time or
//! many at once on one connection, and reads whole responses with their
//! trailers. Its runtime runs on the calling thread, only while a call
//! waits.

use bytes::Bytes;
use h2::client::SendRequest;
use rustls::pki_types::{CertificateDer, ServerName};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// How long any call may take.
const CALL_LIMIT: Duration = Duration::from_secs(20);

/// A request to send.
#[derive(Debug, Clone)]
pub struct H2Request {
    pub method: String,
    /// `authority` (the `:authority` pseudo-field).
    pub authority: String,
    pub path: String,
    pub fields: Vec<(String, String)>,
    /// The body; `None`: the stream ends with the head.
    pub body: Option<Vec<u8>>,
    /// Trailer fields sent after the body.
    pub trailers: Vec<(String, String)>,
}

impl H2Request {
    /// `GET path` for `authority`.
    pub fn get(authority: &str, path: &str) -> H2Request {
        H2Request {
            method: "GET".into(),
            authority: authority.into(),
            path: path.into(),
            fields: Vec::new(),
            body: None,
            trailers: Vec::new(),
        }
    }

    /// `POST path` for `authority` with `body`.
    pub fn post(authority: &str, path: &str, body: Vec<u8>) -> H2Request {
        H2Request {
            method: "POST".into(),
            body: Some(body),
            ..H2Request::get(authority, path)
        }
    }

    /// Adds a field.
    pub fn field(mut self, name: &str, value: &str) -> H2Request {
        self.fields.push((name.into(), value.into()));
        self
    }

    /// Adds a trailer field (the request then has a body, empty if none).
    pub fn trailer(mut self, name: &str, value: &str) -> H2Request {
        self.trailers.push((name.into(), value.into()));
        self.body.get_or_insert_with(Vec::new);
        self
    }
}

/// A response as received.
#[derive(Debug, Clone)]
pub struct H2Response {
    pub status: u16,
    /// Fields, lower-case names, in order.
    pub fields: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl H2Response {
    /// The first value of field `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        find(&self.fields, name)
    }

    /// The first value of trailer field `name`.
    pub fn trailer(&self, name: &str) -> Option<&str> {
        find(&self.trailers, name)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn find<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One HTTP/2 connection.
pub struct H2Client {
    rt: Runtime,
    send: SendRequest<Bytes>,
    conn: JoinHandle<Result<(), h2::Error>>,
}

impl H2Client {
    /// Connects to `addr` speaking h2c with prior knowledge.
    pub fn connect(addr: SocketAddr) -> io::Result<H2Client> {
        let rt = runtime()?;
        let (send, conn) = rt.block_on(async {
            let tcp = TcpStream::connect(addr).await?;
            let (send, conn) = h2::client::handshake(tcp).await.map_err(io::Error::other)?;
            Ok::<_, io::Error>((send, tokio::spawn(conn)))
        })?;
        Ok(H2Client { rt, send, conn })
    }

    /// Connects to `addr` over TLS offering ALPN `h2` only, trusting
    /// `root`, with SNI `server_name`. Fails if the server does not choose
    /// `h2`.
    pub fn connect_tls(
        addr: SocketAddr,
        server_name: &str,
        root: CertificateDer<'static>,
    ) -> io::Result<H2Client> {
        let rt = runtime()?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root).map_err(io::Error::other)?;
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from(server_name.to_owned()).map_err(io::Error::other)?;
        let (send, conn) = rt.block_on(async {
            let tcp = TcpStream::connect(addr).await?;
            let tls = connector.connect(name, tcp).await?;
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(io::Error::other("the server did not choose h2"));
            }
            let (send, conn) = h2::client::handshake(tls).await.map_err(io::Error::other)?;
            Ok::<_, io::Error>((send, tokio::spawn(conn)))
        })?;
        Ok(H2Client { rt, send, conn })
    }

    /// Sends `req` and reads its whole response.
    pub fn send(&mut self, req: H2Request) -> Result<H2Response, h2::Error> {
        self.all(vec![req]).pop().expect("one response")
    }

    /// Sends every request of `reqs` at once on this connection; their
    /// responses, in order.
    pub fn all(&mut self, reqs: Vec<H2Request>) -> Vec<Result<H2Response, h2::Error>> {
        let send = self.send.clone();
        self.block(async move {
            let streams: Vec<_> = reqs
                .into_iter()
                .map(|req| tokio::spawn(exchange(send.clone(), req)))
                .collect();
            let mut out = Vec::new();
            for s in streams {
                out.push(s.await.expect("the stream's task ends"));
            }
            out
        })
    }

    /// Whether the connection has ended (the server closed it, or went
    /// away and finished its streams), waiting at most `limit`.
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        let conn = &mut self.conn;
        self.rt
            .block_on(async { tokio::time::timeout(limit, conn).await.is_ok() })
    }

    /// How the connection ended, if it did within `limit`: `Ok` for an
    /// orderly end (GOAWAY with NO_ERROR, then the close), the error for a
    /// reset or any other. Asks once: the connection is gone after it.
    pub fn end_within(&mut self, limit: Duration) -> Option<Result<(), String>> {
        let conn = &mut self.conn;
        let joined = self
            .rt
            .block_on(async { tokio::time::timeout(limit, conn).await.ok() })?;
        Some(match joined {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        })
    }

    fn block<F: Future>(&self, f: F) -> F::Output {
        self.rt
            .block_on(async { tokio::time::timeout(CALL_LIMIT, f).await })
            .expect("an HTTP/2 call took too long")
    }
}

async fn exchange(send: SendRequest<Bytes>, req: H2Request) -> Result<H2Response, h2::Error> {
    let mut send = send.ready().await?;
    let mut head = http::Request::builder()
        .method(req.method.as_str())
        .uri(format!("http://{}{}", req.authority, req.path));
    for (n, v) in &req.fields {
        head = head.header(n, v);
    }
    let head = head.body(()).expect("a valid request head");
    let ends = req.body.is_none() && req.trailers.is_empty();
    let (response, mut body_tx) = send.send_request(head, ends)?;
    if let Some(body) = req.body {
        let body_is_empty = body.is_empty();
        let mut rest = Bytes::from(body);
        while !rest.is_empty() {
            body_tx.reserve_capacity(rest.len());
            let n = match std::future::poll_fn(|cx| body_tx.poll_capacity(cx)).await {
                Some(n) => n?,
                None => break,
            };
            let part = rest.split_to(n.min(rest.len()));
            body_tx.send_data(part, rest.is_empty() && req.trailers.is_empty())?;
        }
        if req.trailers.is_empty() && body_is_empty {
            body_tx.send_data(Bytes::new(), true)?;
        } else if !req.trailers.is_empty() {
            let mut map = http::HeaderMap::new();
            for (n, v) in &req.trailers {
                map.append(
                    http::header::HeaderName::from_bytes(n.as_bytes()).expect("a trailer name"),
                    http::HeaderValue::from_str(v).expect("a trailer value"),
                );
            }
            body_tx.send_trailers(map)?;
        }
    }
    let response = response.await?;
    let status = response.status().as_u16();
    let fields = pairs(response.headers());
    let mut recv = response.into_body();
    let mut body = Vec::new();
    while let Some(data) = recv.data().await {
        let data = data?;
        let _ = recv.flow_control().release_capacity(data.len());
        body.extend_from_slice(&data);
    }
    let trailers = recv
        .trailers()
        .await?
        .map(|t| pairs(&t))
        .unwrap_or_default();
    Ok(H2Response {
        status,
        fields,
        body,
        trailers,
    })
}

fn pairs(map: &http::HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn runtime() -> io::Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}
