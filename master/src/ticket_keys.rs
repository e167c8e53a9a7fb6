//! The session-ticket keys the master owns and hands to every worker (see
//! `shared/src/ticket_keys.rs`), and their rotation.
//!
//! Three keys at most: the current one seals new tickets; the previous one
//! still opens tickets sealed before the last rotation (a ticket lives at
//! most one rotation interval, so nothing older can be in use); the next
//! one, made one interval ahead, opens tickets too, so that a worker that
//! learns of a rotation a moment before another, or a new master after a
//! binary upgrade whose old master rotated meanwhile, seals with a key the
//! others already hold. The interval is `tls_session_timeout`. The
//! decisions take the time as an argument and the fresh keys as values:
//! randomness and timers stay at the edge.

use crate::os;
use prefork_shared::ticket_keys::{TicketKey, TicketKeyRing, KEY_NAME_LEN, KEY_SECRET_LEN};
use std::io;
use std::time::{Duration, Instant};

/// How soon a rotation that could not get fresh keys is tried again.
pub const RETRY: Duration = Duration::from_secs(60);
/// TLS 1.3 caps a ticket's lifetime at 7 days (RFC 8446, 4.6.1).
const MAX_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Starts the keys' hand-off encoding (`encode`), with its version.
const MAGIC: &[u8] = b"prefork-ticket-keys/1\n";
const KEY_LEN: usize = KEY_NAME_LEN + KEY_SECRET_LEN;

/// The master's ticket keys and when they next rotate.
pub struct TicketKeys {
    interval: Duration,
    previous: Option<TicketKey>,
    current: TicketKey,
    next: TicketKey,
    rotate_at: Instant,
}

/// Why keys handed over by an old master cannot be taken (no secret in it).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not this encoding, or another version of it.
    #[error("not prefork's session-ticket keys, or another version")]
    Format,
    /// Cut short or with bytes left over.
    #[error("session-ticket keys of the wrong length ({0} bytes)")]
    Length(usize),
}

impl TicketKeys {
    /// New keys (`current` seals from now, `next` from the first rotation),
    /// rotating every `interval` from `now`.
    pub fn new(now: Instant, interval: Duration, current: TicketKey, next: TicketKey) -> Self {
        TicketKeys {
            interval,
            previous: None,
            current,
            next,
            rotate_at: now + interval,
        }
    }

    /// New keys from the system's randomness.
    pub fn fresh(now: Instant, interval: Duration) -> io::Result<Self> {
        Ok(TicketKeys::new(now, interval, fresh_key()?, fresh_key()?))
    }

    /// When the next rotation is due.
    pub fn rotate_at(&self) -> Instant {
        self.rotate_at
    }

    /// How long a ticket sealed now may be used: at most one interval, so
    /// that the previous key opens every ticket still in use.
    pub fn lifetime(&self) -> Duration {
        self.interval.min(MAX_LIFETIME)
    }

    /// The keys as workers get them.
    pub fn ring(&self) -> TicketKeyRing {
        TicketKeyRing {
            current: self.current.clone(),
            accepted: std::iter::once(&self.next)
                .chain(&self.previous)
                .cloned()
                .collect(),
            lifetime: self.lifetime(),
        }
    }

    /// Rotates if due at `now`: the next key seals, the current one only
    /// opens, the previous one is dropped, and `fresh` (called only then)
    /// becomes the next. Says whether it rotated; a `fresh` that fails
    /// leaves the keys as they were, and the error is returned.
    pub fn rotate_if_due(
        &mut self,
        now: Instant,
        fresh: impl FnOnce() -> io::Result<TicketKey>,
    ) -> io::Result<bool> {
        if now < self.rotate_at {
            return Ok(false);
        }
        let next = fresh()?;
        let current = std::mem::replace(&mut self.next, next);
        self.previous = Some(std::mem::replace(&mut self.current, current));
        // From now, not from when it was due: a late rotation (a suspended
        // machine) is not followed by a burst of them.
        self.rotate_at = now + self.interval;
        Ok(true)
    }

    /// Rotates every `interval` from now on (a reload changed it), at the
    /// latest `interval` from `now`. Says whether it changed (and so the
    /// lifetime workers advertise).
    pub fn set_interval(&mut self, now: Instant, interval: Duration) -> bool {
        if interval == self.interval {
            return false;
        }
        self.interval = interval;
        self.rotate_at = self.rotate_at.min(now + interval);
        true
    }

    /// Tries the rotation again at `at` (fresh keys were not available).
    pub fn postpone(&mut self, at: Instant) {
        self.rotate_at = at;
    }

    /// The keys and the time left until their rotation, for the new master
    /// of a binary upgrade.
    pub fn encode(&self, now: Instant) -> Vec<u8> {
        let left = self.rotate_at.saturating_duration_since(now);
        let left_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
        let mut out = Vec::with_capacity(MAGIC.len() + 9 + 3 * KEY_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&left_ms.to_be_bytes());
        out.push(u8::from(self.previous.is_some()));
        for key in self.previous.iter().chain([&self.current, &self.next]) {
            out.extend_from_slice(key.name());
            out.extend_from_slice(key.secret());
        }
        out
    }

    /// Keys [`encode`](Self::encode)d by the old master, rotating every
    /// `interval` (this master's): on the old master's schedule, or
    /// sooner if this interval is shorter.
    pub fn decode(bytes: &[u8], now: Instant, interval: Duration) -> Result<Self, DecodeError> {
        let rest = bytes.strip_prefix(MAGIC).ok_or(DecodeError::Format)?;
        if rest.len() < 9 {
            return Err(DecodeError::Length(bytes.len()));
        }
        let (left_ms, rest) = rest.split_at(8);
        let left_ms = u64::from_be_bytes(left_ms.try_into().map_err(|_| DecodeError::Format)?);
        let (has_previous, rest) = (rest[0], &rest[1..]);
        let count = match has_previous {
            0 => 2,
            1 => 3,
            _ => return Err(DecodeError::Format),
        };
        if rest.len() != count * KEY_LEN {
            return Err(DecodeError::Length(bytes.len()));
        }
        let mut keys = rest.chunks_exact(KEY_LEN).map(|chunk| {
            let mut bytes = [0u8; KEY_LEN];
            bytes.copy_from_slice(chunk);
            TicketKey::from_bytes(&bytes)
        });
        let mut take = || keys.next().ok_or(DecodeError::Length(bytes.len()));
        let previous = if has_previous == 1 {
            Some(take()?)
        } else {
            None
        };
        let (current, next) = (take()?, take()?);
        let left = Duration::from_millis(left_ms).min(interval);
        Ok(TicketKeys {
            interval,
            previous,
            current,
            next,
            rotate_at: now + left,
        })
    }
}

/// A key from the system's randomness.
pub fn fresh_key() -> io::Result<TicketKey> {
    let mut bytes = [0u8; KEY_LEN];
    os::random_bytes(&mut bytes)?;
    Ok(TicketKey::from_bytes(&bytes))
}

#[cfg(test)]
mod tests;
