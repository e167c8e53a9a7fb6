//! The client side: accepting connections, the PROXY protocol header on
//! `proxy_protocol` listeners, the TLS handshake on TLS listeners, and the HTTP/1.1 session that reads requests from a
//! connection and writes the responses.

pub(crate) mod accept;
pub(crate) mod h1;
pub(crate) mod h2;
pub(crate) mod limit;
pub(crate) mod park;
pub(crate) mod proxy_protocol;
pub(crate) mod tls;
