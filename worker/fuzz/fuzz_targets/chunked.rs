//! The chunked decoder: never a panic, and the same result however the
//! input is split.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| prefork_worker::fuzzing::chunked(data));
