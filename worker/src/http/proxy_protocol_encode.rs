//! The PROXY protocol header prefork sends first on a connection to a
//! server of a `send_proxy_protocol` group (HAProxy's `send-proxy` and
//! `send-proxy-v2`): the client's addresses, or the LOCAL form for a
//! connection that carries no client (a health check).
//!
//! Addresses of both families in one header cannot be written: as HAProxy
//! does, an IPv4 address beside an IPv6 one is written IPv4-mapped
//! (`::ffff:a.b.c.d`). IPv4-mapped addresses on both sides (a client of a
//! dual-stack listener) are written as the IPv4 addresses they are.

use super::proxy_protocol::{Addresses, V1_PREFIX, V2_SIGNATURE};
use prefork_shared::config::ProxyVersion;
use std::io::Write;
use std::net::IpAddr;

/// The longest header written: a v1 line with two full IPv6 addresses
/// (the specification's bound, 107 bytes).
const MAX_LEN: usize = super::proxy_protocol::V1_MAX_LEN;

/// v2: version 2 with the PROXY command, and with the LOCAL command.
const V2_PROXY: u8 = 0x21;
const V2_LOCAL: u8 = 0x20;
/// v2: TCP over IPv4, TCP over IPv6, and UNSPEC (LOCAL).
const V2_TCP4: u8 = 0x11;
const V2_TCP6: u8 = 0x21;
const V2_UNSPEC: u8 = 0x00;

/// A header ready to send.
#[derive(Clone, Copy)]
pub(crate) struct Encoded {
    bytes: [u8; MAX_LEN],
    len: usize,
}

impl Encoded {
    /// The header's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The header of `version` naming `addresses`, or the LOCAL form (v1
/// `PROXY UNKNOWN`, v2 LOCAL) when `None`.
pub(crate) fn encode(version: ProxyVersion, addresses: Option<&Addresses>) -> Encoded {
    let mut out = Encoded {
        bytes: [0; MAX_LEN],
        len: 0,
    };
    let mut w = &mut out.bytes[..];
    let written = match version {
        ProxyVersion::V1 => v1(&mut w, addresses),
        ProxyVersion::V2 => v2(&mut w, addresses),
    };
    let left = w.len();
    // Every header fits in MAX_LEN bytes: a failure cannot happen.
    debug_assert!(written.is_ok(), "a PROXY header longer than {MAX_LEN}");
    out.len = MAX_LEN - left;
    out
}

/// The two addresses as one family: both IPv4, or both IPv6.
fn same_family(a: &Addresses) -> (IpAddr, IpAddr) {
    match (
        a.source.ip().to_canonical(),
        a.destination.ip().to_canonical(),
    ) {
        (IpAddr::V4(s), IpAddr::V6(d)) => (IpAddr::V6(s.to_ipv6_mapped()), IpAddr::V6(d)),
        (IpAddr::V6(s), IpAddr::V4(d)) => (IpAddr::V6(s), IpAddr::V6(d.to_ipv6_mapped())),
        same => same,
    }
}

fn v1(w: &mut impl Write, addresses: Option<&Addresses>) -> std::io::Result<()> {
    w.write_all(V1_PREFIX)?;
    let Some(a) = addresses else {
        return w.write_all(b"UNKNOWN\r\n");
    };
    let (src, dst) = same_family(a);
    let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    write!(
        w,
        "{family} {src} {dst} {} {}\r\n",
        a.source.port(),
        a.destination.port()
    )
}

fn v2(w: &mut impl Write, addresses: Option<&Addresses>) -> std::io::Result<()> {
    w.write_all(&V2_SIGNATURE)?;
    let Some(a) = addresses else {
        return w.write_all(&[V2_LOCAL, V2_UNSPEC, 0, 0]);
    };
    let ports = |w: &mut dyn Write, a: &Addresses| {
        w.write_all(&a.source.port().to_be_bytes())?;
        w.write_all(&a.destination.port().to_be_bytes())
    };
    match same_family(a) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            w.write_all(&[V2_PROXY, V2_TCP4, 0, 12])?;
            w.write_all(&src.octets())?;
            w.write_all(&dst.octets())?;
            ports(w, a)
        }
        (src, dst) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            w.write_all(&[V2_PROXY, V2_TCP6, 0, 36])?;
            w.write_all(&v6(src).octets())?;
            w.write_all(&v6(dst).octets())?;
            ports(w, a)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::proxy_protocol::parse;

