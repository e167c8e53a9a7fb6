//! A raw HTTP/2 client for tests that misbehave on purpose: it writes exactly
//! the frames a test builds (any order, any flags, thousands in one write),
//! with hand-encoded HPACK ([`hpack::Block`]), and reads the server's frames
//! back as typed [`Frame`]s. Blocking std I/O with timeouts; h2c with prior
//! knowledge (the connection preface), no TLS.

pub mod hpack;
mod huffman;

use hpack::{Block, Decoder};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The frame header's length.
pub const HEADER_LEN: usize = 9;
/// The largest frame payload any peer must accept (SETTINGS_MAX_FRAME_SIZE's
/// initial value).
pub const DEFAULT_MAX_FRAME: usize = 16_384;
/// The largest payload the reader accepts before calling the stream broken.
const READ_FRAME_LIMIT: usize = 1 << 20;
/// Longest wait for a single read or write unless a test says otherwise.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Frame types (RFC 9113 §6).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// Error codes (RFC 9113 §7).
pub mod code {
    pub const NO_ERROR: u32 = 0x0;
    pub const PROTOCOL_ERROR: u32 = 0x1;
    pub const INTERNAL_ERROR: u32 = 0x2;
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    pub const SETTINGS_TIMEOUT: u32 = 0x4;
    pub const STREAM_CLOSED: u32 = 0x5;
    pub const FRAME_SIZE_ERROR: u32 = 0x6;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const CANCEL: u32 = 0x8;
    pub const COMPRESSION_ERROR: u32 = 0x9;
    pub const CONNECT_ERROR: u32 = 0xa;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
    pub const INADEQUATE_SECURITY: u32 = 0xc;
    pub const HTTP_1_1_REQUIRED: u32 = 0xd;

    /// The code's name, or its number.
    pub fn name(code: u32) -> String {
        const NAMES: [&str; 14] = [
            "NO_ERROR",
            "PROTOCOL_ERROR",
            "INTERNAL_ERROR",
            "FLOW_CONTROL_ERROR",
            "SETTINGS_TIMEOUT",
            "STREAM_CLOSED",
            "FRAME_SIZE_ERROR",
            "REFUSED_STREAM",
            "CANCEL",
            "COMPRESSION_ERROR",
            "CONNECT_ERROR",
            "ENHANCE_YOUR_CALM",
            "INADEQUATE_SECURITY",
            "HTTP_1_1_REQUIRED",
        ];
        NAMES
            .get(code as usize)
            .map_or_else(|| format!("0x{code:x}"), |n| n.to_string())
    }
}

/// SETTINGS parameters.
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// One HTTP/2 frame, as sent or as read (padding removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        end_stream: bool,
        data: Vec<u8>,
    },
    Headers {
        stream: u32,
        end_stream: bool,
        end_headers: bool,
        block: Vec<u8>,
    },
    Priority {
        stream: u32,
        depends_on: u32,
        exclusive: bool,
        weight: u8,
    },
    RstStream {
        stream: u32,
        code: u32,
    },
    Settings {
        ack: bool,
        params: Vec<(u16, u32)>,
    },
    Ping {
        ack: bool,
        data: [u8; 8],
    },
    GoAway {
        last_stream: u32,
        code: u32,
        debug: Vec<u8>,
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    Continuation {
        stream: u32,
        end_headers: bool,
        block: Vec<u8>,
    },
    /// PUSH_PROMISE, extension types, or a frame too short for its type.
    Other {
        kind: u8,
        flags: u8,
        stream: u32,
        payload: Vec<u8>,
    },
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the header or its length announce.
    Incomplete,
    /// A length past the reader's limit.
    TooLarge(usize),
}

impl Frame {
    /// A request's HEADERS: the whole block in one frame.
    pub fn headers(stream: u32, block: &Block, end_stream: bool) -> Frame {
        Frame::Headers {
            stream,
            end_stream,
            end_headers: true,
            block: block.bytes().to_vec(),
        }
    }

