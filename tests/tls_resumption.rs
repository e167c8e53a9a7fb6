//! TLS session resumption on whichever worker accepts the connection: the
//! master owns the session-ticket keys and every worker seals and opens
//! tickets with them, across reloads and binary upgrades.

use crate::support::prefork::{free_port, Prefork, Setup};
use crate::support::wait_until;
use prefork_testkit::resumption::{ResumingClient, TlsSession};
use rustls::pki_types::CertificateDer;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// The name the test certificate is for.
const NAME: &str = "resume.test";

/// A self-signed certificate for [`NAME`], written beside the config;
/// the client trusts it as its root.
struct Certificate {
    dir: tempfile::TempDir,
    der: CertificateDer<'static>,
}

impl Certificate {
    fn new() -> Certificate {
        let issued =
            rcgen::generate_simple_self_signed(vec![NAME.to_owned()]).expect("certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("c.pem"), issued.cert.pem()).expect("write");
        std::fs::write(dir.path().join("c.key"), issued.signing_key.serialize_pem())
            .expect("write");
        Certificate {
            dir,
            der: issued.cert.der().clone(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A TLS listener on `port` (one socket per worker: the kernel spreads
    /// new connections over all of them) serving this certificate.
    fn tables(&self, port: u16) -> String {
        format!(
            "[[listen]]\naddr = \"127.0.0.1:{port}\"\ntls = true\nreuseport = true\n\
             [[certificates]]\ncert = \"{}\"\nkey = \"{}\"\n\
             [[routes]]\nhost = \"{NAME}\"\nrespond = {{ body = \"resumed?\" }}\n",
            self.path("c.pem"),
            self.path("c.key"),
        )
    }
}

/// prefork with `workers` workers and a TLS listener; its TLS address.
fn start(cert: &Certificate, workers: usize) -> (Prefork, SocketAddr) {
    let port = free_port();
    let p = Prefork::start(
        Setup::new(workers)
            .log("access_log_format = \"$pid $ssl_protocol $status\"")
            .body(&cert.tables(port)),
    );
    (p, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// One request on a new connection of `client`, read to the close (TLS
/// 1.3 tickets arrive after the handshake); whether it resumed a session.
fn one_request(client: &ResumingClient, addr: SocketAddr) -> bool {
    let mut session: TlsSession = client.connect(addr, NAME).expect("handshake");
    let resumed = session.resumed();
    session
        .stream
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .expect("write");
    let mut response = Vec::new();
    // prefork ends with close_notify; a reset after it is no failure.
    let _ = session.stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("resumed?"), "{text}");
    resumed
}

/// The access log's lines of requests over `protocol` (the harness's own
/// probes come over plain HTTP).
fn tls_lines(p: &Prefork, protocol: &str) -> Vec<String> {
    p.access_log()
        .lines()
        .filter(|l| l.contains(protocol))
        .map(str::to_owned)
        .collect()
}

fn chained_reconnects_resume_on_every_worker(
    versions: &[&'static rustls::SupportedProtocolVersion],
    protocol: &str,
) {
    const RECONNECTS: usize = 40;
    let cert = Certificate::new();
    let (p, addr) = start(&cert, 4);
    let client = ResumingClient::with_versions([cert.der.clone()], versions);
    assert!(
        !one_request(&client, addr),
        "the first connection has nothing to resume"
    );
    let resumed = (0..RECONNECTS)
        .filter(|_| one_request(&client, addr))
        .count();
    assert!(
        wait_until(Duration::from_secs(5), || tls_lines(&p, protocol).len()
            > RECONNECTS),
        "every request is logged over {protocol}\n{}",
        p.access_log()
    );
    let workers: BTreeSet<String> = tls_lines(&p, protocol)
        .iter()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    eprintln!(
        "{protocol}: {resumed} of {RECONNECTS} reconnects resumed, served by {} workers",
        workers.len()
    );
    assert!(
        workers.len() >= 3,
        "the connections should spread over the workers: {workers:?}"
    );
    // At least 95 %: with per-worker keys about 1 in 4 would.
    assert!(
        resumed * 100 >= RECONNECTS * 95,
        "{resumed} of {RECONNECTS} reconnects resumed across {} workers",
        workers.len()
    );
}

#[test]
fn tls13_sessions_resume_on_whichever_of_four_workers_accepts() {
    chained_reconnects_resume_on_every_worker(&[&rustls::version::TLS13], "TLSv1.3");
}

#[test]
fn tls12_sessions_resume_on_whichever_of_four_workers_accepts() {
    chained_reconnects_resume_on_every_worker(&[&rustls::version::TLS12], "TLSv1.2");
}

/// Whether a ticket taken before `change` resumes after it, on every
/// worker after it (each tried until it served one).
fn a_ticket_resumes_after(change: impl FnOnce(&mut Prefork), workers_after: usize) {
    let cert = Certificate::new();
    let (mut p, addr) = start(&cert, 2);
    // One session per later try: rustls uses each TLS 1.3 ticket once.
    let clients: Vec<ResumingClient> = (0..8)
        .map(|_| ResumingClient::with_versions([cert.der.clone()], &[&rustls::version::TLS13]))
        .collect();
    for c in &clients {
        assert!(!one_request(c, addr));
    }
    change(&mut p);
    let resumed = clients.iter().filter(|c| one_request(c, addr)).count();
    assert_eq!(
        resumed,
        clients.len(),
        "tickets from before resume after, on {workers_after} workers"
    );
}

#[test]
fn a_ticket_from_before_a_reload_to_a_new_generation_resumes_after_it() {
    a_ticket_resumes_after(
        |p| {
            let old: BTreeSet<i32> = p.workers().iter().map(|w| w.pid).collect();
            // Three workers instead of two: a new generation of processes.
            let text = std::fs::read_to_string(p.config_path()).expect("config");
            std::fs::write(
                p.config_path(),
                text.replacen("workers = 2", "workers = 3", 1),
            )
            .expect("write");
            p.reload_ok();
            assert!(
                p.wait_workers(3, Duration::from_secs(15), |ws| ws
                    .iter()
                    .all(|w| !old.contains(&w.pid) && p.master_saw_ready(w.pid)))
                    .is_some(),
                "no new generation of 3 workers\n{}",
                p.logs()
            );
        },
        3,
    );
}

#[test]
fn a_ticket_from_before_a_binary_upgrade_resumes_on_the_new_masters_workers() {
    a_ticket_resumes_after(
        |p| {
            let (_, new_workers) = p.binary_upgrade();
            assert_eq!(new_workers.len(), 2);
        },
        2,
    );
}
