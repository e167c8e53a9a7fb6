//! How listening sockets are handed from the master to a worker across exec.
//!
//! Like systemd's `LISTEN_FDS`, the sockets sit at consecutive descriptors
//! from [`FIRST_LISTEN_FD`], and an environment variable names the address of
//! each in order, so the worker can match them to its config by address.

use std::net::SocketAddr;

/// The first inherited listening descriptor.
pub const FIRST_LISTEN_FD: i32 = 3;

/// Environment variable listing the inherited listeners' addresses, in
/// descriptor order, separated by spaces.
pub const LISTEN_FDS_ENV: &str = "PREFORK_LISTEN_FDS";

/// The value of [`LISTEN_FDS_ENV`] for these addresses.
pub fn encode(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses a [`LISTEN_FDS_ENV`] value into `(fd, address)` pairs.
pub fn decode(value: &str) -> Result<Vec<(i32, SocketAddr)>, String> {
    value
        .split_whitespace()
        .enumerate()
        .map(|(i, a)| {
            let addr = a
                .parse()
                .map_err(|_| format!("{LISTEN_FDS_ENV}: invalid address {a:?}"))?;
            Ok((FIRST_LISTEN_FD + i as i32, addr))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let addrs: Vec<SocketAddr> = vec![
            "127.0.0.1:80".parse().unwrap(),
            "[::1]:8080".parse().unwrap(),
        ];
        let decoded = decode(&encode(&addrs)).unwrap();
        assert_eq!(decoded, vec![(3, addrs[0]), (4, addrs[1])]);
        assert!(decode("nonsense").is_err());
        assert!(decode("").unwrap().is_empty());
    }
}
