//! rustls's aws-lc-rs cipher suites, with TLS 1.3's key schedule run on
//! HMAC keys prepared once per secret.
//!
//! HMAC hashes its key into an inner and an outer state (one compression
//! block each) before hashing the message. rustls's aws-lc-rs suites derive
//! TLS 1.3 keys through aws-lc's `HKDF_expand`, which prepares the key again
//! for every label: with a SHA-384 suite, over a quarter of a resumed TLS 1.3
//! handshake's SHA-512 blocks went to preparing the same few secrets over
//! and over (callgrind, `bench/scripts/callgrind.py --modes tls13-resume`).
//! rustls's own `HkdfUsingHmac` makes one HMAC key per secret and expands
//! every label from it; aws-lc-rs's `hmac::Key` keeps the prepared states,
//! and each use copies them. Same HKDF (RFC 5869), same aws-lc hash code:
//! only the repeated work is gone. The extraction is this module's own, so
//! that an extracted secret is wiped when dropped, as with aws-lc-rs's HKDF
//! (`HkdfUsingHmac` would leave it in a plain `Vec`).

use aws_lc_rs::hmac;
use rustls::crypto::aws_lc_rs::cipher_suite;
use rustls::crypto::hmac::{Hmac, Key, Tag};
use rustls::crypto::tls13::{Hkdf, HkdfExpander, HkdfUsingHmac, OkmBlock};
use rustls::crypto::CryptoProvider;
use rustls::{CipherSuite, CipherSuiteCommon, SupportedCipherSuite, Tls13CipherSuite};

/// TLS_AES_256_GCM_SHA384.
pub(crate) static TLS13_AES_256_GCM_SHA384: SupportedCipherSuite =
    SupportedCipherSuite::Tls13(&AES_256_GCM_SHA384);
/// TLS_AES_128_GCM_SHA256.
pub(crate) static TLS13_AES_128_GCM_SHA256: SupportedCipherSuite =
    SupportedCipherSuite::Tls13(&AES_128_GCM_SHA256);
/// TLS_CHACHA20_POLY1305_SHA256.
pub(crate) static TLS13_CHACHA20_POLY1305_SHA256: SupportedCipherSuite =
    SupportedCipherSuite::Tls13(&CHACHA20_POLY1305_SHA256);

static AES_256_GCM_SHA384: Tls13CipherSuite =
    keyed(tls13(cipher_suite::TLS13_AES_256_GCM_SHA384), &HKDF_SHA384);
static AES_128_GCM_SHA256: Tls13CipherSuite =
    keyed(tls13(cipher_suite::TLS13_AES_128_GCM_SHA256), &HKDF_SHA256);
static CHACHA20_POLY1305_SHA256: Tls13CipherSuite = keyed(
    tls13(cipher_suite::TLS13_CHACHA20_POLY1305_SHA256),
    &HKDF_SHA256,
);

static HKDF_SHA256: PreparedHkdf = PreparedHkdf {
    hmac: &HMAC_SHA256,
    expansions: HkdfUsingHmac(&HMAC_SHA256),
};
static HKDF_SHA384: PreparedHkdf = PreparedHkdf {
    hmac: &HMAC_SHA384,
    expansions: HkdfUsingHmac(&HMAC_SHA384),
};
static HMAC_SHA256: PreparedHmac = PreparedHmac(&hmac::HMAC_SHA256);
static HMAC_SHA384: PreparedHmac = PreparedHmac(&hmac::HMAC_SHA384);

/// rustls's suite `base` (its hash and AEAD), keyed by `hkdf`.
const fn keyed(base: &'static Tls13CipherSuite, hkdf: &'static PreparedHkdf) -> Tls13CipherSuite {
    Tls13CipherSuite {
        common: CipherSuiteCommon {
            suite: base.common.suite,
            hash_provider: base.common.hash_provider,
            confidentiality_limit: base.common.confidentiality_limit,
        },
        hkdf_provider: hkdf,
        aead_alg: base.aead_alg,
        quic: base.quic,
    }
}

/// The TLS 1.3 side of `suite`, one of rustls's TLS 1.3 suites.
const fn tls13(suite: SupportedCipherSuite) -> &'static Tls13CipherSuite {
    match suite.tls13() {
        Some(suite) => suite,
        None => panic!("not a TLS 1.3 cipher suite"),
    }
}

/// This module's version of `suite` if it is a TLS 1.3 suite; `suite`
/// itself otherwise (TLS 1.2's PRF already prepares its key once per use).
fn prepared(suite: SupportedCipherSuite) -> SupportedCipherSuite {
    match suite.suite() {
        CipherSuite::TLS13_AES_256_GCM_SHA384 => TLS13_AES_256_GCM_SHA384,
        CipherSuite::TLS13_AES_128_GCM_SHA256 => TLS13_AES_128_GCM_SHA256,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => TLS13_CHACHA20_POLY1305_SHA256,
        _ => suite,
    }
}

/// rustls's aws-lc-rs provider, its TLS 1.3 suites replaced by this
/// module's (same suites, same order).
pub(crate) fn provider() -> CryptoProvider {
    let default = rustls::crypto::aws_lc_rs::default_provider();
    CryptoProvider {
        cipher_suites: default.cipher_suites.iter().map(|s| prepared(*s)).collect(),
        ..default
    }
}

/// HKDF whose expansions share one prepared HMAC key per secret
/// (`HkdfUsingHmac`'s), with the extracted secrets wiped when dropped.
/// Not FIPS-approved (`fips()` stays false, as for `HkdfUsingHmac`): HKDF is
/// assembled here, outside aws-lc's module; prefork builds aws-lc-rs
/// without its `fips` feature.
struct PreparedHkdf {
    /// HMAC with the suite's hash.
    hmac: &'static PreparedHmac,
    /// rustls's HKDF over `hmac`, which expands and signs.
    expansions: HkdfUsingHmac<'static>,
}

