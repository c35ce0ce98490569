//! One client session after startup: a single task that moves frames between the client and the
//! backend currently serving it. Client frames are routed at statement boundaries (a Query, or an
//! extended-protocol batch up to Sync/Flush); server frames are scanned for ReadyForQuery and
//! forwarded byte-for-byte. Both directions are buffered and written as the sockets allow, so a
//! pipelining client can never deadlock the proxy against the server.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use meridian_upstream::{BackendConn, ConnectParams, UpstreamError};
use meridian_wire::tag::{backend, frontend};
use meridian_wire::{frame, messages, parse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tracing::{debug, warn};

use crate::cancel::CancelGuard;
use crate::startup::Authenticated;
use crate::{ProxyState, SessionError};

/// Stop reading from a peer while this much is queued for the other side.
const HIGH_WATER: usize = 256 * 1024;

/// What the session loop does next.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    /// Flush what is queued for the client, then close.
    Close,
}

/// A live client session.
pub struct Session {
    state: Arc<ProxyState>,
    auth: Authenticated,
    cancel: CancelGuard,
    max_message: usize,
    crd: OwnedReadHalf,
    cwr: OwnedWriteHalf,
    /// Bytes from the client not yet routed.
    crbuf: BytesMut,
    /// Bytes queued for the client.
    to_client: BytesMut,
    /// One slot per node; a connection is opened when the session first needs that node.
    backends: Vec<Option<BackendConn>>,
    /// The node whose connection carries the current traffic.
    active: Option<usize>,
    /// Bytes queued for the active backend.
    to_backend: BytesMut,
    /// ReadyForQuery messages still owed by the active backend.
    pending: u32,
    /// Extended-protocol frames held until Sync or Flush decides their backend.
    batch: BytesMut,
    /// Set after a Flush sent part of a batch: the rest of the batch must follow it.
    batch_target: Option<usize>,
    /// After a failed batch, frames are dropped up to the next Sync (as Postgres does after an error).
    discard_until_sync: bool,
    /// Transaction status from the last ReadyForQuery: `I`, `T` or `E`.
    tx_status: u8,
    /// The active backend reported a FATAL error; when it closes, the client is closed too.
    fatal_seen: bool,
    /// Client frames are waiting for the active backend to finish before switching.
    stalled: bool,
}

impl Session {
    /// Connects the first backend, completes the client's startup (AuthenticationOk, server
    /// parameters, BackendKeyData, ReadyForQuery) and returns the running session.
    pub async fn start(
        state: Arc<ProxyState>,
        stream: tokio::net::TcpStream,
        crbuf: BytesMut,
        auth: Authenticated,
    ) -> Result<(), SessionError> {
        let cancel = state.cancels.register();
        let nodes = state.config.nodes.len();
        let max_message = state.config.proxy.max_message_bytes;
        let (crd, cwr) = stream.into_split();
        let mut session = Session {
            state,
            auth,
            cancel,
            max_message,
            crd,
            cwr,
            crbuf,
            to_client: BytesMut::with_capacity(16 * 1024),
            backends: (0..nodes).map(|_| None).collect(),
            active: None,
            to_backend: BytesMut::with_capacity(16 * 1024),
            pending: 0,
            batch: BytesMut::new(),
            batch_target: None,
            discard_until_sync: false,
            tx_status: b'I',
            fatal_seen: false,
            stalled: false,
        };
        match session.greet().await {
            Ok(()) => session.run().await,
            Err(e) => {
                session.queue_error("FATAL", e.sqlstate(), &e.to_string());
                session.flush_and_close().await;
                Err(e)
            }
        }
    }

    async fn greet(&mut self) -> Result<(), SessionError> {
        let node = self.primary().await?;
        self.ensure_backend(node).await?;
        self.activate(node);
        messages::auth_ok(&mut self.to_client);
        if let Some(b) = &self.backends[node] {
            self.to_client.extend_from_slice(&b.param_frames);
        }
        messages::backend_key_data(&mut self.to_client, self.cancel.pid, self.cancel.secret);
        messages::ready_for_query(&mut self.to_client, b'I');
        Ok(())
    }

    async fn run(mut self) -> Result<(), SessionError> {
        let result = self.event_loop().await;
        match &result {
            Ok(()) => {}
            Err(SessionError::ClientIo(_)) => {}
            Err(e) => {
                debug!(error = %e, kind = e.kind(), "closing session");
                self.queue_error("FATAL", e.sqlstate(), &e.to_string());
            }
        }
        self.flush_and_close().await;
        match result {
            Err(SessionError::ClientIo(_)) => Ok(()),
            other => other,
        }
    }

