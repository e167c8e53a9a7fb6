//! The optional admin HTTP listener: `GET /metrics` (Prometheus text
//! format) and `GET /healthz` (200 while serving, 503 otherwise).
//!
//! The master has no async runtime and scrapes are rare and small: one
//! thread answers one connection at a time, each bounded by timeouts, with
//! `Connection: close`.

use crate::deadline::Deadline;
use crate::query::{ask, Asked, Query};
use crossbeam_channel::Sender;
use slog::{debug, Logger};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// How long a client may take to send its whole request head, and then to
/// read the whole answer (one connection is served at a time).
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
    let deadline = Deadline::after(IO_TIMEOUT);
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = deadline.read(&mut stream, &mut chunk)?;
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
    let deadline = Deadline::after(IO_TIMEOUT);
    deadline.write_all(stream, head.as_bytes())?;
    if !is_head {
        deadline.write_all(stream, body.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Answer;
    use std::io::{Read, Write};
    use std::time::Instant;

    #[test]
    fn a_trickling_client_cannot_hold_the_listener() {
        let (tx, rx) = crossbeam_channel::unbounded::<Asked>();
        std::thread::spawn(move || {
            for asked in rx {
                let body = "ok\n".to_owned();
                let _ = asked.reply.send(Answer { ok: true, body });
            }
        });
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let log = Logger::root(slog::Discard, slog::o!());
        let addr = serve_on(listener, tx, log).unwrap();

        // One byte of a head every 200 ms (each read well within its
        // timeout), for up to 20 s.
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"G").unwrap();
        let trickle = std::thread::spawn(move || {
            for _ in 0..100 {
                std::thread::sleep(Duration::from_millis(200));
                if slow.write_all(b"E").is_err() {
                    return;
                }
            }
        });
        let started = Instant::now();
        let mut probe = TcpStream::connect(addr).unwrap();
        probe
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        probe
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        probe.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(10), "{waited:?}");
        trickle.join().unwrap();
    }
}
