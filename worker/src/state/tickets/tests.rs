use super::*;
use prefork_shared::ticket_keys::{TicketKey, KEY_SECRET_LEN};
use prefork_shared::tls::{Certificate, KeyFormat, PrivateKey, TlsCipher, TlsSettings};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, ServerConfig, ServerConnection};
use std::time::Duration;

fn key(fill: u8) -> TicketKey {
    TicketKey::new([fill; KEY_NAME_LEN], [fill.wrapping_mul(3); KEY_SECRET_LEN])
}

fn ring(current: u8, accepted: &[u8]) -> TicketKeyRing {
    TicketKeyRing {
        current: key(current),
        accepted: accepted.iter().map(|&k| key(k)).collect(),
        lifetime: Duration::from_secs(12 * 3600),
    }
}

fn with_ring(ring: &TicketKeyRing) -> Ticketer {
    let t = Ticketer::empty();
    t.replace(ring);
    t
}

#[test]
fn a_ticket_opens_to_what_was_sealed() {
    let t = with_ring(&ring(1, &[2]));
    let ticket = t.encrypt(b"session state").unwrap();
    assert_eq!(&ticket[..KEY_NAME_LEN], &[1; KEY_NAME_LEN]);
    assert!(!ticket.windows(13).any(|w| w == b"session state"));
    assert_eq!(t.decrypt(&ticket).unwrap(), b"session state");
    assert!(t.enabled());
    assert_eq!(t.lifetime(), 12 * 3600);
}

#[test]
fn nonces_differ_between_tickets() {
    let t = with_ring(&ring(1, &[]));
    assert_ne!(t.encrypt(b"same").unwrap(), t.encrypt(b"same").unwrap());
}

#[test]
fn another_worker_with_the_same_ring_opens_the_ticket() {
    let ticket = with_ring(&ring(1, &[2])).encrypt(b"state").unwrap();
    assert_eq!(
        with_ring(&ring(1, &[2])).decrypt(&ticket).unwrap(),
        b"state"
    );
}

#[test]
fn a_ticket_of_the_previous_key_still_opens_after_a_rotation() {
    // Key 2 was next; it becomes current, 1 previous, 3 the new next.
    let before = with_ring(&ring(1, &[2]));
    let old = before.encrypt(b"old").unwrap();
    let after = with_ring(&ring(2, &[3, 1]));
    assert_eq!(after.decrypt(&old).unwrap(), b"old");
    // A worker still on the old ring opens the new key's tickets.
    let new = after.encrypt(b"new").unwrap();
    assert_eq!(before.decrypt(&new).unwrap(), b"new");
}

#[test]
fn a_ticket_of_a_retired_or_unknown_key_does_not_open() {
    let old = with_ring(&ring(1, &[2])).encrypt(b"old").unwrap();
    assert_eq!(with_ring(&ring(3, &[4, 2])).decrypt(&old), None);
    // Same name, other secret: not the key that sealed it.
    let impostor = TicketKeyRing {
        current: TicketKey::new([1; KEY_NAME_LEN], [0xee; KEY_SECRET_LEN]),
        accepted: Vec::new(),
        lifetime: Duration::from_secs(60),
    };
    assert_eq!(with_ring(&impostor).decrypt(&old), None);
}

#[test]
fn a_tampered_or_short_ticket_is_refused() {
    let t = with_ring(&ring(1, &[2]));
    let ticket = t.encrypt(b"state").unwrap();
    for i in 0..ticket.len() {
        let mut bad = ticket.clone();
        bad[i] ^= 0x01;
        assert_eq!(t.decrypt(&bad), None, "byte {i} flipped");
    }
    for len in 0..ticket.len() {
        assert_eq!(t.decrypt(&ticket[..len]), None, "cut to {len}");
    }
    assert_eq!(t.decrypt(&[]), None);
}

