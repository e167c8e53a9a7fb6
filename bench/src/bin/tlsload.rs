//! `tlsload --addr 127.0.0.1:8443 --ca ca.pem [--sni bench.test] [--mode full|resume]
//! [--tls 1.2|1.3] [--pq] [--threads N] [--duration S]`: a new TLS connection
//! per request, for the TLS cells of `bench/scripts/tls.py`. `--mode plain`
//! (no `--ca`) makes the same connections and requests without TLS, to a
//! plain listener: what a new connection costs a proxy before any TLS.
//!
//! wrk and `openssl s_time -reuse` resume TLS 1.2 sessions but not TLS 1.3
//! tickets, so their "resumed" runs cost as much as full handshakes. This
//! client keeps what the server gives it (TLS 1.2 session ids and tickets,
//! TLS 1.3 tickets) in one session store per thread, and in `resume` mode
//! reports how many connections really resumed: across several workers that
//! is the share of tickets a worker other than the issuer could decrypt.
//!
//! It offers the key exchanges an OpenSSL 3.0 client offers (X25519, P-256,
//! P-384), so that every proxy does the same work whatever its library
//! prefers; `--pq` also offers rustls's default post-quantum hybrid
//! (X25519MLKEM768), which a rustls server then picks.
//!
//! Each connection sends `GET / HTTP/1.1` with `Connection: close` and reads
//! the response to the server's close. Prints one JSON line: connections,
//! errors, resumed, seconds, connections/s and latency percentiles (µs).

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, StreamOwned};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: tlsload --addr IP:PORT --ca CA.pem [--sni NAME] [--mode full|resume] \
[--tls 1.2|1.3] [--pq] [--threads N] [--duration SECONDS]\n       \
tlsload --addr IP:PORT --mode plain [--threads N] [--duration SECONDS]";

/// What each connection does.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// A full TLS handshake.
    Full,
    /// A TLS handshake that resumes the session of an earlier one.
    Resume,
    /// No TLS.
    Plain,
}

/// What the command line asked for.
struct Args {
    addr: SocketAddr,
    /// The CA's PEM file (not read in plain mode).
    ca: String,
    sni: String,
    mode: Mode,
    version: &'static rustls::SupportedProtocolVersion,
    post_quantum: bool,
    threads: usize,
    duration: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut addr = None;
    let mut ca = None;
    let mut sni = "bench.test".to_owned();
    let mut mode = Mode::Full;
    let mut version = &rustls::version::TLS13;
    let mut threads = 1;
    let mut duration = Duration::from_secs(10);
    let mut post_quantum = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--pq" {
            post_quantum = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => addr = Some(value.parse().map_err(|e| format!("--addr: {e}"))?),
            "--ca" => ca = Some(value),
            "--sni" => sni = value,
            "--mode" => {
                mode = match value.as_str() {
                    "full" => Mode::Full,
                    "resume" => Mode::Resume,
                    "plain" => Mode::Plain,
                    other => return Err(format!("--mode: {other:?} is not full, resume or plain")),
                }
            }
            "--tls" => {
                version = match value.as_str() {
                    "1.2" => &rustls::version::TLS12,
                    "1.3" => &rustls::version::TLS13,
                    other => return Err(format!("--tls: {other:?} is not 1.2 or 1.3")),
                }
            }
            "--threads" => threads = value.parse().map_err(|e| format!("--threads: {e}"))?,
            "--duration" => {
                let s: f64 = value.parse().map_err(|e| format!("--duration: {e}"))?;
                duration = Duration::from_secs_f64(s);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        addr: addr.ok_or("--addr is required")?,
        ca: match (ca, mode) {
            (Some(ca), _) => ca,
            (None, Mode::Plain) => String::new(),
            (None, _) => return Err("--ca is required".to_owned()),
        },
        sni,
        mode,
        version,
        post_quantum,
        threads: threads.max(1),
        duration,
    })
}