    fn addrs(src: &str, dst: &str) -> Addresses {
        Addresses {
            source: src.parse().unwrap(),
            destination: dst.parse().unwrap(),
        }
    }

    /// What the parser reads back from `header`: its length must be the
    /// whole header, and its addresses are returned.
    fn read_back(header: &Encoded) -> Option<Addresses> {
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let parsed = parse(&bytes).unwrap().unwrap();
        assert_eq!(parsed.len, header.as_bytes().len());
        parsed.addresses
    }

    #[test]
    fn v1_writes_the_line_of_its_family() {
        let v4 = encode(
            ProxyVersion::V1,
            Some(&addrs("192.0.2.7:40000", "10.0.0.1:443")),
        );
        assert_eq!(
            v4.as_bytes(),
            b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 443\r\n"
        );
        let v6 = encode(
            ProxyVersion::V1,
            Some(&addrs("[2001:db8::7]:51000", "[2001:db8::1]:80")),
        );
        assert_eq!(
            v6.as_bytes(),
            b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 80\r\n"
        );
        assert_eq!(
            encode(ProxyVersion::V1, None).as_bytes(),
            b"PROXY UNKNOWN\r\n"
        );
        // The longest line there is fits.
        let full = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535";
        let longest = encode(ProxyVersion::V1, Some(&addrs(full, full)));
        assert_eq!(longest.as_bytes().len(), 104);
        assert_eq!(read_back(&longest), Some(addrs(full, full)));
    }

    #[test]
    fn v2_writes_signature_command_family_and_addresses() {
        let v4 = encode(
            ProxyVersion::V2,
            Some(&addrs("192.0.2.7:40000", "10.0.0.1:443")),
        );
        let mut expected = V2_SIGNATURE.to_vec();
        expected.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 0, 2, 7, 10, 0, 0, 1]);
        expected.extend_from_slice(&40000u16.to_be_bytes());
        expected.extend_from_slice(&443u16.to_be_bytes());
        assert_eq!(v4.as_bytes(), expected);
        let v6 = encode(
            ProxyVersion::V2,
            Some(&addrs("[2001:db8::7]:51000", "[2001:db8::1]:80")),
        );
        assert_eq!(v6.as_bytes().len(), 16 + 36);
        assert_eq!(&v6.as_bytes()[12..16], &[0x21, 0x21, 0, 36]);
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(encode(ProxyVersion::V2, None).as_bytes(), local);
    }

    #[test]
    fn the_parser_reads_back_what_is_written() {
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            for (src, dst) in [
                ("192.0.2.7:40000", "10.0.0.1:443"),
                ("127.0.0.1:1", "127.0.0.1:65535"),
                ("[2001:db8::7]:51000", "[2001:db8::1]:80"),
                ("[::1]:0", "[fe80::1]:8080"),
            ] {
                let a = addrs(src, dst);
                assert_eq!(
                    read_back(&encode(version, Some(&a))),
                    Some(a),
                    "{version:?}"
                );
            }
            // LOCAL and UNKNOWN carry no addresses.
            assert_eq!(read_back(&encode(version, None)), None, "{version:?}");
        }
    }

    #[test]
    fn mixed_families_are_written_ipv4_mapped_and_mapped_pairs_as_ipv4() {
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            let mixed = encode(version, Some(&addrs("192.0.2.7:40000", "[2001:db8::1]:80")));
            assert_eq!(
                read_back(&mixed),
                Some(addrs("[::ffff:192.0.2.7]:40000", "[2001:db8::1]:80")),
                "{version:?}"
            );
            let mapped = encode(
                version,
                Some(&addrs("[::ffff:192.0.2.7]:40000", "[::ffff:10.0.0.1]:80")),
            );
            assert_eq!(
                read_back(&mapped),
                Some(addrs("192.0.2.7:40000", "10.0.0.1:80")),
                "{version:?}"
            );
        }
        assert_eq!(
            encode(
                ProxyVersion::V1,
                Some(&addrs("[2001:db8::7]:1", "10.0.0.1:2"))
            )
            .as_bytes(),
            b"PROXY TCP6 2001:db8::7 ::ffff:10.0.0.1 1 2\r\n"
        );
    }
}
