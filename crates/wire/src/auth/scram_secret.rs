//! SCRAM-SHA-256 secrets (PostgreSQL "verifiers").

use core::fmt;
use core::str::FromStr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::Sha256;

use super::{hmac_sha256, sha256};
use crate::WireError;

/// What the server stores for a SCRAM-SHA-256 user: enough to verify a
/// client proof and to prove itself, but not the password.
///
/// `Debug` redacts the keys; `Display` renders the PostgreSQL verifier
/// format `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    /// PBKDF2 iteration count (> 0).
    pub iterations: u32,
    /// Salt (non-empty).
    pub salt: Vec<u8>,
    /// `SHA-256(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: [u8; 32],
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: [u8; 32],
}

impl ScramSecret {
    /// PostgreSQL's default iteration count (`scram_iterations`).
    pub const DEFAULT_ITERATIONS: u32 = 4096;

    /// Derives a secret from a password with the given salt and iterations.
    ///
    /// The password is used as given, without SASLprep. PostgreSQL applies
    /// SASLprep when it builds a secret, which is the identity for ASCII
    /// passwords; for non-ASCII passwords use [`ScramSecret::generate`] or a
    /// stored verifier instead. Fails on an empty salt or zero iterations.
    pub fn from_password(
        password: impl AsRef<[u8]>,
        salt: &[u8],
        iterations: u32,
    ) -> Result<Self, WireError> {
        if salt.is_empty() {
            return Err(WireError::InvalidSecret("empty salt"));
        }
        if iterations == 0 {
            return Err(WireError::InvalidSecret("iteration count must be positive"));
        }
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_ref(), salt, iterations, &mut salted);
        let client_key = hmac_sha256(&salted, &[b"Client Key"]);
        Ok(ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted, &[b"Server Key"]),
        })
    }

    /// Builds a secret exactly as PostgreSQL would for `password`
    /// (SASLprep, random 16-byte salt, 4096 iterations).
    pub fn generate(password: impl AsRef<[u8]>) -> Result<Self, WireError> {
        Self::parse(&postgres_protocol::password::scram_sha_256(
            password.as_ref(),
        ))
    }

    /// Parses a PostgreSQL verifier:
    /// `SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>`.
    pub fn parse(verifier: &str) -> Result<Self, WireError> {
        let rest = verifier
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or(WireError::InvalidSecret("not a SCRAM-SHA-256 verifier"))?;
        let (iter_salt, keys) = rest
            .split_once('$')
            .ok_or(WireError::InvalidSecret("missing '$' separator"))?;
        let (iter, salt) = iter_salt.split_once(':').ok_or(WireError::InvalidSecret(
            "missing ':' after iteration count",
        ))?;
        let (stored, server) = keys
            .split_once(':')
            .ok_or(WireError::InvalidSecret("missing ':' between keys"))?;
        if !iter.bytes().all(|b| b.is_ascii_digit()) {
            return Err(WireError::InvalidSecret("invalid iteration count"));
        }
        let iterations: u32 = iter
            .parse()
            .map_err(|_| WireError::InvalidSecret("invalid iteration count"))?;
        if iterations == 0 {
            return Err(WireError::InvalidSecret("iteration count must be positive"));
        }
        let salt = B64
            .decode(salt)
            .map_err(|_| WireError::InvalidSecret("invalid salt encoding"))?;
        if salt.is_empty() {
            return Err(WireError::InvalidSecret("empty salt"));
        }
        Ok(ScramSecret {
            iterations,
            salt,
            stored_key: key32(stored)?,
            server_key: key32(server)?,
        })
    }
}

fn key32(b64: &str) -> Result<[u8; 32], WireError> {
    B64.decode(b64)
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
        .ok_or(WireError::InvalidSecret(
            "key is not 32 base64-encoded bytes",
        ))
}

impl FromStr for ScramSecret {
    type Err = WireError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("salt", &B64.encode(&self.salt))
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}
