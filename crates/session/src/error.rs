//! The session crate's one error type: why a client session ended or a request failed,
//! with the SQLSTATE the client is told.

use meridian_upstream::UpstreamError;
use meridian_wire::WireError;

/// A failure while serving a client.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The client sent bytes that are not valid protocol.
    #[error("{0}")]
    Wire(#[from] WireError),
    /// A server-side failure.
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
    /// Authentication failed; the message is safe to show the client.
    #[error("{message}")]
    Auth {
        /// SQLSTATE (28P01 or 28000).
        code: &'static str,
        /// Client-facing message.
        message: String,
    },
    /// A protocol rule was broken by the client.
    #[error("{0}")]
    Protocol(String),
    /// Something the client asked for that Meridian does not offer.
    #[error("{0}")]
    Unsupported(String),
    /// The client did not finish startup in time.
    #[error("timeout waiting for startup packet or authentication")]
    StartupTimeout,
    /// Too many client connections.
    #[error("sorry, too many clients already")]
    TooManyClients,
    /// The client's socket failed or closed.
    #[error("client connection lost: {0}")]
    ClientIo(std::io::Error),
    /// A `[tls]` file does not hold what it should (checked at start).
    #[error("{key}: {detail}")]
    TlsSetting {
        /// The configuration key, e.g. `tls.cert`.
        key: String,
        /// What is wrong with it.
        detail: String,
    },
}

impl SessionError {
    /// SQLSTATE to report to the client.
    pub fn sqlstate(&self) -> &str {
        match self {
            SessionError::Wire(e) => e.sqlstate(),
            SessionError::Upstream(e) => e.sqlstate(),
            SessionError::Auth { code, .. } => code,
            SessionError::Protocol(_) => "08P01",
            SessionError::Unsupported(_) => "0A000",
            SessionError::StartupTimeout => "08006",
            SessionError::TooManyClients => "53300",
            SessionError::ClientIo(_) => "08006",
            SessionError::TlsSetting { .. } => "F0000",
        }
    }

    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SessionError::Wire(_) | SessionError::Protocol(_) => "protocol",
            SessionError::Upstream(_) => "upstream",
            SessionError::Auth { .. } => "auth",
            SessionError::Unsupported(_) => "unsupported",
            SessionError::StartupTimeout => "startup_timeout",
            SessionError::TooManyClients => "too_many_clients",
            SessionError::ClientIo(_) => "client_io",
            SessionError::TlsSetting { .. } => "tls_setting",
        }
    }
}
