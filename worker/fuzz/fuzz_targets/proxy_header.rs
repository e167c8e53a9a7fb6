//! PROXY protocol headers: never a panic, and the same answer however
//! many of the bytes have arrived.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| prefork_worker::fuzzing::proxy_header(data));
