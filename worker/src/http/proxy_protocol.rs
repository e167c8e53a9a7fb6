//! The PROXY protocol header (HAProxy's, versions 1 and 2) that a load
//! balancer sends before a connection's first byte to say whose connection
//! it forwards. A pure parser over the bytes received so far: it says how
//! long the header is, so that exactly those bytes are taken and what
//! follows (a request, a TLS ClientHello) is left to the next layer.
//! `proxy_protocol_encode` writes the headers prefork sends upstream.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The first bytes of a version 2 header.
pub(crate) const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The first bytes of a version 1 header.
pub(crate) const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest version 1 header, CRLF included (the specification's bound).
pub(crate) const V1_MAX_LEN: usize = 107;
/// The longest version 2 header accepted: the fixed 16 bytes, the
/// addresses and TLVs (the specification allows up to 64 KiB of TLVs; load
/// balancers send well under a hundred bytes).
pub(crate) const V2_MAX_LEN: usize = 16 + 2048;
/// The most bytes a caller must look at to parse any accepted header.
pub(crate) const MAX_LEN: usize = V2_MAX_LEN;

/// The two ends of a forwarded TCP connection, as a header names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Addresses {
    /// The client's address and port.
    pub(crate) source: SocketAddr,
    /// The address and port the client connected to.
    pub(crate) destination: SocketAddr,
}

/// A complete header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Its length in bytes: what follows belongs to the connection.
    pub(crate) len: usize,
    /// The addresses it carries; `None` for a health check of the balancer
    /// itself (v2 `LOCAL`), or an unknown or unsupported family (v1
    /// `UNKNOWN`, v2 `UNSPEC` or `UNIX`): the connection's own addresses
    /// are kept.
    pub(crate) addresses: Option<Addresses>,
}

/// Why a header is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProxyHeaderError {
    /// The bytes start with neither signature.
    #[error("no PROXY protocol signature")]
    Signature,
    /// A version 1 line without its CRLF within 107 bytes, or a version 2
    /// header longer than prefork accepts.
    #[error("PROXY protocol header too long")]
    TooLong,
    /// A version 1 line that does not follow the grammar.
    #[error("malformed PROXY protocol v1 line")]
    V1,
    /// A version 2 header with a bad version, command, or an address block
    /// shorter than its family needs.
    #[error("malformed PROXY protocol v2 header")]
    V2,
}

/// Parses the header at the start of `buf`: `Ok(None)` while more bytes
/// are needed to tell. Bytes after the header are never looked at, so the
/// result does not depend on them.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<Header>, ProxyHeaderError> {
    if starts_like(buf, &V2_SIGNATURE) {
        if buf.len() < V2_SIGNATURE.len() {
            return Ok(None);
        }
        parse_v2(buf)
    } else if starts_like(buf, V1_PREFIX) {
        parse_v1(buf)
    } else {
        Err(ProxyHeaderError::Signature)
    }
}

/// Whether `buf` and `signature` agree on the bytes both have.
fn starts_like(buf: &[u8], signature: &[u8]) -> bool {
    let n = buf.len().min(signature.len());
    buf[..n] == signature[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Option<Header>, ProxyHeaderError> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX_LEN {
            Err(ProxyHeaderError::TooLong)
        } else {
            Ok(None)
        };
    };
    let line = match window[..lf].strip_suffix(b"\r") {
        Some(line) => &line[V1_PREFIX.len().min(line.len())..],
        None => return Err(ProxyHeaderError::V1),
    };
    let line = std::str::from_utf8(line).map_err(|_| ProxyHeaderError::V1)?;
    let len = lf + 1;
    let mut fields = line.split(' ');
    let addresses = match fields.next() {
        // Whatever follows UNKNOWN is to be ignored.
        Some("UNKNOWN") => None,
        Some(family @ ("TCP4" | "TCP6")) => {
            let v6 = family == "TCP6";
            let mut next = || fields.next().ok_or(ProxyHeaderError::V1);
            let (src, dst) = (ip(next()?, v6)?, ip(next()?, v6)?);
            let (src_port, dst_port) = (port(next()?)?, port(next()?)?);
            if fields.next().is_some() {
                return Err(ProxyHeaderError::V1);
            }
            Some(Addresses {
                source: SocketAddr::new(src, src_port),
                destination: SocketAddr::new(dst, dst_port),
            })
        }
        _ => return Err(ProxyHeaderError::V1),
    };
    Ok(Some(Header { len, addresses }))
}

/// A v1 address of the family the line named.
fn ip(text: &str, v6: bool) -> Result<IpAddr, ProxyHeaderError> {
    let ip = if v6 {
        text.parse::<Ipv6Addr>().map(IpAddr::V6)
    } else {
        text.parse::<Ipv4Addr>().map(IpAddr::V4)
    };
    ip.map_err(|_| ProxyHeaderError::V1)
}

