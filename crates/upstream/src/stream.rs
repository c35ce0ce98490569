//! A connection that is plain TCP or TLS over TCP: client connections (after SSLRequest) and
//! Meridian's own server connections (by `sslmode`), or a Unix-domain socket to a server on the
//! same host. Split into halves, it is polled by the session loop exactly like a TCP socket.
//!
//! TLS writes are *write-through*: a write reports bytes as written only once their TLS
//! records have reached the socket. A TLS library accepts plaintext and may keep the encrypted
//! records buffered when the socket is full; a caller that then has nothing more to write would
//! never flush them, and the peer would wait forever for a reply that sits in Meridian's memory.
//! Until the records are out, the write stays pending, and the caller retries it with the same
//! bytes (it has not advanced its buffer), which flushes them.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{unix, TcpStream, UnixStream};
use tokio_rustls::TlsStream;

/// A client or server connection.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (either side of the handshake).
    Tls(Box<WriteThrough>),
    /// A Unix-domain socket: a client on `proxy.unix_socket_dir`, or a server connection to a
    /// node whose `host` is a socket directory.
    Unix(UnixStream),
    /// A TLS handshake on this connection failed: it can no longer carry anything, and every
    /// read or write fails with `NotConnected`.
    Closed,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stream::Plain(_) => "Stream::Plain",
            Stream::Tls(_) => "Stream::Tls",
            Stream::Unix(_) => "Stream::Unix",
            Stream::Closed => "Stream::Closed",
        })
    }
}

impl Stream {
    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Whether the connection is a Unix-domain socket (local, and never encrypted).
    pub fn is_unix(&self) -> bool {
        matches!(self, Stream::Unix(_))
    }

    /// The `tls-server-end-point` channel-binding data of the server's certificate, on the client
    /// side of a TLS connection.
    pub fn peer_end_point(&self) -> Option<Vec<u8>> {
        let Stream::Tls(tls) = self else {
            return None;
        };
        let TlsStream::Client(c) = &tls.inner else {
            return None;
        };
        let cert = c.get_ref().1.peer_certificates()?.first()?;
        meridian_wire::auth::tls_server_end_point(cert).ok()
    }

    /// Runs the server side of a TLS handshake on a plain connection. On failure the stream is
    /// [`Stream::Closed`] (the handshake consumed the socket).
    pub async fn accept_tls(&mut self, acceptor: &tokio_rustls::TlsAcceptor) -> io::Result<()> {
        let Stream::Plain(tcp) = std::mem::replace(self, Stream::Closed) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TLS requested on a connection that is not plain TCP",
            ));
        };
        let tls = acceptor.accept(tcp).await?;
        *self = Stream::Tls(Box::new(WriteThrough::new(TlsStream::Server(tls))));
        Ok(())
    }

    /// Runs the client side of a TLS handshake on a plain connection, as
    /// [`accept_tls`](Self::accept_tls).
    pub async fn connect_tls(
        &mut self,
        connector: &tokio_rustls::TlsConnector,
        name: rustls_pki_types::ServerName<'static>,
    ) -> io::Result<()> {
        let Stream::Plain(tcp) = std::mem::replace(self, Stream::Closed) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TLS requested on a connection that is not plain TCP",
            ));
        };
        let tls = connector.connect(name, tcp).await?;
        *self = Stream::Tls(Box::new(WriteThrough::new(TlsStream::Client(tls))));
        Ok(())
    }

    /// Splits the stream into halves that can be polled independently.
    pub fn into_split(self) -> (StreamReader, StreamWriter) {
        match self {
            Stream::Plain(tcp) => {
                let (r, w) = tcp.into_split();
                (StreamReader::Plain(r), StreamWriter::Plain(w))
            }
            Stream::Tls(tls) => {
                let (r, w) = tokio::io::split(*tls);
                (StreamReader::Tls(r), StreamWriter::Tls(w))
            }
            Stream::Unix(s) => {
                let (r, w) = s.into_split();
                (StreamReader::Unix(r), StreamWriter::Unix(w))
            }
            Stream::Closed => (StreamReader::Closed, StreamWriter::Closed),
        }
    }
}

fn not_connected() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection closed after a failed TLS handshake",
    )
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Closed => Poll::Ready(Err(not_connected())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Closed => Poll::Ready(Err(not_connected())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Closed => Poll::Ready(Err(not_connected())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Closed => Poll::Ready(Err(not_connected())),
        }
    }
}

/// The read half of a [`Stream`].
#[derive(Debug)]
pub enum StreamReader {
    /// Plain TCP.
    Plain(OwnedReadHalf),
    /// TLS.
    Tls(ReadHalf<WriteThrough>),
    /// Unix-domain socket.
    Unix(unix::OwnedReadHalf),
    /// See [`Stream::Closed`].
    Closed,
}

/// The write half of a [`Stream`].
#[derive(Debug)]
pub enum StreamWriter {
    /// Plain TCP.
    Plain(OwnedWriteHalf),
    /// TLS.
    Tls(WriteHalf<WriteThrough>),
    /// Unix-domain socket.
    Unix(unix::OwnedWriteHalf),
    /// See [`Stream::Closed`].
    Closed,
}