#[test]
fn without_keys_no_ticket_is_issued_or_opened() {
    let t = Ticketer::empty();
    let ticket = with_ring(&ring(1, &[])).encrypt(b"state").unwrap();
    assert_eq!(t.encrypt(b"state"), None);
    assert_eq!(t.decrypt(&ticket), None);
    assert_eq!(t.lifetime(), 0);
}

#[test]
fn the_ring_is_replaced_while_in_use() {
    let t = Arc::new(with_ring(&ring(1, &[2, 3])));
    let old = t.encrypt(b"old").unwrap();
    let sealing = {
        let t = Arc::clone(&t);
        std::thread::spawn(move || {
            for _ in 0..2000 {
                let ticket = t.encrypt(b"x").unwrap();
                assert_eq!(t.decrypt(&ticket).as_deref(), Some(&b"x"[..]));
            }
        })
    };
    // Every ring swapped in opens what any of them sealed.
    for round in 0..200u8 {
        t.replace(&ring(1 + round % 3, &[1, 2, 3]));
    }
    sealing.join().unwrap();
    t.replace(&ring(3, &[2]));
    assert_eq!(t.decrypt(&old), None, "key 1 retired");
    let new = t.encrypt(b"new").unwrap();
    assert_eq!(&new[..KEY_NAME_LEN], &[3; KEY_NAME_LEN]);
}

#[test]
fn debug_shows_no_secret() {
    let t = with_ring(&ring(0x41, &[0x42]));
    let shown = format!("{t:?} {t:#?}");
    assert!(shown.contains("keys: 2"), "{shown}");
    assert!(!shown.contains("195"), "{shown}"); // 0x41 * 3 as a byte
}

#[test]
fn every_tls_configuration_gets_the_one_process_wide_ticketer() {
    let (a, b) = (ticketer(), ticketer());
    assert!(std::ptr::addr_eq(Arc::as_ptr(&a), Arc::as_ptr(&b)));
    assert!(a.enabled());
}

/// Real rustls: one client, two servers (two workers) whose ticketers hold
/// the same ring.
mod resumption {
    use super::*;

    struct Pki {
        cert: CertificateDer<'static>,
        key: PrivatePkcs8KeyDer<'static>,
    }

    fn pki() -> Pki {
        let issued = rcgen::generate_simple_self_signed(vec!["example.com".to_owned()]).unwrap();
        Pki {
            cert: issued.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(issued.signing_key.serialize_der()),
        }
    }

    fn server(pki: &Pki, ticketer: Arc<dyn ProducesTickets>) -> Arc<ServerConfig> {
        server_with(pki, ticketer, TlsSettings::default().ciphers)
    }

    /// A worker's configuration (`state::tls`) offering `ciphers`.
    fn server_with(
        pki: &Pki,
        ticketer: Arc<dyn ProducesTickets>,
        ciphers: Vec<TlsCipher>,
    ) -> Arc<ServerConfig> {
        let settings = TlsSettings {
            ciphers,
            loaded: vec![Certificate {
                source: "/example.com.pem".into(),
                chain: vec![pki.cert.to_vec()],
                key: PrivateKey::new(KeyFormat::Pkcs8, pki.key.secret_pkcs8_der().to_vec()),
                names: vec!["example.com".to_owned()],
                not_after: 0,
            }],
            ..TlsSettings::default()
        };
        let server = crate::state::tls::TlsServer::new(&settings, Some(ticketer));
        server.unwrap().expect("a certificate").config
    }

    fn client(pki: &Pki, version: &'static rustls::SupportedProtocolVersion) -> Arc<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.cert.clone()).unwrap();
        let mut config = ClientConfig::builder_with_protocol_versions(&[version])
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = Resumption::in_memory_sessions(16);
        Arc::new(config)
    }

