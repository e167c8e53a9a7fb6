//! A minimal HTTP/1.1 client over a raw `TcpStream`: it sends exactly the
//! bytes it is given and reads responses one at a time, so tests can check
//! keep-alive and pipelining on one connection.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Longest wait for any single read; a test's own deadline is usually shorter.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause between two bytes of [`Conn::trickle`].
const TRICKLE_PAUSE: Duration = Duration::from_millis(2);

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The trailer fields of a chunked body, as received.
    pub trailers: Vec<(String, String)>,
}

impl Response {
    /// The first value of trailer field `name` (case-insensitive).
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether any header named `name` is present.
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether the server announced it closes the connection.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }
}

/// A parsed request, as a test origin received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Minor version: 1 for HTTP/1.1.
    pub version: u8,
    pub headers: Vec<(String, String)>,
    /// The head exactly as received (lossy UTF-8), through its empty line.
    pub raw_head: String,
    /// The body, decoded when it came chunked.
    pub body: Vec<u8>,
    /// Whether the body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// One HTTP/1.1 connection: a client connection, or an origin's accepted one.
pub struct Conn {
    stream: TcpStream,
    /// Bytes read but not yet consumed by a response.
    buf: Vec<u8>,
}

impl Conn {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_write_timeout(Some(READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    /// Wraps an accepted stream (the test origins read requests with it).
    pub fn from_stream(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects to `127.0.0.1:port`.
    pub fn local(port: u16) -> io::Result<Conn> {
        Conn::connect(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Changes the per-read timeout.
    pub fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.stream.set_read_timeout(Some(timeout))
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends a request built by [`request`] and reads its response.
    pub fn get(&mut self, host: &str, path: &str) -> io::Result<Response> {
        self.send(&request("GET", host, path, &[], b""))?;
        self.read_response()
    }

    /// Reads one response to a request that was not `HEAD`.
    pub fn read_response(&mut self) -> io::Result<Response> {
        self.read_response_to(false)
    }

    /// Reads one response; `head` says the request was `HEAD` (no body).
    pub fn read_response_to(&mut self, head: bool) -> io::Result<Response> {
        self.read_response_skipping(head, true)
    }

    /// Reads the next response, an interim (1xx) one included, for tests
    /// that look at each; `head` says the request was `HEAD` (no body).
    pub fn read_next_response(&mut self, head: bool) -> io::Result<Response> {
        self.read_response_skipping(head, false)
    }

    /// Reads one response; with `skip_interim`, interim ones but `101` are
    /// read and dropped.
    fn read_response_skipping(&mut self, head: bool, skip_interim: bool) -> io::Result<Response> {
        let (status, headers) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut slots);
            match parsed.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = parsed.code.unwrap_or(0);
                    let headers: Vec<(String, String)> = owned_headers(parsed.headers);
                    self.buf.drain(..len);
                    if skip_interim && (100..200).contains(&status) && status != 101 {
                        continue; // interim response; the real one follows
                    }
                    break (status, headers);
                }
                Ok(httparse::Status::Partial) => {
                    if self.fill()? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!(
                                "connection closed before a complete response head ({} bytes: {:?})",
                                self.buf.len(),
                                String::from_utf8_lossy(&self.buf)
                            ),
                        ));
                    }
                }
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "bad response head ({e}): {:?}",
                            String::from_utf8_lossy(&self.buf)
                        ),
                    ))
                }
            }
        };
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
        };
        let mut trailers = Vec::new();
        let body = if head || status == 204 || status == 304 || (!skip_interim && status < 200) {
            Vec::new()
        } else if find("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            self.read_chunked(&mut trailers)?
        } else if let Some(len) = find("content-length") {
            let len: usize = len.parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad Content-Length {len:?}"),
                )
            })?;
            self.read_exact_body(len)?
        } else {
            // Delimited by the server closing the connection.
            while self.fill()? > 0 {}
            std::mem::take(&mut self.buf)
        };
        Ok(Response {
            status,
            headers,
            body,
            trailers,
        })
    }

    /// Reads one request; `None` when the peer closed the connection before
    /// sending any byte of a new one. Bodies framed by `Content-Length` or
    /// chunked encoding are read and decoded.
    pub fn read_request(&mut self) -> io::Result<Option<Request>> {
        self.read_request_then(|_| Ok(()))
    }

    /// Like [`Conn::read_request`], calling `on_head` with the head before
    /// reading the body (an origin answers `Expect: 100-continue` there).
    pub fn read_request_then(
        &mut self,
        on_head: impl FnOnce(&Request) -> io::Result<()>,
    ) -> io::Result<Option<Request>> {
        let Some(mut request) = self.read_request_head()? else {
            return Ok(None);
        };
        on_head(&request)?;
        self.read_request_body(&mut request)?;
        Ok(Some(request))
    }

    /// Reads one request head, leaving its body unread (see
    /// [`Conn::read_request_body`]); `None` when the peer closed the
    /// connection before sending any byte of a new one.
    pub fn read_request_head(&mut self) -> io::Result<Option<Request>> {
        loop {
            let mut slots = [httparse::EMPTY_HEADER; 128];
            let mut parsed = httparse::Request::new(&mut slots);
            match parsed.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let method = parsed.method.unwrap_or("").to_owned();
                    let path = parsed.path.unwrap_or("").to_owned();
                    let version = parsed.version.unwrap_or(1);
                    let headers: Vec<(String, String)> = owned_headers(parsed.headers);
                    let head: Vec<u8> = self.buf.drain(..len).collect();
                    let mut request = Request {
                        method,
                        path,
                        version,
                        headers,
                        raw_head: String::from_utf8_lossy(&head).into_owned(),
                        body: Vec::new(),
                        chunked: false,
                    };
                    request.chunked = request
                        .header("transfer-encoding")
                        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
                    return Ok(Some(request));
                }
                Ok(httparse::Status::Partial) => {
                    if self.fill()? == 0 {
                        if self.buf.is_empty() {
                            return Ok(None);
                        }
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed inside a request head",
                        ));
                    }
                }
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "bad request head ({e}): {:?}",
                            String::from_utf8_lossy(&self.buf)
                        ),
                    ))
                }
            }
        }
    }

    /// Reads the body `request`'s head announces (`Content-Length` or
    /// chunked, decoded) into `request.body`.
    pub fn read_request_body(&mut self, request: &mut Request) -> io::Result<()> {
        if request.chunked {
            request.body = self.read_chunked(&mut Vec::new())?;
        } else if let Some(len) = request.header("content-length") {
            let len: usize = len.trim().parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad Content-Length {len:?}"),
                )
            })?;
            request.body = self.read_exact_body(len)?;
        }
        Ok(())
    }

    /// Whether the server has closed the connection (reads EOF, or a
    /// reset, with no unread bytes left). Waits at most the read timeout: a
    /// connection still open then is not closed.
    pub fn is_closed_by_peer(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        match self.fill() {
            Ok(n) => n == 0,
            // A read that timed out found the connection still open.
            Err(e) => is_reset(&e),
        }
    }

    /// Reads raw bytes up to and including the first empty line (one
    /// head), for tests that look at interim responses.
    pub fn read_raw_head(&mut self) -> io::Result<String> {
        loop {
            if let Some(pos) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..pos + 4).collect();
                return Ok(String::from_utf8_lossy(&head).into_owned());
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a head",
                ));
            }
        }
    }

    /// Reads until `end` has arrived (true), or EOF or an error (false);
    /// what was read stays buffered (see [`Conn::buffered`]).
    pub fn read_until(&mut self, end: &[u8]) -> bool {
        loop {
            if self.buf.windows(end.len()).any(|w| w == end) {
                return true;
            }
            if !matches!(self.fill(), Ok(n) if n > 0) {
                return false;
            }
        }
    }

    /// The bytes read but not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the first `n` buffered bytes (all of them if fewer).
    pub fn consume(&mut self, n: usize) -> Vec<u8> {
        self.buf.drain(..n.min(self.buf.len())).collect()
    }

    /// Sends `bytes` one at a time with a short pause between them, so the
    /// peer reads them in as many pieces; stops at the first failed write.
    pub fn trickle(&mut self, bytes: &[u8]) {
        let _ = self.stream.set_nodelay(true);
        for b in bytes {
            if self.stream.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(TRICKLE_PAUSE);
        }
    }

    /// Everything the peer sends until it closes (or the read timeout).
    pub fn read_to_close(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// The underlying stream (for shutting down a half).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            // A socket with a read timeout returns EINTR on any signal, even
            // with SA_RESTART handlers (signal(7)).
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads exactly `len` body bytes.
    pub fn read_exact_body(&mut self, len: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < len {
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed after {} of {len} body bytes",
                        self.buf.len()
                    ),
                ));
            }
        }
        Ok(self.buf.drain(..len).collect())
    }

    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..pos]).into_owned());
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a chunked body",
                ));
            }
        }
    }

    /// Reads a chunked body; its trailer fields go into `trailers`.
    fn read_chunked(&mut self, trailers: &mut Vec<(String, String)>) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line()?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad chunk size line {line:?}"),
                )
            })?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let line = self.read_line()?;
                    if line.is_empty() {
                        return Ok(body);
                    }
                    let (name, value) = line.split_once(':').unwrap_or((&line, ""));
                    trailers.push((name.to_owned(), value.trim().to_owned()));
                }
            }
            body.extend(self.read_exact_body(size)?);
            let end = self.read_line()?;
            if !end.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("chunk not followed by CRLF: {end:?}"),
                ));
            }
        }
    }
}

/// Builds a request with `Host`, the given extra header lines and a
/// `Content-Length` body (when `body` is not empty).
pub fn request(method: &str, host: &str, path: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    if !body.is_empty() {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Whether a read failed because the peer reset or aborted the
/// connection (it is closed), rather than timing out (it is still open).
pub fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// One `GET` on a fresh connection that asks the server to close it.
pub fn get(port: u16, host: &str, path: &str) -> io::Result<Response> {
    let mut conn = Conn::local(port)?;
    conn.send(&request("GET", host, path, &["Connection: close"], b""))?;
    conn.read_response()
}

/// Encodes `body` as chunks of the given sizes (cycled), ending with the
/// last-chunk and an empty trailer section.
pub fn chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
        i += 1;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Parsed header fields as owned name/value pairs, in order.
fn owned_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}
