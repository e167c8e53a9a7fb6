//! Session-ticket keys as the master hands them to its workers: every worker
//! of every generation encrypts tickets with the same current key and
//! decrypts with the same set, so a client resumes on whichever worker
//! accepts its next connection.
//!
//! Secrets never reach a log: [`TicketKey`]'s `Debug` shows its name only.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Length of a key's name, written in the clear in front of each ticket.
pub const KEY_NAME_LEN: usize = 16;
/// Length of a key's secret (an AES-256-GCM key).
pub const KEY_SECRET_LEN: usize = 32;

/// One session-ticket key: a public name and a secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketKey {
    name: [u8; KEY_NAME_LEN],
    secret: [u8; KEY_SECRET_LEN],
}

impl TicketKey {
    /// A key from its name and secret (both random).
    pub fn new(name: [u8; KEY_NAME_LEN], secret: [u8; KEY_SECRET_LEN]) -> Self {
        TicketKey { name, secret }
    }

    /// A key from [`KEY_NAME_LEN`] + [`KEY_SECRET_LEN`] random bytes.
    pub fn from_bytes(bytes: &[u8; KEY_NAME_LEN + KEY_SECRET_LEN]) -> Self {
        let mut name = [0; KEY_NAME_LEN];
        let mut secret = [0; KEY_SECRET_LEN];
        name.copy_from_slice(&bytes[..KEY_NAME_LEN]);
        secret.copy_from_slice(&bytes[KEY_NAME_LEN..]);
        TicketKey { name, secret }
    }

    /// The name, which tickets carry in the clear to say which key opens
    /// them.
    pub fn name(&self) -> &[u8; KEY_NAME_LEN] {
        &self.name
    }

    /// The start of the name in hex: enough to tell keys apart in a log
    /// (the name is no secret: every ticket carries it).
    pub fn short_name(&self) -> String {
        self.name[..4].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The secret.
    pub fn secret(&self) -> &[u8; KEY_SECRET_LEN] {
        &self.secret
    }
}

impl fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketKey")
            .field("name", &format_args!("{}…", self.short_name()))
            .field("secret", &format_args!("<redacted>"))
            .finish()
    }
}

/// The keys a worker uses: one encrypts new tickets, every one listed
/// decrypts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketKeyRing {
    /// Encrypts the tickets issued now.
    pub current: TicketKey,
    /// Decrypt only: the key that becomes current at the next rotation
    /// (a worker that learns of the rotation a moment after another one
    /// still opens its tickets) and the previous keys whose tickets may still
    /// be within their lifetime.
    pub accepted: Vec<TicketKey>,
    /// How long a ticket may be used, as advertised to clients.
    pub lifetime: Duration,
}

impl TicketKeyRing {
    /// The key named `name`, if this ring still opens its tickets.
    pub fn find(&self, name: &[u8]) -> Option<&TicketKey> {
        std::iter::once(&self.current)
            .chain(&self.accepted)
            .find(|k| k.name[..] == *name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(fill: u8) -> TicketKey {
        TicketKey::new([fill; KEY_NAME_LEN], [fill ^ 0x5a; KEY_SECRET_LEN])
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let ring = TicketKeyRing {
            current: key(0xab),
            accepted: vec![key(0xcd)],
            lifetime: Duration::from_secs(60),
        };
        let shown = format!("{ring:?} {ring:#?}");
        assert!(shown.contains("<redacted>"), "{shown}");
        for k in [&ring.current, &ring.accepted[0]] {
            let secret: String = k.secret().iter().map(|b| format!("{b:02x}")).collect();
            assert!(!shown.contains(&secret), "{shown}");
            assert!(!shown.contains(&format!("{:?}", k.secret())), "{shown}");
        }
    }

    #[test]
    fn a_ring_finds_its_keys_by_name() {
        let ring = TicketKeyRing {
            current: key(1),
            accepted: vec![key(2)],
            lifetime: Duration::from_secs(60),
        };
        assert_eq!(ring.find(&[1; KEY_NAME_LEN]), Some(&key(1)));
        assert_eq!(ring.find(&[2; KEY_NAME_LEN]), Some(&key(2)));
        assert_eq!(ring.find(&[3; KEY_NAME_LEN]), None);
        assert_eq!(ring.find(&[1; 4]), None);
    }

    #[test]
    fn a_key_splits_its_bytes_into_name_and_secret() {
        let mut bytes = [0u8; KEY_NAME_LEN + KEY_SECRET_LEN];
        bytes[..KEY_NAME_LEN].fill(7);
        bytes[KEY_NAME_LEN..].fill(9);
        let k = TicketKey::from_bytes(&bytes);
        assert_eq!(k.name(), &[7; KEY_NAME_LEN]);
        assert_eq!(k.secret(), &[9; KEY_SECRET_LEN]);
    }
}