    async fn event_loop(&mut self) -> Result<(), SessionError> {
        loop {
            if self.drain_client().await? == Flow::Close {
                return Ok(());
            }
            self.try_write();
            let want_client = !self.stalled && self.to_backend.len() < HIGH_WATER;
            let want_backend = self.to_client.len() < HIGH_WATER;
            let (brd, bwr, brbuf) = match self.active.and_then(|i| self.backends[i].as_mut()) {
                Some(b) => (Some(&mut b.rd), Some(&mut b.wr), Some(&mut b.rbuf)),
                None => (None, None, None),
            };
            let has_backend = brd.is_some();
            tokio::select! {
                r = self.crd.read_buf(&mut self.crbuf), if want_client => {
                    match r {
                        Ok(0) => return Err(SessionError::ClientIo(std::io::ErrorKind::UnexpectedEof.into())),
                        Ok(_) => {}
                        Err(e) => return Err(SessionError::ClientIo(e)),
                    }
                }
                r = read_opt(brd, brbuf), if want_backend && has_backend => {
                    match r {
                        Ok(0) => {
                            if self.backend_lost("server closed the connection unexpectedly") == Flow::Close {
                                return Ok(());
                            }
                        }
                        Ok(_) => {
                            if let Err(detail) = self.scan_backend() {
                                if self.backend_lost(&detail) == Flow::Close {
                                    return Ok(());
                                }
                            }
                        }
                        Err(e) => {
                            if self.backend_lost(&e.to_string()) == Flow::Close {
                                return Ok(());
                            }
                        }
                    }
                }
                r = self.cwr.write(&self.to_client), if !self.to_client.is_empty() => {
                    match r {
                        Ok(n) => self.to_client.advance(n),
                        Err(e) => return Err(SessionError::ClientIo(e)),
                    }
                }
                r = write_opt(bwr, &self.to_backend), if !self.to_backend.is_empty() && has_backend => {
                    match r {
                        Ok(n) => self.to_backend.advance(n),
                        Err(e) => {
                            if self.backend_lost(&e.to_string()) == Flow::Close {
                                return Ok(());
                            }
                        }
                    }
                }
            }
        }
    }

    /// Routes every complete client frame that can be routed now.
    async fn drain_client(&mut self) -> Result<Flow, SessionError> {
        self.stalled = false;
        loop {
            let Some((tag, len)) = self.peek_client()? else {
                return Ok(Flow::Continue);
            };
            if self.discard_until_sync {
                if tag == frontend::SYNC {
                    self.discard_until_sync = false;
                    messages::ready_for_query(&mut self.to_client, self.tx_status);
                }
                self.crbuf.advance(len);
                continue;
            }
            match tag {
                frontend::QUERY | frontend::FUNCTION_CALL => {
                    let target = self.primary().await;
                    match self.switch_to(target).await {
                        Switch::Ready => {
                            self.forward_client(len);
                            self.pending += 1;
                        }
                        Switch::Stall => {
                            self.stalled = true;
                            return Ok(Flow::Continue);
                        }
                        Switch::Failed(e) => {
                            self.crbuf.advance(len);
                            self.queue_upstream_error(&e);
                            messages::ready_for_query(&mut self.to_client, self.tx_status);
                        }
                    }
                }
                frontend::PARSE
                | frontend::BIND
                | frontend::DESCRIBE
                | frontend::EXECUTE
                | frontend::CLOSE => {
                    if self.batch_target.is_some() {
                        self.forward_client(len);
                    } else {
                        self.batch.extend_from_slice(&self.crbuf[..len]);
                        self.crbuf.advance(len);
                    }
                }
                frontend::SYNC | frontend::FLUSH => {
                    let target = match self.batch_target {
                        Some(t) => Ok(t),
                        None if self.batch.is_empty() && tag == frontend::FLUSH => {
                            // A bare Flush: pass it to whoever is active, if anyone.
                            if self.active.is_some() {
                                self.forward_client(len);
                            } else {
                                self.crbuf.advance(len);
                            }
                            continue;
                        }
                        None => self.primary().await,
                    };
                    match self.switch_to(target).await {
                        Switch::Ready => {
                            self.to_backend.extend_from_slice(&self.batch);
                            self.batch.clear();
                            self.forward_client(len);
                            if tag == frontend::SYNC {
                                self.pending += 1;
                                self.batch_target = None;
                            } else {
                                self.batch_target = self.active;
                            }
                        }
                        Switch::Stall => {
                            self.stalled = true;
                            return Ok(Flow::Continue);
                        }
                        Switch::Failed(e) => {
                            self.batch.clear();
                            self.batch_target = None;
                            self.crbuf.advance(len);
                            self.queue_upstream_error(&e);
                            if tag == frontend::SYNC {
                                messages::ready_for_query(&mut self.to_client, self.tx_status);
                            } else {
                                self.discard_until_sync = true;
                            }
                        }
                    }
                }
                frontend::COPY_DATA | frontend::COPY_DONE | frontend::COPY_FAIL => {
                    // Copy-in data belongs to whichever backend started the COPY. Outside copy
                    // mode Postgres ignores these too.
                    if self.active.is_some() {
                        self.forward_client(len);
                    } else {
                        self.crbuf.advance(len);
                    }
                }
                frontend::TERMINATE => return Ok(Flow::Close),
                other => {
                    return Err(SessionError::Protocol(format!(
                        "invalid frontend message type {}",
                        other
                    )))
                }
            }
        }
    }

