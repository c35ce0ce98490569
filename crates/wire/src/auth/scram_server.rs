//! Server side of SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802 / RFC 7677)
//! as PostgreSQL runs it: the user name in client-first is ignored (the
//! startup packet's `user` counts), no authorization identity, and channel
//! binding of type `tls-server-end-point` (RFC 5929) on TLS connections.

use core::fmt;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::{ct_eq, hmac_sha256, sha256, xor32, ScramSecret};
use crate::WireError;

/// Raw server nonce length, as in PostgreSQL (`SCRAM_RAW_NONCE_LEN`).
const NONCE_RAW_LEN: usize = 18;

const MALFORMED: WireError = WireError::Malformed("malformed SCRAM message");
const OUT_OF_ORDER: WireError = WireError::Malformed("unexpected SCRAM message");

enum State {
    ClientFirst,
    ClientFinal {
        /// Expected `c=` value: base64 of the gs2 header (plus the channel-binding data
        /// under `p=`).
        cbind: String,
        nonce: String,
        client_first_bare: String,
        server_first: String,
    },
    Done {
        authenticated: bool,
    },
}

/// One server-side SCRAM-SHA-256 exchange.
///
/// Feed the SASLInitialResponse data to [`client_first`](Self::client_first)
/// (send the result in AuthenticationSASLContinue), then the SASLResponse data
/// to [`client_final`](Self::client_final) (send the result in
/// AuthenticationSASLFinal, followed by AuthenticationOk). Any error ends the
/// exchange.
pub struct ScramServer {
    secret: ScramSecret,
    /// Mock exchange for an unknown user: always fails at the last step.
    doomed: bool,
    /// `tls-server-end-point` data of this connection; `Some` on TLS connections, where
    /// SCRAM-SHA-256-PLUS is offered.
    binding: Option<Vec<u8>>,
    /// The client selected SCRAM-SHA-256-PLUS.
    plus: bool,
    state: State,
}

impl ScramServer {
    /// Starts an exchange verifying against `secret`.
    pub fn new(secret: &ScramSecret) -> Self {
        ScramServer {
            secret: secret.clone(),
            doomed: false,
            binding: None,
            plus: false,
            state: State::ClientFirst,
        }
    }

    /// Starts an exchange for a user that does not exist (or has no SCRAM
    /// secret). It looks like a real one — the salt is stable per user for
    /// the life of the process — but always ends in
    /// [`WireError::AuthFailed`], so clients cannot probe for user names.
    pub fn mock(user: &str) -> Self {
        static MOCK_KEY: OnceLock<[u8; 32]> = OnceLock::new();
        let key = MOCK_KEY.get_or_init(random32);
        let salt = hmac_sha256(key, &[b"salt", user.as_bytes()]);
        ScramServer {
            secret: ScramSecret {
                iterations: ScramSecret::DEFAULT_ITERATIONS,
                salt: salt.iter().take(16).copied().collect(),
                stored_key: random32(),
                server_key: random32(),
            },
            doomed: true,
            binding: None,
            plus: false,
            state: State::ClientFirst,
        }
    }

    /// Sets up channel binding before [`client_first`](Self::client_first).
    ///
    /// `tls_server_end_point` is the connection's binding data (see
    /// [`tls_server_end_point`](super::tls_server_end_point)) when it runs over TLS and
    /// SCRAM-SHA-256-PLUS was offered; `None` on plaintext connections. `plus` says the client
    /// selected SCRAM-SHA-256-PLUS. The gs2 flag must agree: `p=tls-server-end-point` exactly
    /// when `plus`; `y` (the client could bind but thinks the server cannot) is a downgrade
    /// when binding was offered and fails with [`WireError::ChannelBinding`].
    pub fn with_channel_binding(
        mut self,
        tls_server_end_point: Option<Vec<u8>>,
        plus: bool,
    ) -> Self {
        self.binding = tls_server_end_point;
        self.plus = plus;
        self
    }

    /// Whether the exchange completed successfully.
    pub fn is_authenticated(&self) -> bool {
        matches!(
            self.state,
            State::Done {
                authenticated: true
            }
        )
    }

    /// Consumes the client-first message; returns the server-first message.
    ///
    /// A gs2 flag that does not match the selected mechanism is
    /// [`WireError::ChannelBinding`]; an authorization identity and mandatory
    /// extensions are rejected with [`WireError::FeatureNotSupported`].
    pub fn client_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, WireError> {
        let mut raw = [0u8; NONCE_RAW_LEN];
        rand::fill(&mut raw[..]);
        self.client_first_with_nonce(msg, &B64.encode(raw))
    }