    /// Runs one handshake in memory (and lets the server's tickets reach
    /// the client); returns how it went.
    fn connect(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) -> HandshakeKind {
        let name = ServerName::try_from("example.com").unwrap();
        let mut c = ClientConnection::new(Arc::clone(client), name).unwrap();
        let mut s = ServerConnection::new(Arc::clone(server)).unwrap();
        for _ in 0..20 {
            let mut moved = false;
            while c.wants_write() {
                let mut buf = Vec::new();
                c.write_tls(&mut buf).unwrap();
                s.read_tls(&mut &buf[..]).unwrap();
                // As a worker's connections do (see `io::tls_renewal`).
                crate::io::tls_renewal::processing(&mut s).unwrap();
                moved = true;
            }
            while s.wants_write() {
                let mut buf = Vec::new();
                s.write_tls(&mut buf).unwrap();
                let mut rd = &buf[..];
                while !rd.is_empty() {
                    c.read_tls(&mut rd).unwrap();
                    c.process_new_packets().unwrap();
                }
                moved = true;
            }
            if !moved && !c.is_handshaking() && !s.is_handshaking() {
                break;
            }
        }
        assert!(!c.is_handshaking() && !s.is_handshaking());
        assert_eq!(c.handshake_kind(), s.handshake_kind());
        c.handshake_kind().unwrap()
    }

    fn shared(ring: &TicketKeyRing) -> Arc<dyn ProducesTickets> {
        Arc::new(with_ring(ring))
    }

    fn resumes_on_the_other_worker(version: &'static rustls::SupportedProtocolVersion) {
        let pki = pki();
        let ring = ring(1, &[2]);
        let a = server(&pki, shared(&ring));
        let b = server(&pki, shared(&ring));
        let client = client(&pki, version);
        assert_eq!(connect(&client, &a), HandshakeKind::Full);
        for _ in 0..4 {
            assert_eq!(connect(&client, &b), HandshakeKind::Resumed);
            assert_eq!(connect(&client, &a), HandshakeKind::Resumed);
        }
    }

    #[test]
    fn tls13_resumes_on_another_worker() {
        resumes_on_the_other_worker(&rustls::version::TLS13);
    }

    #[test]
    fn tls12_resumes_on_another_worker() {
        resumes_on_the_other_worker(&rustls::version::TLS12);
    }

    /// A ticketer that keeps a copy of each ticket it issues.
    #[derive(Debug)]
    struct Recording {
        ticketer: Ticketer,
        issued: std::sync::Mutex<Vec<Vec<u8>>>,
    }

    impl Recording {
        fn new(ring: &TicketKeyRing) -> Arc<Recording> {
            Arc::new(Recording {
                ticketer: with_ring(ring),
                issued: Default::default(),
            })
        }

        fn issued(&self) -> Vec<Vec<u8>> {
            self.issued.lock().unwrap().clone()
        }
    }

