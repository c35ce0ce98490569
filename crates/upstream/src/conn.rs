//! One connection to an upstream Postgres server: TCP connect (or a Unix-domain socket when the
//! node's `host` is a directory, as in libpq), TLS as the node's `sslmode` says, StartupMessage,
//! whatever
//! authentication the server asks for (SCRAM-SHA-256, md5, cleartext, trust), then the
//! ParameterStatus/BackendKeyData exchange up to the first ReadyForQuery.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use meridian_wire::{auth, frame, messages, parse, startup, tag::backend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::stream::{Stream, StreamReader, StreamWriter};
use crate::tls::NodeTls;
use crate::UpstreamError;

/// What to connect with.
#[derive(Debug, Clone)]
pub struct ConnectParams<'a> {
    /// Node index in the topology.
    pub node: usize,
    /// Host name or address, or the directory of the server's Unix-domain socket (a path
    /// starting with `/`).
    pub host: &'a str,
    /// TCP port (with a socket directory: the number in the socket's name).
    pub port: u16,
    /// Role to log in as.
    pub user: &'a str,
    /// Its password (unused under trust).
    pub password: &'a str,
    /// Database.
    pub database: &'a str,
    /// Other startup parameters (application_name, options, client_encoding, ...).
    pub extra: &'a [(String, String)],
    /// Largest message accepted from the server.
    pub max_message_bytes: usize,
    /// Bound on the whole connect + authenticate exchange.
    pub timeout: Duration,
    /// TLS towards this node.
    pub tls: &'a NodeTls,
}

/// Where a server connection goes: a TCP address, or a Unix-domain socket's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    /// TCP.
    Tcp(SocketAddr),
    /// Unix-domain socket.
    Unix(Arc<Path>),
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerAddr::Tcp(a) => a.fmt(f),
            ServerAddr::Unix(p) => p.display().fmt(f),
        }
    }
}

/// The path of the Unix-domain socket of a server whose `host` is a directory (starts with `/`,
/// as in libpq): `<dir>/.s.PGSQL.<port>`. `None` for a host name or address.
pub fn unix_socket_path(host: &str, port: u16) -> Option<PathBuf> {
    host.starts_with('/')
        .then(|| Path::new(host).join(format!(".s.PGSQL.{port}")))
}

/// An authenticated server connection, idle (ReadyForQuery received).
#[derive(Debug)]
pub struct BackendConn {
    /// Read half of the connection (TCP or TLS).
    pub rd: StreamReader,
    /// Write half of the connection.
    pub wr: StreamWriter,
    /// Bytes read from the server and not yet consumed.
    pub rbuf: BytesMut,
    /// Node index in the topology.
    pub node: usize,
    /// Server address, for CancelRequests.
    pub addr: ServerAddr,
    /// Backend process id (BackendKeyData).
    pub pid: i32,
    /// Cancel secret (BackendKeyData).
    pub secret: i32,
    /// The ParameterStatus frames the server sent at startup, concatenated, to replay to a client.
    pub param_frames: Bytes,
    /// Transaction status from the last ReadyForQuery.
    pub tx_status: u8,
}

/// Connects and authenticates, bounded by `params.timeout`.
pub async fn connect(params: &ConnectParams<'_>) -> Result<BackendConn, UpstreamError> {
    let socket = unix_socket_path(params.host, params.port);
    let addr_text = match &socket {
        Some(path) => path.display().to_string(),
        None => format!("{}:{}", params.host, params.port),
    };
    match tokio::time::timeout(params.timeout, connect_inner(params, socket, &addr_text)).await {
        Ok(result) => result,
        Err(_) => Err(UpstreamError::Timeout { addr: addr_text }),
    }
}