    /// The next complete client frame's tag and length, if one is buffered.
    fn peek_client(&self) -> Result<Option<(u8, usize)>, SessionError> {
        match frame::peek_frame(&self.crbuf, self.max_message)? {
            Some(h) if h.len <= self.crbuf.len() => Ok(Some((h.tag, h.len))),
            _ => Ok(None),
        }
    }

    /// Moves `len` bytes of client frames to the active backend's queue.
    fn forward_client(&mut self, len: usize) {
        self.to_backend.extend_from_slice(&self.crbuf[..len]);
        self.crbuf.advance(len);
    }

    /// Makes `target` the active backend if that can happen now.
    async fn switch_to(&mut self, target: Result<usize, UpstreamError>) -> Switch {
        let target = match target {
            Ok(t) => t,
            Err(e) => return Switch::Failed(e),
        };
        if self.active == Some(target) && self.backends[target].is_some() {
            return Switch::Ready;
        }
        if self.pending > 0 || !self.to_backend.is_empty() {
            return Switch::Stall;
        }
        if let Err(e) = self.ensure_backend(target).await {
            return Switch::Failed(e);
        }
        self.activate(target);
        Switch::Ready
    }

    fn activate(&mut self, node: usize) {
        self.active = Some(node);
        self.fatal_seen = false;
        let target = self.backends[node]
            .as_ref()
            .map(|b| (b.addr, b.pid, b.secret));
        self.cancel.slot.set(target);
    }

    async fn ensure_backend(&mut self, node: usize) -> Result<(), UpstreamError> {
        if self.backends[node].is_some() {
            return Ok(());
        }
        let topo = self.state.topology.load();
        let Some(n) = topo.nodes.get(node) else {
            return Err(UpstreamError::NoPrimary);
        };
        let password = self
            .state
            .users
            .get(&self.auth.user)
            .map(|u| u.password.as_str())
            .unwrap_or_default();
        let params = ConnectParams {
            node,
            host: &n.host,
            port: n.port,
            user: &self.auth.user,
            password,
            database: &self.auth.database,
            extra: &self.auth.params,
            max_message_bytes: self.max_message,
            timeout: Duration::from_millis(self.state.config.proxy.connect_timeout_ms),
        };
        let conn = meridian_upstream::connect(&params).await?;
        debug!(node = %n.name, pid = conn.pid, "server connection opened");
        self.backends[node] = Some(conn);
        Ok(())
    }

    /// The node writes go to; waits briefly for one to be discovered.
    async fn primary(&self) -> Result<usize, UpstreamError> {
        if let Some(p) = self.state.topology.load().primary {
            return Ok(p);
        }
        let timeout = Duration::from_millis(self.state.config.proxy.connect_timeout_ms);
        self.state
            .topology
            .wait_for(timeout, |t| t.primary.is_some())
            .await
            .primary
            .ok_or(UpstreamError::NoPrimary)
    }

    /// Scans complete frames from the active backend, tracks protocol state and queues them for
    /// the client unchanged.
    fn scan_backend(&mut self) -> Result<(), String> {
        let Some(b) = self.active.and_then(|i| self.backends[i].as_mut()) else {
            return Ok(());
        };
        let mut off = 0;
        loop {
            let rest = &b.rbuf[off..];
            let h = match frame::peek_frame(rest, self.max_message) {
                Ok(Some(h)) if h.len <= rest.len() => h,
                Ok(_) => break,
                Err(e) => return Err(format!("invalid message from server: {e}")),
            };
            let body = frame::body(&rest[..h.len]);
            match h.tag {
                backend::READY_FOR_QUERY => {
                    self.pending = self.pending.saturating_sub(1);
                    self.tx_status = parse::ready_status(body).unwrap_or(b'I');
                }
                backend::ERROR_RESPONSE => {
                    if let Ok(fields) = parse::ErrorFields::parse(body) {
                        if matches!(fields.severity(), Some("FATAL") | Some("PANIC")) {
                            self.fatal_seen = true;
                        }
                    }
                }
                _ => {}
            }
            off += h.len;
        }
        self.to_client.extend_from_slice(&b.rbuf[..off]);
        b.rbuf.advance(off);
        Ok(())
    }

