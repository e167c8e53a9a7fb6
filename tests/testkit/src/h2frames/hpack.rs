//! Hand-made HPACK (RFC 7541): a header block builder that writes exactly the
//! representations a test asks for (indexed, literal with or without
//! indexing, table size updates; never Huffman), and a small decoder with
//! the static and dynamic tables and Huffman strings, for what a server
//! sends back.

use super::huffman::{ENCODE_CODES, ENCODE_CODE_LENGTHS};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::OnceLock;

/// The static table (RFC 7541, Appendix A); index 1 is the first entry.
pub const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Static table indexes the request helpers use.
pub mod index {
    pub const AUTHORITY: usize = 1;
    pub const METHOD_GET: usize = 2;
    pub const METHOD_POST: usize = 3;
    pub const PATH: usize = 4;
    pub const SCHEME_HTTP: usize = 6;
    pub const STATUS: usize = 8;
    /// The first dynamic table entry (the newest).
    pub const FIRST_DYNAMIC: usize = 62;
}

/// Appends `value` as an HPACK integer with an `prefix`-bit prefix, the
/// byte's high bits taken from `first`.
pub fn encode_int(out: &mut Vec<u8>, first: u8, prefix: u8, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A header block, built one representation at a time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Block {
    bytes: Vec<u8>,
}

impl Block {
    pub fn new() -> Block {
        Block::default()
    }

    /// The usual request pseudo-headers: `:method`, `:scheme http`,
    /// `:authority`, `:path` (static names, literal values, not indexed).
    pub fn request(method: &str, authority: &str, path: &str) -> Block {
        let block = match method {
            "GET" => Block::new().indexed(index::METHOD_GET),
            "POST" => Block::new().indexed(index::METHOD_POST),
            other => Block::new().literal_indexed_name(2, other.as_bytes()),
        };
        block
            .indexed(index::SCHEME_HTTP)
            .literal_indexed_name(index::AUTHORITY, authority.as_bytes())
            .literal_indexed_name(index::PATH, path.as_bytes())
    }

    /// Indexed header field (§6.1).
    pub fn indexed(mut self, index: usize) -> Block {
        encode_int(&mut self.bytes, 0x80, 7, index);
        self
    }

    /// Literal with incremental indexing, new name (§6.2.1): the field enters
    /// the dynamic table.
    pub fn incremental(mut self, name: &str, value: &[u8]) -> Block {
        self.bytes.push(0x40);
        self.string(name.as_bytes()).string(value)
    }

    /// Literal with incremental indexing, name from the table at `index`.
    pub fn incremental_indexed_name(mut self, index: usize, value: &[u8]) -> Block {
        encode_int(&mut self.bytes, 0x40, 6, index);
        self.string(value)
    }

    /// Literal without indexing, new name (§6.2.2).
    pub fn literal(mut self, name: &str, value: &[u8]) -> Block {
        self.bytes.push(0x00);
        self.string(name.as_bytes()).string(value)
    }

    /// Literal without indexing, name from the table at `index`.
    pub fn literal_indexed_name(mut self, index: usize, value: &[u8]) -> Block {
        encode_int(&mut self.bytes, 0x00, 4, index);
        self.string(value)
    }

    /// Literal never indexed, new name (§6.2.3).
    pub fn never_indexed(mut self, name: &str, value: &[u8]) -> Block {
        self.bytes.push(0x10);
        self.string(name.as_bytes()).string(value)
    }

    /// Dynamic table size update (§6.3).
    pub fn table_size_update(mut self, size: usize) -> Block {
        encode_int(&mut self.bytes, 0x20, 5, size);
        self
    }

    /// Appends raw bytes (a malformed representation, on purpose).
    pub fn raw(mut self, bytes: &[u8]) -> Block {
        self.bytes.extend_from_slice(bytes);
        self
    }

    /// A string literal, not Huffman-coded (§5.2).
    fn string(mut self, s: &[u8]) -> Block {
        encode_int(&mut self.bytes, 0x00, 7, s.len());
        self.bytes.extend_from_slice(s);
        self
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Why a header block could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HpackError {
    /// The block ends inside a representation.
    Truncated,
    /// An index past both tables.
    BadIndex(usize),
    /// An integer too large to be meant.
    Overflow,
    /// A Huffman string that is not a valid code.
    BadHuffman,
    /// A size update above the limit the decoder allows.
    TableTooLarge(usize),
}

impl fmt::Display for HpackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HpackError::Truncated => write!(f, "header block truncated"),
            HpackError::BadIndex(i) => write!(f, "no table entry at index {i}"),
            HpackError::Overflow => write!(f, "integer overflow"),
            HpackError::BadHuffman => write!(f, "invalid Huffman string"),
            HpackError::TableTooLarge(n) => write!(f, "table size update to {n} over the limit"),
        }
    }
}

