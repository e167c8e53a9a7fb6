//! A streaming decoder for the chunked transfer coding (RFC 9112 §7.1).
//!
//! The decoder is strict on purpose: it accepts only CRLF line ends, hex
//! sizes that fit in 64 bits, extensions and trailers free of control bytes,
//! and bounded line lengths. Bytes it has accepted are therefore unambiguous
//! chunked syntax, so a proxy may forward them unchanged.

use std::ops::Range;

/// Longest chunk-size line (size plus extensions) accepted.
const MAX_LINE: usize = 4096;
/// Most trailer bytes accepted after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

/// Most fields a kept trailer section may hold.
pub(crate) const MAX_TRAILER_FIELDS: usize = 64;

/// The fields of a trailer section kept by a decoder (see
/// [`ChunkedDecoder::trailers`]), parsed into `slots`.
pub(crate) fn parse_trailers<'s, 'b>(
    section: &'b [u8],
    slots: &'s mut [httparse::Header<'b>],
) -> Result<&'s [httparse::Header<'b>], ChunkError> {
    match httparse::parse_headers(section, slots) {
        Ok(httparse::Status::Complete((_, fields))) => Ok(fields),
        _ => Err(ChunkError::InvalidTrailer),
    }
}

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChunkError {
    /// A chunk size was missing or not hexadecimal.
    #[error("invalid chunk size")]
    InvalidSize,
    /// A chunk size does not fit in 64 bits.
    #[error("chunk size overflows")]
    SizeOverflow,
    /// A chunk-size line is longer than the limit.
    #[error("chunk-size line too long")]
    LineTooLong,
    /// A chunk extension holds a control byte.
    #[error("invalid chunk extension")]
    InvalidExtension,
    /// A line did not end with CRLF where one was required.
    #[error("missing CRLF in chunked body")]
    MissingCrlf,
    /// A trailer field is malformed.
    #[error("invalid trailer field")]
    InvalidTrailer,
    /// The trailer section is longer than the limit.
    #[error("trailer section too long")]
    TrailersTooLong,
    /// The chunk data would exceed the body size limit.
    #[error("body larger than the limit")]
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size (`digits` so far).
    Size { size: u64, digits: usize },
    /// After the digits: optional whitespace before `;` or CR.
    SizeWhitespace { size: u64 },
    /// Inside chunk extensions, up to CR.
    Extension { size: u64 },
    /// After the CR of the chunk-size line.
    SizeLf { size: u64 },
    /// Inside chunk data.
    Data { remaining: u64 },
    /// After chunk data: expecting CR.
    DataCr,
    /// After chunk data and CR: expecting LF.
    DataLf,
    /// At the start of a trailer line or of the final empty line.
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value.
    TrailerValue,
    /// After the CR of a trailer line.
    TrailerLf,
    /// After the CR of the final empty line.
    EndLf,
    /// The body is complete.
    Done,
}

/// A chunked-body decoder fed with bytes as they arrive.
#[derive(Debug, Clone)]
pub(crate) struct ChunkedDecoder {
    state: State,
    /// Bytes of the current chunk-size line.
    line: usize,
    /// Bytes of the trailer section so far.
    trailers: usize,
    /// Chunk data announced so far (by the sizes read).
    data: u64,
    /// Most chunk data accepted; 0 means no limit.
    limit: u64,
    /// The trailer section's bytes, when kept (see
    /// [`ChunkedDecoder::keeping_trailers`]): its field lines and the empty
    /// line that ends it.
    kept: Option<Vec<u8>>,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::with_limit(0)
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Control bytes are never valid in extensions or trailer values (HTAB is).
fn is_forbidden_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

impl ChunkedDecoder {
    /// A decoder that refuses more than `limit` bytes of chunk data (0: no
    /// limit), as soon as a chunk size announces them.
    pub(crate) fn with_limit(limit: u64) -> Self {
        ChunkedDecoder {
            state: State::Size { size: 0, digits: 0 },
            line: 0,
            trailers: 0,
            data: 0,
            limit,
            kept: None,
        }
    }

    /// The decoder, keeping the trailer section for
    /// [`ChunkedDecoder::trailers`] (for a receiver that passes trailers on
    /// as fields rather than as chunked bytes).
    pub(crate) fn keeping_trailers(mut self) -> Self {
        self.kept = Some(Vec::new());
        self
    }

