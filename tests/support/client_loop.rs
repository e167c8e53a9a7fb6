//! A client loop: a thread sending requests back to back, each on a fresh
//! connection, while a test reloads, upgrades or kills processes.

use crate::support::http;
use crate::support::prefork::Prefork;
use crate::support::wait_until;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A thread sending requests back to back, each on a fresh connection, and
/// recording each outcome: `Ok(X-Origin)` for a 200, `Err(what)` otherwise.
pub(crate) struct ClientLoop {
    stop: Arc<AtomicBool>,
    results: Arc<Mutex<Vec<Result<String, String>>>>,
    thread: Option<JoinHandle<()>>,
}

impl ClientLoop {
    /// Starts sending `GET /` with `Host: app.local` to `port`.
    pub(crate) fn start(port: u16) -> ClientLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (stop.clone(), results.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let outcome = match http::get(port, "app.local", "/") {
                    Ok(resp) if resp.status == 200 => {
                        Ok(resp.header("x-origin").unwrap_or("?").to_owned())
                    }
                    Ok(resp) => Err(format!("status {} body {:?}", resp.status, resp.text())),
                    Err(e) => Err(e.to_string()),
                };
                r.lock().unwrap().push(outcome);
            }
        });
        ClientLoop {
            stop,
            results,
            thread: Some(thread),
        }
    }

    /// Requests completed so far.
    pub(crate) fn count(&self) -> usize {
        self.results.lock().unwrap().len()
    }

    /// Waits until `n` more requests than now have completed, failing the
    /// test if the loop stalls after `what`; returns the count it started
    /// from.
    pub(crate) fn wait_more(&self, n: usize, p: &Prefork, what: &str) -> usize {
        let settled = self.count();
        assert!(
            wait_until(Duration::from_secs(5), || self.count() >= settled + n),
            "the client loop stalled after {what}\n{}",
            p.logs()
        );
        settled
    }

    /// Stops the loop and returns every outcome.
    pub(crate) fn finish(mut self) -> Vec<Result<String, String>> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("client loop thread");
        }
        std::mem::take(&mut *self.results.lock().unwrap())
    }
}

impl Drop for ClientLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl ClientLoop {
    /// Stops the loop, fails the test if any request failed during `what`,
    /// and returns the `X-Origin` of every response in order.
    pub(crate) fn finish_without_failures(self, p: &Prefork, what: &str) -> Vec<String> {
        let results = self.finish();
        let failures: Vec<(usize, &String)> = results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e)))
            .collect();
        assert!(
            failures.is_empty(),
            "{} of {} requests failed during {what}: {:?}\n{}",
            failures.len(),
            results.len(),
            &failures[..failures.len().min(10)],
            p.logs()
        );
        results.into_iter().flatten().collect()
    }
}
