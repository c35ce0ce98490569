//! The client listener: accepts connections, bounds how many are served at once, and runs each
//! client's startup and session in its own task until shutdown.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use meridian_upstream::stream::Stream;
use meridian_wire::messages;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::session::Session;
use crate::startup::{self, Outcome};
use crate::stats::ClientGuard;
use crate::workers::Workers;
use crate::{ProxyState, SessionError};

/// Where clients connect: the TCP address, and the Unix-domain socket if there is one.
pub struct Listeners {
    /// `proxy.listen`.
    pub tcp: TcpListener,
    /// `proxy.unix_socket_dir`.
    pub unix: Option<UnixListener>,
}

/// The address that stands for every client of the Unix-domain socket where a client address is
/// needed (failed authentications are limited per address).
const UNIX_PEER: std::net::IpAddr = std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);

/// A client socket as accepted, moved to a worker thread as a plain socket.
enum Accepted {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Accepted {
    /// Registers the socket with the current (worker's) reactor.
    fn register(self) -> std::io::Result<Stream> {
        Ok(match self {
            Accepted::Tcp(s) => Stream::Plain(TcpStream::from_std(s)?),
            Accepted::Unix(s) => Stream::Unix(UnixStream::from_std(s)?),
        })
    }
}

/// Accepts clients on `listeners` until `shutdown` turns true; each client runs on one of
/// `workers`.
pub async fn serve(
    listeners: Listeners,
    state: Arc<ProxyState>,
    workers: Arc<Workers>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Counted rather than a semaphore so that a reload can change the limit.
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let unix = listeners.unix;
    loop {
        let accepted = tokio::select! {
            a = listeners.tcp.accept() => a.and_then(|(s, peer)| {
                let _ = s.set_nodelay(true);
                Ok((Accepted::Tcp(s.into_std()?), peer.ip()))
            }),
            a = accept_unix(unix.as_ref()), if unix.is_some() => {
                a.and_then(|s| Ok((Accepted::Unix(s.into_std()?), UNIX_PEER)))
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    info!("listener stopped");
                    return;
                }
                continue;
            }
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        let max_clients = state.live.load().proxy.max_client_connections;
        match ClientPermit::try_new(&open, max_clients) {
            Some(permit) => {
                // The socket moves to the worker's own reactor.
                workers.spawn(async move {
                    let _permit = permit;
                    let stream = match socket.register() {
                        Ok(s) => s,
                        Err(e) => {
                            warn!(error = %e, "cannot register a client socket");
                            return;
                        }
                    };
                    let mut counted = state.stats.client_connected();
                    if let Err(e) = handle_client(stream, peer, state.clone(), &mut counted).await
                    {
                        debug!(%peer, error = %e, kind = e.kind(), "client session ended with error");
                    }
                });
            }
            None => {
                state.stats.client_rejected();
                tokio::spawn(async move {
                    if let Ok(stream) = socket.register() {
                        reject(stream, &SessionError::TooManyClients).await;
                    }
                });
            }
        }
    }
}

async fn accept_unix(listener: Option<&UnixListener>) -> std::io::Result<UnixStream> {
    match listener {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

/// Startup, authentication, then the session proper. `counted` moves to the `session` state
/// once the client has authenticated.
async fn handle_client(
    mut stream: Stream,
    peer: std::net::IpAddr,
    state: Arc<ProxyState>,
    counted: &mut ClientGuard<'_>,
) -> Result<(), SessionError> {
    // Nothing is allocated for a client that has sent nothing yet (the buffer grows with what
    // arrives), so connections that never finish startup stay cheap.
    let mut buf = BytesMut::new();
    let timeout = Duration::from_millis(state.live.load().proxy.startup_timeout_ms);
    let outcome = match tokio::time::timeout(
        timeout,
        startup::handshake(&mut stream, &mut buf, &state, peer),
    )
    .await
    {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            if !matches!(e, SessionError::ClientIo(_)) {
                reject(stream, &e).await;
            }
            return Err(e);
        }
        Err(_) => {
            let e = SessionError::StartupTimeout;
            reject(stream, &e).await;
            return Err(e);
        }
    };
    match outcome {
        Outcome::Cancelled => Ok(()),
        Outcome::Session(auth) => {
            counted.authenticated();
            buf.reserve(8 * 1024);
            // Boxed: the session's state is allocated only once the client has authenticated,
            // not in every connection still in startup.
            Box::pin(Session::start(state, stream, buf, auth)).await
        }
    }
}

/// Sends a FATAL ErrorResponse and closes.
async fn reject(mut stream: Stream, e: &SessionError) {
    let mut out = BytesMut::new();
    messages::error_response(&mut out, "FATAL", e.sqlstate(), &e.to_string());
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// One of `proxy.max_client_connections` client slots, held while the client is served.
struct ClientPermit(Arc<std::sync::atomic::AtomicUsize>);

impl ClientPermit {
    fn try_new(open: &Arc<std::sync::atomic::AtomicUsize>, max: usize) -> Option<Self> {
        use std::sync::atomic::Ordering;
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| ClientPermit(open.clone()))
    }
}

impl Drop for ClientPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}