/// A v1 port: decimal, 0 to 65535, no sign and no leading zero.
fn port(text: &str) -> Result<u16, ProxyHeaderError> {
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (text.len() > 1 && text.starts_with('0')) {
        return Err(ProxyHeaderError::V1);
    }
    text.parse().map_err(|_| ProxyHeaderError::V1)
}

fn parse_v2(buf: &[u8]) -> Result<Option<Header>, ProxyHeaderError> {
    let Some(fixed) = buf.get(..16) else {
        return Ok(None);
    };
    let (version, command) = (fixed[12] >> 4, fixed[12] & 0x0f);
    if version != 2 || command > 1 {
        return Err(ProxyHeaderError::V2);
    }
    let (family, transport) = (fixed[13] >> 4, fixed[13] & 0x0f);
    let payload = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let len = 16 + payload;
    if len > V2_MAX_LEN {
        return Err(ProxyHeaderError::TooLong);
    }
    // The address block each family needs (TLVs may follow it).
    let needs = match family {
        0x1 => 12,
        0x2 => 36,
        0x3 => 216,
        _ => 0,
    };
    if payload < needs || transport > 2 {
        return Err(ProxyHeaderError::V2);
    }
    let Some(addresses) = buf.get(16..len) else {
        return Ok(None);
    };
    // LOCAL: the balancer's own connection (a health check); a family or
    // transport prefork does not forward for: the connection's own address.
    let addresses = match (command, family, transport) {
        (1, 0x1, 0x1) => Some(v2_addresses::<4>(addresses)?),
        (1, 0x2, 0x1) => Some(v2_addresses::<16>(addresses)?),
        _ => None,
    };
    Ok(Some(Header { len, addresses }))
}

