//! The proxy core end to end, through the HTTP/1.1 session, by subject
//! (the harness is `crate::testing`), and through a client of another kind
//! (`message_client`).

mod bodies;
mod chunked;
mod h2_upstream;
mod interim;
mod message_client;
mod retry;
mod routing;
mod splice;
mod trailers;