/// `socket`: the node's Unix-domain socket, when its `host` is a directory.
async fn connect_inner(
    params: &ConnectParams<'_>,
    socket: Option<PathBuf>,
    addr_text: &str,
) -> Result<BackendConn, UpstreamError> {
    let io = |source| UpstreamError::Io {
        addr: addr_text.to_string(),
        source,
    };
    let (stream, addr) = match socket {
        // No TLS on a Unix-domain socket (libpq ignores `sslmode` there too).
        Some(path) => {
            let unix = UnixStream::connect(&path).await.map_err(io)?;
            (Stream::Unix(unix), ServerAddr::Unix(path.into()))
        }
        None => {
            let tcp = TcpStream::connect((params.host, params.port))
                .await
                .map_err(io)?;
            tcp.set_nodelay(true).map_err(io)?;
            let addr = ServerAddr::Tcp(tcp.peer_addr().map_err(io)?);
            let stream = params.tls.negotiate(tcp, params.host, addr_text).await?;
            (stream, addr)
        }
    };
    // On TLS, SCRAM binds to the server's certificate when the server offers
    // SCRAM-SHA-256-PLUS.
    let end_point = stream.peer_end_point();
    let (rd, wr) = stream.into_split();
    let mut conn = BackendConn {
        rd,
        wr,
        rbuf: BytesMut::with_capacity(16 * 1024),
        node: params.node,
        addr,
        pid: 0,
        secret: 0,
        param_frames: Bytes::new(),
        tx_status: b'I',
    };

    let mut out = BytesMut::with_capacity(256);
    let mut startup_params: Vec<(&str, &str)> =
        vec![("user", params.user), ("database", params.database)];
    for (k, v) in params.extra {
        if k != "user" && k != "database" && !k.starts_with("_pq_.") {
            startup_params.push((k.as_str(), v.as_str()));
        }
    }
    startup::encode_startup(&mut out, &startup_params);
    conn.wr.write_all(&out).await.map_err(io)?;

    let mut scram: Option<auth::ScramClient> = None;
    let mut param_frames = BytesMut::new();
    loop {
        let (tag, frame) = conn.read_frame(params.max_message_bytes, addr_text).await?;
        let body = frame::body(&frame);
        out.clear();
        match tag {
            backend::AUTHENTICATION => {
                let request = parse::auth_request(body).map_err(|e| protocol(addr_text, e))?;
                match request {
                    parse::AuthRequest::Ok => {}
                    parse::AuthRequest::Cleartext => {
                        messages::password_message(&mut out, params.password.as_bytes());
                    }
                    parse::AuthRequest::Md5 { salt } => {
                        let hash = auth::md5_password_hash(params.user, params.password, salt);
                        messages::password_message(&mut out, hash.as_bytes());
                    }
                    parse::AuthRequest::Sasl { mechanisms } => {
                        if !mechanisms.contains(&"SCRAM-SHA-256") {
                            return Err(UpstreamError::UnsupportedAuth {
                                addr: addr_text.into(),
                                code: 10,
                            });
                        }
                        // As libpq: PLUS when offered on TLS; on TLS without the offer, `y`
                        // (the server can then tell a downgrade); on plaintext, `n`.
                        let (mechanism, binding) = match &end_point {
                            Some(data) if mechanisms.contains(&auth::SCRAM_SHA_256_PLUS) => (
                                auth::SCRAM_SHA_256_PLUS,
                                auth::ClientBinding::TlsServerEndPoint(data.clone()),
                            ),
                            Some(_) => (auth::SCRAM_SHA_256, auth::ClientBinding::Unrequested),
                            None => (auth::SCRAM_SHA_256, auth::ClientBinding::None),
                        };
                        let client = auth::ScramClient::with_binding(params.password, binding);
                        messages::sasl_initial_response(&mut out, mechanism, &client.initial());
                        scram = Some(client);
                    }
                    parse::AuthRequest::SaslContinue(data) => {
                        let client = scram
                            .as_mut()
                            .ok_or_else(|| protocol(addr_text, "unexpected SASL continue"))?;
                        let reply = client.update(data).map_err(|e| protocol(addr_text, e))?;
                        messages::sasl_response(&mut out, &reply);
                    }
                    parse::AuthRequest::SaslFinal(data) => {
                        let client = scram
                            .as_mut()
                            .ok_or_else(|| protocol(addr_text, "unexpected SASL final"))?;
                        client.finish(data).map_err(|e| protocol(addr_text, e))?;
                    }
                    parse::AuthRequest::Other(code) => {
                        return Err(UpstreamError::UnsupportedAuth {
                            addr: addr_text.into(),
                            code,
                        })
                    }
                }
                if !out.is_empty() {
                    conn.wr.write_all(&out).await.map_err(io)?;
                }
            }
            backend::ERROR_RESPONSE => return Err(server_error(frame)),
            backend::PARAMETER_STATUS => param_frames.extend_from_slice(&frame),
            backend::BACKEND_KEY_DATA => {
                let (pid, secret) =
                    parse::backend_key_data(body).map_err(|e| protocol(addr_text, e))?;
                conn.pid = pid;
                conn.secret = secret;
            }
            backend::READY_FOR_QUERY => {
                conn.tx_status = parse::ready_status(body).unwrap_or(b'I');
                conn.param_frames = param_frames.freeze();
                return Ok(conn);
            }
            // NoticeResponse, NegotiateProtocolVersion: nothing to do during startup.
            _ => {}
        }
    }
}