    /// The active backend broke. Tells the client in the way that keeps its protocol state
    /// consistent, and decides whether the session can go on.
    fn backend_lost(&mut self, detail: &str) -> Flow {
        let Some(node) = self.active.take() else {
            return Flow::Continue;
        };
        self.backends[node] = None;
        self.cancel.slot.set(None);
        self.to_backend.clear();
        self.batch_target = None;
        let name = self
            .state
            .config
            .nodes
            .get(node)
            .map(|n| n.name.as_str())
            .unwrap_or("?");
        warn!(node = name, %detail, pending = self.pending, "server connection lost");
        if self.fatal_seen {
            // The server already told the client why (e.g. 57P01 admin_shutdown); mirror Postgres
            // and close the client connection too.
            return Flow::Close;
        }
        if self.tx_status != b'I' {
            self.queue_error(
                "FATAL",
                "08006",
                &format!(
                    "server connection lost during a transaction ({detail}); the transaction was rolled back"
                ),
            );
            return Flow::Close;
        }
        if self.pending > 0 {
            self.queue_error(
                "ERROR",
                "08006",
                &format!("server connection lost: {detail}"),
            );
            for _ in 0..self.pending {
                messages::ready_for_query(&mut self.to_client, b'I');
            }
            self.pending = 0;
        }
        Flow::Continue
    }

    fn queue_error(&mut self, severity: &str, code: &str, message: &str) {
        messages::error_response(&mut self.to_client, severity, code, message);
    }

    fn queue_upstream_error(&mut self, e: &UpstreamError) {
        match e {
            UpstreamError::Server { frame, .. } => self.to_client.extend_from_slice(frame),
            other => {
                let code = other.sqlstate().to_string();
                self.queue_error("ERROR", &code, &other.to_string());
            }
        }
    }

    /// Writes whatever the sockets accept right now without waiting.
    fn try_write(&mut self) {
        if !self.to_client.is_empty() {
            if let Ok(n) = self.cwr.try_write(&self.to_client) {
                self.to_client.advance(n);
            }
        }
        if !self.to_backend.is_empty() {
            if let Some(b) = self.active.and_then(|i| self.backends[i].as_mut()) {
                if let Ok(n) = b.wr.try_write(&self.to_backend) {
                    self.to_backend.advance(n);
                }
            }
        }
    }

    /// Final flush to the client, then closes every server connection. A statement still running
    /// for a client that went away is cancelled so that it does not hold locks.
    async fn flush_and_close(&mut self) {
        if !self.to_client.is_empty() {
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                self.cwr.write_all(&self.to_client),
            )
            .await;
            self.to_client.clear();
        }
        let _ = self.cwr.shutdown().await;
        if self.pending > 0 {
            if let Some(b) = self.active.and_then(|i| self.backends[i].as_ref()) {
                let (addr, pid, secret) = (b.addr, b.pid, b.secret);
                tokio::spawn(async move {
                    let _ = meridian_upstream::send_cancel(addr, pid, secret).await;
                });
            }
        }
        let mut terminate = BytesMut::new();
        messages::terminate(&mut terminate);
        for b in self.backends.iter_mut().flatten() {
            let _ = b.wr.try_write(&terminate);
        }
        self.backends.clear();
    }
}

/// Result of trying to make a node the active backend.
enum Switch {
    Ready,
    Stall,
    Failed(UpstreamError),
}

async fn read_opt(
    rd: Option<&mut OwnedReadHalf>,
    buf: Option<&mut BytesMut>,
) -> std::io::Result<usize> {
    match (rd, buf) {
        (Some(rd), Some(buf)) => rd.read_buf(buf).await,
        _ => std::future::pending().await,
    }
}

async fn write_opt(wr: Option<&mut OwnedWriteHalf>, data: &[u8]) -> std::io::Result<usize> {
    match wr {
        Some(wr) => wr.write(data).await,
        None => std::future::pending().await,
    }
}
