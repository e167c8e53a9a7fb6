//! Request heads: never a panic, and the forwarded head frames the same.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| prefork_worker::fuzzing::request_head(data));