    /// The trailer section decoded so far (field lines, then the empty line
    /// once the body is done), if kept; at most 16 KiB.
    pub(crate) fn trailers(&self) -> Option<&[u8]> {
        self.kept.as_deref()
    }

    /// Whether the whole body, trailers included, has been decoded.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the start of `input` until it finds chunk data, runs out
    /// of input, or reaches the end of the body.
    ///
    /// Returns how many bytes of `input` were consumed and, if found, the
    /// range of `input` holding body data (always at the end of the consumed
    /// bytes). Bytes after the end of the body are never consumed.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
    ) -> Result<(usize, Option<Range<usize>>), ChunkError> {
        let mut i = 0;
        while i < input.len() {
            if let State::Data { remaining } = self.state {
                let available = (input.len() - i) as u64;
                let take = remaining.min(available) as usize;
                self.state = if take as u64 == remaining {
                    State::DataCr
                } else {
                    State::Data {
                        remaining: remaining - take as u64,
                    }
                };
                return Ok((i + take, Some(i..i + take)));
            }
            if self.state == State::Done {
                break;
            }
            self.step(input[i])?;
            i += 1;
        }
        Ok((i, None))
    }

    /// Validates as much of `input` as possible, for forwarding it as-is;
    /// returns how many bytes belong to the body.
    pub(crate) fn consume(&mut self, input: &[u8]) -> Result<usize, ChunkError> {
        let mut used = 0;
        while used < input.len() && !self.is_done() {
            let (n, _) = self.decode(&input[used..])?;
            if n == 0 {
                break;
            }
            used += n;
        }
        Ok(used)
    }

