//! How listening sockets are handed from the master to a worker across exec.
//!
//! Like systemd's `LISTEN_FDS`, the sockets sit at consecutive descriptors
//! from [`FIRST_LISTEN_FD`], and an environment variable names the address of
//! each in order, so the worker can match them to its config by address. A
//! per-slot (`reuseport`) socket also names its slot, as `addr#slot`: a
//! worker then knows no other worker accepts on it, and a new master (binary
//! upgrade) knows which slot it belongs to.

use std::net::SocketAddr;

/// The first inherited listening descriptor.
pub const FIRST_LISTEN_FD: i32 = 3;

/// Environment variable listing the inherited listeners' addresses, in
/// descriptor order, separated by spaces.
pub const LISTEN_FDS_ENV: &str = "PREFORK_LISTEN_FDS";

/// Names the descriptor of the binary a worker was started from (through
/// `/proc/self/fd/N`): left open across exec, so that a tool that re-execs
/// the program path itself (valgrind's `--trace-children`) still finds it,
/// and closed by the worker as it starts.
pub const IMAGE_FD_ENV: &str = "PREFORK_IMAGE_FD";

/// The value of [`LISTEN_FDS_ENV`] for these addresses and optional slots.
pub fn encode(listeners: &[(SocketAddr, Option<u32>)]) -> String {
    listeners
        .iter()
        .map(|(addr, slot)| match slot {
            Some(s) => format!("{addr}#{s}"),
            None => addr.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A [`LISTEN_FDS_ENV`] value naming a listener that is not an address,
/// optionally followed by `#slot`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{LISTEN_FDS_ENV}: invalid listener {word:?}")]
pub struct DecodeError {
    /// The word of the value that is not a listener.
    pub word: String,
}

/// Parses a [`LISTEN_FDS_ENV`] value into `(fd, address, slot)` triples.
pub fn decode(value: &str) -> Result<Vec<(i32, SocketAddr, Option<u32>)>, DecodeError> {
    value
        .split_whitespace()
        .enumerate()
        .map(|(i, word)| {
            let invalid = || DecodeError {
                word: word.to_owned(),
            };
            let (addr, slot) = match word.split_once('#') {
                Some((addr, slot)) => (addr, Some(slot.parse().map_err(|_| invalid())?)),
                None => (word, None),
            };
            let addr = addr.parse().map_err(|_| invalid())?;
            Ok((FIRST_LISTEN_FD + i as i32, addr, slot))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "[::1]:8080".parse().unwrap();
        let value = encode(&[(a, None), (b, Some(0)), (b, Some(12))]);
        assert_eq!(value, "127.0.0.1:80 [::1]:8080#0 [::1]:8080#12");
        let decoded = decode(&value).unwrap();
        assert_eq!(
            decoded,
            vec![(3, a, None), (4, b, Some(0)), (5, b, Some(12))]
        );
        assert!(decode("nonsense").is_err());
        assert!(decode("127.0.0.1:80#x").is_err());
        assert!(decode("127.0.0.1:80#-1").is_err());
        assert!(decode("").unwrap().is_empty());
    }

    /// The message operators see, word for word.
    #[test]
    fn names_the_listener_it_cannot_read() {
        let e = decode("127.0.0.1:80 127.0.0.1:81#x").unwrap_err();
        assert_eq!(
            e,
            DecodeError {
                word: "127.0.0.1:81#x".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "PREFORK_LISTEN_FDS: invalid listener \"127.0.0.1:81#x\""
        );
    }
}
