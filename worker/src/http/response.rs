//! Parsing an upstream's response head and choosing how its body is framed.

use super::{list_items, merge_content_length, Framing, Version};
use std::mem::MaybeUninit;

/// Largest response head accepted from an upstream.
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Most header fields accepted in a response head.
pub(crate) const MAX_RESPONSE_HEADERS: usize = 128;

/// A complete response head, borrowing the upstream buffer.
#[derive(Debug)]
pub(crate) struct ResponseHead<'h, 'b> {
    /// The status code.
    pub status: u16,
    /// The response's protocol version (for `Via`).
    pub version: Version,
    /// The reason phrase, as received.
    pub reason: &'b str,
    /// The header fields, in order, as received.
    pub headers: &'h [httparse::Header<'b>],
    /// Length of the head in bytes.
    pub len: usize,
    /// The valid `Content-Length`, if one was sent.
    pub content_length: Option<u64>,
    /// How the body on the upstream connection is framed.
    pub framing: Framing,
    /// Whether the upstream allows reusing its connection afterwards.
    pub keep_alive: bool,
    /// A response without a body (to `HEAD`, a 204 or a 304) whose head
    /// announces one (`Content-Length` above 0 or `Transfer-Encoding`): a
    /// broken server may send that body anyway, so its connection is pooled
    /// only if nothing follows the head.
    pub announces_absent_body: bool,
}

/// Why an upstream response head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ResponseError {
    /// The head is not valid HTTP/1.x syntax.
    #[error("malformed response head: {0}")]
    Syntax(httparse::Error),
    /// The head is larger than [`MAX_RESPONSE_HEAD`].
    #[error("response head too large")]
    TooLarge,
    /// More than [`MAX_RESPONSE_HEADERS`] fields.
    #[error("too many response header fields")]
    TooManyHeaders,
    /// A `Content-Length` that is not one valid length.
    #[error("invalid Content-Length in response")]
    InvalidContentLength,
    /// A 101 response to a request that did not ask to upgrade.
    #[error("unexpected 101 Switching Protocols")]
    UnexpectedSwitch,
    /// A body with a `Transfer-Encoding` other than one `chunked`: prefork
    /// could only pass it on without saying how it is coded (`gzip`), so it
    /// refuses it, as nginx does.
    #[error("unsupported Transfer-Encoding in response")]
    UnsupportedTransferEncoding,
}

/// Parses the response head at the start of `buf`; `Ok(None)` means more
/// bytes are needed. `head_request` tells whether the request was `HEAD`,
/// `upgrade` whether it asked to switch protocols (only then is 101 valid).
pub(crate) fn parse<'h, 'b>(
    buf: &'b [u8],
    head_request: bool,
    upgrade: bool,
    slots: &'h mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Option<ResponseHead<'h, 'b>>, ResponseError> {
    let window = &buf[..buf.len().min(MAX_RESPONSE_HEAD)];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, window, slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if window.len() >= MAX_RESPONSE_HEAD => {
            return Err(ResponseError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooManyHeaders),
        Err(e) => return Err(ResponseError::Syntax(e)),
    };
    let (Some(minor), Some(status)) = (resp.version, resp.code) else {
        return Err(ResponseError::Syntax(httparse::Error::Status));
    };
    // status-code is three digits (RFC 9112 §4) and none is below 100
    // (RFC 9110 §15): not an interim response, a malformed head.
    if status < 100 {
        return Err(ResponseError::Syntax(httparse::Error::Status));
    }
    if status == 101 && !upgrade {
        return Err(ResponseError::UnexpectedSwitch);
    }
    let headers: &'h [httparse::Header<'b>] = resp.headers;
    let mut content_length = None;
    let mut transfer_encoding = false;
    let mut chunked_last = false;
    let mut codings = 0usize;
    let mut close = false;
    let mut keep_alive_token = false;
    for h in headers {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            content_length = merge_content_length(content_length, h.value)
                .map_err(|_| ResponseError::InvalidContentLength)?;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            for coding in list_items(h.value) {
                transfer_encoding = true;
                codings += 1;
                chunked_last = coding.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in list_items(h.value) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let transfer = match (transfer_encoding, chunked_last) {
        (false, _) => None,
        (true, true) => Some(TransferCoding::Chunked),
        (true, false) => Some(TransferCoding::Other),
    };
    let framing = body_framing(head_request, status, transfer, content_length);
    // The client must see the codings of the body it gets, but a coded body
    // could only be passed on close-delimited with `Transfer-Encoding`
    // kept, which no HTTP/1.0 client may receive and few clients decode.
    if framing != Framing::Empty && (transfer_encoding && (codings != 1 || !chunked_last)) {
        return Err(ResponseError::UnsupportedTransferEncoding);
    }
    // An HTTP/1.0 message with Transfer-Encoding has faulty framing: close
    // the connection after it (RFC 9112 §6.1).
    let version_allows = match Version::from_minor(minor) {
        Version::Http10 => keep_alive_token && !close && !transfer_encoding,
        Version::Http11 | Version::Http2 => !close,
    };
    // A response framed by both headers is suspect: never reuse its connection.
    let keep_alive = version_allows && !(transfer.is_some() && content_length.is_some());
    let announced = transfer.is_some() || content_length.is_some_and(|n| n > 0);
    Ok(Some(ResponseHead {
        status,
        version: Version::from_minor(minor),
        reason: resp.reason.unwrap_or(""),
        headers,
        len,
        content_length: if transfer.is_some() {
            None
        } else {
            content_length
        },
        framing,
        keep_alive,
        announces_absent_body: framing == Framing::Empty && status >= 200 && announced,
    }))
}

/// The `Transfer-Encoding` of a response, as far as framing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransferCoding {
    /// `chunked` is the final coding.
    Chunked,
    /// Some other final coding: the body runs until the connection closes.
    Other,
}