    /// The frame's type byte.
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Data { .. } => kind::DATA,
            Frame::Headers { .. } => kind::HEADERS,
            Frame::Priority { .. } => kind::PRIORITY,
            Frame::RstStream { .. } => kind::RST_STREAM,
            Frame::Settings { .. } => kind::SETTINGS,
            Frame::Ping { .. } => kind::PING,
            Frame::GoAway { .. } => kind::GOAWAY,
            Frame::WindowUpdate { .. } => kind::WINDOW_UPDATE,
            Frame::Continuation { .. } => kind::CONTINUATION,
            Frame::Other { kind, .. } => *kind,
        }
    }

    /// Appends the frame's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        let (flags, stream) = match self {
            Frame::Data {
                stream,
                end_stream,
                data,
            } => {
                out.extend_from_slice(data);
                (bit(*end_stream, flag::END_STREAM), *stream)
            }
            Frame::Headers {
                stream,
                end_stream,
                end_headers,
                block,
            } => {
                out.extend_from_slice(block);
                (
                    bit(*end_stream, flag::END_STREAM) | bit(*end_headers, flag::END_HEADERS),
                    *stream,
                )
            }
            Frame::Priority {
                stream,
                depends_on,
                exclusive,
                weight,
            } => {
                let dep = depends_on | if *exclusive { 1 << 31 } else { 0 };
                out.extend_from_slice(&dep.to_be_bytes());
                out.push(*weight);
                (0, *stream)
            }
            Frame::RstStream { stream, code } => {
                out.extend_from_slice(&code.to_be_bytes());
                (0, *stream)
            }
            Frame::Settings { ack, params } => {
                for (id, value) in params {
                    out.extend_from_slice(&id.to_be_bytes());
                    out.extend_from_slice(&value.to_be_bytes());
                }
                (bit(*ack, flag::ACK), 0)
            }
            Frame::Ping { ack, data } => {
                out.extend_from_slice(data);
                (bit(*ack, flag::ACK), 0)
            }
            Frame::GoAway {
                last_stream,
                code,
                debug,
            } => {
                out.extend_from_slice(&last_stream.to_be_bytes());
                out.extend_from_slice(&code.to_be_bytes());
                out.extend_from_slice(debug);
                (0, 0)
            }
            Frame::WindowUpdate { stream, increment } => {
                out.extend_from_slice(&increment.to_be_bytes());
                (0, *stream)
            }
            Frame::Continuation {
                stream,
                end_headers,
                block,
            } => {
                out.extend_from_slice(block);
                (bit(*end_headers, flag::END_HEADERS), *stream)
            }
            Frame::Other {
                flags,
                stream,
                payload,
                ..
            } => {
                out.extend_from_slice(payload);
                (*flags, *stream)
            }
        };
        let len = (out.len() - start - HEADER_LEN) as u32;
        out[start..start + 3].copy_from_slice(&len.to_be_bytes()[1..]);
        out[start + 3] = self.kind();
        out[start + 4] = flags;
        out[start + 5..start + 9].copy_from_slice(&stream.to_be_bytes());
    }

    /// The frame's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Parses one frame at the start of `buf`; returns it and the bytes it
    /// took.
    pub fn parse(buf: &[u8]) -> Result<(Frame, usize), FrameError> {
        if buf.len() < HEADER_LEN {
            return Err(FrameError::Incomplete);
        }
        let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
        if len > READ_FRAME_LIMIT {
            return Err(FrameError::TooLarge(len));
        }
        let total = HEADER_LEN + len;
        if buf.len() < total {
            return Err(FrameError::Incomplete);
        }
        let (kind, flags) = (buf[3], buf[4]);
        let stream = be32(&buf[5..9]) & 0x7fff_ffff;
        let payload = &buf[HEADER_LEN..total];
        let other = || Frame::Other {
            kind,
            flags,
            stream,
            payload: payload.to_vec(),
        };
        let frame = match kind {
            kind::DATA => match unpad(payload, flags) {
                Some(data) => Frame::Data {
                    stream,
                    end_stream: flags & flag::END_STREAM != 0,
                    data: data.to_vec(),
                },
                None => other(),
            },
            kind::HEADERS => {
                let skip = if flags & flag::PRIORITY != 0 { 5 } else { 0 };
                match unpad(payload, flags).and_then(|p| p.get(skip..)) {
                    Some(block) => Frame::Headers {
                        stream,
                        end_stream: flags & flag::END_STREAM != 0,
                        end_headers: flags & flag::END_HEADERS != 0,
                        block: block.to_vec(),
                    },
                    None => other(),
                }
            }
            kind::PRIORITY if len == 5 => Frame::Priority {
                stream,
                depends_on: be32(payload) & 0x7fff_ffff,
                exclusive: payload[0] & 0x80 != 0,
                weight: payload[4],
            },
            kind::RST_STREAM if len == 4 => Frame::RstStream {
                stream,
                code: be32(payload),
            },
            kind::SETTINGS if len.is_multiple_of(6) => Frame::Settings {
                ack: flags & flag::ACK != 0,
                params: payload
                    .chunks(6)
                    .map(|p| (u16::from_be_bytes([p[0], p[1]]), be32(&p[2..])))
                    .collect(),
            },
            kind::PING if len == 8 => Frame::Ping {
                ack: flags & flag::ACK != 0,
                data: payload.try_into().expect("8 bytes"),
            },
            kind::GOAWAY if len >= 8 => Frame::GoAway {
                last_stream: be32(payload) & 0x7fff_ffff,
                code: be32(&payload[4..]),
                debug: payload[8..].to_vec(),
            },
            kind::WINDOW_UPDATE if len == 4 => Frame::WindowUpdate {
                stream,
                increment: be32(payload) & 0x7fff_ffff,
            },
            kind::CONTINUATION => Frame::Continuation {
                stream,
                end_headers: flags & flag::END_HEADERS != 0,
                block: payload.to_vec(),
            },
            _ => other(),
        };
        Ok((frame, total))
    }
}

