//! Client side of SCRAM-SHA-256, for authenticating to the upstream server.
//! Wraps `postgres_protocol`'s implementation (SASLprep, iteration-count cap,
//! optional `tls-server-end-point` channel binding).

use core::fmt;

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use crate::WireError;

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
    inner: ScramSha256,
    initial: Vec<u8>,
    step: Step,
}

impl ScramClient {
    /// Starts an exchange for `password` with a fresh random nonce.
    pub fn new(password: impl AsRef<[u8]>) -> Self {
        Self::with_binding(password, ClientBinding::None)
    }

    /// Starts an exchange with the given channel-binding flag.
    pub fn with_binding(password: impl AsRef<[u8]>, binding: ClientBinding) -> Self {
        let binding = match binding {
            ClientBinding::None => ChannelBinding::unsupported(),
            ClientBinding::Unrequested => ChannelBinding::unrequested(),
            ClientBinding::TlsServerEndPoint(data) => ChannelBinding::tls_server_end_point(data),
        };
        let inner = ScramSha256::new(password.as_ref(), binding);
        let initial = inner.message().to_vec();
        ScramClient {
            inner,
            initial,
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
        self.inner
            .update(server_first)
            .map_err(|e| WireError::UpstreamAuth(e.to_string()))?;
        self.step = Step::Updated;
        Ok(self.inner.message().to_vec())
    }

    /// Verifies the server-final message (the server's signature).
    pub fn finish(&mut self, server_final: &[u8]) -> Result<(), WireError> {
        if self.step != Step::Updated {
            return Err(upstream("unexpected SCRAM server-final message"));
        }
        self.step = Step::Done;
        self.inner
            .finish(server_final)
            .map_err(|e| WireError::UpstreamAuth(e.to_string()))
    }
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