impl BackendConn {
    /// Reads one whole frame (tag and bytes including the header).
    pub async fn read_frame(
        &mut self,
        max: usize,
        addr_text: &str,
    ) -> Result<(u8, Bytes), UpstreamError> {
        loop {
            if let Some(found) =
                frame::split_frame(&mut self.rbuf, max).map_err(|e| protocol(addr_text, e))?
            {
                return Ok(found);
            }
            let n = self
                .rd
                .read_buf(&mut self.rbuf)
                .await
                .map_err(|source| UpstreamError::Io {
                    addr: addr_text.into(),
                    source,
                })?;
            if n == 0 {
                return Err(UpstreamError::Io {
                    addr: addr_text.into(),
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                });
            }
        }
    }
}

/// Sends a CancelRequest for `pid`/`secret` to `addr` (fire and forget, bounded).
pub async fn send_cancel(addr: &ServerAddr, pid: i32, secret: i32) -> std::io::Result<()> {
    let fut = async {
        let mut stream = match addr {
            ServerAddr::Tcp(a) => Stream::Plain(TcpStream::connect(a).await?),
            ServerAddr::Unix(p) => Stream::Unix(UnixStream::connect(p).await?),
        };
        let mut out = BytesMut::with_capacity(16);
        startup::encode_cancel(&mut out, pid, secret);
        stream.write_all(&out).await?;
        // Postgres closes the connection without a reply; wait for that so the cancel is queued.
        let mut sink = [0u8; 1];
        let _ = stream.read(&mut sink).await;
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Turns an ErrorResponse frame into an error that carries it for forwarding.
pub fn server_error(frame: Bytes) -> UpstreamError {
    let (code, message) = match parse::ErrorFields::parse(frame::body(&frame)) {
        Ok(f) => (
            f.code().unwrap_or("XX000").to_string(),
            f.message().unwrap_or_default().to_string(),
        ),
        Err(_) => ("XX000".to_string(), String::new()),
    };
    UpstreamError::Server {
        code,
        message,
        frame,
    }
}

fn protocol(addr: &str, detail: impl std::fmt::Display) -> UpstreamError {
    UpstreamError::Protocol {
        addr: addr.into(),
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_host_is_a_unix_socket() {
        assert_eq!(
            unix_socket_path("/var/run/postgresql", 5433),
            Some(PathBuf::from("/var/run/postgresql/.s.PGSQL.5433"))
        );
        assert_eq!(unix_socket_path("127.0.0.1", 5432), None);
        assert_eq!(unix_socket_path("db.internal", 5432), None);
        let addr = ServerAddr::Unix(Path::new("/tmp/.s.PGSQL.5432").into());
        assert_eq!(addr.to_string(), "/tmp/.s.PGSQL.5432");
    }
}
