//! Questions the control socket and the admin listener ask the master loop,
//! which owns every piece of state and answers them between events.

use crossbeam_channel::Sender;
use std::time::Duration;

/// What can be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// The status report, as JSON.
    Status,
    /// Re-read the configuration; the outcome, as JSON.
    Reload,
    /// The metrics, in the Prometheus text format.
    Metrics,
    /// Whether the master takes traffic.
    Health,
}

/// A question with the way back.
pub struct Asked {
    /// The question.
    pub query: Query,
    /// Where the answer goes.
    pub reply: Sender<Answer>,
}

/// The master loop's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Success (reload taken, healthy...).
    pub ok: bool,
    /// The content.
    pub body: String,
}

/// Asks the master loop and waits for its answer up to `timeout`.
pub fn ask(master: &Sender<Asked>, query: Query, timeout: Duration) -> Option<Answer> {
    let (reply, answer) = crossbeam_channel::bounded(1);
    master.send(Asked { query, reply }).ok()?;
    answer.recv_timeout(timeout).ok()
}
