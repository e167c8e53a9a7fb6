//! Active health checks: one task per checked server in each worker sends
//! `GET path` every `interval` and feeds the result to the server's health,
//! in the protocol the group's servers speak (HTTP/1.1 or HTTP/2).
//!
//! Every worker checks on its own (no IPC), so a server sees one check per
//! worker per interval. In a `send_proxy_protocol` group a check's
//! connection starts with the LOCAL form of the header (v1 `PROXY
//! UNKNOWN`, v2 LOCAL): it carries no client, and a server that expects a
//! header refuses a connection without one. The tasks only await sockets and timers, never block
//! the event loop, end when the worker starts stopping, and end when their
//! group is dropped.

use super::health::Change;
use super::tls::GroupTls;
use super::{Group, Upstreams};
use crate::http::proxy_protocol_encode;
use crate::stop::Stop;
use prefork_shared::config::{HealthCheck, ProxyVersion};
use slog::{info, warn, Logger};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{sleep, timeout};

/// Largest response head a check reads.
const MAX_CHECK_HEAD: usize = 8 * 1024;

/// The error log of the newest configuration, while one is in use (a hot
/// reload may move it).
pub(crate) type NewestLog = Rc<dyn Fn() -> Option<Logger>>;

/// Starts the checks of every group that has `health_check`, except groups
/// kept unchanged from `previous` (a hot reload), whose checks still run.
/// They log to `newest`, else to `log`.
pub(crate) fn spawn(
    upstreams: &Upstreams,
    previous: Option<&Upstreams>,
    stop: &watch::Receiver<Stop>,
    newest: &NewestLog,
    log: &Logger,
) {
    for (name, group) in upstreams.groups() {
        let already_checked = previous.is_some_and(|p| p.shares(name, group));
        if group.config.health_check.is_none() || already_checked {
            continue;
        }
        for index in 0..group.len() {
            let logs = CheckLog {
                newest: newest.clone(),
                fallback: log.clone(),
                upstream: name.to_owned(),
                server: group.server(index).name.clone(),
            };
            tokio::task::spawn_local(check_loop(Rc::downgrade(group), index, stop.clone(), logs));
        }
    }
}

/// Where one server's check logs its changes.
struct CheckLog {
    newest: NewestLog,
    fallback: Logger,
    upstream: String,
    server: String,
}

impl CheckLog {
    /// The newest error log, the check's upstream and server on each line.
    fn get(&self) -> Logger {
        let base = (self.newest)().unwrap_or_else(|| self.fallback.clone());
        base.new(slog::o!("upstream" => self.upstream.clone(), "server" => self.server.clone()))
    }
}

async fn check_loop(
    group: Weak<Group>,
    index: usize,
    mut stop: watch::Receiver<Stop>,
    log: CheckLog,
) {
    loop {
        // Only a weak reference is kept across waits: a replaced group's
        // checks end on their own.
        let Some((check, addr, host, how)) =
            group.upgrade().filter(|g| !g.is_retired()).and_then(|g| {
                let server = g.server(index);
                let check = g.config.health_check.clone()?;
                let how = How {
                    tls: g.tls.clone().map(|tls| (tls, index)),
                    h2: g.speaks_h2(),
                    proxy: g.config.send_proxy_protocol,
                };
                Some((check, server.addr, server.name.clone(), how))
            })
        else {
            return;
        };
        let result = tokio::select! {
            result = probe(addr, &host, &check, how) => result,
            _ = stop.wait_for(|s| *s != Stop::Running) => return,
        };
        let Some(g) = group.upgrade().filter(|g| !g.is_retired()) else {
            return;
        };
        match (g.checked(index, result.is_ok()), result) {
            (Some(Change::Down), Err(why)) => {
                warn!(log.get(), "health check failed, server marked down"; "reason" => why);
            }
            (Some(Change::Up), _) => info!(log.get(), "health check passed, server marked up"),
            _ => {}
        }
        drop(g);
        tokio::select! {
            _ = sleep(check.interval) => {}
            _ = stop.wait_for(|s| *s != Stop::Running) => return,
        }
    }
}

/// The TLS side of a checked server's group, and the server's index.
type CheckTls = Option<(Rc<GroupTls>, usize)>;

/// How a checked server's group talks to it.
#[derive(Default)]
struct How {
    /// TLS, if the group has it.
    tls: CheckTls,
    /// HTTP/2, if the group's servers speak it.
    h2: bool,
    /// The PROXY header version the group sends, if any.
    proxy: Option<ProxyVersion>,
}

