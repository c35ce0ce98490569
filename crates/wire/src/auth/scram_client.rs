//! Client side of SCRAM-SHA-256 (RFC 5802, RFC 7677), for authenticating to the upstream
//! server, with optional `tls-server-end-point` channel binding.
//!
//! The costly step is the salted password (PBKDF2, 4096 rounds by default: milliseconds of CPU).
//! A server keeps one salt and iteration count per role, so the result is the same for every
//! connection Meridian opens as that role: it is computed once and kept in a small process-wide
//! cache keyed by a hash of (password, salt, iterations). Only the salted password is cached —
//! every exchange still uses fresh nonces and proves itself anew.

use core::fmt;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::Sha256;

use super::{ct_eq, hmac_sha256, sha256, xor32};
use crate::WireError;

/// Highest iteration count accepted from a server (PostgreSQL's default is 4096); a larger one
/// would let a server make Meridian burn CPU.
const MAX_ITERATIONS: u32 = 1_000_000;

/// Salted passwords kept; the cache is emptied when full (a handful of roles is the norm).
const CACHE_ENTRIES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Initial,
    Updated,
    Done,
}

/// The gs2 channel-binding flag a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientBinding {
    /// `n`: the client cannot bind (plaintext connection).
    None,
    /// `y`: the client could bind but believes the server cannot.
    Unrequested,
    /// `p=tls-server-end-point` with the server certificate's hash: mechanism
    /// [`SCRAM_SHA_256_PLUS`](super::SCRAM_SHA_256_PLUS).
    TlsServerEndPoint(Vec<u8>),
}

/// One client-side SCRAM-SHA-256 exchange (gs2 header `n,,` unless built
/// [`with_binding`](Self::with_binding)).
///
/// Send [`initial`](Self::initial) in a SASLInitialResponse for mechanism
/// [`SCRAM_SHA_256`](super::SCRAM_SHA_256), pass AuthenticationSASLContinue
/// data to [`update`](Self::update) and send its result in a SASLResponse,
/// then pass AuthenticationSASLFinal data to [`finish`](Self::finish).
pub struct ScramClient {
    /// The password after SASLprep (as PostgreSQL prepares it).
    password: Vec<u8>,
    /// gs2 header followed by the channel-binding data, base64-encoded in `c=`.
    binding: Vec<u8>,
    client_nonce: String,
    client_first_bare: String,
    initial: Vec<u8>,
    auth_message: Vec<u8>,
    server_key: [u8; 32],
    step: Step,
}

impl ScramClient {
    /// Starts an exchange for `password` with a fresh random nonce.
    pub fn new(password: impl AsRef<[u8]>) -> Self {
        Self::with_binding(password, ClientBinding::None)
    }

    /// Starts an exchange with the given channel-binding flag.
    pub fn with_binding(password: impl AsRef<[u8]>, binding: ClientBinding) -> Self {
        let mut raw = [0u8; 18];
        rand::fill(&mut raw[..]);
        Self::build(password.as_ref(), binding, "", B64.encode(raw))
    }

    fn build(password: &[u8], binding: ClientBinding, user: &str, nonce: String) -> Self {
        let (gs2, data): (&[u8], Vec<u8>) = match binding {
            ClientBinding::None => (b"n,,", Vec::new()),
            ClientBinding::Unrequested => (b"y,,", Vec::new()),
            ClientBinding::TlsServerEndPoint(data) => (b"p=tls-server-end-point,,", data),
        };
        let client_first_bare = format!("n={user},r={nonce}");
        let mut initial = gs2.to_vec();
        initial.extend_from_slice(client_first_bare.as_bytes());
        let mut binding = gs2.to_vec();
        binding.extend_from_slice(&data);
        ScramClient {
            password: saslprep(password),
            binding,
            client_nonce: nonce,
            client_first_bare,
            initial,
            auth_message: Vec::new(),
            server_key: [0; 32],
            step: Step::Initial,
        }
    }

    /// The client-first message.
    pub fn initial(&self) -> Vec<u8> {
        self.initial.clone()
    }

    /// Consumes the server-first message; returns the client-final message.
    pub fn update(&mut self, server_first: &[u8]) -> Result<Vec<u8>, WireError> {
        if self.step != Step::Initial {
            return Err(upstream("unexpected SCRAM server-first message"));
        }
        self.step = Step::Done;
        let text = std::str::from_utf8(server_first)
            .map_err(|_| upstream("SCRAM server-first message is not UTF-8"))?;
        let mut attrs = text.split(',');
        let nonce = attr(attrs.next(), 'r')?;
        let salt = attr(attrs.next(), 's')?;
        let iterations = attr(attrs.next(), 'i')?;
        if nonce.len() <= self.client_nonce.len() || !nonce.starts_with(&self.client_nonce) {
            return Err(upstream(
                "SCRAM server nonce does not extend the client nonce",
            ));
        }
        let salt = B64
            .decode(salt)
            .map_err(|_| upstream("SCRAM salt is not base64"))?;
        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|i| (1..=MAX_ITERATIONS).contains(i))
            .ok_or_else(|| upstream("SCRAM iteration count is invalid or too large"))?;

        let salted = salted_password(&self.password, &salt, iterations);
        let client_final_without_proof = format!("c={},r={nonce}", B64.encode(&self.binding));
        let mut auth_message = Vec::with_capacity(
            self.client_first_bare.len() + text.len() + client_final_without_proof.len() + 2,
        );
        auth_message.extend_from_slice(self.client_first_bare.as_bytes());
        auth_message.push(b',');
        auth_message.extend_from_slice(server_first);
        auth_message.push(b',');
        auth_message.extend_from_slice(client_final_without_proof.as_bytes());

