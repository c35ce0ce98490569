//! TLS towards the nodes: one client configuration per node, built from its `sslmode` and CA
//! file, used by the session's server connections ([`connect`](crate::connect)) and by the
//! tokio-postgres connections of the monitor, failover controller, replay watcher and function
//! loader ([`NodeTls::postgres`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use meridian_config::{Config, SslMode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use crate::stream::Stream;
use crate::UpstreamError;

/// How Meridian's connections to one node use TLS.
#[derive(Clone)]
pub struct NodeTls {
    mode: SslMode,
    /// `None` under `disable`.
    config: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls")
            .field("mode", &self.mode.as_str())
            .finish_non_exhaustive()
    }
}

impl NodeTls {
    /// Plaintext only.
    pub fn disabled() -> NodeTls {
        NodeTls {
            mode: SslMode::Disable,
            config: None,
        }
    }

    /// The setting for node `index` (its own keys, else `[tls.upstream]`), with the CA file
    /// read and parsed. Errors name the key.
    pub fn for_node(config: &Config, index: usize) -> Result<NodeTls, UpstreamError> {
        let setting = config.node_tls(index);
        let mode = setting.sslmode;
        // A Unix-domain socket carries no TLS (as in libpq, `sslmode` does not apply there).
        let unix = config
            .nodes
            .get(index)
            .is_some_and(|n| n.host.starts_with('/'));
        if mode == SslMode::Disable || unix {
            return Ok(NodeTls::disabled());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = if mode.verifies() {
            let (key, path) = match &setting.ca_file {
                Some(p) => (setting.ca_key.clone(), p.clone()),
                None => {
                    return Err(UpstreamError::TlsSetting {
                        key: setting.ca_key,
                        detail: format!("sslmode {} needs a CA file", mode.as_str()),
                    })
                }
            };
            let bad = |detail: String| UpstreamError::TlsSetting {
                key: key.clone(),
                detail,
            };
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(&path)
                .map_err(|e| bad(format!("cannot read {path}: {e}")))?;
            for cert in certs {
                let cert = cert.map_err(|e| bad(format!("bad PEM in {path}: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("bad CA certificate in {path}: {e}")))?;
            }
            if roots.is_empty() {
                return Err(bad(format!("no certificate in {path}")));
            }
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| bad(e.to_string()))?;
            Arc::new(Verifier {
                webpki: Some(webpki),
                check_name: mode == SslMode::VerifyFull,
                provider: provider.clone(),
            })
        } else {
            Arc::new(Verifier {
                webpki: None,
                check_name: false,
                provider: provider.clone(),
            })
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| UpstreamError::TlsSetting {
                key: "tls.upstream".into(),
                detail: e.to_string(),
            })?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(NodeTls {
            mode,
            config: Some(Arc::new(config)),
        })
    }

    /// The setting for the configured node at `host:port` (the `[tls.upstream]` defaults for an
    /// address no node has).
    pub fn for_host(config: &Config, host: &str, port: u16) -> Result<NodeTls, UpstreamError> {
        let index = config
            .nodes
            .iter()
            .position(|n| n.host == host && n.port == port)
            .unwrap_or(config.nodes.len());
        NodeTls::for_node(config, index)
    }

    /// The mode in force.
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// Negotiates TLS on a fresh connection to `host` as the mode says: SSLRequest, then the
    /// handshake on `S`; on `N`, plaintext under `prefer` and an error otherwise.
    pub(crate) async fn negotiate(
        &self,
        tcp: TcpStream,
        host: &str,
        addr_text: &str,
    ) -> Result<Stream, UpstreamError> {
        let mut stream = Stream::Plain(tcp);
        let Some(config) = &self.config else {
            return Ok(stream);
        };
        let tls_err = |detail: String| UpstreamError::Tls {
            addr: addr_text.to_string(),
            detail,
        };
        let io = |source| UpstreamError::Io {
            addr: addr_text.to_string(),
            source,
        };
        let mut out = BytesMut::with_capacity(8);
        meridian_wire::startup::encode_ssl_request(&mut out);
        stream.write_all(&out).await.map_err(io)?;
        // Exactly one byte: anything after it that is not TLS must not be taken as the
        // server's (it could be injected by someone in the middle).
        let mut answer = [0u8; 1];
        stream.read_exact(&mut answer).await.map_err(io)?;
        match answer[0] {
            b'S' => {}
            b'N' if self.mode == SslMode::Prefer => return Ok(stream),
            b'N' => {
                return Err(tls_err(format!(
                    "the server does not support SSL, but sslmode is {}",
                    self.mode.as_str()
                )))
            }
            other => {
                return Err(tls_err(format!(
                    "unexpected answer 0x{other:02x} to SSLRequest"
                )))
            }
        }
        let name = server_name(host).map_err(tls_err)?;
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        stream
            .connect_tls(&connector, name)
            .await
            .map_err(|e| tls_err(e.to_string()))?;
        Ok(stream)
    }

    /// What a tokio-postgres connection to this node needs: its `ssl_mode` and a connector.
    pub fn postgres(&self) -> (tokio_postgres::config::SslMode, PgTls) {
        let mode = match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        };
        (mode, PgTls(self.config.clone()))
    }

    /// Applies this setting to a tokio-postgres configuration and returns the connector to
    /// connect with.
    pub fn configure(&self, pg: &mut tokio_postgres::Config) -> PgTls {
        let (mode, tls) = self.postgres();
        pg.ssl_mode(mode);
        tls
    }
}

/// The TLS settings of every configured node, loaded once (CA files read and parsed) for the
/// sessions' server connections.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    nodes: Vec<(String, u16, NodeTls)>,
    default: NodeTls,
}

impl Default for UpstreamTls {
    fn default() -> Self {
        UpstreamTls {
            nodes: Vec::new(),
            default: NodeTls::disabled(),
        }
    }
}

impl UpstreamTls {
    /// Loads the setting of every node and the `[tls.upstream]` defaults. Errors name the key.
    pub fn from_config(config: &Config) -> Result<UpstreamTls, UpstreamError> {
        let nodes = config
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| Ok((n.host.clone(), n.port, NodeTls::for_node(config, i)?)))
            .collect::<Result<_, UpstreamError>>()?;
        Ok(UpstreamTls {
            nodes,
            default: NodeTls::for_node(config, config.nodes.len())?,
        })
    }

