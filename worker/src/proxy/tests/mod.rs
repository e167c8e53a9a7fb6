//! The proxy core end to end, through the HTTP/1.1 session, by subject
//! (the harness is `crate::testing`).

mod bodies;
mod chunked;
mod interim;
mod retry;
mod routing;
mod splice;
mod trailers;