/// The addresses of a v2 block whose addresses are `N` bytes long (4:
/// IPv4, 16: IPv6): source, destination, then their ports.
fn v2_addresses<const N: usize>(block: &[u8]) -> Result<Addresses, ProxyHeaderError>
where
    IpAddr: From<[u8; N]>,
{
    let ip = |at: usize| -> Result<IpAddr, ProxyHeaderError> {
        let octets: [u8; N] = block
            .get(at..at + N)
            .and_then(|b| b.try_into().ok())
            .ok_or(ProxyHeaderError::V2)?;
        Ok(IpAddr::from(octets))
    };
    let port = |at: usize| -> Result<u16, ProxyHeaderError> {
        match block.get(at..at + 2) {
            Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
            _ => Err(ProxyHeaderError::V2),
        }
    };
    Ok(Addresses {
        source: SocketAddr::new(ip(0)?, port(2 * N)?),
        destination: SocketAddr::new(ip(N)?, port(2 * N + 2)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn v4_block() -> Vec<u8> {
        let mut p = vec![192, 0, 2, 7, 10, 0, 0, 1];
        p.extend_from_slice(&40000u16.to_be_bytes());
        p.extend_from_slice(&443u16.to_be_bytes());
        p
    }

    fn v6_block() -> Vec<u8> {
        let mut p = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        p.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&51000u16.to_be_bytes());
        p.extend_from_slice(&80u16.to_be_bytes());
        p
    }

    fn source(buf: &[u8]) -> Option<SocketAddr> {
        parse(buf).unwrap().unwrap().addresses.map(|a| a.source)
    }

    fn destination(buf: &[u8]) -> Option<SocketAddr> {
        parse(buf)
            .unwrap()
            .unwrap()
            .addresses
            .map(|a| a.destination)
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let line = b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 443\r\nGET / HTTP/1.1\r\n";
        let h = parse(line).unwrap().unwrap();
        assert_eq!(h.len, 41);
        assert_eq!(source(line), Some("192.0.2.7:40000".parse().unwrap()));
        assert_eq!(destination(line), Some("10.0.0.1:443".parse().unwrap()));
        let tcp6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 80\r\n";
        assert_eq!(source(tcp6), Some("[2001:db8::7]:51000".parse().unwrap()));
        assert_eq!(destination(tcp6), Some("[2001:db8::1]:80".parse().unwrap()));
        let unknown = b"PROXY UNKNOWN ff:: 1.2.3.4 x y\r\n\x16\x03\x01";
        assert_eq!(parse(unknown).unwrap().unwrap().len, unknown.len() - 3);
        assert_eq!(source(b"PROXY UNKNOWN\r\n"), None);
    }

    #[test]
    fn v1_refuses_what_breaks_the_grammar() {
        for bad in [
            &b"PROXY TCP4 192.0.2.7 10.0.0.1 40000\r\n"[..],
            b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 443 8\r\n",
            b"PROXY TCP4 2001:db8::7 10.0.0.1 40000 443\r\n",
            b"PROXY TCP6 192.0.2.7 10.0.0.1 40000 443\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 040000 443\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 443\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 +4 443\r\n",
            b"PROXY TCP4  192.0.2.7 10.0.0.1 4 443\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 4 443\n",
            b"PROXY UDP4 192.0.2.7 10.0.0.1 4 443\r\n",
            b"PROXY \r\n",
            b"PROXY TCP4 192.0.2.\xff 10.0.0.1 4 443\r\n",
        ] {
            assert_eq!(
                parse(bad),
                Err(ProxyHeaderError::V1),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn v1_without_its_end_within_107_bytes_is_too_long() {
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(200, b'x');
        assert_eq!(parse(&long), Err(ProxyHeaderError::TooLong));
        assert_eq!(parse(&long[..106]), Ok(None));
        // Exactly 107 bytes with its CRLF is still a header.
        let mut max = long[..105].to_vec();
        max.extend_from_slice(b"\r\n");
        assert_eq!(parse(&max).unwrap().unwrap().len, 107);
    }

    #[test]
    fn v2_proxy_ipv4_ipv6_and_tlvs_skipped() {
        let h = parse(&v2(1, 0x11, &v4_block())).unwrap().unwrap();
        assert_eq!(h.len, 28);
        assert_eq!(
            source(&v2(1, 0x11, &v4_block())),
            Some("192.0.2.7:40000".parse().unwrap())
        );
        assert_eq!(
            destination(&v2(1, 0x11, &v4_block())),
            Some("10.0.0.1:443".parse().unwrap())
        );
        assert_eq!(
            source(&v2(1, 0x21, &v6_block())),
            Some("[2001:db8::7]:51000".parse().unwrap())
        );
        assert_eq!(
            destination(&v2(1, 0x21, &v6_block())),
            Some("[2001:db8::1]:80".parse().unwrap())
        );
        // An AWS VPC endpoint TLV and a NOOP after the addresses.
        let mut with_tlvs = v4_block();
        with_tlvs.extend_from_slice(b"\xea\x00\x09\x01vpce-abc");
        with_tlvs.extend_from_slice(b"\x04\x00\x02\x00\x00");
        let mut buf = v2(1, 0x11, &with_tlvs);
        let header_len = buf.len();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let h = parse(&buf).unwrap().unwrap();
        assert_eq!(h.len, header_len);
        assert_eq!(source(&buf), Some("192.0.2.7:40000".parse().unwrap()));
    }

    #[test]
    fn v2_local_and_unspec_keep_the_connection_address() {
        // LOCAL with no address block, LOCAL with one, PROXY over UNSPEC,
        // UNIX addresses and a datagram transport.
        assert_eq!(source(&v2(0, 0x00, &[])), None);
        assert_eq!(source(&v2(0, 0x11, &v4_block())), None);
        assert_eq!(source(&v2(1, 0x00, b"tlvs")), None);
        assert_eq!(source(&v2(1, 0x31, &[0; 216])), None);
        assert_eq!(source(&v2(1, 0x12, &v4_block())), None);
    }

    #[test]
    fn v2_refuses_bad_version_command_and_short_blocks() {
        let mut bad_version = v2(1, 0x11, &v4_block());
        bad_version[12] = 0x11;
        assert_eq!(parse(&bad_version), Err(ProxyHeaderError::V2));
        assert_eq!(parse(&v2(2, 0x11, &v4_block())), Err(ProxyHeaderError::V2));
        assert_eq!(parse(&v2(1, 0x11, &[0; 11])), Err(ProxyHeaderError::V2));
        assert_eq!(parse(&v2(1, 0x21, &[0; 35])), Err(ProxyHeaderError::V2));
        assert_eq!(parse(&v2(1, 0x13, &v4_block())), Err(ProxyHeaderError::V2));
    }

    #[test]
    fn v2_longer_than_accepted_is_refused_from_its_length() {
        let mut fixed = v2(1, 0x11, &[]);
        fixed[14..16].copy_from_slice(&u16::try_from(V2_MAX_LEN - 15).unwrap().to_be_bytes());
        assert_eq!(parse(&fixed), Err(ProxyHeaderError::TooLong));
        let at_most = v2(1, 0x11, &[0; V2_MAX_LEN - 16]);
        assert_eq!(parse(&at_most).unwrap().unwrap().len, V2_MAX_LEN);
    }

    #[test]
    fn truncated_headers_ask_for_more() {
        let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 443\r\n";
        let v2 = v2(1, 0x21, &v6_block());
        for whole in [&v1[..], &v2] {
            for cut in 0..whole.len() {
                assert_eq!(parse(&whole[..cut]), Ok(None), "cut at {cut}");
            }
        }
    }

    #[test]
    fn garbage_and_other_protocols_fail_at_once() {
        for other in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x16\x03\x01\x02\x00",
            b"PROXY\t",
            b"proxy ",
            b"\r\n\r\n\0\r\nQUIX\n",
            b"\r\n\r\n\x01",
        ] {
            assert_eq!(parse(other), Err(ProxyHeaderError::Signature));
        }
    }
}
