//! Whether the rustls call under way on this thread resumes a TLS 1.2
//! session from a ticket it opened, so that the session is given no new
//! ticket (see `state::tickets`).
//!
//! rustls renews the ticket on every TLS 1.2 resumption: a NewSessionTicket
//! with the same master secret and a fresh creation time, so a client
//! resuming often enough would keep one master secret for ever. OpenSSL
//! (nginx's) renews none: the client keeps the ticket it has, and the
//! session ends when the key that sealed it leaves the ring. prefork does
//! the same, and saves the message and its bytes.
//!
//! rustls opens the client's ticket, then asks whether tickets are enabled,
//! within the one call that handles the ClientHello; the ticketer answers no
//! when that call opened one. A ticket that opens yet cannot resume (another
//! cipher suite, another name, a session from another rustls) sends rustls
//! down the full handshake's path, which first asks the session store
//! whether it caches: [`NotingStore`] ends the resumption there, and the new
//! session gets its ticket. TLS 1.3 asks before it opens a ticket, and
//! issues its own in a later call, once the client's Finished came; within
//! a TLS 1.3 resumption rustls asks only to allow 0-RTT data, which prefork
//! never accepts.

use rustls::server::{ServerConnection, StoresServerSessions};
use std::cell::Cell;
use std::sync::Arc;

/// Where this thread is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// Outside [`processing`]: tickets are issued as usual.
    Outside,
    /// Inside it, no ticket opened, or a full handshake under way.
    Inside,
    /// Inside it, resuming from a ticket it opened.
    Resuming,
}

thread_local! {
    static CALL: Cell<Call> = const { Cell::new(Call::Outside) };
}

/// Lets rustls process what `conn` received (its `process_new_packets`),
/// noting the tickets it opens meanwhile.
pub(crate) fn processing(conn: &mut ServerConnection) -> Result<rustls::IoState, rustls::Error> {
    CALL.set(Call::Inside);
    let state = conn.process_new_packets();
    CALL.set(Call::Outside);
    state
}

/// Notes that a ticket opened, if within [`processing`].
pub(crate) fn opened() {
    if CALL.get() == Call::Inside {
        CALL.set(Call::Resuming);
    }
}

/// Notes that the handshake under way is a full one after all.
fn full_handshake() {
    if CALL.get() == Call::Resuming {
        CALL.set(Call::Inside);
    }
}

/// Whether the call under way resumes from a ticket it opened: its session
/// keeps that ticket.
pub(crate) fn resuming() -> bool {
    CALL.get() == Call::Resuming
}

/// A session store (rustls's cache of sessions resumed by id) that tells
/// this module when a handshake takes the full path.
#[derive(Debug)]
pub(crate) struct NotingStore(pub(crate) Arc<dyn StoresServerSessions>);

impl StoresServerSessions for NotingStore {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.0.put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.take(key)
    }

    fn can_cache(&self) -> bool {
        // rustls asks only when it makes a new TLS 1.2 session.
        full_handshake();
        self.0.can_cache()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::NoServerSessionStorage;

    #[test]
    fn only_a_ticket_opened_within_the_same_call_resumes_until_a_full_handshake() {
        opened();
        assert!(!resuming(), "outside a call");
        CALL.set(Call::Inside);
        assert!(!resuming(), "none opened yet");
        opened();
        assert!(resuming());
        let store = NotingStore(Arc::new(NoServerSessionStorage {}));
        assert!(!store.can_cache(), "the store's own answer");
        assert!(!resuming(), "a full handshake after all");
        CALL.set(Call::Outside);
    }
}