impl StreamReader {
    /// Reads what has arrived without waiting (`WouldBlock` if nothing). On TLS, records
    /// that carry no application data (session tickets) are consumed and count as nothing.
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            StreamReader::Plain(r) => r.try_read(buf),
            StreamReader::Unix(r) => r.try_read(buf),
            StreamReader::Tls(r) => r
                .read(buf)
                .now_or_never()
                .unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into())),
            StreamReader::Closed => Err(not_connected()),
        }
    }
}

impl StreamWriter {
    /// Writes what the connection accepts right now without waiting (`WouldBlock` if nothing).
    pub fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            StreamWriter::Plain(w) => w.try_write(buf),
            StreamWriter::Unix(w) => w.try_write(buf),
            StreamWriter::Tls(w) => w
                .write(buf)
                .now_or_never()
                .unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into())),
            StreamWriter::Closed => Err(not_connected()),
        }
    }
}

impl AsyncRead for StreamReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            StreamReader::Plain(s) => Pin::new(s).poll_read(cx, buf),
            StreamReader::Unix(s) => Pin::new(s).poll_read(cx, buf),
            StreamReader::Tls(s) => Pin::new(s).poll_read(cx, buf),
            StreamReader::Closed => Poll::Ready(Err(not_connected())),
        }
    }
}

impl AsyncWrite for StreamWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            StreamWriter::Plain(s) => Pin::new(s).poll_write(cx, buf),
            StreamWriter::Unix(s) => Pin::new(s).poll_write(cx, buf),
            StreamWriter::Tls(s) => Pin::new(s).poll_write(cx, buf),
            StreamWriter::Closed => Poll::Ready(Err(not_connected())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            StreamWriter::Plain(s) => Pin::new(s).poll_flush(cx),
            StreamWriter::Unix(s) => Pin::new(s).poll_flush(cx),
            StreamWriter::Tls(s) => Pin::new(s).poll_flush(cx),
            StreamWriter::Closed => Poll::Ready(Err(not_connected())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            StreamWriter::Plain(s) => Pin::new(s).poll_shutdown(cx),
            StreamWriter::Unix(s) => Pin::new(s).poll_shutdown(cx),
            StreamWriter::Tls(s) => Pin::new(s).poll_shutdown(cx),
            StreamWriter::Closed => Poll::Ready(Err(not_connected())),
        }
    }
}

/// A TLS stream whose writes complete only once their records are on the socket (see the
/// module documentation).
pub struct WriteThrough {
    inner: TlsStream<TcpStream>,
    /// Plaintext bytes the TLS layer took in an earlier `poll_write` that returned `Pending`
    /// because their records were not all sent yet; reported once they are.
    accepted: usize,
}

impl std::fmt::Debug for WriteThrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteThrough")
            .field("accepted", &self.accepted)
            .finish_non_exhaustive()
    }
}

impl WriteThrough {
    fn new(inner: TlsStream<TcpStream>) -> Self {
        WriteThrough { inner, accepted: 0 }
    }

    /// The TLS connection (peer certificates, negotiated version, ...).
    pub fn tls(&self) -> &TlsStream<TcpStream> {
        &self.inner
    }
}

impl AsyncRead for WriteThrough {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteThrough {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.accepted == 0 {
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            this.accepted = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        }
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        // The caller retries with the same leading bytes, so `accepted` never exceeds them; the
        // bound only keeps a misbehaving caller from being told more than it offered.
        let n = this.accepted.min(buf.len());
        this.accepted = 0;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        this.accepted = 0;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::time::Duration;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpSocket;

    use super::Stream;

    /// A TLS server stream (Meridian's side) and a rustls client stream over loopback sockets
    /// with small kernel buffers, so that a few hundred KiB fill them.
    async fn pair() -> (
        Stream,
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    ) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = CertificateDer::from(params.self_signed(&key).unwrap().der().to_vec());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();

        // Accepted sockets inherit the listener's buffer sizes.
        let listen = TcpSocket::new_v4().unwrap();
        listen.set_send_buffer_size(4096).unwrap();
        listen.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = listen.listen(4).unwrap();
        let addr = listener.local_addr().unwrap();
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let (client_tcp, accepted) = tokio::join!(socket.connect(addr), listener.accept());
        let mut server = Stream::Plain(accepted.unwrap().0);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
        let name = ServerName::try_from("localhost").unwrap();
        let (accepted, client) = tokio::join!(
            server.accept_tls(&acceptor),
            connector.connect(name, client_tcp.unwrap())
        );
        accepted.unwrap();
        (server, client.unwrap())
    }

    /// A write that completed has put its TLS records on the socket: a caller that wrote
    /// everything and then only waits (as the session loop does when it has nothing more for
    /// the client) never leaves the tail of a reply inside the TLS layer.
    #[tokio::test]
    async fn completed_writes_are_on_the_socket() {
        let (server, mut client) = pair().await;
        let (_rd, mut wr) = server.into_split();
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            wr.write_all(&data).await.unwrap();
            // Keep the connection open, without another write, a flush or a shutdown.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(wr);
        });
        // Let the buffers fill while nobody reads.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut got = vec![0u8; expected.len()];
        tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut got))
            .await
            .expect("every byte of a completed write arrives")
            .unwrap();
        assert!(got == expected);
        writer.abort();
    }
}
