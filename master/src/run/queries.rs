//! The master loop's answers to the control socket and the admin listener,
//! and the worker reports behind them.

use super::Master;
use crate::metrics::{render_prometheus, MasterFacts};
use crate::query::{Answer, Asked, Query};
use crate::status::{self, MasterState};
use crate::supervisor::{Event, Pid};
use prefork_shared::stats::WorkerStats;
use std::time::Instant;

impl Master {
    /// Answers a question (a reload's, once it is done).
    pub(super) fn on_query(&mut self, asked: Asked) {
        let answer = match asked.query {
            Query::Status => {
                let workers = self.supervisor.worker_views();
                let state = MasterState {
                    config_file: &self.config_path,
                    generation: self.supervisor.generation().0,
                    shutting_down: self.supervisor.shutting_down(),
                    workers: &workers,
                    restarts: self.supervisor.restarts(),
                    certificates: &self.current_config().tls.loaded,
                };
                let report = status::build(&state, &self.observed, Instant::now());
                json_answer(true, serde_json::to_value(&report).unwrap_or_default())
            }
            Query::Metrics => {
                let workers = self.supervisor.worker_views();
                let facts = MasterFacts {
                    workers: &workers,
                    restarts: self.supervisor.restarts(),
                    generation: self.supervisor.generation().0,
                    certificates: &self.current_config().tls.loaded,
                };
                Answer {
                    ok: true,
                    body: render_prometheus(&self.observed, &facts),
                }
            }
            Query::Health => {
                let ok = self.supervisor.healthy();
                let body = if ok {
                    "ok\n"
                } else if self.supervisor.shutting_down() {
                    "shutting down\n"
                } else {
                    "no ready worker\n"
                };
                Answer {
                    ok,
                    body: body.to_owned(),
                }
            }
            Query::Reload => {
                // Answered once the reload is done (see `finish_reload`).
                self.reloading.waiting.push(asked.reply);
                self.begin_reload();
                return;
            }
        };
        let _ = asked.reply.send(answer);
    }

    /// Keeps a worker's counters, including the last ones it sends on its
    /// way out, which may arrive after it was reaped (its link is kept
    /// until then: see `LinkTable`).
    pub(super) fn on_stats(&mut self, pid: Pid, stats: WorkerStats) -> Vec<Event> {
        if let Some(slot) = self.links.slot(pid) {
            self.observed.on_report(pid, slot, stats, Instant::now());
        }
        Vec::new()
    }
}

fn json_answer(ok: bool, value: serde_json::Value) -> Answer {
    Answer {
        ok,
        body: format!("{value}\n"),
    }
}