impl Hkdf for PreparedHkdf {
    fn extract_from_zero_ikm(&self, salt: Option<&[u8]>) -> Box<dyn HkdfExpander> {
        let zeroes = [0u8; OkmBlock::MAX_LEN];
        self.extract_from_secret(salt, &zeroes[..self.hmac.hash_output_len()])
    }

    fn extract_from_secret(&self, salt: Option<&[u8]>, secret: &[u8]) -> Box<dyn HkdfExpander> {
        // HKDF-Extract: PRK = HMAC(salt, secret), a hash's length of zeroes
        // for a missing salt (RFC 5869 §2.2).
        let zeroes = [0u8; OkmBlock::MAX_LEN];
        let salt = salt.unwrap_or(&zeroes[..self.hmac.hash_output_len()]);
        // Both `Tag` and `OkmBlock` wipe their bytes when dropped.
        let prk = self.hmac.with_key(salt).sign(&[secret]);
        self.expansions
            .expander_for_okm(&OkmBlock::new(prk.as_ref()))
    }

    fn expander_for_okm(&self, okm: &OkmBlock) -> Box<dyn HkdfExpander> {
        self.expansions.expander_for_okm(okm)
    }

    fn hmac_sign(&self, key: &OkmBlock, message: &[u8]) -> Tag {
        self.expansions.hmac_sign(key, message)
    }
}

/// HMAC whose keys keep their prepared inner and outer hash states.
struct PreparedHmac(&'static hmac::Algorithm);

impl Hmac for PreparedHmac {
    fn with_key(&self, key: &[u8]) -> Box<dyn Key> {
        Box::new(PreparedKey(hmac::Key::new(*self.0, key)))
    }

    fn hash_output_len(&self) -> usize {
        self.0.digest_algorithm().output_len()
    }
}

/// One prepared HMAC key.
struct PreparedKey(hmac::Key);

impl Key for PreparedKey {
    fn sign_concat(&self, first: &[u8], middle: &[&[u8]], last: &[u8]) -> Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(first);
        for part in middle {
            ctx.update(part);
        }
        ctx.update(last);
        Tag::new(ctx.sign().as_ref())
    }

    fn tag_len(&self) -> usize {
        self.0.algorithm().digest_algorithm().output_len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5869's test case 1 (HKDF-SHA256).
    #[test]
    fn rfc_5869_test_case_1() {
        let ikm = [0x0b; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let expander = HKDF_SHA256.extract_from_secret(Some(&salt), &ikm);
        let mut okm = [0u8; 42];
        expander.expand_slice(&[&info], &mut okm).unwrap();
        let want = "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf\
                    34007208d5b887185865";
        assert_eq!(hex(&okm), want);
    }

    /// Every derivation TLS 1.3 makes gives what rustls's own aws-lc-rs
    /// suites give, for both hashes, over outputs of one and several
    /// blocks.
    #[test]
    fn derivations_match_rustls_own_suites() {
        for (ours, theirs) in [
            (
                TLS13_AES_256_GCM_SHA384,
                cipher_suite::TLS13_AES_256_GCM_SHA384,
            ),
            (
                TLS13_AES_128_GCM_SHA256,
                cipher_suite::TLS13_AES_128_GCM_SHA256,
            ),
            (
                TLS13_CHACHA20_POLY1305_SHA256,
                cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            ),
        ] {
            let (ours, theirs) = (tls13(ours).hkdf_provider, tls13(theirs).hkdf_provider);
            let secret: Vec<u8> = (0..48u8).map(|b| b.wrapping_mul(37)).collect();
            let salt = b"salt of some length";
            for (a, b) in [
                (
                    ours.extract_from_secret(Some(salt), &secret),
                    theirs.extract_from_secret(Some(salt), &secret),
                ),
                (
                    ours.extract_from_zero_ikm(None),
                    theirs.extract_from_zero_ikm(None),
                ),
            ] {
                assert_eq!(a.hash_len(), b.hash_len());
                let info: [&[u8]; 3] = [b"tls13 ", b"c hs traffic", &[7; 32]];
                assert_eq!(
                    a.expand_block(&info).as_ref(),
                    b.expand_block(&info).as_ref()
                );
                for len in [12, 32, 48, 64, 100] {
                    let (mut x, mut y) = (vec![0u8; len], vec![0u8; len]);
                    a.expand_slice(&info, &mut x).unwrap();
                    b.expand_slice(&info, &mut y).unwrap();
                    assert_eq!(x, y, "{len} bytes");
                }
                let okm = a.expand_block(&info);
                let (x, y) = (ours.expander_for_okm(&okm), theirs.expander_for_okm(&okm));
                assert_eq!(
                    x.expand_block(&[b"key"]).as_ref(),
                    y.expand_block(&[b"key"]).as_ref()
                );
                assert_eq!(
                    ours.hmac_sign(&okm, b"transcript").as_ref(),
                    theirs.hmac_sign(&okm, b"transcript").as_ref()
                );
            }
        }
    }

    #[test]
    fn the_provider_keeps_rustls_suites_and_order() {
        let ours: Vec<_> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        let theirs: Vec<_> = rustls::crypto::aws_lc_rs::default_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(ours, theirs);
        let prepared_suites = provider()
            .cipher_suites
            .iter()
            .filter(|s| s.tls13().is_some())
            .count();
        assert_eq!(prepared_suites, 3);
        for suite in provider().cipher_suites {
            if let Some(s) = suite.tls13() {
                assert!(
                    std::ptr::eq(s, tls13(prepared(suite))),
                    "{:?}",
                    suite.suite()
                );
            }
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
