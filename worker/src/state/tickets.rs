//! Session tickets sealed with the keys the master hands out, so that a
//! ticket issued by one worker opens on every other worker, of this
//! generation or a later one, and after a binary upgrade.
//!
//! A ticket is `name ‖ nonce ‖ AES-256-GCM(state) ‖ tag`: the key's name in
//! the clear says which key of the ring opens it (and is authenticated as
//! associated data); the nonce is random. The ring is replaced whenever the
//! master rotates the keys; rustls may call from any thread, so it sits
//! behind a lock.
//!
//! A resumed TLS 1.2 session gets no new ticket (see `io::tls_renewal`): it
//! keeps the one it came with, and its master secret lasts until the key
//! that sealed that ticket leaves the ring, at most twice
//! `tls_session_timeout` after the full handshake: bounded, as OpenSSL's are.
//! TLS 1.3 is unchanged: each resumption makes a fresh key exchange, and
//! gets a new ticket.

use crate::io::tls_renewal;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use prefork_shared::ticket_keys::{TicketKeyRing, KEY_NAME_LEN};
use rustls::server::ProducesTickets;
use std::fmt;
use std::sync::{Arc, LazyLock, RwLock};

/// The worker's one ticketer, shared by every TLS configuration it builds.
/// Tests build a [`Ticketer`] of their own instead: tests run in parallel in
/// one process.
static TICKETER: LazyLock<Arc<Ticketer>> = LazyLock::new(|| Arc::new(Ticketer::empty()));

/// The ticketer every TLS listener of this worker uses
/// (`rustls::ServerConfig::ticketer`): it follows the keys the master sends.
pub(crate) fn ticketer() -> Arc<dyn ProducesTickets> {
    TICKETER.clone()
}

/// Makes `ring` the keys of this worker's ticketer (the master's
/// `TicketKeys` message).
pub(crate) fn install(ring: &TicketKeyRing) {
    TICKETER.replace(ring);
}

/// One key of the ring, ready to seal or open.
struct SealingKey {
    name: [u8; KEY_NAME_LEN],
    key: LessSafeKey,
}

/// The keys in use: the first seals, all open.
struct Keys {
    keys: Vec<SealingKey>,
    lifetime: u32,
}

/// A `ProducesTickets` over the master's ring.
pub(crate) struct Ticketer {
    keys: RwLock<Option<Arc<Keys>>>,
}

impl Ticketer {
    /// A ticketer with no keys yet: it issues no tickets and opens none.
    pub(crate) fn empty() -> Self {
        Ticketer {
            keys: RwLock::new(None),
        }
    }

    /// Uses `ring` from now on; tickets of keys it no longer holds stop
    /// opening.
    pub(crate) fn replace(&self, ring: &TicketKeyRing) {
        let keys = std::iter::once(&ring.current)
            .chain(&ring.accepted)
            .filter_map(|k| {
                let key = UnboundKey::new(&AES_256_GCM, k.secret()).ok()?;
                Some(SealingKey {
                    name: *k.name(),
                    key: LessSafeKey::new(key),
                })
            })
            .collect();
        let keys = Keys {
            keys,
            lifetime: u32::try_from(ring.lifetime.as_secs()).unwrap_or(u32::MAX),
        };
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(keys));
    }

    /// The keys now, without holding the lock while sealing or opening.
    fn keys(&self) -> Option<Arc<Keys>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        // Not for a TLS 1.2 session that resumes from the ticket it has.
        !tls_renewal::resuming()
    }

    fn lifetime(&self) -> u32 {
        self.keys().map_or(0, |k| k.lifetime)
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let keys = self.keys()?;
        let sealing = keys.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let mut ticket =
            Vec::with_capacity(KEY_NAME_LEN + NONCE_LEN + plain.len() + AES_256_GCM.tag_len());
        ticket.extend_from_slice(&sealing.name);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(plain);
        // Sealed where it lies: one buffer per ticket.
        let tag = sealing
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&sealing.name),
                &mut ticket[KEY_NAME_LEN + NONCE_LEN..],
            )
            .ok()?;
        ticket.extend_from_slice(tag.as_ref());
        Some(ticket)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < KEY_NAME_LEN + NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let (name, rest) = cipher.split_at(KEY_NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let keys = self.keys()?;
        let opening = keys.keys.iter().find(|k| k.name[..] == *name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut plain = sealed.to_vec();
        let len = opening
            .key
            .open_in_place(nonce, Aad::from(name), &mut plain)
            .ok()?
            .len();
        plain.truncate(len);
        tls_renewal::opened();
        Some(plain)
    }
}

impl fmt::Debug for Ticketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.keys();
        f.debug_struct("Ticketer")
            .field("keys", &keys.as_ref().map_or(0, |k| k.keys.len()))
            .field("lifetime", &keys.as_ref().map(|k| k.lifetime))
            .finish()
    }
}

#[cfg(test)]
mod tests;
