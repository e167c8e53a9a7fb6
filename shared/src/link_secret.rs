//! The secret a worker proves itself with when it says hello.
//!
//! The one-shot IPC server's name is on the worker's command line, which
//! every local user can read, and its socket must be open to the workers'
//! user, which other daemons may share (`nobody`). So a connection to it
//! proves nothing. Before each worker starts, the master draws a fresh
//! secret and hands it to that child alone, on an inherited socket named by
//! [`LINK_SECRET_FD_ENV`] (a socket rather than a pipe: another process of
//! the same user could open a pipe again through `/proc/PID/fd/N` and read
//! it first, a socket cannot be opened that way). The worker sends it back in
//! [`WorkerMsg::Hello`](crate::ipc::WorkerMsg::Hello), and the master
//! configures only a worker whose secret and pid are the ones it expects.
//!
//! Secrets never reach a log: [`LinkSecret`]'s `Debug` shows none of it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Length of a secret: 128 bits, drawn from the kernel.
pub const LINK_SECRET_LEN: usize = 16;

/// Names the descriptor a worker reads its secret from, once, as it starts.
pub const LINK_SECRET_FD_ENV: &str = "PREFORK_LINK_SECRET_FD";

/// The secret of one worker's link. No `PartialEq`: compare with
/// [`LinkSecret::matches`], which takes the same time wherever the secrets
/// differ.
#[derive(Clone, Serialize, Deserialize)]
pub struct LinkSecret([u8; LINK_SECRET_LEN]);

impl LinkSecret {
    /// A secret from random bytes.
    pub fn from_bytes(bytes: [u8; LINK_SECRET_LEN]) -> Self {
        LinkSecret(bytes)
    }

    /// The bytes, to hand the worker.
    pub fn bytes(&self) -> &[u8; LINK_SECRET_LEN] {
        &self.0
    }

    /// Whether `other` is the same secret, in constant time: every byte is
    /// looked at whatever the first difference, so the time taken tells
    /// nothing about how much of a guess was right.
    pub fn matches(&self, other: &LinkSecret) -> bool {
        let diff = self
            .0
            .iter()
            .zip(&other.0)
            .fold(0u8, |acc, (a, b)| std::hint::black_box(acc | (a ^ b)));
        diff == 0
    }
}

impl fmt::Debug for LinkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_same_bytes() {
        let a = LinkSecret::from_bytes([7; LINK_SECRET_LEN]);
        assert!(a.matches(&a.clone()));
        for i in 0..LINK_SECRET_LEN {
            let mut bytes = [7; LINK_SECRET_LEN];
            bytes[i] ^= 0x80;
            assert!(!a.matches(&LinkSecret::from_bytes(bytes)), "byte {i}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let bytes: [u8; LINK_SECRET_LEN] = std::array::from_fn(|i| 0xa0 + i as u8);
        let secret = LinkSecret::from_bytes(bytes);
        let shown = format!("{secret:?} {secret:#?}");
        assert!(shown.contains("<redacted>"), "{shown}");
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!shown.contains(&hex), "{shown}");
        assert!(!shown.contains(&format!("{bytes:?}")[1..20]), "{shown}");
    }
}
