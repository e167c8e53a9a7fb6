//! The client side: accepting connections, what their clients send first
//! (`protocols`: the PROXY protocol header on `proxy_protocol` listeners,
//! the TLS handshake on TLS listeners, HTTP/2's preface on `http2` ones),
//! the HTTP/1.1 session that reads requests from a connection and writes
//! the responses, and HTTP/2's connection and streams.

pub(crate) mod accept;
pub(crate) mod h1;
pub(crate) mod h2;
pub(crate) mod limit;
pub(crate) mod park;
pub(crate) mod protocols;
pub(crate) mod proxy_protocol;
pub(crate) mod tls;
