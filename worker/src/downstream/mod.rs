//! The client side: accepting connections, and the HTTP/1.1 session that
//! reads requests from a connection and writes the responses.

pub(crate) mod accept;
pub(crate) mod h1;
pub(crate) mod park;
