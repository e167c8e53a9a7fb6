//! Which session ticket the rustls call under way on this thread opened, so
//! that a resumed TLS 1.2 session is given back its own ticket instead of a
//! renewal (see `state::tickets`).
//!
//! rustls renews the ticket on every TLS 1.2 resumption, with a fresh
//! creation time and the same master secret: a client resuming often
//! enough would keep one master secret for ever. It opens the client's
//! ticket and issues the renewal within the one call that handles the
//! ClientHello; TLS 1.3 and full handshakes issue theirs in a later call,
//! once the client's Finished came. So a ticket opened and a ticket sealed
//! within one call of [`processing`] belong to one TLS 1.2 resumption.

use rustls::server::ServerConnection;
use std::cell::RefCell;

/// Where this thread is.
enum Call {
    /// Outside [`processing`]: tickets are opened and sealed as usual.
    Outside,
    /// Inside it, with the ticket opened so far.
    Inside(Option<Vec<u8>>),
}

thread_local! {
    static CALL: RefCell<Call> = const { RefCell::new(Call::Outside) };
}

/// Lets rustls process what `conn` received (its `process_new_packets`),
/// noting the ticket it opens meanwhile.
pub(crate) fn processing(conn: &mut ServerConnection) -> Result<rustls::IoState, rustls::Error> {
    CALL.set(Call::Inside(None));
    let state = conn.process_new_packets();
    CALL.set(Call::Outside);
    state
}

/// Notes `ticket` as opened, if within [`processing`].
pub(crate) fn opened(ticket: &[u8]) {
    CALL.with_borrow_mut(|call| {
        if let Call::Inside(opened) = call {
            *opened = Some(ticket.to_vec());
        }
    });
}

/// The ticket opened earlier within the same call of [`processing`], if
/// any: what to give back instead of sealing a new one.
pub(crate) fn take_opened() -> Option<Vec<u8>> {
    CALL.with_borrow_mut(|call| match call {
        Call::Inside(opened) => opened.take(),
        Call::Outside => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_ticket_opened_within_the_same_call_is_given_back() {
        opened(b"outside");
        assert_eq!(take_opened(), None, "outside a call");
        CALL.set(Call::Inside(None));
        assert_eq!(take_opened(), None, "none opened yet");
        opened(b"ticket");
        assert_eq!(take_opened().as_deref(), Some(&b"ticket"[..]));
        assert_eq!(take_opened(), None, "given back once");
        CALL.set(Call::Outside);
    }
}