        let mut proof = hmac_sha256(&salted, &[b"Client Key"]);
        let stored_key = sha256(&proof);
        xor32(&mut proof, &hmac_sha256(&stored_key, &[&auth_message]));
        self.server_key = hmac_sha256(&salted, &[b"Server Key"]);
        self.auth_message = auth_message;
        self.step = Step::Updated;
        Ok(format!("{client_final_without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Verifies the server-final message (the server's signature).
    pub fn finish(&mut self, server_final: &[u8]) -> Result<(), WireError> {
        if self.step != Step::Updated {
            return Err(upstream("unexpected SCRAM server-final message"));
        }
        self.step = Step::Done;
        let text = std::str::from_utf8(server_final)
            .map_err(|_| upstream("SCRAM server-final message is not UTF-8"))?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(WireError::UpstreamAuth(format!(
                "SCRAM error from server: {e}"
            )));
        }
        let signature = attr(text.split(',').next(), 'v')?;
        let signature = B64
            .decode(signature)
            .map_err(|_| upstream("SCRAM server signature is not base64"))?;
        let expected = hmac_sha256(&self.server_key, &[&self.auth_message]);
        if !ct_eq(&signature, &expected) {
            return Err(upstream("SCRAM server signature does not match"));
        }
        Ok(())
    }
}

/// The value of attribute `name` (`name=value`).
fn attr(part: Option<&str>, name: char) -> Result<&str, WireError> {
    part.and_then(|p| p.strip_prefix(name))
        .and_then(|p| p.strip_prefix('='))
        .ok_or_else(|| {
            WireError::UpstreamAuth(format!(
                "malformed SCRAM server message: expected attribute '{name}'"
            ))
        })
}

/// SASLprep as PostgreSQL applies it: a password that is not valid UTF-8 or that SASLprep
/// rejects is used as it is.
fn saslprep(password: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(password).map(stringprep::saslprep) {
        Ok(Ok(p)) => p.into_owned().into_bytes(),
        _ => password.to_vec(),
    }
}

/// `Hi(password, salt, iterations)` (PBKDF2-HMAC-SHA-256), from the cache when possible.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], [u8; 32]>>> = OnceLock::new();
    let key = {
        let mut k = Vec::with_capacity(password.len() + salt.len() + 12);
        k.extend_from_slice(&(password.len() as u64).to_be_bytes());
        k.extend_from_slice(password);
        k.extend_from_slice(&iterations.to_be_bytes());
        k.extend_from_slice(salt);
        sha256(&k)
    };
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(hit) = cache.lock().ok().and_then(|c| c.get(&key).copied()) {
        return hit;
    }
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted);
    if let Ok(mut c) = cache.lock() {
        if c.len() >= CACHE_ENTRIES {
            c.clear();
        }
        c.insert(key, salted);
    }
    salted
}

fn upstream(msg: &str) -> WireError {
    WireError::UpstreamAuth(msg.to_owned())
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClient")
            .field("step", &self.step)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// RFC 7677, section 3 (user "user", password "pencil").
    #[test]
    fn rfc7677_example() {
        let mut c = ScramClient::build(
            b"pencil",
            ClientBinding::None,
            "user",
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        assert_eq!(c.initial(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first =
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        for _ in 0..2 {
            // Twice: the second exchange takes the salted password from the cache.
            let mut c2 = ScramClient::build(
                b"pencil",
                ClientBinding::None,
                "user",
                "rOprNGfwEbeRWgbNEkqO".into(),
            );
            let client_final = c2.update(server_first).unwrap();
            assert_eq!(
                String::from_utf8(client_final).unwrap(),
                "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                 p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
            );
            c2.finish(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
                .unwrap();
        }
        c.update(server_first).unwrap();
        assert!(c.finish(b"e=invalid-proof").is_err());
    }

    #[test]
    fn bad_server_first_messages() {
        for msg in [
            &b"r=rOprNGfwEbeRWgbNEkqO,s=c2FsdA==,i=4096"[..], // nonce not extended
            b"r=rOprNGfwEbeRWgbNEkqOx,s=!!,i=4096",
            b"r=rOprNGfwEbeRWgbNEkqOx,s=c2FsdA==,i=0",
            b"r=rOprNGfwEbeRWgbNEkqOx,s=c2FsdA==,i=4000000000",
            b"r=rOprNGfwEbeRWgbNEkqOx,i=4096",
            b"m=ext,r=rOprNGfwEbeRWgbNEkqOx,s=c2FsdA==,i=4096",
            b"\xff",
            b"",
        ] {
            let mut c = ScramClient::build(
                b"pw",
                ClientBinding::None,
                "",
                "rOprNGfwEbeRWgbNEkqO".into(),
            );
            assert!(
                matches!(c.update(msg), Err(WireError::UpstreamAuth(_))),
                "{}",
                String::from_utf8_lossy(msg)
            );
        }
    }

    #[test]
    fn saslprep_like_postgres() {
        // Non-ASCII space maps to a space; invalid UTF-8 passes through unchanged.
        assert_eq!(saslprep("a\u{00A0}b".as_bytes()), b"a b");
        assert_eq!(saslprep(b"\xff\xfe"), b"\xff\xfe");
        assert_eq!(saslprep(b"plain"), b"plain");
    }
}
