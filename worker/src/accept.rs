//! Accepting client connections on one listener until a stop.

use crate::conn::Connection;
use crate::control::Stop;
use crate::server::Worker;
use slog::error;
use std::io;
use std::rc::Rc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Pause after an accept error such as EMFILE, so a full descriptor table
/// does not turn the loop into a busy spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections and spawns a task for each; returns (dropping the
/// worker's copy of the listener) when a stop is requested.
pub(crate) async fn accept_loop(worker: Rc<Worker>, listener: TcpListener) {
    let mut stop = worker.stop.clone();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s != Stop::Running) => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Request/response traffic wants latency, not Nagle batching.
                let _ = stream.set_nodelay(true);
                let guard = worker.track();
                // The newest configuration (hot reload) serves it.
                let conn = Connection::new(worker.latest(), stream, peer);
                tokio::task::spawn_local(async move {
                    conn.run().await;
                    drop(guard);
                });
            }
            Err(e) if is_per_connection(&e) => {}
            Err(e) => {
                let addr = listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                error!(worker.log, "accept failed"; "listen" => addr, "error" => %e);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Errors that concern only the connection being accepted.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}