/// One check: `Ok` for a 2xx or 3xx response head within the timeout, on
/// a connection made as `how` says.
async fn probe(addr: SocketAddr, host: &str, check: &HealthCheck, how: How) -> Result<(), String> {
    match timeout(check.timeout, exchange(addr, host, &check.path, how)).await {
        Ok(Ok(status)) if (200..400).contains(&status) => Ok(()),
        Ok(Ok(status)) => Err(format!("status {status}")),
        Ok(Err(why)) => Err(why),
        Err(_) => Err(format!("no response within {:?}", check.timeout)),
    }
}

/// Sends the check request and returns the response status.
async fn exchange(addr: SocketAddr, host: &str, path: &str, how: How) -> Result<u16, String> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if let Some(version) = how.proxy {
        let header = proxy_protocol_encode::encode(version, None);
        tcp.write_all(header.as_bytes())
            .await
            .map_err(|e| format!("send PROXY header: {e}"))?;
    }
    match (how.tls, how.h2) {
        (None, false) => status_over(tcp, host, path).await,
        (None, true) => status_over_h2(tcp, "http", host, path).await,
        (Some((tls, index)), false) => {
            let stream = tls
                .handshake(index, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            status_over(stream, host, path).await
        }
        (Some((tls, index)), true) => {
            let stream = tls
                .handshake_h2(index, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            status_over_h2(stream, "https", host, path).await
        }
    }
}

/// Sends the check request over HTTP/2 on `stream` (a connection of its
/// own, driven here) and returns the response status.
async fn status_over_h2<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    scheme: &str,
    host: &str,
    path: &str,
) -> Result<u16, String> {
    let (send, connection) = h2::client::handshake(stream)
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    let request = http::Request::get(format!("{scheme}://{host}{path}"))
        .header(http::header::USER_AGENT, "prefork-health-check")
        .body(())
        .map_err(|e| format!("request: {e}"))?;
    let exchange = async {
        let (response, _) = send.ready().await?.send_request(request, true)?;
        response.await
    };
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        response = exchange => response
            .map(|r| r.status().as_u16())
            .map_err(|e| format!("HTTP/2: {e}")),
        ended = connection.as_mut() => Err(match ended {
            Ok(()) => "closed before the response head".to_owned(),
            Err(e) => format!("HTTP/2: {e}"),
        }),
    }
}