impl std::error::Error for HpackError {}

/// Decodes an integer with a `prefix`-bit prefix at `buf[*pos]`.
pub fn decode_int(buf: &[u8], pos: &mut usize, prefix: u8) -> Result<usize, HpackError> {
    let max = (1usize << prefix) - 1;
    let first = *buf.get(*pos).ok_or(HpackError::Truncated)? as usize & max;
    *pos += 1;
    if first < max {
        return Ok(first);
    }
    let mut value = max;
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos).ok_or(HpackError::Truncated)?;
        *pos += 1;
        if shift > 28 {
            return Err(HpackError::Overflow);
        }
        value += ((b & 0x7f) as usize) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
}

/// A header decoder with its dynamic table.
#[derive(Debug, Clone)]
pub struct Decoder {
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max_size: usize,
    /// The largest size an update may set (SETTINGS_HEADER_TABLE_SIZE).
    limit: usize,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::new(4096)
    }
}

impl Decoder {
    /// A decoder whose table may hold `limit` bytes (the protocol's 4096
    /// unless the client announced otherwise).
    pub fn new(limit: usize) -> Decoder {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max_size: limit,
            limit,
        }
    }

    /// The dynamic table's size in the RFC's accounting (32 bytes an entry
    /// plus name and value).
    pub fn table_size(&self) -> usize {
        self.size
    }

    /// Decodes one complete header block.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, HpackError> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < block.len() {
            let b = block[pos];
            if b & 0x80 != 0 {
                let i = decode_int(block, &mut pos, 7)?;
                let (n, v) = self.entry(i)?;
                out.push((lossy(&n), lossy(&v)));
            } else if b & 0xc0 == 0x40 {
                let (n, v) = self.literal(block, &mut pos, 6)?;
                self.insert(n.clone(), v.clone());
                out.push((lossy(&n), lossy(&v)));
            } else if b & 0xe0 == 0x20 {
                let size = decode_int(block, &mut pos, 5)?;
                if size > self.limit {
                    return Err(HpackError::TableTooLarge(size));
                }
                self.max_size = size;
                self.evict();
            } else {
                // Without indexing (0000) or never indexed (0001).
                let (n, v) = self.literal(block, &mut pos, 4)?;
                out.push((lossy(&n), lossy(&v)));
            }
        }
        Ok(out)
    }

    fn literal(
        &self,
        block: &[u8],
        pos: &mut usize,
        prefix: u8,
    ) -> Result<(Vec<u8>, Vec<u8>), HpackError> {
        let i = decode_int(block, pos, prefix)?;
        let name = if i == 0 {
            read_string(block, pos)?
        } else {
            self.entry(i)?.0
        };
        Ok((name, read_string(block, pos)?))
    }

    fn entry(&self, i: usize) -> Result<(Vec<u8>, Vec<u8>), HpackError> {
        if i == 0 {
            return Err(HpackError::BadIndex(0));
        }
        if let Some((n, v)) = STATIC_TABLE.get(i - 1) {
            return Ok((n.as_bytes().to_vec(), v.as_bytes().to_vec()));
        }
        self.table
            .get(i - index::FIRST_DYNAMIC)
            .cloned()
            .ok_or(HpackError::BadIndex(i))
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = 32 + name.len() + value.len();
        if size > self.max_size {
            // An entry larger than the table empties it (§4.4).
            self.table.clear();
            self.size = 0;
            return;
        }
        self.table.push_front((name, value));
        self.size += size;
        self.evict();
    }

    fn evict(&mut self) {
        while self.size > self.max_size {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= 32 + n.len() + v.len(),
                None => break,
            }
        }
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn read_string(block: &[u8], pos: &mut usize) -> Result<Vec<u8>, HpackError> {
    let huffman = *block.get(*pos).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = decode_int(block, pos, 7)?;
    let end = pos.checked_add(len).ok_or(HpackError::Overflow)?;
    let raw = block.get(*pos..end).ok_or(HpackError::Truncated)?;
    *pos = end;
    if huffman {
        huffman_decode(raw)
    } else {
        Ok(raw.to_vec())
    }
}

