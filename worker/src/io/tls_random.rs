//! The random numbers TLS needs, made ready before the first handshake.

use std::sync::Once;

/// Seeds aws-lc's random number generator, once per process. Its first use
/// gathers CPU-jitter entropy (about 420 million instructions, some 75 ms
/// here): left to the first handshake, that stalls every connection of a
/// new worker's event loop; done while the worker starts, it is paid before
/// the worker reports ready, while the workers it replaces still serve.
pub(crate) fn seed_random() {
    static SEEDED: Once = Once::new();
    SEEDED.call_once(|| {
        // The value is thrown away: only the seeding matters.
        let _ = rustls::crypto::aws_lc_rs::default_provider()
            .secure_random
            .fill(&mut [0u8; 16]);
    });
}
