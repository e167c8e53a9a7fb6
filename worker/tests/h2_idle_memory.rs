//! What an idle HTTP/2 connection keeps of `h2`'s state once it gave its
//! buffers back (`release_idle_memory`) and once frozen (`freeze`), both
//! prefork's patch of `h2` (see `worker/vendor/h2/PATCHES.md`): the heap
//! bytes a server connection holds after one request, after the release
//! and frozen, and that the connection thawed then serves a stream whose
//! fields come as indexes into the HPACK table the release copied and the
//! freeze kept. Counted by an allocator that tracks the live bytes
//! allocated on the server's thread, in a test binary of its own.

use bytes::Bytes;
use prefork_testkit::heap::{self, Counting};
use std::sync::mpsc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What the server saw: heap bytes held after the first request, after
/// the release and frozen (with the connection's own struct then, which
/// is on the stack before), and the field of each request.
struct Seen {
    held_busy: isize,
    held_idle: isize,
    held_frozen: isize,
    released: bool,
    fields: Vec<String>,
}

/// A server answering two requests on one connection, releasing its
/// buffers once the first is done and quiet, then freezing it (boxed, as
/// a caller keeps it) and thawing it; `go` tells the client to send the
/// second.
fn server(listener: std::net::TcpListener, go: mpsc::Sender<()>) -> Seen {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = TcpListener::from_std(listener).unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        heap::count_this_thread(true);
        let base = heap::live();
        let mut conn = h2::server::handshake(socket).await.unwrap();
        let mut seen = Seen {
            held_busy: 0,
            held_idle: 0,
            held_frozen: 0,
            released: false,
            fields: Vec::new(),
        };
        while seen.fields.len() < 2 {
            let accepted = tokio::select! {
                accepted = conn.accept() => accepted,
                () = tokio::time::sleep(Duration::from_millis(300)), if seen.fields.len() == 1 && !seen.released => {
                    seen.held_busy = heap::live() - base;
                    seen.released = conn.release_idle_memory();
                    seen.held_idle = heap::live() - base;
                    let Ok((io, frozen)) = conn.freeze() else {
                        panic!("an idle connection whose memory was released freezes");
                    };
                    let frozen = Box::new(frozen);
                    seen.held_frozen = heap::live() - base;
                    conn = h2::server::Builder::new().thaw(io, *frozen);
                    go.send(()).unwrap();
                    continue;
                }
            };
            let (req, mut respond) = accepted.unwrap().unwrap();
            // With a stream open, the connection does not freeze, and goes
            // on as it was.
            conn = match conn.freeze() {
                Ok(_) => panic!("a connection with an open stream froze"),
                Err(conn) => conn,
            };
            let field = req.headers()["x-client"].to_str().unwrap().to_owned();
            seen.fields.push(field);
            let head = http::Response::builder()
                .status(200)
                .header("x-server", SERVER_FIELD)
                .body(())
                .unwrap();
            let mut body = respond.send_response(head, false).unwrap();
            body.send_data(Bytes::from_static(b"ok"), true).unwrap();
        }
        // Let the last response out before the connection is dropped.
        let _ = tokio::time::timeout(Duration::from_millis(300), conn.accept()).await;
        heap::count_this_thread(false);
        seen
    })
}

/// A response field the server's HPACK encoder indexes: its table is
/// emptied on release, and the client's must be told.
const SERVER_FIELD: &str = "a response field indexed in the dynamic table";

/// Sends two requests with the same field on one connection, the second
/// once told to.
async fn client(addr: std::net::SocketAddr, go: mpsc::Receiver<()>) {
    let socket = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(socket).await.unwrap();
    tokio::spawn(conn);
    request(&send, addr).await;
    tokio::task::spawn_blocking(move || go.recv().unwrap())
        .await
        .unwrap();
    request(&send, addr).await;
}

/// One request with a field the client's HPACK encoder indexes, and its
/// whole response, whose field the client's decoder must read right.
async fn request(send: &h2::client::SendRequest<Bytes>, addr: std::net::SocketAddr) {
    let mut send = send.clone().ready().await.unwrap();
    let req = http::Request::builder()
        .uri(format!("http://{addr}/"))
        .header("x-client", "a field indexed in the dynamic table")
        .body(())
        .unwrap();
    let (response, _) = send.send_request(req, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.headers()["x-server"], SERVER_FIELD);
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        chunk.unwrap();
    }
}

#[test]
fn an_idle_connection_gives_back_its_buffers_and_freezes_with_its_hpack_table() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    let server = std::thread::spawn(move || server(listener, tx));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(client(addr, rx));
    let seen = server.join().unwrap();
    assert!(seen.released, "nothing buffered, no stream: released");
    // The write buffer (16 KiB), the read buffer (8 KiB) and the HPACK
    // decoder's (4 KiB), and what was sized for the stream.
    assert!(
        seen.held_busy - seen.held_idle >= 28 * 1024,
        "released only {} of {} bytes",
        seen.held_busy - seen.held_idle,
        seen.held_busy
    );
    // What is left: the streams' shared state, the HPACK tables, a few
    // small allocations (the connection itself is on this test's stack).
    assert!(seen.held_idle <= 2048, "{} bytes held idle", seen.held_idle);
    // Frozen: no stream state, the decoder's table and a few hundred bytes
    // of settings, windows and ids, against the connection's 1.2 KiB
    // struct and its streams' state.
    assert!(
        seen.held_frozen <= 1024,
        "{} bytes held frozen",
        seen.held_frozen
    );
    // The second request's field came as an index into the table copied
    // by the release and kept frozen.
    let field = "a field indexed in the dynamic table";
    assert_eq!(seen.fields, [field, field]);
}
