//! Client-facing TLS: the acceptor built from `[tls] cert`/`key`, and the
//! `tls-server-end-point` channel-binding data of that certificate, which SCRAM-SHA-256-PLUS
//! binds to.

use std::sync::Arc;

use meridian_config::{TlsConfig, TlsVersion};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::SessionError;

/// TLS towards clients, ready to accept handshakes.
pub struct ClientTls {
    acceptor: TlsAcceptor,
    end_point: Vec<u8>,
    required: bool,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Loads the certificate chain and key; `None` when `[tls]` offers no TLS to clients.
    /// Errors name the key at fault.
    pub fn from_config(tls: &TlsConfig) -> Result<Option<ClientTls>, SessionError> {
        let (Some(cert_path), Some(key_path)) = (&tls.cert, &tls.key) else {
            return Ok(None);
        };
        let bad = |key: &str, detail: String| SessionError::TlsSetting {
            key: key.to_string(),
            detail,
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
            .map_err(|e| bad("tls.cert", format!("cannot read {cert_path}: {e}")))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad("tls.cert", format!("bad PEM in {cert_path}: {e}")))?;
        let Some(leaf) = chain.first() else {
            return Err(bad("tls.cert", format!("no certificate in {cert_path}")));
        };
        let end_point = meridian_wire::auth::tls_server_end_point(leaf)
            .map_err(|e| bad("tls.cert", format!("{cert_path}: {e}")))?;
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
            bad(
                "tls.key",
                format!("no usable private key in {key_path}: {e}"),
            )
        })?;
        let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_protocol_version {
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| bad("tls.min_protocol_version", e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| {
                bad(
                    "tls.key",
                    format!("{key_path} does not go with {cert_path}: {e}"),
                )
            })?;
        Ok(Some(ClientTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            end_point,
            required: tls.require_client_tls,
        }))
    }

    /// The acceptor for handshakes.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// The `tls-server-end-point` channel-binding data of the certificate.
    pub fn end_point(&self) -> &[u8] {
        &self.end_point
    }

    /// `tls.require_client_tls`.
    pub fn required(&self) -> bool {
        self.required
    }
}