    /// Advances the framing state machine by one byte (never in `Data`).
    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        if let Some(kept) = &mut self.kept {
            if matches!(
                self.state,
                State::TrailerStart
                    | State::TrailerName
                    | State::TrailerValue
                    | State::TrailerLf
                    | State::EndLf
            ) {
                kept.push(b);
            }
        }
        self.state = match self.state {
            State::Size { size, digits } => {
                self.count_line()?;
                match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        // to_digit cannot fail on a hex digit matched above.
                        let d = u64::from((b as char).to_digit(16).unwrap_or(0));
                        if size > u64::MAX >> 4 {
                            return Err(ChunkError::SizeOverflow);
                        }
                        State::Size {
                            size: (size << 4) | d,
                            digits: digits + 1,
                        }
                    }
                    _ if digits == 0 => return Err(ChunkError::InvalidSize),
                    b' ' | b'\t' => State::SizeWhitespace { size },
                    b';' => State::Extension { size },
                    b'\r' => State::SizeLf { size },
                    _ => return Err(ChunkError::InvalidSize),
                }
            }
            State::SizeWhitespace { size } => {
                self.count_line()?;
                match b {
                    b' ' | b'\t' => State::SizeWhitespace { size },
                    b';' => State::Extension { size },
                    b'\r' => State::SizeLf { size },
                    _ => return Err(ChunkError::InvalidSize),
                }
            }
            State::Extension { size } => {
                self.count_line()?;
                match b {
                    b'\r' => State::SizeLf { size },
                    _ if is_forbidden_ctl(b) => return Err(ChunkError::InvalidExtension),
                    _ => State::Extension { size },
                }
            }
            State::SizeLf { size } => {
                if b != b'\n' {
                    return Err(ChunkError::MissingCrlf);
                }
                self.line = 0;
                self.data = self.data.saturating_add(size);
                if self.limit > 0 && self.data > self.limit {
                    return Err(ChunkError::TooLarge);
                }
                if size == 0 {
                    State::TrailerStart
                } else {
                    State::Data { remaining: size }
                }
            }
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err(ChunkError::MissingCrlf),
            },
            State::DataLf => match b {
                b'\n' => State::Size { size: 0, digits: 0 },
                _ => return Err(ChunkError::MissingCrlf),
            },
            State::TrailerStart => {
                self.count_trailer()?;
                match b {
                    b'\r' => State::EndLf,
                    _ if is_tchar(b) => State::TrailerName,
                    _ => return Err(ChunkError::InvalidTrailer),
                }
            }
            State::TrailerName => {
                self.count_trailer()?;
                match b {
                    b':' => State::TrailerValue,
                    _ if is_tchar(b) => State::TrailerName,
                    _ => return Err(ChunkError::InvalidTrailer),
                }
            }
            State::TrailerValue => {
                self.count_trailer()?;
                match b {
                    b'\r' => State::TrailerLf,
                    _ if is_forbidden_ctl(b) => return Err(ChunkError::InvalidTrailer),
                    _ => State::TrailerValue,
                }
            }
            State::TrailerLf => {
                self.count_trailer()?;
                match b {
                    b'\n' => State::TrailerStart,
                    _ => return Err(ChunkError::MissingCrlf),
                }
            }
            State::EndLf => match b {
                b'\n' => State::Done,
                _ => return Err(ChunkError::MissingCrlf),
            },
            // `decode` handles both before calling `step`.
            State::Data { .. } | State::Done => self.state,
        };
        Ok(())
    }

    fn count_line(&mut self) -> Result<(), ChunkError> {
        self.line += 1;
        if self.line > MAX_LINE {
            return Err(ChunkError::LineTooLong);
        }
        Ok(())
    }

    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(ChunkError::TrailersTooLong);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of the given sizes; returns the data and
    /// the bytes left after the body.
    fn decode_in_pieces(input: &[u8], split_at: &[usize]) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut decoder = ChunkedDecoder::default();
        let mut data = Vec::new();
        let mut pieces = Vec::new();
        let mut start = 0;
        for &at in split_at {
            pieces.push(&input[start..at]);
            start = at;
        }
        pieces.push(&input[start..]);
        let mut leftover = 0;
        for piece in pieces {
            let mut at = 0;
            loop {
                let (n, range) = decoder.decode(&piece[at..])?;
                if let Some(r) = range {
                    data.extend_from_slice(&piece[at + r.start..at + r.end]);
                }
                at += n;
                if n == 0 || at == piece.len() {
                    break;
                }
            }
            if decoder.is_done() {
                leftover += piece.len() - at;
            }
        }
        assert!(decoder.is_done(), "body not complete");
        Ok((data, leftover))
    }

    const BODY: &[u8] =
        b"5;name=value;q=\"a b\"\r\nhello\r\nA \t; ext\r\n0123456789\r\n000\r\nX-Sum: 1\r\nEtag:\t\"x\"\r\n\r\nNEXT";

    #[test]
    fn decodes_with_every_split() {
        for at in 0..=BODY.len() {
            let (data, leftover) = decode_in_pieces(BODY, &[at]).unwrap();
            assert_eq!(data, b"hello0123456789", "split at {at}");
            assert_eq!(leftover, 4, "split at {at}");
        }
    }

    #[test]
    fn decodes_byte_by_byte() {
        let splits: Vec<usize> = (1..BODY.len()).collect();
        let (data, leftover) = decode_in_pieces(BODY, &splits).unwrap();
        assert_eq!(data, b"hello0123456789");
        assert_eq!(leftover, 4);
    }

    #[test]
    fn consume_stops_at_body_end() {
        let mut d = ChunkedDecoder::default();
        assert_eq!(d.consume(BODY), Ok(BODY.len() - 4));
        assert!(d.is_done());
        let mut d = ChunkedDecoder::default();
        assert_eq!(d.consume(b"3\r\nab"), Ok(5));
        assert!(!d.is_done());
        assert_eq!(d.consume(b"c\r\n0\r\n\r\n"), Ok(8));
        assert!(d.is_done());
    }

    fn error_of(input: &[u8]) -> ChunkError {
        let mut d = ChunkedDecoder::default();
        d.consume(input).expect_err("must be refused")
    }

    #[test]
    fn refuses_bad_syntax() {
        assert_eq!(error_of(b"\r\n"), ChunkError::InvalidSize);
        assert_eq!(error_of(b"g\r\n"), ChunkError::InvalidSize);
        assert_eq!(error_of(b"-1\r\n"), ChunkError::InvalidSize);
        assert_eq!(error_of(b"0x5\r\n"), ChunkError::InvalidSize);
        assert_eq!(error_of(b" 5\r\n"), ChunkError::InvalidSize);
        assert_eq!(error_of(b"5 x\r\n"), ChunkError::InvalidSize);
        assert_eq!(error_of(b"5\n"), ChunkError::InvalidSize);
        assert_eq!(error_of(b"5\r\r"), ChunkError::MissingCrlf);
        assert_eq!(error_of(b"5;a\nb\r\n"), ChunkError::InvalidExtension);
        assert_eq!(error_of(b"5;a\0\r\n"), ChunkError::InvalidExtension);
        assert_eq!(error_of(b"2\r\nabc\r\n"), ChunkError::MissingCrlf);
        assert_eq!(error_of(b"2\r\nab\n"), ChunkError::MissingCrlf);
        assert_eq!(error_of(b"0\r\n\n"), ChunkError::InvalidTrailer);
        assert_eq!(error_of(b"0\r\n\r\r"), ChunkError::MissingCrlf);
        assert_eq!(error_of(b"0\r\n folded: x\r\n"), ChunkError::InvalidTrailer);
        assert_eq!(error_of(b"0\r\nno colon\r\n"), ChunkError::InvalidTrailer);
        assert_eq!(error_of(b"0\r\n: empty\r\n"), ChunkError::InvalidTrailer);
        assert_eq!(error_of(b"0\r\nA: b\nc\r\n"), ChunkError::InvalidTrailer);
    }

    #[test]
    fn refuses_overflowing_sizes() {
        assert_eq!(error_of(b"10000000000000000\r\n"), ChunkError::SizeOverflow);
        // The largest size is accepted (leading zeros are fine).
        let mut d = ChunkedDecoder::default();
        assert_eq!(d.consume(b"000ffffffffffffffff\r\nab"), Ok(23));
        assert!(!d.is_done());
    }

    #[test]
    fn limits_the_data_as_sizes_are_announced() {
        let mut d = ChunkedDecoder::with_limit(8);
        assert_eq!(d.consume(b"5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n"), Ok(23));
        assert!(d.is_done());
        let mut d = ChunkedDecoder::with_limit(8);
        assert_eq!(d.consume(b"5\r\nhello\r\n4\r\n"), Err(ChunkError::TooLarge));
        let mut d = ChunkedDecoder::with_limit(8);
        assert_eq!(
            d.consume(b"ffffffffffffffff\r\n"),
            Err(ChunkError::TooLarge)
        );
    }

    #[test]
    fn keeps_the_trailer_section_when_asked() {
        for at in 0..=BODY.len() {
            let mut d = ChunkedDecoder::default().keeping_trailers();
            assert_eq!(d.consume(&BODY[..at]).unwrap(), at.min(BODY.len() - 4));
            if at < BODY.len() - 4 {
                d.consume(&BODY[at..]).unwrap();
            }
            assert!(d.is_done());
            assert_eq!(
                d.trailers(),
                Some(&b"X-Sum: 1\r\nEtag:\t\"x\"\r\n\r\n"[..]),
                "split at {at}"
            );
        }
        let mut d = ChunkedDecoder::default().keeping_trailers();
        d.consume(BODY).unwrap();
        let mut slots = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
        let fields = parse_trailers(d.trailers().unwrap(), &mut slots).unwrap();
        let fields: Vec<(&str, &[u8])> = fields.iter().map(|f| (f.name, f.value)).collect();
        assert_eq!(fields, [("X-Sum", &b"1"[..]), ("Etag", &b"\"x\""[..])]);
        let mut d = ChunkedDecoder::default();
        d.consume(BODY).unwrap();
        assert_eq!(d.trailers(), None, "not kept unless asked");
        let mut d = ChunkedDecoder::default().keeping_trailers();
        d.consume(b"0\r\n\r\n").unwrap();
        assert_eq!(d.trailers(), Some(&b"\r\n"[..]));
    }

    #[test]
    fn bounds_lines_and_trailers() {
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_LINE));
        assert_eq!(error_of(&long), ChunkError::LineTooLong);
        let mut zeros = vec![b'0'; MAX_LINE + 1];
        zeros.extend_from_slice(b"\r\n");
        assert_eq!(error_of(&zeros), ChunkError::LineTooLong);
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..2000 {
            trailers.extend_from_slice(b"X-Long: 0123456789\r\n");
        }
        assert_eq!(error_of(&trailers), ChunkError::TrailersTooLong);
    }
}