/// A client configuration of its own per thread: each thread's session
/// store holds only the sessions its own connections were given.
fn client_config(args: &Args, roots: &RootCertStore) -> Arc<ClientConfig> {
    use rustls::crypto::aws_lc_rs::{default_provider, kx_group};
    let mut provider = default_provider();
    if !args.post_quantum {
        provider.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[args.version])
        .expect("TLS 1.2 and 1.3 are supported")
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    config.resumption = if args.mode == Mode::Resume {
        Resumption::in_memory_sessions(256)
    } else {
        Resumption::disabled()
    };
    Arc::new(config)
}

/// What one thread counted.
#[derive(Default)]
struct Tally {
    connections: u64,
    errors: u64,
    resumed: u64,
    latencies_us: Vec<u32>,
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n";

/// One connection: handshake (`config`: TLS; none: plain), request,
/// response to the close. Whether it resumed a session.
fn one(
    addr: SocketAddr,
    name: &ServerName<'static>,
    config: Option<&Arc<ClientConfig>>,
) -> Result<bool, String> {
    let tcp = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut response = Vec::with_capacity(512);
    let Some(config) = config else {
        let mut tcp = tcp;
        tcp.write_all(REQUEST).map_err(|e| format!("write: {e}"))?;
        tcp.read_to_end(&mut response)
            .map_err(|e| format!("read: {e}"))?;
        return answered(&response).map(|()| false);
    };
    let conn = ClientConnection::new(config.clone(), name.clone()).map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(conn, tcp);
    tls.write_all(REQUEST).map_err(|e| format!("write: {e}"))?;
    match tls.read_to_end(&mut response) {
        Ok(_) => {}
        // A server that closes without close_notify still answered.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(format!("read: {e}")),
    }
    answered(&response)?;
    Ok(tls.conn.handshake_kind() == Some(HandshakeKind::Resumed))
}

/// Whether `response` is a 200.
fn answered(response: &[u8]) -> Result<(), String> {
    if response.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err("not a 200 response".to_owned())
    }
}

fn run_thread(args: &Args, config: Option<Arc<ClientConfig>>, until: Instant) -> Tally {
    let mut tally = Tally::default();
    let name = match ServerName::try_from(args.sni.clone()) {
        Ok(n) => n,
        Err(_) => return tally,
    };
    while Instant::now() < until {
        let start = Instant::now();
        match one(args.addr, &name, config.as_ref()) {
            Ok(resumed) => {
                tally.connections += 1;
                tally.resumed += u64::from(resumed);
                let us = start.elapsed().as_micros();
                tally
                    .latencies_us
                    .push(u32::try_from(us).unwrap_or(u32::MAX));
            }
            Err(e) => {
                if tally.errors == 0 {
                    eprintln!("tlsload: {e}");
                }
                tally.errors += 1;
            }
        }
    }
    tally
}

/// The certificates of the PEM file `ca`.
fn load_roots(ca: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        let cert = cert.map_err(|e| e.to_string())?;
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    Ok(roots)
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tlsload: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let roots = match args.mode {
        Mode::Plain => RootCertStore::empty(),
        Mode::Full | Mode::Resume => match load_roots(&args.ca) {
            Ok(roots) => roots,
            Err(e) => {
                eprintln!("tlsload: {}: {e}", args.ca);
                return ExitCode::from(2);
            }
        },
    };
    let start = Instant::now();
    let until = start + args.duration;
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.threads)
            .map(|_| {
                let config = (args.mode != Mode::Plain).then(|| client_config(&args, &roots));
                let args = &args;
                s.spawn(move || run_thread(args, config, until))
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let mut all = Tally::default();
    for t in tallies {
        all.connections += t.connections;
        all.errors += t.errors;
        all.resumed += t.resumed;
        all.latencies_us.extend(t.latencies_us);
    }
    all.latencies_us.sort_unstable();
    println!(
        "{{\"connections\": {}, \"errors\": {}, \"resumed\": {}, \"seconds\": {:.3}, \
         \"connections_per_s\": {:.1}, \"p50_us\": {}, \"p99_us\": {}}}",
        all.connections,
        all.errors,
        all.resumed,
        seconds,
        all.connections as f64 / seconds,
        percentile(&all.latencies_us, 0.5),
        percentile(&all.latencies_us, 0.99),
    );
    if all.connections == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