    pub(crate) fn client_first_with_nonce(
        &mut self,
        msg: &[u8],
        server_nonce: &str,
    ) -> Result<Vec<u8>, WireError> {
        if !matches!(self.state, State::ClientFirst) {
            return Err(OUT_OF_ORDER);
        }
        self.state = State::Done {
            authenticated: false,
        };
        let msg = core::str::from_utf8(msg).map_err(|_| MALFORMED)?;
        let (cbind, bare) = parse_gs2_header(msg, self.binding.as_deref(), self.plus)?;
        let client_nonce = parse_client_first_bare(bare)?;
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&self.secret.salt),
            self.secret.iterations
        );
        let out = server_first.as_bytes().to_vec();
        self.state = State::ClientFinal {
            cbind,
            nonce,
            client_first_bare: bare.to_owned(),
            server_first,
        };
        Ok(out)
    }

    /// Consumes the client-final message, verifies the proof (in constant
    /// time) and returns the server-final message `v=<ServerSignature>`.
    /// A wrong proof is [`WireError::AuthFailed`] (SQLSTATE 28P01).
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, WireError> {
        let state = core::mem::replace(
            &mut self.state,
            State::Done {
                authenticated: false,
            },
        );
        let State::ClientFinal {
            cbind,
            nonce,
            client_first_bare,
            server_first,
        } = state
        else {
            return Err(OUT_OF_ORDER);
        };
        let msg = core::str::from_utf8(msg).map_err(|_| MALFORMED)?;
        // The proof is always the last attribute; base64 has no commas.
        let (without_proof, proof) = msg.rsplit_once(',').ok_or(MALFORMED)?;
        let proof = proof.strip_prefix("p=").ok_or(MALFORMED)?;
        let mut attrs = without_proof.split(',');
        let c = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(MALFORMED)?;
        if !ct_eq(c.as_bytes(), cbind.as_bytes()) {
            return Err(WireError::Malformed("SCRAM channel binding check failed"));
        }
        let r = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(MALFORMED)?;
        if r != nonce {
            return Err(WireError::Malformed("SCRAM nonce mismatch"));
        }
        if !attrs.all(is_attr) {
            return Err(MALFORMED);
        }
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
            .ok_or(WireError::Malformed("malformed SCRAM proof"))?;

        let auth_message: [&[u8]; 5] = [
            client_first_bare.as_bytes(),
            b",",
            server_first.as_bytes(),
            b",",
            without_proof.as_bytes(),
        ];
        let client_signature = hmac_sha256(&self.secret.stored_key, &auth_message);
        let mut client_key = proof;
        xor32(&mut client_key, &client_signature);
        let proof_ok = ct_eq(&sha256(&client_key), &self.secret.stored_key);
        if !proof_ok || self.doomed {
            return Err(WireError::AuthFailed);
        }
        let server_signature = hmac_sha256(&self.secret.server_key, &auth_message);
        self.state = State::Done {
            authenticated: true,
        };
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::ClientFirst => "client-first",
            State::ClientFinal { .. } => "client-final",
            State::Done {
                authenticated: true,
            } => "authenticated",
            State::Done { .. } => "failed",
        };
        f.debug_struct("ScramServer")
            .field("state", &state)
            .finish()
    }
}

fn random32() -> [u8; 32] {
    let mut k = [0u8; 32];
    rand::fill(&mut k[..]);
    k
}

/// `attr-val`: one ASCII letter, `=`, value.
fn is_attr(a: &str) -> bool {
    let b = a.as_bytes();
    matches!(b, [l, b'=', ..] if l.is_ascii_alphabetic())
}

/// Splits `gs2-header client-first-message-bare`; returns the expected
/// base64 `c=` value and the bare message. `binding` is the connection's
/// `tls-server-end-point` data when SCRAM-SHA-256-PLUS was offered, `plus`
/// whether the client selected it.
fn parse_gs2_header<'m>(
    msg: &'m str,
    binding: Option<&[u8]>,
    plus: bool,
) -> Result<(String, &'m str), WireError> {
    let mut parts = msg.splitn(3, ',');
    let flag = parts.next().unwrap_or_default();
    let data: &[u8] = match flag {
        "n" | "y" if plus => {
            return Err(WireError::ChannelBinding(
                "the client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data",
            ))
        }
        "n" => &[],
        // The client can bind but believes the server cannot: on a connection that offered
        // SCRAM-SHA-256-PLUS that is a downgrade by someone in the middle.
        "y" if binding.is_some() => {
            return Err(WireError::ChannelBinding(
                "the client supports SCRAM channel binding but thinks the server does not, \
                 although this connection offered SCRAM-SHA-256-PLUS",
            ))
        }
        "y" => &[],
        f if f.starts_with("p=") => {
            if !plus {
                return Err(WireError::ChannelBinding(
                    "the client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data",
                ));
            }
            if f != "p=tls-server-end-point" {
                return Err(WireError::ChannelBinding(
                    "unsupported SCRAM channel-binding type (only tls-server-end-point is offered)",
                ));
            }
            binding.ok_or(WireError::ChannelBinding(
                "channel binding is only possible on TLS connections",
            ))?
        }
        _ => return Err(MALFORMED),
    };
    let authzid = parts.next().ok_or(MALFORMED)?;
    if authzid.starts_with("a=") {
        return Err(WireError::FeatureNotSupported(
            "client uses authorization identity, but it is not supported",
        ));
    }
    if !authzid.is_empty() {
        return Err(MALFORMED);
    }
    let bare = parts.next().ok_or(MALFORMED)?;
    // The gs2 header is everything before the bare message, both commas included.
    let header = &msg[..msg.len() - bare.len()];
    let mut input = Vec::with_capacity(header.len() + data.len());
    input.extend_from_slice(header.as_bytes());
    input.extend_from_slice(data);
    Ok((B64.encode(input), bare))
}

/// Validates `n=<ignored>,r=<nonce>[,ext...]`; returns the client nonce.
fn parse_client_first_bare(bare: &str) -> Result<&str, WireError> {
    if bare.starts_with("m=") {
        return Err(WireError::FeatureNotSupported(
            "client requires an unsupported SCRAM extension",
        ));
    }
    let mut attrs = bare.split(',');
    attrs
        .next()
        .and_then(|a| a.strip_prefix("n="))
        .ok_or(MALFORMED)?;
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(MALFORMED)?;
    if nonce.is_empty() || !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(WireError::Malformed(
            "non-printable characters in SCRAM nonce",
        ));
    }
    if !attrs.all(is_attr) {
        return Err(MALFORMED);
    }
    Ok(nonce)
}
