//! The crate-wide error type.

use bytes::BytesMut;

/// Every error produced by this crate.
///
/// Each variant maps to a PostgreSQL SQLSTATE via [`WireError::sqlstate`], so
/// the proxy can report it to a client with
/// [`WireError::write_error_response`]. Messages never echo secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A length field is smaller than the smallest legal value.
    #[error("invalid message length {len}")]
    InvalidLength {
        /// The length that was announced.
        len: usize,
    },
    /// A length field exceeds the configured maximum.
    #[error("message length {len} exceeds the limit of {max} bytes")]
    MessageTooLong {
        /// The length that was announced.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The message is structurally invalid.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// A string that must be UTF-8 is not.
    #[error("invalid UTF-8 in {0}")]
    InvalidUtf8(&'static str),
    /// The startup packet carries more parameters than allowed.
    #[error("too many startup parameters (limit {limit})")]
    TooManyParams {
        /// The configured maximum number of parameters.
        limit: usize,
    },
    /// The client requested a protocol major version other than 3.
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0")]
    UnsupportedProtocol {
        /// Requested major version.
        major: u16,
        /// Requested minor version.
        minor: u16,
    },
    /// The startup packet has no (or an empty) `user` parameter.
    #[error("no PostgreSQL user name specified in startup packet")]
    MissingUser,
    /// The client asked for a feature this proxy does not implement
    /// (e.g. SCRAM channel binding or an authorization identity).
    #[error("{0}")]
    FeatureNotSupported(&'static str),
    /// The SCRAM channel-binding negotiation is inconsistent: the gs2 flag does not match the
    /// mechanism the client selected, or (a downgrade) the client claims the server cannot bind
    /// while this connection offered SCRAM-SHA-256-PLUS.
    #[error("SCRAM channel binding negotiation error: {0}")]
    ChannelBinding(&'static str),
    /// The client's credentials were rejected.
    #[error("password authentication failed")]
    AuthFailed,
    /// A stored SCRAM secret (verifier) could not be parsed or is unusable.
    #[error("invalid SCRAM secret: {0}")]
    InvalidSecret(&'static str),
    /// Authenticating the proxy to the upstream server failed on the proxy's
    /// side (bad server message or server signature mismatch).
    #[error("upstream authentication failed: {0}")]
    UpstreamAuth(String),
}

impl WireError {
    /// The SQLSTATE code to report for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            WireError::InvalidLength { .. }
            | WireError::MessageTooLong { .. }
            | WireError::Malformed(_)
            | WireError::TooManyParams { .. }
            | WireError::ChannelBinding(_) => "08P01",
            WireError::InvalidUtf8(_) => "22021",
            WireError::UnsupportedProtocol { .. } | WireError::FeatureNotSupported(_) => "0A000",
            WireError::MissingUser => "28000",
            WireError::AuthFailed | WireError::InvalidSecret(_) => "28P01",
            WireError::UpstreamAuth(_) => "08001",
        }
    }

    /// Appends a `FATAL` ErrorResponse describing this error to `buf`.
    pub fn write_error_response(&self, buf: &mut BytesMut) {
        crate::messages::error_response(buf, "FATAL", self.sqlstate(), &self.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates() {
        assert_eq!(WireError::InvalidLength { len: 1 }.sqlstate(), "08P01");
        assert_eq!(
            WireError::MessageTooLong { len: 9, max: 1 }.sqlstate(),
            "08P01"
        );
        assert_eq!(
            WireError::UnsupportedProtocol { major: 2, minor: 0 }.sqlstate(),
            "0A000"
        );
        assert_eq!(WireError::MissingUser.sqlstate(), "28000");
        assert_eq!(WireError::AuthFailed.sqlstate(), "28P01");
    }
}
