//! The addresses the master binds: `[[listen]]` and the `[admin]` listener.

use super::Validator;
use crate::config::locate::KeyPath;
use crate::config::model::{Admin, Listen};
use crate::config::raw::{RawAdmin, RawListen};
use std::collections::HashSet;
use std::net::SocketAddr;

/// Listen address used when a config names none.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:80";

impl Validator<'_> {
    pub(super) fn listen(&mut self, path: KeyPath, raw: Vec<RawListen>) -> Vec<Listen> {
        if raw.is_empty() {
            let addr = DEFAULT_LISTEN
                .parse()
                .expect("the default listen address is valid");
            return vec![Listen {
                addr,
                backlog: 1024,
                reuseport: false,
                defer_accept: true,
                tls: false,
                proxy_protocol: false,
                http2: false,
            }];
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (i, l) in raw.into_iter().enumerate() {
            let key = path.index(i).key("addr");
            let addr: SocketAddr = match l.addr.parse() {
                Ok(a) => a,
                Err(_) => {
                    self.problem(
                        &key,
                        format!(
                            "invalid listen address {:?}: write an IP and a port, \"0.0.0.0:80\" or \"[::]:80\"",
                            l.addr
                        ),
                    );
                    continue;
                }
            };
            if addr.port() == 0 {
                self.problem(
                    &key,
                    format!(
                        "port 0 is not a port clients can reach (found {:?})",
                        l.addr
                    ),
                );
                continue;
            }
            if !seen.insert(addr) {
                self.problem(&key, format!("duplicate listen address {addr}"));
                continue;
            }
            let reuseport = l.reuseport.unwrap_or(false);
            // Unless both set SO_REUSEPORT (equal addresses were refused
            // above).
            let overlapping = out
                .iter()
                .find(|o: &&Listen| binds_collide(o.addr, addr) && !(o.reuseport && reuseport));
            if let Some(o) = overlapping {
                self.problem(
                    &key,
                    format!(
                        "{addr} overlaps listen address {}: both cannot be bound",
                        o.addr
                    ),
                );
                continue;
            }
            let backlog = match l.backlog {
                Some(b) if b < 1 => {
                    self.problem(&path.index(i).key("backlog"), "must be at least 1");
                    1024
                }
                Some(b) => b,
                None => 1024,
            };
            out.push(Listen {
                addr,
                backlog,
                reuseport,
                defer_accept: l.defer_accept.unwrap_or(true),
                tls: l.tls.unwrap_or(false),
                proxy_protocol: l.proxy_protocol.unwrap_or(false),
                http2: l.http2.unwrap_or(false),
            });
        }
        out
    }

    /// The admin listener, which must not overlap a listen address.
    pub(super) fn admin(
        &mut self,
        path: KeyPath,
        raw: Option<RawAdmin>,
        listen: &[Listen],
    ) -> Option<Admin> {
        let admin = self.admin_addr(path.clone(), raw?)?;
        let clash = listen.iter().find(|l| binds_collide(l.addr, admin.addr));
        if let Some(l) = clash {
            self.problem(
                &path.key("addr"),
                format!(
                    "{} overlaps listen address {}: both cannot be bound",
                    admin.addr, l.addr
                ),
            );
        }
        Some(admin)
    }

    fn admin_addr(&mut self, path: KeyPath, raw: RawAdmin) -> Option<Admin> {
        let key = path.key("addr");
        let Some(text) = raw.addr else {
            self.problem(
                &key,
                "the admin listener needs an address, e.g. \"127.0.0.1:9901\"",
            );
            return None;
        };
        match text.parse::<SocketAddr>() {
            Ok(addr) if addr.port() == 0 => {
                self.problem(
                    &key,
                    format!("port 0 is not a port clients can reach (found {text:?})"),
                );
                None
            }
            Ok(addr) => Some(Admin { addr }),
            Err(_) => {
                self.problem(
                    &key,
                    format!(
                        "invalid address {text:?}: write an IP and a port, e.g. \"127.0.0.1:9901\""
                    ),
                );
                None
            }
        }
    }
}

/// Whether sockets bound to `a` and `b` collide: the same family and port,
/// and the same address or either a wildcard (IPv6 sockets are
/// IPV6_V6ONLY, so the families never mix).
fn binds_collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{parse_err, parse_ok};

    #[test]
    fn listen_addresses_that_cannot_be_bound_are_refused() {
        let e = parse_err("[[listen]]\naddr = \"127.0.0.1:0\"\n");
        assert!(e.starts_with("t.toml:2: listen[0].addr: port 0"), "{e}");
        let e = parse_err(
            "[[listen]]\naddr = \"0.0.0.0:8080\"\n[[listen]]\naddr = \"127.0.0.1:8080\"\n",
        );
        assert!(
            e.starts_with(
                "t.toml:4: listen[1].addr: 127.0.0.1:8080 overlaps listen address 0.0.0.0:8080"
            ),
            "{e}"
        );
        let e = parse_err("[[listen]]\naddr = \"[::1]:8080\"\n[[listen]]\naddr = \"[::]:8080\"\n");
        assert!(
            e.starts_with("t.toml:4: listen[1].addr: [::]:8080 overlaps"),
            "{e}"
        );
        // Different families (IPv6 sockets are v6-only), or both reuseport.
        parse_ok("[[listen]]\naddr = \"0.0.0.0:8080\"\n[[listen]]\naddr = \"[::]:8080\"\n");
        parse_ok(
            "[[listen]]\naddr = \"0.0.0.0:8080\"\nreuseport = true\n[[listen]]\naddr = \"127.0.0.1:8080\"\nreuseport = true\n",
        );
        let e = parse_err("[admin]\naddr = \"127.0.0.1:0\"\n");
        assert!(e.starts_with("t.toml:2: admin.addr: port 0"), "{e}");
        let e = parse_err(
            "[[listen]]\naddr = \"127.0.0.1:8080\"\n[admin]\naddr = \"127.0.0.1:8080\"\n",
        );
        assert!(
            e.starts_with(
                "t.toml:4: admin.addr: 127.0.0.1:8080 overlaps listen address 127.0.0.1:8080"
            ),
            "{e}"
        );
        let e = parse_err("[admin]\naddr = \"127.0.0.1:80\"\n");
        assert!(
            e.contains("admin.addr: 127.0.0.1:80 overlaps listen address 0.0.0.0:80"),
            "{e}"
        );
    }

    #[test]
    fn proxy_protocol_is_off_unless_a_listener_asks_for_it() {
        let c = parse_ok(
            "[[listen]]\naddr = \"127.0.0.1:8080\"\nproxy_protocol = true\n\
             [[listen]]\naddr = \"127.0.0.1:8081\"\n",
        );
        assert!(c.listen[0].proxy_protocol);
        assert!(!c.listen[1].proxy_protocol);
        assert!(!parse_ok("").listen[0].proxy_protocol);
        let e = parse_err("[[listen]]\naddr = \"127.0.0.1:8080\"\nproxy_protocol = \"v2\"\n");
        assert!(e.starts_with("t.toml:3:"), "{e}");
    }
}