    impl ProducesTickets for Recording {
        fn enabled(&self) -> bool {
            self.ticketer.enabled()
        }
        fn lifetime(&self) -> u32 {
            self.ticketer.lifetime()
        }
        fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
            let ticket = self.ticketer.encrypt(plain)?;
            self.issued.lock().unwrap().push(ticket.clone());
            Some(ticket)
        }
        fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
            self.ticketer.decrypt(cipher)
        }
    }

    #[test]
    fn a_resumed_tls12_session_gets_no_new_ticket_and_ends_when_its_key_retires() {
        let pki = pki();
        let recording = Recording::new(&ring(1, &[2]));
        let server = server(&pki, recording.clone());
        let client = client(&pki, &rustls::version::TLS12);
        assert_eq!(connect(&client, &server), HandshakeKind::Full);
        for _ in 0..3 {
            assert_eq!(connect(&client, &server), HandshakeKind::Resumed);
        }
        let first = recording.issued()[0].clone();
        assert_eq!(recording.issued(), vec![first.clone()], "no renewal");
        // A rotation: its key only opens now, and the session goes on.
        recording.ticketer.replace(&ring(2, &[3, 1]));
        assert_eq!(connect(&client, &server), HandshakeKind::Resumed);
        // Another: its key is gone, and so is the session.
        recording.ticketer.replace(&ring(3, &[4, 2]));
        assert_eq!(connect(&client, &server), HandshakeKind::Full);
        let issued = recording.issued();
        assert_eq!(issued.len(), 2);
        assert_ne!(issued[1], first, "a new session, a new ticket");
        assert_eq!(&issued[1][..KEY_NAME_LEN], &[3; KEY_NAME_LEN]);
        assert_eq!(connect(&client, &server), HandshakeKind::Resumed);
    }

    #[test]
    fn a_tls12_ticket_that_opens_but_cannot_resume_makes_a_new_session_with_a_ticket() {
        let pki = pki();
        let recording = Recording::new(&ring(1, &[2]));
        let client = client(&pki, &rustls::version::TLS12);
        let aes256 = server(&pki, recording.clone());
        assert_eq!(connect(&client, &aes256), HandshakeKind::Full);
        // Same keys, but only another cipher suite: the ticket opens, and
        // its session cannot go on (rustls resumes only to the same suite).
        let only = vec![TlsCipher::EcdheEcdsaAes128GcmSha256];
        let aes128 = server_with(&pki, recording.clone(), only);
        assert_eq!(connect(&client, &aes128), HandshakeKind::Full);
        assert_eq!(recording.issued().len(), 2, "the new session's ticket");
        assert_eq!(connect(&client, &aes128), HandshakeKind::Resumed);
        assert_eq!(recording.issued().len(), 2);
    }

    #[test]
    fn a_resumed_tls13_session_gets_a_new_ticket() {
        let pki = pki();
        let recording = Recording::new(&ring(1, &[2]));
        let server = server(&pki, recording.clone());
        let client = client(&pki, &rustls::version::TLS13);
        assert_eq!(connect(&client, &server), HandshakeKind::Full);
        for _ in 0..3 {
            assert_eq!(connect(&client, &server), HandshakeKind::Resumed);
        }
        let issued = recording.issued();
        let distinct: std::collections::BTreeSet<_> = issued.iter().collect();
        assert!(issued.len() >= 4);
        assert_eq!(distinct.len(), issued.len(), "each one new");
    }

    #[test]
    fn a_worker_with_other_keys_does_not_resume() {
        let pki = pki();
        let a = server(&pki, shared(&ring(1, &[2])));
        let b = server(&pki, shared(&ring(3, &[4])));
        let client = client(&pki, &rustls::version::TLS13);
        assert_eq!(connect(&client, &a), HandshakeKind::Full);
        assert_eq!(connect(&client, &b), HandshakeKind::Full);
    }

    fn resumes_across_a_rotation(version: &'static rustls::SupportedProtocolVersion) {
        let pki = pki();
        let before = Arc::new(with_ring(&ring(1, &[2])));
        let a = server(&pki, before.clone());
        let b_ticketer = Arc::new(with_ring(&ring(1, &[2])));
        let b = server(&pki, b_ticketer.clone());
        let client = client(&pki, version);
        assert_eq!(connect(&client, &a), HandshakeKind::Full);
        // Worker B rotates first (2 current, 1 previous, 3 next); A later.
        b_ticketer.replace(&ring(2, &[3, 1]));
        assert_eq!(connect(&client, &b), HandshakeKind::Resumed);
        assert_eq!(connect(&client, &a), HandshakeKind::Resumed);
        before.replace(&ring(2, &[3, 1]));
        assert_eq!(connect(&client, &a), HandshakeKind::Resumed);
    }

    #[test]
    fn tls13_resumes_with_a_ticket_from_before_a_rotation() {
        resumes_across_a_rotation(&rustls::version::TLS13);
    }

    #[test]
    fn tls12_resumes_with_a_ticket_from_before_a_rotation() {
        resumes_across_a_rotation(&rustls::version::TLS12);
    }
}
