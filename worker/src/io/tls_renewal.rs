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
//! whether it caches: [`TicketsOnly`] ends the resumption there, and the new
//! session gets its ticket. TLS 1.3 asks before it opens a ticket, and
//! issues its own in a later call, once the client's Finished came; within
//! a TLS 1.3 resumption rustls asks only to allow 0-RTT data, which prefork
//! never accepts.

use rustls::server::{ServerConnection, StoresServerSessions};
use std::cell::Cell;

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
    /// Leaves the call, even when rustls panics.
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            CALL.set(Call::Outside);
        }
    }
    CALL.set(Call::Inside);
    let _leave = Leave;
    conn.process_new_packets()
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

/// rustls's session store for sessions that resume by ticket alone: it
/// keeps none (no resumption by session id, as nginx's default
/// `ssl_session_cache none`: a worker's own cache would resume one time in
/// N, and would let a client renew a master secret's ticket for ever), and
/// tells this module when a handshake takes the full path.
#[derive(Debug)]
pub(crate) struct TicketsOnly;

impl StoresServerSessions for TicketsOnly {
    fn put(&self, _key: Vec<u8>, _value: Vec<u8>) -> bool {
        false
    }

    fn get(&self, _key: &[u8]) -> Option<Vec<u8>> {
        None
    }

    fn take(&self, _key: &[u8]) -> Option<Vec<u8>> {
        None
    }

    fn can_cache(&self) -> bool {
        // rustls asks only when it makes a new TLS 1.2 session.
        full_handshake();
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_ticket_opened_within_the_same_call_resumes_until_a_full_handshake() {
        opened();
        assert!(!resuming(), "outside a call");
        CALL.set(Call::Inside);
        assert!(!resuming(), "none opened yet");
        opened();
        assert!(resuming());
        assert!(!TicketsOnly.can_cache(), "no session kept by id");
        assert!(!resuming(), "a full handshake after all");
        CALL.set(Call::Outside);
    }

    #[test]
    fn the_store_keeps_no_session() {
        assert!(!TicketsOnly.put(b"id".to_vec(), b"session".to_vec()));
        assert_eq!(TicketsOnly.get(b"id"), None);
        assert_eq!(TicketsOnly.take(b"id"), None);
    }
}