fn bit(on: bool, flag: u8) -> u8 {
    if on {
        flag
    } else {
        0
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The payload without its padding, if the PADDED flag is set and the
/// padding fits.
fn unpad(payload: &[u8], flags: u8) -> Option<&[u8]> {
    if flags & flag::PADDED == 0 {
        return Some(payload);
    }
    let pad = *payload.first()? as usize;
    payload.get(1..payload.len().checked_sub(pad)?)
}

/// Encodes `frames` into one buffer (to send them in one write).
pub fn encode_all<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out);
    }
    out
}

/// Decoded header fields, in order.
pub type Fields = Vec<(String, String)>;

/// A GOAWAY as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    pub last_stream: u32,
    pub code: u32,
    pub debug: String,
}

impl std::fmt::Display for GoAway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GOAWAY {} (last stream {}, debug {:?})",
            code::name(self.code),
            self.last_stream,
            self.debug
        )
    }
}

/// What a connection said until it ended or a deadline passed (see
/// [`Client::drain`]).
#[derive(Debug, Clone, Default)]
pub struct Drained {
    /// The first GOAWAY.
    pub goaway: Option<GoAway>,
    /// When the GOAWAY came, from the start of the drain.
    pub goaway_after: Option<Duration>,
    /// Whether the server closed the connection (end of stream, or a reset).
    pub closed: bool,
    /// When the connection ended, from the start of the drain.
    pub closed_after: Option<Duration>,
    /// RST_STREAMs received: stream and code.
    pub resets: Vec<(u32, u32)>,
    /// Responses' `:status` by stream.
    pub statuses: BTreeMap<u32, u16>,
    /// Frames received by type.
    pub frames: BTreeMap<u8, usize>,
    /// DATA payload bytes received.
    pub data_bytes: usize,
    /// When each stream ended (RST_STREAM, or a frame with END_STREAM),
    /// from the start of the drain.
    pub stream_ends: BTreeMap<u32, Duration>,
}

impl Drained {
    /// How many RST_STREAMs carried `code`.
    pub fn resets_with(&self, code: u32) -> usize {
        self.resets.iter().filter(|(_, c)| *c == code).count()
    }

    /// How many frames of type `kind` came.
    pub fn count(&self, kind: u8) -> usize {
        self.frames.get(&kind).copied().unwrap_or(0)
    }
}

/// A response read by [`Client::get`].
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Fields,
    pub body: Vec<u8>,
}

/// An HTTP/2 connection driven frame by frame.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    decoder: Decoder,
    /// A header block whose END_HEADERS has not come yet.
    partial: Option<(u32, Vec<u8>)>,
    /// The server's SETTINGS, once received.
    pub server_settings: Option<Vec<(u16, u32)>>,
}