/// Sends the check request over `stream` and returns the response status.
async fn status_over<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    path: &str,
) -> Result<u16, String> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: prefork-health-check\r\nConnection: close\r\n\r\n"
    );
    let sent = async {
        stream.write_all(request.as_bytes()).await?;
        stream.flush().await
    };
    sent.await.map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                return response.code.ok_or_else(|| "no status".to_owned())
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_CHECK_HEAD => {}
            Ok(httparse::Status::Partial) => return Err("response head too large".into()),
            Err(e) => return Err(format!("malformed response: {e}")),
        }
        if stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?
            == 0
        {
            return Err("closed before the response head".into());
        }
        if buf.len() > MAX_CHECK_HEAD {
            buf.truncate(MAX_CHECK_HEAD);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::net::TcpListener;

    fn check(timeout: Duration) -> HealthCheck {
        HealthCheck {
            path: "/health".into(),
            interval: Duration::from_secs(1),
            timeout,
            passes: 1,
            fails: 1,
        }
    }

    /// A server that answers one connection with `response`.
    async fn answering(response: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = vec![0u8; 1024];
            let n = s.read(&mut got).await.unwrap();
            got.truncate(n);
            s.write_all(response).await.unwrap();
            got
        });
        (addr, task)
    }

    #[tokio::test]
    async fn two_and_three_hundreds_pass_others_fail() {
        let (addr, server) = answering(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        assert_eq!(
            probe(
                addr,
                "app:80",
                &check(Duration::from_secs(2)),
                How::default()
            )
            .await,
            Ok(())
        );
        let sent = String::from_utf8(server.await.unwrap()).unwrap();
        assert!(
            sent.starts_with("GET /health HTTP/1.1\r\nHost: app:80\r\n"),
            "{sent}"
        );

        let (addr, _s) = answering(b"HTTP/1.1 301 Moved\r\nLocation: /\r\n\r\n").await;
        assert_eq!(
            probe(addr, "a", &check(Duration::from_secs(2)), How::default()).await,
            Ok(())
        );
        let (addr, _s) = answering(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(
            probe(addr, "a", &check(Duration::from_secs(2)), How::default()).await,
            Err("status 503".into())
        );
        let (addr, _s) = answering(b"garbage\r\n\r\n").await;
        let err = probe(addr, "a", &check(Duration::from_secs(2)), How::default())
            .await
            .unwrap_err();
        assert!(err.starts_with("malformed response"), "{err}");
    }

    #[tokio::test]
    async fn silence_and_refusal_fail() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let err = probe(
            addr,
            "a",
            &check(Duration::from_millis(100)),
            How::default(),
        )
        .await
        .unwrap_err();
        assert!(err.starts_with("no response within"), "{err}");
        drop(listener);
        let err = probe(addr, "a", &check(Duration::from_secs(2)), How::default())
            .await
            .unwrap_err();
        assert!(err.starts_with("connect:"), "{err}");
    }

    #[tokio::test]
    async fn checks_run_over_tls_and_fail_on_a_certificate_that_does_not_verify() {
        use prefork_shared::config::{Der, Server, TlsRoots, UpstreamTls};
        use prefork_testkit::tls_origin::{TestCa, TlsOrigin};
        use rustls::pki_types::pem::PemObject;
        let ca = TestCa::new("test CA");
        let origin = TlsOrigin::start(&ca.leaf(&["api.internal"]));
        let tls_to = |ca: &TestCa, name: &str| {
            let certs = rustls::pki_types::CertificateDer::pem_slice_iter(ca.pem().as_bytes())
                .map(|c| Der(c.unwrap().to_vec()))
                .collect();
            let tls = UpstreamTls {
                server_name: Some(name.into()),
                roots: TlsRoots::Ca {
                    file: "ca.pem".into(),
                    certs,
                },
            };
            let server = Server {
                name: origin.addr().to_string(),
                addr: origin.addr(),
                weight: 1,
            };
            Some((Rc::new(GroupTls::new(&tls, &[server], false)), 0))
        };
        let check = check(Duration::from_secs(5));
        assert_eq!(
            probe(
                origin.addr(),
                "a",
                &check,
                How {
                    tls: tls_to(&ca, "api.internal"),
                    ..How::default()
                }
            )
            .await,
            Ok(())
        );
        let err = probe(
            origin.addr(),
            "a",
            &check,
            How {
                tls: tls_to(&TestCa::new("other"), "api.internal"),
                ..How::default()
            },
        )
        .await
        .unwrap_err();
        assert!(
            err.starts_with("TLS handshake: certificate verify failed: unknown issuer"),
            "{err}"
        );
    }

    /// A check of a `send_proxy_protocol` group starts with the LOCAL form
    /// of the header, then the request, on the same connection.
    #[tokio::test]
    async fn checks_of_a_group_sending_proxy_headers_start_with_local() {
        for (version, local) in [
            (ProxyVersion::V1, b"PROXY UNKNOWN\r\n".to_vec()),
            (
                ProxyVersion::V2,
                b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec(),
            ),
        ] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut got = Vec::new();
                while !got.ends_with(b"\r\n\r\n") || got.len() <= local_len(&got) {
                    assert_ne!(s.read_buf(&mut got).await.unwrap(), 0, "closed early");
                }
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    .await
                    .unwrap();
                got
            });
            let how = How {
                proxy: Some(version),
                ..How::default()
            };
            let check = check(Duration::from_secs(5));
            assert_eq!(probe(addr, "a", &check, how).await, Ok(()));
            let got = server.await.unwrap();
            assert!(got.starts_with(&local), "{version:?}: {got:?}");
            assert!(
                got[local.len()..].starts_with(b"GET /health HTTP/1.1\r\n"),
                "{version:?}: {got:?}"
            );
        }
    }

    /// The length of the LOCAL header `got` starts with (v2's ends in
    /// `\r\n\r\n` bytes of its own, so the request must come after it).
    fn local_len(got: &[u8]) -> usize {
        if got.starts_with(b"\r\n\r\n") {
            16
        } else {
            0
        }
    }

    fn h2() -> How {
        How {
            h2: true,
            ..How::default()
        }
    }

    /// A group that speaks HTTP/2 is checked over HTTP/2: an h2c server
    /// passes, an HTTP/1.1 one does not.
    #[tokio::test]
    async fn http2_servers_are_checked_over_http2() {
        let origin = prefork_testkit::h2_origin::H2Origin::start();
        let check = HealthCheck {
            path: "/length/0".into(),
            ..check(Duration::from_secs(5))
        };
        assert_eq!(probe(origin.addr(), "a", &check, h2()).await, Ok(()));
        assert_eq!(origin.streams(), 1);
        let (addr, _server) = answering(b"HTTP/1.1 200 OK\r\n\r\n").await;
        let err = probe(addr, "a", &check, h2()).await.unwrap_err();
        assert!(err.starts_with("HTTP/2"), "{err}");
    }
}
