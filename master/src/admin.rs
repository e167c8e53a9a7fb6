//! The optional admin HTTP listener: `GET /metrics` (Prometheus text
//! format) and `GET /healthz` (200 while serving, 503 otherwise).
//!
//! The master has no async runtime and scrapes are rare and small: one
//! thread answers one connection at a time, each bounded by timeouts, with
//! `Connection: close`.

use crate::query::{ask, Asked, Query};
use crossbeam_channel::Sender;
use slog::{debug, Logger};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// How long a client may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the master loop may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// Binds `addr`.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {e}")))
}

/// Serves on `listener` on a thread, asking `master`; returns its address.
pub fn serve_on(
    listener: TcpListener,
    master: Sender<Asked>,
    log: Logger,
) -> io::Result<SocketAddr> {
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            for stream in listener.incoming() {
                if let Err(e) = stream.and_then(|s| serve(s, &master)) {
                    debug!(log, "admin client failed"; "error" => %e);
                }
            }
        })?;
    Ok(local)
}

fn serve(mut stream: TcpStream, master: &Sender<Asked>) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > MAX_HEAD {
            return respond(
                &mut stream,
                431,
                "text/plain",
                "request head too large\n",
                false,
            );
        }
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let is_head = method == "HEAD";
    if method != "GET" && !is_head {
        return respond(
            &mut stream,
            405,
            "text/plain",
            "only GET and HEAD\n",
            is_head,
        );
    }
    let query = match path {
        "/metrics" => Query::Metrics,
        "/healthz" => Query::Health,
        _ => {
            return respond(
                &mut stream,
                404,
                "text/plain",
                "try /metrics or /healthz\n",
                is_head,
            )
        }
    };
    match ask(master, query, ANSWER_TIMEOUT) {
        Some(answer) if query == Query::Metrics => respond(
            &mut stream,
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            &answer.body,
            is_head,
        ),
        Some(answer) => {
            let status = if answer.ok { 200 } else { 503 };
            respond(&mut stream, status, "text/plain", &answer.body, is_head)
        }
        None => respond(
            &mut stream,
            503,
            "text/plain",
            "the master is busy\n",
            is_head,
        ),
    }
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
    is_head: bool,
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !is_head {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}