impl Client {
    /// Connects; nothing is sent yet.
    pub fn connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Client {
            stream,
            buf: Vec::new(),
            decoder: Decoder::default(),
            partial: None,
            server_settings: None,
        })
    }

    /// Connects, sends the preface and SETTINGS with `settings`, and reads
    /// until the server's own SETTINGS came (acknowledged at once).
    pub fn handshake(addr: SocketAddr, settings: &[(u16, u32)]) -> io::Result<Client> {
        let mut c = Client::connect(addr)?;
        let mut hello = PREFACE.to_vec();
        Frame::Settings {
            ack: false,
            params: settings.to_vec(),
        }
        .encode(&mut hello);
        c.send_raw(&hello)?;
        let deadline = Instant::now() + IO_TIMEOUT;
        while c.server_settings.is_none() {
            match c.read_frame(deadline)? {
                Some(f) => c.answer(&f)?,
                None => return Err(io::ErrorKind::UnexpectedEof.into()),
            }
        }
        Ok(c)
    }

    /// The socket (for its address, timeouts, or a shutdown).
    pub fn socket(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends one frame.
    pub fn send(&mut self, frame: &Frame) -> io::Result<()> {
        self.send_raw(&frame.to_bytes())
    }

    /// Sends frames in one write.
    pub fn send_all(&mut self, frames: &[Frame]) -> io::Result<()> {
        self.send_raw(&encode_all(frames))
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes `unit` again and again, never reading, until the server
    /// closes the connection or `until` passes. A write that cannot go on
    /// (the server stopped reading) is retried until then.
    pub fn flood(&mut self, unit: &[u8], until: Instant) -> Flood {
        let start = Instant::now();
        let mut sent = 0usize;
        let mut offset = 0;
        let _ = self
            .stream
            .set_write_timeout(Some(Duration::from_millis(50)));
        let end = loop {
            if Instant::now() >= until {
                break FloodEnd::Deadline;
            }
            match self.stream.write(&unit[offset..]) {
                Ok(0) => break FloodEnd::Closed(io::ErrorKind::WriteZero),
                Ok(n) => {
                    sent += n;
                    offset = (offset + n) % unit.len();
                }
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break FloodEnd::Closed(e.kind()),
            }
        };
        let _ = self.stream.set_write_timeout(Some(IO_TIMEOUT));
        Flood {
            sent,
            end,
            after: start.elapsed(),
        }
    }

    /// Reads the next frame, waiting at most until `deadline`: `None` when
    /// the server closed the connection; a `TimedOut` error at the deadline.
    pub fn read_frame(&mut self, deadline: Instant) -> io::Result<Option<Frame>> {
        loop {
            match Frame::parse(&self.buf) {
                Ok((frame, used)) => {
                    self.buf.drain(..used);
                    return Ok(Some(frame));
                }
                Err(FrameError::TooLarge(n)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a frame of {n} bytes"),
                    ))
                }
                Err(FrameError::Incomplete) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => return Err(io::ErrorKind::TimedOut.into()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Answers what a well-behaved client must: SETTINGS with an ACK, PING
    /// with a PING ACK. Records the server's settings.
    fn answer(&mut self, frame: &Frame) -> io::Result<()> {
        match frame {
            Frame::Settings { ack: false, params } => {
                self.server_settings = Some(params.clone());
                self.send(&Frame::Settings {
                    ack: true,
                    params: Vec::new(),
                })
            }
            Frame::Ping { ack: false, data } => self.send(&Frame::Ping {
                ack: true,
                data: *data,
            }),
            _ => Ok(()),
        }
    }

    /// Decodes a header block (HEADERS or CONTINUATION) once complete;
    /// keeps the HPACK table in step with the server's.
    pub fn headers_of(&mut self, frame: &Frame) -> io::Result<Option<(u32, Fields)>> {
        let (stream, block, end) = match frame {
            Frame::Headers {
                stream,
                end_headers,
                block,
                ..
            } => (*stream, block.clone(), *end_headers),
            Frame::Continuation {
                stream,
                end_headers,
                block,
            } => {
                let mut all = self.partial.take().map(|(_, b)| b).unwrap_or_default();
                all.extend_from_slice(block);
                (*stream, all, *end_headers)
            }
            _ => return Ok(None),
        };
        if !end {
            self.partial = Some((stream, block));
            return Ok(None);
        }
        let fields = self
            .decoder
            .decode(&block)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Some((stream, fields)))
    }

    /// Reads every frame until the connection closed or `timeout` passed;
    /// answers SETTINGS and PING as a client must, and tallies the rest.
    /// With `stop_at_goaway`, returns as soon as a GOAWAY came.
    pub fn drain(&mut self, timeout: Duration, stop_at_goaway: bool) -> Drained {
        self.drain_until(timeout, |d| stop_at_goaway && d.goaway.is_some())
    }

    /// As [`Client::drain`], returning as soon as `done` holds for what
    /// came so far.
    pub fn drain_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Drained) -> bool,
    ) -> Drained {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut d = Drained::default();
        loop {
            match self.read_frame(deadline) {
                Ok(Some(frame)) => {
                    let at = start.elapsed();
                    *d.frames.entry(frame.kind()).or_default() += 1;
                    match &frame {
                        Frame::GoAway {
                            last_stream,
                            code,
                            debug,
                        } if d.goaway.is_none() => {
                            d.goaway = Some(GoAway {
                                last_stream: *last_stream,
                                code: *code,
                                debug: String::from_utf8_lossy(debug).into_owned(),
                            });
                            d.goaway_after = Some(at);
                        }
                        Frame::RstStream { stream, code } => {
                            d.resets.push((*stream, *code));
                            d.stream_ends.entry(*stream).or_insert(at);
                        }
                        Frame::Data {
                            stream,
                            end_stream,
                            data,
                        } => {
                            d.data_bytes += data.len();
                            if *end_stream {
                                d.stream_ends.entry(*stream).or_insert(at);
                            }
                        }
                        Frame::Headers {
                            stream,
                            end_stream: true,
                            ..
                        } => {
                            d.stream_ends.entry(*stream).or_insert(at);
                        }
                        _ => {}
                    }
                    if let Ok(Some((stream, fields))) = self.headers_of(&frame) {
                        if let Some(s) = status_of(&fields) {
                            d.statuses.insert(stream, s);
                        }
                    }
                    // A server may close right after its GOAWAY: answering
                    // then fails, which is no news.
                    let _ = self.answer(&frame);
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return d,
                Ok(None) | Err(_) => {
                    d.closed = true;
                    d.closed_after = Some(start.elapsed());
                    return d;
                }
            }
            if done(&d) {
                return d;
            }
        }
    }

    /// Sends a request on `stream` (END_STREAM when no body) and reads its
    /// whole response, opening flow-control windows as data comes and
    /// answering SETTINGS and PING.
    pub fn request(
        &mut self,
        stream: u32,
        block: &Block,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> io::Result<Response> {
        let mut frames = vec![Frame::headers(stream, block, body.is_none())];
        if let Some(body) = body {
            let mut chunks = body.chunks(DEFAULT_MAX_FRAME).peekable();
            if chunks.peek().is_none() {
                frames.push(Frame::Data {
                    stream,
                    end_stream: true,
                    data: Vec::new(),
                });
            }
            while let Some(c) = chunks.next() {
                frames.push(Frame::Data {
                    stream,
                    end_stream: chunks.peek().is_none(),
                    data: c.to_vec(),
                });
            }
        }
        self.send_all(&frames)?;
        let deadline = Instant::now() + timeout;
        let mut response: Option<Response> = None;
        loop {
            let frame = self
                .read_frame(deadline)?
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            self.answer(&frame)?;
            if let Some((s, fields)) = self.headers_of(&frame)? {
                if s == stream && response.is_none() {
                    let status = status_of(&fields).ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidData, "a response without :status")
                    })?;
                    if status >= 200 {
                        response = Some(Response {
                            status,
                            headers: fields,
                            body: Vec::new(),
                        });
                    }
                }
            }
            match frame {
                Frame::Data {
                    stream: s,
                    end_stream,
                    data,
                } if s == stream => {
                    if !data.is_empty() {
                        let increment = data.len() as u32;
                        self.send_all(&[
                            Frame::WindowUpdate {
                                stream: 0,
                                increment,
                            },
                            Frame::WindowUpdate { stream, increment },
                        ])?;
                    }
                    let r = response.as_mut().ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidData, "DATA before HEADERS")
                    })?;
                    r.body.extend_from_slice(&data);
                    if end_stream {
                        return Ok(response.expect("checked above"));
                    }
                }
                Frame::Headers {
                    stream: s,
                    end_stream: true,
                    ..
                } if s == stream && response.is_some() => {
                    return Ok(response.expect("checked above"));
                }
                Frame::RstStream { stream: s, code } if s == stream => {
                    return Err(io::Error::other(format!(
                        "stream {stream} reset: {}",
                        code::name(code)
                    )));
                }
                Frame::GoAway { code, .. } => {
                    return Err(io::Error::other(format!(
                        "GOAWAY {} before the response",
                        code::name(code)
                    )));
                }
                _ => {}
            }
        }
    }
}

