//! The upstream crate's one error type. Each variant knows the SQLSTATE a client should see.

use bytes::Bytes;

/// Why talking to an upstream server failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP connection failed or broke.
    #[error("connection to server {addr} failed: {source}")]
    Io {
        /// `host:port` of the server.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TLS towards the server could not be set up as its `sslmode` demands (the server does not
    /// offer TLS, the handshake failed, the certificate was not trusted or names another host).
    #[error("TLS with server {addr} failed: {detail}")]
    Tls {
        /// `host:port` of the server.
        addr: String,
        /// What went wrong.
        detail: String,
    },
    /// A TLS setting names a file that does not hold what it should (checked at start).
    #[error("{key}: {detail}")]
    TlsSetting {
        /// The configuration key, e.g. `nodes[0].ssl_ca_file`.
        key: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The server did not answer in time.
    #[error("timeout connecting to server {addr}")]
    Timeout {
        /// `host:port` of the server.
        addr: String,
    },
    /// The server refused with an ErrorResponse; `frame` is the whole message, to forward as is.
    #[error("server error {code}: {message}")]
    Server {
        /// SQLSTATE from the server.
        code: String,
        /// Primary message from the server.
        message: String,
        /// The ErrorResponse frame, forwarded to the client unchanged.
        frame: Bytes,
    },
    /// The server sent something that is not valid protocol.
    #[error("protocol error from server {addr}: {detail}")]
    Protocol {
        /// `host:port` of the server.
        addr: String,
        /// What was wrong.
        detail: String,
    },
    /// The server asked for an authentication method Meridian does not speak.
    #[error("server {addr} requested unsupported authentication method {code}")]
    UnsupportedAuth {
        /// `host:port` of the server.
        addr: String,
        /// The authentication request code.
        code: i32,
    },
    /// No writable primary is known.
    #[error("no primary server is available")]
    NoPrimary,
    /// Transaction pooling: every connection of the pool stayed busy for `checkout_timeout`.
    #[error("could not get a server connection within checkout_timeout ({timeout_ms} ms): all pool_size = {pool_size} connections to node {node} are busy")]
    PoolTimeout {
        /// The node's name.
        node: String,
        /// The pool's size.
        pool_size: usize,
        /// `pool.checkout_timeout` in milliseconds.
        timeout_ms: u64,
    },
}

impl UpstreamError {
    /// The SQLSTATE to report to a client for this failure.
    pub fn sqlstate(&self) -> &str {
        match self {
            UpstreamError::Io { .. } | UpstreamError::Timeout { .. } => "08006",
            UpstreamError::Tls { .. } => "08001",
            UpstreamError::TlsSetting { .. } => "F0000",
            UpstreamError::Server { code, .. } => code,
            UpstreamError::Protocol { .. } => "08P01",
            UpstreamError::UnsupportedAuth { .. } => "28000",
            UpstreamError::NoPrimary => "57P03",
            UpstreamError::PoolTimeout { .. } => "53300",
        }
    }
}
