//! HTTP/2 from clients, with the `h2` crate: a connection (`connection`)
//! whose streams (`stream`) each go through the proxy core as an HTTP/1.1
//! request does, their heads read as the core reads one (`request`). A
//! meter on the bytes read (`meter`) ends the floods `h2` lets through.
//! TLS clients choose HTTP/2 by ALPN; plain ones by sending its preface
//! (h2c with prior knowledge, `preface`).

mod connection;
mod meter;
pub(crate) mod preface;
mod request;
mod responder;
mod shared;
mod stream;

pub(crate) use connection::serve;
