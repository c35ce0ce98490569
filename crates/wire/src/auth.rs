//! Authentication helpers: SCRAM-SHA-256 (server side for clients, client
//! side for the upstream connection) and md5.

mod channel_binding;
mod md5;
mod scram_client;
mod scram_secret;
mod scram_server;

pub use channel_binding::{end_point_hash, tls_server_end_point, EndPointHash};
pub use md5::{md5_password_hash, md5_salted_from_stored, md5_stored_hash};
pub use scram_client::{ClientBinding, ScramClient};
pub use scram_secret::ScramSecret;
pub use scram_server::ScramServer;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// SASL mechanism name of SCRAM-SHA-256.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// SASL mechanism name of SCRAM-SHA-256 with channel binding (offered on TLS connections).
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// Compares two byte strings in time that depends only on their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    core::hint::black_box(diff) == 0
}

/// HMAC-SHA-256 keyed with a 32-byte key.
///
/// HMAC pads keys shorter than the block size with zeros, so keying with the
/// zero-padded 64-byte block is exactly HMAC(key, ·) — and infallible.
pub(crate) fn hmac_sha256(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; 64];
    for (d, s) in block.iter_mut().zip(key) {
        *d = *s;
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// `a ^= b` over 32-byte blocks.
pub(crate) fn xor32(a: &mut [u8; 32], b: &[u8; 32]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

#[cfg(test)]
mod tests;