/// How a response body is delimited (RFC 9112 §6.3).
pub(crate) fn body_framing(
    head_request: bool,
    status: u16,
    transfer: Option<TransferCoding>,
    content_length: Option<u64>,
) -> Framing {
    if head_request || status < 200 || status == 204 || status == 304 {
        return Framing::Empty;
    }
    match (transfer, content_length) {
        (Some(TransferCoding::Chunked), _) => Framing::Chunked,
        (Some(TransferCoding::Other), _) => Framing::Close,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::Close,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::with_header_slots;

    #[derive(Debug, PartialEq)]
    struct Summary {
        status: u16,
        reason: String,
        framing: Framing,
        content_length: Option<u64>,
        keep_alive: bool,
        len: usize,
    }

    fn try_parse(input: &str, head_request: bool) -> Result<Option<Summary>, ResponseError> {
        with_header_slots(MAX_RESPONSE_HEADERS, |slots| {
            parse(input.as_bytes(), head_request, false, slots).map(|r| {
                r.map(|h| Summary {
                    status: h.status,
                    reason: h.reason.to_owned(),
                    framing: h.framing,
                    content_length: h.content_length,
                    keep_alive: h.keep_alive,
                    len: h.len,
                })
            })
        })
    }

    fn ok(input: &str) -> Summary {
        try_parse(input, false).unwrap().expect("complete head")
    }

    #[test]
    fn framing_choice() {
        use TransferCoding::*;
        assert_eq!(body_framing(true, 200, None, Some(10)), Framing::Empty);
        assert_eq!(body_framing(true, 200, Some(Chunked), None), Framing::Empty);
        assert_eq!(body_framing(false, 204, None, None), Framing::Empty);
        assert_eq!(body_framing(false, 304, None, Some(10)), Framing::Empty);
        assert_eq!(body_framing(false, 100, None, None), Framing::Empty);
        assert_eq!(
            body_framing(false, 200, Some(Chunked), Some(3)),
            Framing::Chunked
        );
        assert_eq!(body_framing(false, 200, Some(Other), None), Framing::Close);
        assert_eq!(body_framing(false, 200, None, Some(0)), Framing::Length(0));
        assert_eq!(body_framing(false, 200, None, None), Framing::Close);
        assert_eq!(body_framing(false, 404, None, Some(5)), Framing::Length(5));
    }

    #[test]
    fn parses_heads() {
        let s = ok("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(s.status, 200);
        assert_eq!(s.reason, "OK");
        assert_eq!(s.framing, Framing::Length(5));
        assert!(s.keep_alive);
        assert_eq!(s.len, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".len());

        let s = ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!((s.framing, s.keep_alive), (Framing::Chunked, true));
        let s = ok("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n");
        assert!(!s.keep_alive);
        let s = ok("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert!(!s.keep_alive);
        let s = ok("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n");
        assert!(s.keep_alive);
        let s = ok("HTTP/1.1 200 OK\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(
            (s.framing, s.content_length, s.keep_alive),
            (Framing::Chunked, None, false)
        );
        let s = ok("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(s.framing, Framing::Close);
        let s = ok("HTTP/1.1 100 Continue\r\n\r\n");
        assert_eq!(s.framing, Framing::Empty);
        let s = try_parse("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!((s.framing, s.content_length), (Framing::Empty, Some(9)));
        assert_eq!(try_parse("HTTP/1.1 200 OK\r\nA: b\r\n", false), Ok(None));
    }

    #[test]
    fn bodyless_responses_announcing_a_body_are_marked() {
        let marked = |input: &str, head_request: bool| {
            let parsed = with_header_slots(MAX_RESPONSE_HEADERS, |slots| {
                parse(input.as_bytes(), head_request, false, slots)
                    .map(|r| r.map(|h| (h.keep_alive, h.announces_absent_body)))
            });
            parsed.unwrap().expect("complete head")
        };
        let head = |input: &str| marked(input, true);
        let get = |input: &str| marked(input, false);
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            (true, false)
        );
        assert_eq!(head("HTTP/1.1 200 OK\r\n\r\n"), (true, false));
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"),
            (true, true)
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            (true, true)
        );
        // Codings do not matter without a body.
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            (true, true)
        );
        assert_eq!(get("HTTP/1.1 204 No Content\r\n\r\n"), (true, false));
        assert_eq!(
            get("HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n"),
            (true, true)
        );
        assert_eq!(
            get("HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n"),
            (true, true)
        );
        assert_eq!(
            get("HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"),
            (true, false)
        );
        // Both framing fields stay suspect, body or not.
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            (false, true)
        );
        // Bodies are not absent.
        assert_eq!(
            get("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"),
            (true, false)
        );
        assert_eq!(
            get("HTTP/1.1 100 Continue\r\nContent-Length: 3\r\n\r\n"),
            (true, false)
        );
    }

    #[test]
    fn bodies_with_codings_other_than_chunked_are_refused() {
        for te in [
            "gzip",
            "gzip, chunked",
            "chunked, chunked",
            "identity",
            "chunked, gzip",
        ] {
            let input = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert_eq!(
                try_parse(&input, false),
                Err(ResponseError::UnsupportedTransferEncoding),
                "{te}"
            );
        }
        let split =
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            try_parse(split, false),
            Err(ResponseError::UnsupportedTransferEncoding)
        );
    }

    /// RFC 9112 §4: status-code = 3DIGIT, and RFC 9110 §15 defines none
    /// below 100: such a head is malformed, not an interim response.
    #[test]
    fn status_codes_below_100_are_refused() {
        for input in ["HTTP/1.1 099 Odd\r\n\r\n", "HTTP/1.1 000 Zero\r\n\r\n"] {
            assert!(
                matches!(try_parse(input, false), Err(ResponseError::Syntax(_))),
                "{input:?}"
            );
        }
    }

    /// RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
    /// framing; the connection closes after it.
    #[test]
    fn http_1_0_with_transfer_encoding_ends_the_connection() {
        let s =
            ok("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!((s.framing, s.keep_alive), (Framing::Chunked, false));
    }

    #[test]
    fn refuses_bad_heads() {
        assert!(matches!(
            try_parse("HTTP/1.1 abc OK\r\n\r\n", false),
            Err(ResponseError::Syntax(_))
        ));
        assert!(matches!(
            try_parse("SSH-2.0-x\r\n\r\n", false),
            Err(ResponseError::Syntax(_))
        ));
        assert_eq!(
            try_parse(
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false
            ),
            Err(ResponseError::InvalidContentLength)
        );
        assert_eq!(
            try_parse("HTTP/1.1 101 Switching Protocols\r\n\r\n", false),
            Err(ResponseError::UnexpectedSwitch)
        );
        let switched = with_header_slots(4, |slots| {
            parse(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                false,
                true,
                slots,
            )
            .map(|h| h.map(|h| (h.status, h.framing)))
        });
        assert_eq!(switched, Ok(Some((101, Framing::Empty))));
        let big = format!("HTTP/1.1 200 OK\r\nX: {}", "y".repeat(MAX_RESPONSE_HEAD));
        assert_eq!(try_parse(&big, false), Err(ResponseError::TooLarge));
        let mut many = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..=MAX_RESPONSE_HEADERS {
            many.push_str(&format!("X-{i}: y\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(try_parse(&many, false), Err(ResponseError::TooManyHeaders));
    }
}
