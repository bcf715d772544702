//! The crypto library that signs: aws-lc-rs (feature `aws-lc-rs`) or ring
//! (feature `ring`); aws-lc-rs when both are enabled. The two share one API
//! but for a few signatures, which this file bridges.

#[cfg(feature = "aws-lc-rs")]
pub(crate) use aws_lc_rs as lib;
#[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
pub(crate) use ring as lib;

#[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
compile_error!(
    "tower-token's `jose` feature needs a crypto library: enable `aws-lc-rs` or `ring` instead"
);

use lib::error::KeyRejected;
use lib::rand::SystemRandom;
use lib::signature::{EcdsaKeyPair, EcdsaSigningAlgorithm};

/// The process's random number generator (a handle; no state of its own).
pub(crate) fn rng() -> SystemRandom {
    SystemRandom::new()
}

pub(crate) fn ecdsa_from_pkcs8(
    alg: &'static EcdsaSigningAlgorithm,
    der: &[u8],
) -> Result<EcdsaKeyPair, KeyRejected> {
    #[cfg(feature = "aws-lc-rs")]
    return EcdsaKeyPair::from_pkcs8(alg, der);
    #[cfg(not(feature = "aws-lc-rs"))]
    return EcdsaKeyPair::from_pkcs8(alg, der, &rng());
}

pub(crate) fn ecdsa_from_parts(
    alg: &'static EcdsaSigningAlgorithm,
    private_key: &[u8],
    public_point: &[u8],
) -> Result<EcdsaKeyPair, KeyRejected> {
    #[cfg(feature = "aws-lc-rs")]
    return EcdsaKeyPair::from_private_key_and_public_key(alg, private_key, public_point);
    #[cfg(not(feature = "aws-lc-rs"))]
    return EcdsaKeyPair::from_private_key_and_public_key(alg, private_key, public_point, &rng());
}

/// Why a key was rejected: `KeyRejected`'s text is a fixed reason
/// (`InvalidEncoding`, `InconsistentComponents`, …), never key material.
pub(crate) fn rejected_reason(e: &KeyRejected) -> String {
    e.to_string()
}

/// The length of an RSA key's modulus, in bytes (a signature's length).
pub(crate) fn rsa_modulus_len(pair: &lib::signature::RsaKeyPair) -> usize {
    #[cfg(feature = "aws-lc-rs")]
    return pair.public_modulus_len();
    #[cfg(not(feature = "aws-lc-rs"))]
    return pair.public().modulus_len();
}
