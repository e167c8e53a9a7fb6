//! What an idle TLS connection keeps of rustls's state: the heap bytes of a
//! `ServerConnection` after a handshake and one request, the state a parked
//! TLS connection holds (see `downstream::park`). Counted by an allocator
//! that tracks live bytes, in a test binary of its own.

use prefork_testkit::heap::{self, Counting};
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use std::io::{Read, Write};
use std::sync::Arc;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A server configured as prefork's (aws-lc-rs, an ECDSA P-256 leaf, ALPN
/// `http/1.1`) and a client that trusts its certificate.
fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["a.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let der = CertificateDer::from(cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut server = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut roots = RootCertStore::empty();
    roots.add(der).unwrap();
    let mut client = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    (Arc::new(server), Arc::new(client))
}

/// Moves the records each side has queued to the other until neither has any.
fn exchange(client: &mut ClientConnection, server: &mut ServerConnection) {
    loop {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        let to_server = !wire.is_empty();
        let mut rd = &wire[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).unwrap();
            server.process_new_packets().unwrap();
        }
        wire.clear();
        while server.wants_write() {
            server.write_tls(&mut wire).unwrap();
        }
        let to_client = !wire.is_empty();
        let mut rd = &wire[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
            client.process_new_packets().unwrap();
        }
        if !to_server && !to_client {
            return;
        }
    }
}

/// Reads all the plaintext `reader` has now.
fn drain(mut reader: impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
}

#[test]
fn an_idle_tls_connection_keeps_a_few_kib_of_rustls_state() {
    heap::count_this_thread(true);
    let (server_config, client_config) = configs();
    let name = ServerName::try_from("a.test").unwrap();
    let mut client = ClientConnection::new(client_config, name).unwrap();
    let mut server = Box::new(ServerConnection::new(server_config).unwrap());
    exchange(&mut client, &mut server);
    assert!(!server.is_handshaking() && !client.is_handshaking());
    client
        .writer()
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .unwrap();
    exchange(&mut client, &mut server);
    assert!(drain(server.reader()).starts_with(b"GET / "));
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}",
        "x".repeat(100)
    );
    server.writer().write_all(response.as_bytes()).unwrap();
    exchange(&mut client, &mut server);
    assert_eq!(drain(client.reader()).len(), response.len());

    // What the idle connection keeps: the box and what it owns. (The
    // configuration is shared by every connection.)
    let live = heap::live();
    drop(server);
    let kept = live - heap::live();
    println!(
        "an idle rustls ServerConnection keeps {kept} heap bytes ({} in the struct itself)",
        std::mem::size_of::<ServerConnection>()
    );
    // rustls 0.23 keeps its 4 KiB receive buffer (the deframer's, sized
    // for the next read; it never shrinks below that) besides the struct
    // and the traffic keys: 6,430 bytes when measured (rustls 0.23.48).
    assert!(kept < 7 * 1024, "{kept} bytes");
}