/// How a [`Client::flood`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodEnd {
    /// The server closed the connection: writing failed with this.
    Closed(io::ErrorKind),
    /// The deadline passed with the connection still open.
    Deadline,
}

/// What a [`Client::flood`] did.
#[derive(Debug, Clone, Copy)]
pub struct Flood {
    /// Bytes written.
    pub sent: usize,
    pub end: FloodEnd,
    /// How long it ran.
    pub after: Duration,
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn status_of(fields: &[(String, String)]) -> Option<u16> {
    fields
        .iter()
        .find(|(n, _)| n == ":status")
        .and_then(|(_, v)| v.parse().ok())
}

/// One GET over a fresh h2c connection: the well-behaved client the flood
/// tests check is still served.
pub fn get(addr: SocketAddr, authority: &str, path: &str) -> io::Result<Response> {
    let mut c = Client::handshake(addr, &[])?;
    c.request(1, &Block::request("GET", authority, path), None, IO_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn every_frame_type_round_trips() {
        let frames = vec![
            Frame::Data {
                stream: 1,
                end_stream: true,
                data: b"abc".to_vec(),
            },
            Frame::headers(3, &Block::request("GET", "h", "/x"), false),
            Frame::Priority {
                stream: 5,
                depends_on: 3,
                exclusive: true,
                weight: 15,
            },
            Frame::RstStream {
                stream: 7,
                code: code::CANCEL,
            },
            Frame::Settings {
                ack: false,
                params: vec![(setting::INITIAL_WINDOW_SIZE, 0), (setting::ENABLE_PUSH, 0)],
            },
            Frame::Settings {
                ack: true,
                params: vec![],
            },
            Frame::Ping {
                ack: true,
                data: *b"12345678",
            },
            Frame::GoAway {
                last_stream: 9,
                code: code::ENHANCE_YOUR_CALM,
                debug: b"calm".to_vec(),
            },
            Frame::WindowUpdate {
                stream: 0,
                increment: 65_535,
            },
            Frame::Continuation {
                stream: 3,
                end_headers: true,
                block: vec![0x82],
            },
            Frame::Other {
                kind: 0xfa,
                flags: 0x3,
                stream: 11,
                payload: vec![1, 2],
            },
        ];
        let bytes = encode_all(&frames);
        let mut pos = 0;
        for want in &frames {
            let (got, used) = Frame::parse(&bytes[pos..]).unwrap();
            assert_eq!(&got, want);
            pos += used;
        }
        assert_eq!(pos, bytes.len());
    }

    #[test]
    fn frame_headers_are_laid_out_as_the_rfc_says() {
        let ping = Frame::Ping {
            ack: false,
            data: [0; 8],
        }
        .to_bytes();
        assert_eq!(ping[..9], [0, 0, 8, kind::PING, 0, 0, 0, 0, 0]);
        let rst = Frame::RstStream {
            stream: 0x0102_0304,
            code: code::CANCEL,
        }
        .to_bytes();
        assert_eq!(rst, [0, 0, 4, 3, 0, 1, 2, 3, 4, 0, 0, 0, 8]);
        let h = Frame::Headers {
            stream: 1,
            end_stream: true,
            end_headers: false,
            block: vec![0x82],
        }
        .to_bytes();
        assert_eq!(h[3..5], [kind::HEADERS, flag::END_STREAM]);
    }

    #[test]
    fn padding_and_priority_are_stripped_and_short_frames_are_other() {
        // HEADERS, PADDED | PRIORITY | END_HEADERS: pad length 2, 5 bytes
        // of priority, the block, 2 bytes of padding.
        let mut bytes = vec![0, 0, 9, kind::HEADERS, 0x2c, 0, 0, 0, 1, 2];
        bytes.extend_from_slice(&[0, 0, 0, 0, 16, 0x82, 0, 0]);
        let (f, used) = Frame::parse(&bytes).unwrap();
        assert_eq!(used, 18);
        assert_eq!(
            f,
            Frame::Headers {
                stream: 1,
                end_stream: false,
                end_headers: true,
                block: vec![0x82]
            }
        );
        let short_rst = [0, 0, 2, kind::RST_STREAM, 0, 0, 0, 0, 1, 0, 0];
        assert!(matches!(
            Frame::parse(&short_rst).unwrap().0,
            Frame::Other { kind: 3, .. }
        ));
        assert_eq!(Frame::parse(&short_rst[..10]), Err(FrameError::Incomplete));
        assert_eq!(
            Frame::parse(&[0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0]),
            Err(FrameError::TooLarge(0xff_ffff))
        );
        assert_eq!(code::name(code::ENHANCE_YOUR_CALM), "ENHANCE_YOUR_CALM");
        assert_eq!(code::name(0x42), "0x42");
    }

    /// A scripted server on a thread: reads the preface and the client's
    /// SETTINGS, then sends `reply` (already-encoded frames) and reads
    /// until the client closes. Returns what the client sent.
    fn scripted_server(reply: Vec<u8>) -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = vec![0u8; PREFACE.len() + HEADER_LEN];
            s.read_exact(&mut got).unwrap();
            s.write_all(&reply).unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            got.extend(rest);
            got
        });
        (addr, handle)
    }

    #[test]
    fn the_client_handshakes_reads_a_response_and_opens_windows() {
        // A server's kind of block: `:status` with a Huffman-coded value
        // (the builder writes the bytes; the H bit is set by hand).
        let mut block = Block::new()
            .literal_indexed_name(hpack::index::STATUS, &hpack::huffman_encode(b"203"))
            .into_bytes();
        block[1] |= 0x80;
        let reply = encode_all(&[
            Frame::Settings {
                ack: false,
                params: vec![(setting::MAX_CONCURRENT_STREAMS, 100)],
            },
            Frame::Ping {
                ack: false,
                data: *b"pingpong",
            },
            Frame::Headers {
                stream: 1,
                end_stream: false,
                end_headers: true,
                block,
            },
            Frame::Data {
                stream: 1,
                end_stream: false,
                data: b"hello ".to_vec(),
            },
            Frame::Data {
                stream: 1,
                end_stream: true,
                data: b"world".to_vec(),
            },
        ]);
        let (addr, server) = scripted_server(reply);
        let mut c = Client::handshake(addr, &[(setting::INITIAL_WINDOW_SIZE, 0)]).unwrap();
        assert_eq!(
            c.server_settings,
            Some(vec![(setting::MAX_CONCURRENT_STREAMS, 100)])
        );
        let r = c
            .request(1, &Block::request("GET", "h", "/"), None, IO_TIMEOUT)
            .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (203, &b"hello world"[..]));
        drop(c);
        let sent = server.join().unwrap();
        assert!(sent.starts_with(PREFACE));
        let mut pos = PREFACE.len();
        let mut got = Vec::new();
        while let Ok((f, used)) = Frame::parse(&sent[pos..]) {
            got.push(f);
            pos += used;
        }
        assert_eq!(
            got[0],
            Frame::Settings {
                ack: false,
                params: vec![(setting::INITIAL_WINDOW_SIZE, 0)]
            }
        );
        assert!(got.contains(&Frame::Settings {
            ack: true,
            params: vec![]
        }));
        assert!(got.contains(&Frame::Ping {
            ack: true,
            data: *b"pingpong"
        }));
        assert!(got.contains(&Frame::WindowUpdate {
            stream: 1,
            increment: 6
        }));
    }

    #[test]
    fn drain_reports_goaway_resets_and_the_close() {
        let reply = encode_all(&[
            Frame::Settings {
                ack: false,
                params: vec![],
            },
            Frame::RstStream {
                stream: 3,
                code: code::REFUSED_STREAM,
            },
            Frame::GoAway {
                last_stream: 1,
                code: code::ENHANCE_YOUR_CALM,
                debug: b"too_many_resets".to_vec(),
            },
        ]);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut hello = vec![0u8; PREFACE.len() + HEADER_LEN];
            s.read_exact(&mut hello).unwrap();
            s.write_all(&reply).unwrap();
            // Closing the socket ends the connection.
        });
        let mut c = Client::handshake(addr, &[]).unwrap();
        server.join().unwrap();
        let d = c.drain(Duration::from_secs(5), false);
        assert_eq!(
            d.goaway,
            Some(GoAway {
                last_stream: 1,
                code: code::ENHANCE_YOUR_CALM,
                debug: "too_many_resets".into()
            })
        );
        assert_eq!(d.resets_with(code::REFUSED_STREAM), 1);
        assert!(d.closed);
        assert_eq!(d.count(kind::GOAWAY), 1);
    }
}
