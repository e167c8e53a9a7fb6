//! When a request goes to the upstream again after a failed attempt.
//!
//! As in nginx, a connect failure sends the request to another server of
//! the group, each server at most once. Once connected, a request is sent
//! again only when a pooled connection failed before any response byte
//! (most likely the server closed it while idle: not its fault), once, on
//! a new connection, and only for an idempotent request without a body
//! (its body cannot be read from the client twice). An HTTP/2 server may
//! say it did not process a request (`REFUSED_STREAM`, a graceful GOAWAY):
//! such a request is sent again once on a new connection whatever its
//! method, if it has no body, and the refusal does not count against the
//! server.

use super::error::ExchangeError;
use super::request::Request;
use crate::http::Framing;

/// The attempts at one request.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    /// Servers whose connect failed for this request.
    tried: Vec<usize>,
    /// The request was replayed once on a new connection.
    replayed: bool,
}

/// What follows a failed exchange.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AfterFailure {
    /// Send the request again to the same server, on a new connection.
    Replay,
    /// Answer the client with the failure; `server_failed`: it counts
    /// against the server's health.
    GiveUp {
        /// Whether the server is to blame.
        server_failed: bool,
    },
}

impl Attempts {
    /// The servers not to pick again.
    pub(crate) fn tried(&self) -> &[usize] {
        &self.tried
    }

    /// Whether the next attempt needs a new connection rather than a pooled
    /// one.
    pub(crate) fn fresh(&self) -> bool {
        self.replayed
    }

    /// Server `index` could not be connected to: another one gets the
    /// request, if any is left.
    pub(crate) fn connect_failed(&mut self, index: usize) {
        self.tried.push(index);
    }

