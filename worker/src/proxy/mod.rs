//! The proxy core: what happens to a request once its head is read,
//! whatever protocol the client speaks: routing, the exchange with an
//! upstream server, retries, and classifying failures.

pub(crate) mod error;
pub(crate) mod exchange;