    /// The setting for the node at `host:port` (a cheap clone).
    pub fn for_host(&self, host: &str, port: u16) -> NodeTls {
        self.nodes
            .iter()
            .find(|(h, p, _)| h == host && *p == port)
            .map_or(&self.default, |(_, _, t)| t)
            .clone()
    }
}

fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} is not a valid server name: {e}"))
}

/// Certificate checks for one mode: none (`prefer`, `require`), the chain (`verify-ca`), the
/// chain and the name (`verify-full`). Handshake signatures are always verified.
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Ok(v) => Ok(v),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A tokio-postgres TLS connector over rustls with this node's verification, offering
/// `tls-server-end-point` channel binding. `PgTls(None)` never negotiates TLS.
#[derive(Clone)]
pub struct PgTls(Option<Arc<ClientConfig>>);

impl MakeTlsConnect<tokio_postgres::Socket> for PgTls {
    type Stream = PgTlsStream;
    type TlsConnect = PgTlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<PgTlsConnect> {
        // Without TLS there is no name to check (a Unix-domain socket has none).
        let name = match &self.0 {
            Some(_) => Some(server_name(domain).map_err(io::Error::other)?),
            None => None,
        };
        Ok(PgTlsConnect {
            config: self.0.clone(),
            name,
        })
    }
}

/// One connection attempt of [`PgTls`].
pub struct PgTlsConnect {
    config: Option<Arc<ClientConfig>>,
    name: Option<ServerName<'static>>,
}

impl TlsConnect<tokio_postgres::Socket> for PgTlsConnect {
    type Stream = PgTlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<PgTlsStream>> + Send>>;

    fn connect(self, socket: tokio_postgres::Socket) -> Self::Future {
        Box::pin(async move {
            let (Some(config), Some(name)) = (self.config, self.name) else {
                return Err(io::Error::other("TLS is disabled"));
            };
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, socket)
                .await?;
            Ok(PgTlsStream(tls))
        })
    }
}

/// A TLS stream to a node for tokio-postgres.
pub struct PgTlsStream(tokio_rustls::client::TlsStream<tokio_postgres::Socket>);

impl tokio_postgres::tls::TlsStream for PgTlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, conn) = self.0.get_ref();
        match conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| meridian_wire::auth::tls_server_end_point(c).ok())
        {
            Some(data) => ChannelBinding::tls_server_end_point(data),
            None => ChannelBinding::none(),
        }
    }
}

impl AsyncRead for PgTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for PgTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