    /// Decides what follows `failure` of an exchange on a connection that
    /// was `reused` from the pool.
    pub(crate) fn after(
        &mut self,
        failure: &ExchangeError,
        reused: bool,
        req: &Request<'_>,
    ) -> AfterFailure {
        let unprocessed = failure.unprocessed();
        let stale = failure.may_replay() && (reused || unprocessed);
        let bodyless = matches!(req.body, Framing::Empty | Framing::Length(0));
        if stale && !self.replayed && (req.idempotent || unprocessed) && bodyless {
            self.replayed = true;
            return AfterFailure::Replay;
        }
        AfterFailure::GiveUp {
            server_failed: !stale && failure.is_server_failure(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::error::ClientError;
    use crate::upstream::error::UpstreamError;

    fn request(idempotent: bool, body: Framing) -> Request<'static> {
        Request {
            is_head: false,
            idempotent,
            keep_alive: true,
            body,
            max_body: 0,
            upgrade: false,
            expect_continue: false,
            action: None,
            misdirected: false,
        }
    }

    fn closed_before_response() -> ExchangeError {
        ExchangeError::new(UpstreamError::Closed, true, true)
    }

    #[test]
    fn a_stale_pooled_connection_is_replayed_once_on_a_new_one() {
        let get = request(true, Framing::Empty);
        let mut attempts = Attempts::default();
        assert!(!attempts.fresh());
        assert_eq!(
            attempts.after(&closed_before_response(), true, &get),
            AfterFailure::Replay
        );
        assert!(attempts.fresh(), "the replay takes a new connection");
        // The replay's own failure, on a new connection, is the server's.
        assert_eq!(
            attempts.after(&closed_before_response(), false, &get),
            AfterFailure::GiveUp {
                server_failed: true
            }
        );
        // And a second stale pooled connection is not replayed again.
        let mut attempts = Attempts::default();
        attempts.after(&closed_before_response(), true, &get);
        assert_eq!(
            attempts.after(&closed_before_response(), true, &get),
            AfterFailure::GiveUp {
                server_failed: false
            }
        );
    }

    #[test]
    fn only_idempotent_bodyless_requests_are_replayed() {
        for (idempotent, body) in [
            (false, Framing::Empty),
            (true, Framing::Length(5)),
            (true, Framing::Chunked),
        ] {
            let mut attempts = Attempts::default();
            assert_eq!(
                attempts.after(&closed_before_response(), true, &request(idempotent, body)),
                // A stale pooled connection is not the server's fault.
                AfterFailure::GiveUp {
                    server_failed: false
                },
                "{idempotent} {body:?}"
            );
        }
        let mut attempts = Attempts::default();
        assert_eq!(
            attempts.after(
                &closed_before_response(),
                true,
                &request(true, Framing::Length(0))
            ),
            AfterFailure::Replay
        );
    }

    #[test]
    fn a_failure_after_response_bytes_is_never_replayed() {
        let get = request(true, Framing::Empty);
        let mut attempts = Attempts::default();
        let bad_head = ExchangeError::new(UpstreamError::Closed, false, true);
        assert!(!bad_head.may_replay());
        assert_eq!(
            attempts.after(&bad_head, true, &get),
            AfterFailure::GiveUp {
                server_failed: true
            }
        );
    }

    #[test]
    fn client_failures_and_bad_chunks_do_not_count_against_the_server() {
        let get = request(true, Framing::Empty);
        let mut attempts = Attempts::default();
        let client = ExchangeError::client(ClientError::Closed);
        assert_eq!(
            attempts.after(&client, false, &get),
            AfterFailure::GiveUp {
                server_failed: false
            }
        );
        let bad_chunk = ExchangeError::new(
            UpstreamError::BadChunk(crate::http::chunked::ChunkError::TooLarge),
            false,
            true,
        );
        assert_eq!(
            attempts.after(&bad_chunk, false, &get),
            AfterFailure::GiveUp {
                server_failed: false
            }
        );
    }

    /// An HTTP/2 server's word that it did not process a request lets any
    /// bodyless request go again once, even on a new connection, without
    /// blaming the server; a request with a body cannot be replayed.
    #[test]
    fn an_unprocessed_http2_request_is_replayed_once_whatever_its_method() {
        fn refused() -> ExchangeError {
            let error = h2::Error::from(h2::Reason::REFUSED_STREAM);
            ExchangeError::new(UpstreamError::http2_unsent(error), true, true)
        }
        let post = request(false, Framing::Empty);
        let mut attempts = Attempts::default();
        assert_eq!(
            attempts.after(&refused(), false, &post),
            AfterFailure::Replay
        );
        assert!(attempts.fresh());
        assert_eq!(
            attempts.after(&refused(), false, &post),
            AfterFailure::GiveUp {
                server_failed: false
            }
        );
        let mut attempts = Attempts::default();
        assert_eq!(
            attempts.after(&refused(), false, &request(false, Framing::Length(3))),
            AfterFailure::GiveUp {
                server_failed: false
            }
        );
        // A reset of another kind is the server's failure, and a POST is
        // not replayed after it.
        let reset = ExchangeError::new(
            UpstreamError::http2(h2::Error::from(h2::Reason::INTERNAL_ERROR)),
            true,
            true,
        );
        assert!(!reset.unprocessed());
        assert_eq!(
            Attempts::default().after(&reset, false, &post),
            AfterFailure::GiveUp {
                server_failed: true
            }
        );
    }

    #[test]
    fn each_server_is_tried_once_after_a_connect_failure() {
        // A group of three servers, picked as `forward` does.
        let mut config = crate::testing::config(prefork_testkit::origins::refused_addr());
        let app = config.upstreams.get_mut("app").expect("the app upstream");
        app.servers = (1..=3)
            .map(|port| prefork_shared::config::Server {
                name: format!("s{port}"),
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                weight: 1,
            })
            .collect();
        app.max_fails = 0;
        let (stats, _) = crate::observe::stats::Stats::new(&config);
        let upstreams = crate::upstream::Upstreams::new(&config, &stats);
        let group = upstreams.get("app").expect("the app group");
        let mut attempts = Attempts::default();
        let mut picked = Vec::new();
        while let Some(index) = group.pick(attempts.tried()) {
            assert!(picked.len() < 3, "a server picked again: {picked:?}");
            picked.push(index);
            attempts.connect_failed(index);
        }
        picked.sort_unstable();
        assert_eq!(picked, [0, 1, 2]);
        assert!(
            !attempts.fresh(),
            "connect failures take no fresh connection"
        );
    }
}