/// Byte values by (code length, code).
fn huffman_codes() -> &'static HashMap<(u8, u32), u8> {
    static CODES: OnceLock<HashMap<(u8, u32), u8>> = OnceLock::new();
    CODES.get_or_init(|| {
        (0..=255u8)
            .map(|b| {
                (
                    (ENCODE_CODE_LENGTHS[b as usize], ENCODE_CODES[b as usize]),
                    b,
                )
            })
            .collect()
    })
}

/// Decodes a Huffman string bit by bit (slow, and enough for tests).
pub fn huffman_decode(src: &[u8]) -> Result<Vec<u8>, HpackError> {
    let codes = huffman_codes();
    let mut out = Vec::new();
    let (mut code, mut len) = (0u32, 0u8);
    for byte in src {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            if let Some(b) = codes.get(&(len, code)) {
                out.push(*b);
                code = 0;
                len = 0;
            } else if len >= 30 {
                return Err(HpackError::BadHuffman);
            }
        }
    }
    // Padding: fewer than 8 bits, all ones (the EOS prefix).
    if len >= 8 || code != (1u32 << len) - 1 {
        return Err(HpackError::BadHuffman);
    }
    Ok(out)
}

/// Huffman-codes `src` (the decoder's tests need servers' kind of input).
pub fn huffman_encode(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut bits, mut n) = (0u64, 0u32);
    for b in src {
        bits = (bits << ENCODE_CODE_LENGTHS[*b as usize]) | u64::from(ENCODE_CODES[*b as usize]);
        n += u32::from(ENCODE_CODE_LENGTHS[*b as usize]);
        while n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
        bits &= (1u64 << n) - 1;
    }
    if n > 0 {
        let pad = 8 - n;
        out.push(((bits << pad) | ((1 << pad) - 1)) as u8);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn integers_match_the_rfc_examples() {
        // C.1.1: 10 with a 5-bit prefix; C.1.2: 1337; C.1.3: 42 at 8 bits.
        let mut out = Vec::new();
        encode_int(&mut out, 0, 5, 10);
        encode_int(&mut out, 0, 5, 1337);
        encode_int(&mut out, 0, 8, 42);
        assert_eq!(out, [0x0a, 0x1f, 0x9a, 0x0a, 0x2a]);
        let mut pos = 0;
        assert_eq!(decode_int(&out, &mut pos, 5), Ok(10));
        assert_eq!(decode_int(&out, &mut pos, 5), Ok(1337));
        assert_eq!(decode_int(&out, &mut pos, 8), Ok(42));
        assert_eq!(pos, out.len());
        assert_eq!(
            decode_int(&[0x1f, 0x9a], &mut 0, 5),
            Err(HpackError::Truncated)
        );
        assert_eq!(
            decode_int(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &mut 0, 5),
            Err(HpackError::Overflow)
        );
    }

    #[test]
    fn the_builder_writes_the_rfc_request_without_huffman() {
        // C.3.1: GET, http, /, and www.example.com entering the table.
        let block = Block::new()
            .indexed(index::METHOD_GET)
            .indexed(index::SCHEME_HTTP)
            .indexed(index::PATH)
            .incremental_indexed_name(index::AUTHORITY, b"www.example.com");
        assert_eq!(
            block.bytes(),
            hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d")
        );
        let mut d = Decoder::default();
        let want = pairs(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ]);
        assert_eq!(d.decode(block.bytes()).unwrap(), want);
        assert_eq!(d.table_size(), 57);
        // C.3.2: the authority now comes from the dynamic table.
        let next = Block::new()
            .indexed(2)
            .indexed(6)
            .indexed(4)
            .indexed(index::FIRST_DYNAMIC)
            .incremental_indexed_name(24, b"no-cache");
        assert_eq!(next.bytes(), hex("8286 84be 5808 6e6f 2d63 6163 6865"));
        let mut want2 = want.clone();
        want2.push(("cache-control".into(), "no-cache".into()));
        assert_eq!(d.decode(next.bytes()).unwrap(), want2);
        assert_eq!(d.table_size(), 110);
    }

    #[test]
    fn the_decoder_reads_the_rfc_huffman_request() {
        // C.4.1.
        let mut d = Decoder::default();
        let got = d
            .decode(&hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"))
            .unwrap();
        assert_eq!(got[3], (":authority".into(), "www.example.com".into()));
        assert_eq!(
            huffman_encode(b"www.example.com"),
            hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")
        );
    }

    #[test]
    fn huffman_round_trips_every_byte_and_refuses_bad_padding() {
        let all: Vec<u8> = (0..=255u8).chain(b"431 no-cache".iter().copied()).collect();
        assert_eq!(huffman_decode(&huffman_encode(&all)).unwrap(), all);
        // "0" is 00000 (5 bits) then three bits of padding that must be ones.
        assert_eq!(huffman_decode(&[0b0000_0111]).unwrap(), b"0");
        assert_eq!(huffman_decode(&[0b0000_0101]), Err(HpackError::BadHuffman));
        assert_eq!(huffman_decode(&[0x07, 0xff]), Err(HpackError::BadHuffman));
    }

    #[test]
    fn literals_never_indexed_and_size_updates_decode() {
        let block = Block::new()
            .table_size_update(0)
            .literal("x-a", b"1")
            .never_indexed("x-b", b"2")
            .literal_indexed_name(index::STATUS, b"431")
            .incremental("x-c", b"3");
        let mut d = Decoder::default();
        assert_eq!(
            d.decode(block.bytes()).unwrap(),
            pairs(&[("x-a", "1"), ("x-b", "2"), (":status", "431"), ("x-c", "3")])
        );
        // The table holds nothing at size 0: the new entry did not fit.
        assert_eq!(d.table_size(), 0);
        assert_eq!(d.decode(&[0xbe]), Err(HpackError::BadIndex(62)));
        assert_eq!(
            d.decode(Block::new().table_size_update(5000).bytes()),
            Err(HpackError::TableTooLarge(5000))
        );
    }

    #[test]
    fn entries_are_evicted_oldest_first() {
        let mut d = Decoder::new(100);
        let v = [b'v'; 30];
        // Each entry takes 32 + 3 + 30 = 65 bytes: one fits at a time.
        d.decode(Block::new().incremental("x-1", &v).bytes())
            .unwrap();
        d.decode(Block::new().incremental("x-2", &v).bytes())
            .unwrap();
        assert_eq!(d.table_size(), 65);
        let got = d.decode(Block::new().indexed(62).bytes()).unwrap();
        assert_eq!(got[0].0, "x-2");
        assert_eq!(d.decode(&[0xbf]), Err(HpackError::BadIndex(63)));
    }
}
