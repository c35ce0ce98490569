//! One client session after startup: a single task that moves frames between the client and the
//! backend currently serving it.
//!
//! * `frontend` routes client frames at statement boundaries (a Query, or an extended-protocol
//!   batch up to Sync/Flush);
//! * `route` decides which node a statement goes to;
//! * `switch` makes that node's connection the active one and brings it up to date;
//! * `state` keeps what must follow the session from node to node (settings, prepared
//!   statements) and replays it on a backend before it is used;
//! * `backend` scans server frames, accounts for ReadyForQuery and forwards bytes unchanged;
//! * `local` answers Meridian's own `SET`/`SHOW meridian.*`;
//! * `pooled` renames named statements for transaction pooling, `auto` runs simple Queries as
//!   auto-prepared statements.
//!
//! Both directions are buffered and written as the sockets allow, so a pipelining client can never
//! deadlock the proxy against a server.

mod auto;
mod backend;
mod broken;
mod frontend;
mod local;
mod pooled;
pub(crate) mod route;
mod server;
mod state;
mod switch;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use meridian_upstream::stream::{Stream, StreamReader, StreamWriter};
use meridian_upstream::{ConnectParams, UpstreamError};
use meridian_wire::messages;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::debug;

use crate::cancel::CancelGuard;
use crate::startup::Authenticated;
use crate::{Drain, ProxyState, SessionError};

pub(crate) use backend::Owner;
pub(crate) use server::{Backend, ServerGuard};
pub(crate) use state::SessionState;

/// Stop reading from a peer while this much is queued for the other side.
const HIGH_WATER: usize = 256 * 1024;

/// What the session loop does next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
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
    crd: StreamReader,
    cwr: StreamWriter,
    /// Bytes from the client not yet routed.
    crbuf: BytesMut,
    /// Bytes queued for the client.
    to_client: BytesMut,
    /// One slot per node; a connection is opened when the session first needs that node.
    backends: Vec<Option<Backend>>,
    /// The node whose connection carries the current traffic.
    active: Option<usize>,
    /// Bytes queued for the active backend.
    to_backend: BytesMut,
    /// Who each ReadyForQuery still owed by the active backend belongs to.
    owners: VecDeque<Owner>,
    /// Extended-protocol frames held until Sync or Flush decides their backend.
    batch: BytesMut,
    /// What the frames in `batch` need.
    batch_route: route::Need,
    /// A statement in the batch pins the session to the primary.
    batch_pins: bool,
    /// SQL-level prepared statements the batch EXECUTEs.
    batch_sql_exec: Vec<String>,
    /// What the batch's executed statements do to the transaction.
    batch_exec: frontend::ExecFlags,
    /// A session setting the batch makes, kept if it succeeds.
    batch_change: Option<state::Change>,
    /// The server entered copy-in mode for an extended-protocol batch: the client's next Sync
    /// answers the batch already waiting rather than opening a new one.
    copy_sync_absorbed: bool,
    /// The transaction's server was lost: Meridian answers for the aborted transaction until the
    /// client ends it.
    broken: bool,
    /// The next reply in the broken transaction says why (08006).
    broken_notice: bool,
    /// Tags of the extended-protocol frames received while broken, answered at Sync.
    broken_batch: Vec<u8>,
    /// That batch ends the transaction.
    broken_batch_ends: bool,
    /// The request in `retry_buf` (an autocommit read on a replica, alone in flight) has had no
    /// reply yet: if the replica goes away now, the request is routed again.
    retry_armed: bool,
    /// The client bytes of that request.
    retry_buf: BytesMut,
    /// Routing counters this session has used.
    route_counters: Vec<(&'static str, &'static str, prometheus::IntCounter)>,
    /// Scratch buffer for statement shapes (classification cache keys).
    shape: String,
    /// The client sent Terminate: what it sent before still goes to the server.
    terminating: bool,
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
    /// Session state that follows the client across backends.
    sstate: SessionState,
    /// `meridian.consistency` for this session.
    consistency: meridian_config::Consistency,
    /// `meridian.min_lsn`: a position reads must see (a token from another connection).
    min_lsn: meridian_upstream::Lsn,
    /// `meridian.lsn`: the WAL position of this session's last write.
    token: meridian_upstream::Lsn,
    /// The highest replay position of any replica this session read from (monotonic reads).
    seen: meridian_upstream::Lsn,
    /// The replica this session reads from while it stays eligible.
    read_replica: Option<usize>,
    /// A client ReadyForQuery held back until the write-position probe behind it answers, so the
    /// client learns its new `meridian.lsn` before it can send anything else.
    held_ready: Option<u8>,
    /// Where in `to_client` the reply of a request waiting for its probe begins: nothing from
    /// there on is written until the probe answers, so a client never sees a commit whose
    /// position Meridian could not record (if the server dies first, that reply is replaced by
    /// an error).
    hold_mark: Option<usize>,
    /// The request the pending probe follows succeeded and committed.
    probe_ok: bool,
    /// The last CommandComplete was `ROLLBACK` (a failed or rolled-back transaction).
    last_command_rollback: bool,
    /// The position the pending probe returned.
    probe_lsn: Option<meridian_upstream::Lsn>,
    /// Transaction pooling: server connections come from the shared pools and go back between
    /// transactions (`None` in session mode).
    pool: Option<PoolSettings>,
    /// Auto-preparation: the literals of the Query being routed, as parameters.
    params: meridian_classify::Parameterized,
    /// Auto-preparation: a statement is being prepared and the client's Query waits for it.
    preparing: bool,
    /// Auto-preparation: the last Query sent as an auto-prepared statement, as it came.
    auto_query: BytesMut,
    /// Auto-preparation: the last one-shot extended batch sent without its Parse, as it came.
    auto_batch: BytesMut,
    /// Auto-preparation: the server accepted the Bind of the request at the head of `owners`.
    auto_bound: bool,
    /// Auto-preparation: the next extended-protocol batch goes out as it came (it is one that
    /// runs again after an error, see `auto_retry`).
    auto_bypass: bool,
    /// Auto-preparation: the batch just dispatched went out without its Parse, binding this
    /// statement (for its owner, see `Owner::Client::unparsed`).
    unparsed: Option<u128>,
}

/// A transaction-pooled session's pool parameters.
struct PoolSettings {
    /// Identifies the session's pools (user, database, startup parameters).
    key: String,
    /// `pool_size` for this session's user.
    size: usize,
    /// `pool.checkout_timeout`.
    checkout_timeout: Duration,
}

impl Session {
    /// Connects the first backend, completes the client's startup (AuthenticationOk, server
    /// parameters, BackendKeyData, ReadyForQuery) and runs the session to its end.
    pub async fn start(
        state: Arc<ProxyState>,
        stream: Stream,
        crbuf: BytesMut,
        auth: Authenticated,
    ) -> Result<(), SessionError> {
        let _live = LiveGuard::new(state.clone());
        let _user = match UserGuard::new(&state, &auth.user) {
            Some(g) => g,
            None => {
                let mut out = BytesMut::new();
                let message = format!("too many connections for role \"{}\"", auth.user);
                messages::error_response(&mut out, "FATAL", "53300", &message);
                let mut stream = stream;
                let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&out)).await;
                return Err(SessionError::TooManyClients);
            }
        };
        let cancel = state.cancels.register();
        // Node slots only grow (reloads append nodes); `grow_slots` adds backend slots as needed.
        let nodes = state.topology.load().nodes.len();
        let max_message = state.live.load().proxy.max_message_bytes;
        state.functions.register(&auth.database);
        let (crd, cwr) = stream.into_split();
        let consistency = state.live.load().consistency.mode;
        let pool = state
            .users
            .get(&auth.user)
            .filter(|u| u.pool_mode == meridian_config::PoolMode::Transaction)
            .map(|u| PoolSettings {
                key: String::new(),
                size: u.pool_size,
                checkout_timeout: state.config.pool.checkout_timeout.duration(),
            });
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
            owners: VecDeque::new(),
            batch: BytesMut::new(),
            batch_route: route::Need::default(),
            batch_pins: false,
            batch_exec: frontend::ExecFlags::default(),
            batch_sql_exec: Vec::new(),
            batch_change: None,
            terminating: false,
            shape: String::new(),
            route_counters: Vec::new(),
            retry_armed: false,
            retry_buf: BytesMut::new(),
            broken: false,
            broken_notice: false,
            broken_batch: Vec::new(),
            broken_batch_ends: false,
            copy_sync_absorbed: false,
            batch_target: None,
            discard_until_sync: false,
            tx_status: b'I',
            fatal_seen: false,
            stalled: false,
            sstate: SessionState::default(),
            consistency,
            min_lsn: meridian_upstream::Lsn::ZERO,
            token: meridian_upstream::Lsn::ZERO,
            seen: meridian_upstream::Lsn::ZERO,
            read_replica: None,
            held_ready: None,
            probe_ok: false,
            hold_mark: None,
            last_command_rollback: false,
            probe_lsn: None,
            pool,
            params: Default::default(),
            preparing: false,
            auto_query: BytesMut::new(),
            auto_batch: BytesMut::new(),
            auto_bound: false,
            auto_bypass: false,
            unparsed: None,
        };
        let key = session.param_key();
        if let Some(p) = &mut session.pool {
            p.key = key;
        }
        let startup_settings = std::mem::take(&mut session.auth.meridian);
        for (name, value) in &startup_settings {
            if let Err((code, message)) = session.set_meridian_setting(name, Some(value)) {
                session.queue_error("FATAL", code, &message);
                session.flush_and_close().await;
                return Err(SessionError::Protocol(message));
            }
        }
        match session.greet().await {
            Ok(()) => session.run().await,
            Err(e) => {
                session.queue_error("FATAL", e.sqlstate(), &e.to_string());
                session.flush_and_close().await;
                Err(e)
            }
        }
    }

    /// Startup completes against the primary: its ParameterStatus values are the ones the client
    /// sees (server_version, encodings, ...).
    async fn greet(&mut self) -> Result<(), SessionError> {
        // During a failover there is no primary for a while; the client can still connect (and
        // read) through a healthy replica, and its writes wait for the new primary.
        let topo = self.state.topology.load();
        let standby = topo
            .nodes
            .iter()
            .position(|n| n.healthy && !n.fenced && n.role == meridian_upstream::Role::Replica);
        // Server connections open lazily: once a primary has answered a client with the same
        // user, database and startup parameters, its ParameterStatus values are replayed and
        // no server connection is opened until a statement needs one.
        let key = self.param_key();
        let cached = self
            .state
            .param_cache
            .lock()
            .ok()
            .and_then(|c| c.get(&key).cloned());
        messages::auth_ok(&mut self.to_client);
        if let (Some(frames), Some(_)) = (cached, topo.primary) {
            self.to_client.extend_from_slice(&frames);
        } else {
            let node = match (topo.primary, standby) {
                (Some(p), _) => p,
                (None, Some(r)) => r,
                (None, None) => self.primary().await?,
            };
            self.ensure_backend(node).await?;
            self.activate(node);
            if let Some(b) = &self.backends[node] {
                self.to_client.extend_from_slice(&b.conn.param_frames);
                if topo.primary == Some(node) {
                    if let Ok(mut cache) = self.state.param_cache.lock() {
                        cache.insert(key, b.conn.param_frames.clone());
                    }
                }
            }
        }
        messages::backend_key_data(&mut self.to_client, self.cancel.pid, self.cancel.secret);
        messages::ready_for_query(&mut self.to_client, b'I');
        if self.pool.is_some() {
            self.release();
        }
        Ok(())
    }

    /// The idle timeout that applies now, if the session is idle and one is configured.
    fn idle_limit(&self) -> Option<(Duration, &'static str, &'static str)> {
        let busy = !self.owners.is_empty() || !self.to_backend.is_empty() || !self.crbuf.is_empty();
        if busy {
            return None;
        }
        let cfg = self.state.live.load();
        let p = &cfg.proxy;
        let (ms, code, message) = if self.tx_status == b'I' && !self.broken {
            (
                p.client_idle_timeout_ms,
                "57P05",
                "terminating connection due to idle-session timeout",
            )
        } else {
            (
                p.idle_in_transaction_timeout_ms,
                "25P03",
                "terminating connection due to idle-in-transaction timeout",
            )
        };
        (ms > 0).then(|| (Duration::from_millis(ms), code, message))
    }

    /// What decides the ParameterStatus values a server reports at startup.
    fn param_key(&self) -> String {
        let mut key = format!("{}\0{}", self.auth.user, self.auth.database);
        for (k, v) in &self.auth.params {
            key.push('\0');
            key.push_str(k);
            key.push('=');
            key.push_str(v);
        }
        key
    }

    async fn run(mut self) -> Result<(), SessionError> {
        let result = self.event_loop().await;
        match &result {
            Ok(()) | Err(SessionError::ClientIo(_)) => {}
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
        let mut drain = self.state.drain.subscribe();
        loop {
            let phase = *drain.borrow();
            if phase != Drain::Running {
                let idle = self.owners.is_empty()
                    && self.to_backend.is_empty()
                    && self.tx_status == b'I'
                    && !self.broken;
                if phase == Drain::Closing || idle {
                    self.queue_error(
                        "FATAL",
                        "57P01",
                        "terminating connection due to administrator command (Meridian is shutting down)",
                    );
                    return Ok(());
                }
            }
            if self.drain_client().await? == Flow::Close {
                return Ok(());
            }
            self.try_write();
            let want_client = !self.stalled && self.to_backend.len() < HIGH_WATER;
            let want_backend = self.to_client.len() < HIGH_WATER;
            let idle_limit = self.idle_limit();
            let sendable = self.sendable();
            let (brd, bwr, brbuf) = match self.active.and_then(|i| self.backends[i].as_mut()) {
                Some(b) => (
                    Some(&mut b.conn.rd),
                    Some(&mut b.conn.wr),
                    Some(&mut b.conn.rbuf),
                ),
                None => (None, None, None),
            };
            let has_backend = brd.is_some();
            let flow = tokio::select! {
                _ = drain.changed() => Flow::Continue,
                _ = sleep_opt(idle_limit.map(|(d, _, _)| d)) => {
                    if let Some((_, code, message)) = idle_limit {
                        self.queue_error("FATAL", code, message);
                    }
                    return Ok(());
                }
                r = self.crd.read_buf(&mut self.crbuf), if want_client => {
                    match r {
                        Ok(0) => return Err(SessionError::ClientIo(std::io::ErrorKind::UnexpectedEof.into())),
                        Ok(n) => {
                            self.state.stats.bytes(n as u64, 0);
                            Flow::Continue
                        }
                        Err(e) => return Err(SessionError::ClientIo(e)),
                    }
                }
                r = read_opt(brd, brbuf), if want_backend && has_backend => {
                    match r {
                        Ok(0) => self.backend_lost("server closed the connection unexpectedly"),
                        Ok(n) => {
                            self.state.stats.bytes(0, n as u64);
                            match self.scan_backend() {
                                Ok(()) => {
                                    if self.pool.is_some() {
                                        self.release();
                                    }
                                    Flow::Continue
                                }
                                Err(detail) => self.backend_lost(&detail),
                            }
                        }
                        Err(e) => self.backend_lost(&e.to_string()),
                    }
                }
                r = self.cwr.write(&self.to_client[..sendable]), if sendable > 0 => {
                    match r {
                        Ok(n) => {
                            self.sent_to_client(n);
                            Flow::Continue
                        }
                        Err(e) => return Err(SessionError::ClientIo(e)),
                    }
                }
                r = write_opt(bwr, &self.to_backend), if !self.to_backend.is_empty() && has_backend => {
                    match r {
                        Ok(n) => {
                            self.to_backend.advance(n);
                            Flow::Continue
                        }
                        Err(e) => self.backend_lost(&e.to_string()),
                    }
                }
            };
            if flow == Flow::Close {
                return Ok(());
            }
        }
    }

    fn activate(&mut self, node: usize) {
        if let Some(prev) = self.active {
            if prev != node {
                self.state.chooser.track(prev, false);
            }
        }
        if self.active != Some(node) {
            self.state.chooser.track(node, true);
        }
        self.active = Some(node);
        self.fatal_seen = false;
        let target = self.backends[node]
            .as_ref()
            .map(|b| (b.conn.addr.clone(), b.conn.pid, b.conn.secret));
        self.cancel.slot.set(target);
    }

    fn deactivate(&mut self) {
        if let Some(prev) = self.active.take() {
            self.state.chooser.track(prev, false);
        }
        self.cancel.slot.set(None);
    }

    async fn ensure_backend(&mut self, node: usize) -> Result<(), UpstreamError> {
        self.grow_slots(node);
        if self.backends[node].is_some() {
            return Ok(());
        }
        if let Some(p) = &self.pool {
            let auth = &self.auth;
            let pool = self.state.pools.get(&self.state, node, &p.key, p.size, || {
                crate::pool::PoolIdentity {
                    user: auth.user.clone(),
                    database: auth.database.clone(),
                    params: auth.params.clone(),
                }
            });
            let b = pool.checkout(&self.state, p.checkout_timeout).await?;
            self.backends[node] = Some(b);
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
            .map(|u| u.password.clone())
            .unwrap_or_default();
        let params = ConnectParams {
            node,
            host: &n.host,
            port: n.port,
            user: &self.auth.user,
            password: &password,
            database: &self.auth.database,
            extra: &self.auth.params,
            tls: &self.state.upstream_tls.load().for_host(&n.host, n.port),
            max_message_bytes: self.max_message,
            timeout: Duration::from_millis(self.state.live.load().proxy.connect_timeout_ms),
        };
        let conn = meridian_upstream::connect(&params).await?;
        debug!(node = %n.name, pid = conn.pid, "server connection opened");
        let guard = server::ServerGuard::new(self.state.clone(), node);
        self.backends[node] = Some(Backend::new(conn, guard));
        Ok(())
    }

    /// Transaction pooling: returns the active server connection to its pool if the session is
    /// between transactions and nothing is in flight on it.
    fn release(&mut self) {
        let Some(node) = self.active else {
            return;
        };
        let idle = self.tx_status == b'I'
            && self.owners.is_empty()
            && self.to_backend.is_empty()
            && self.batch_target.is_none()
            && self.hold_mark.is_none()
            && self.held_ready.is_none()
            && !self.copy_sync_absorbed
            && !self.broken
            && !self.retry_armed
            && !self.sstate.pinned;
        if !idle {
            return;
        }
        let Some(mut b) = self.backends[node].take() else {
            return;
        };
        if !b.conn.rbuf.is_empty() {
            // Unsolicited bytes (a server ending the session): not reusable.
            self.deactivate();
            return;
        }
        self.deactivate();
        b.detach();
        if let Some(pool) = b.ticket.as_ref().and_then(|t| t.pool()).cloned() {
            pool.checkin(b);
        }
    }

    /// The node writes go to. Without one (a failover or switchover in progress), waits up to
    /// `failover.hold_timeout_ms` for it.
    async fn primary(&self) -> Result<usize, UpstreamError> {
        if let Some(p) = self.state.topology.load().writable() {
            return Ok(p);
        }
        let timeout = Duration::from_millis(self.state.live.load().failover.hold_timeout_ms);
        self.state
            .topology
            .wait_for(timeout, |t| t.writable().is_some())
            .await
            .writable()
            .ok_or(UpstreamError::NoPrimary)
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

    /// How much of `to_client` may be written now: a reply waiting for its write-position probe
    /// is held back entirely (see `hold_mark`).
    fn sendable(&self) -> usize {
        self.hold_mark.unwrap_or(self.to_client.len())
    }

    /// `n` bytes of `to_client` reached the client.
    fn sent_to_client(&mut self, n: usize) {
        self.to_client.advance(n);
        if let Some(m) = &mut self.hold_mark {
            *m = m.saturating_sub(n);
        }
    }

    /// Writes whatever the sockets accept right now without waiting.
    fn try_write(&mut self) {
        let sendable = self.sendable();
        if sendable > 0 {
            if let Ok(n) = self.cwr.try_write(&self.to_client[..sendable]) {
                self.sent_to_client(n);
            }
        }
        if !self.to_backend.is_empty() {
            if let Some(b) = self.active.and_then(|i| self.backends[i].as_mut()) {
                if let Ok(n) = b.conn.wr.try_write(&self.to_backend) {
                    self.to_backend.advance(n);
                }
            }
        }
    }

    /// Final flush to the client, then closes every server connection. A statement still running
    /// for a client that went away is cancelled so that it does not hold locks.
    async fn flush_and_close(&mut self) {
        if !self.to_client.is_empty() {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), self.cwr.write_all(&self.to_client))
                    .await;
            self.to_client.clear();
        }
        let _ = self.cwr.shutdown().await;
        if self.terminating {
            // An orderly Terminate: statements the client sent before it still run, as they
            // would on Postgres.
            if let Some(b) = self.active.and_then(|i| self.backends[i].as_mut()) {
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    b.conn.wr.write_all(&self.to_backend),
                )
                .await;
            }
        } else if !self.owners.is_empty() {
            if let Some(b) = self.active.and_then(|i| self.backends[i].as_ref()) {
                let (addr, pid, secret) = (b.conn.addr.clone(), b.conn.pid, b.conn.secret);
                tokio::spawn(async move {
                    let _ = meridian_upstream::send_cancel(&addr, pid, secret).await;
                });
            }
        }
        if self.pool.is_some() {
            // An idle pooled connection outlives the client.
            self.release();
        }
        let mut terminate = BytesMut::new();
        messages::terminate(&mut terminate);
        for b in self.backends.iter_mut().flatten() {
            let _ = b.conn.wr.try_write(&terminate);
        }
        self.backends.clear();
        self.deactivate();
    }
}

/// Holds one of a user's `max_connections` slots.
/// (The count is the user's own, kept across reloads, so the guard holds it directly.)
struct UserGuard(Arc<std::sync::atomic::AtomicUsize>);

impl UserGuard {
    fn new(state: &Arc<ProxyState>, user: &str) -> Option<Self> {
        let u = state.users.get(user)?;
        let n = u.sessions.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1;
        let guard = UserGuard(u.sessions.clone());
        match u.max_connections {
            Some(max) if n > max => None,
            _ => Some(guard),
        }
    }
}

impl Drop for UserGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Counts a running session.
struct LiveGuard(Arc<ProxyState>);

impl LiveGuard {
    fn new(state: Arc<ProxyState>) -> Self {
        state
            .live_sessions
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        LiveGuard(state)
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0
            .live_sessions
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Puts `request` (client bytes already routed once) back in front of the client bytes not yet
/// routed, so the session routes it again before anything the client sent after it.
fn route_again(crbuf: &mut BytesMut, request: &[u8]) {
    let mut again = BytesMut::with_capacity(request.len() + crbuf.len());
    again.extend_from_slice(request);
    again.extend_from_slice(crbuf);
    *crbuf = again;
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

async fn read_opt(
    rd: Option<&mut StreamReader>,
    buf: Option<&mut BytesMut>,
) -> std::io::Result<usize> {
    match (rd, buf) {
        (Some(rd), Some(buf)) => rd.read_buf(buf).await,
        _ => std::future::pending().await,
    }
}

async fn write_opt(wr: Option<&mut StreamWriter>, data: &[u8]) -> std::io::Result<usize> {
    match wr {
        Some(wr) => wr.write(data).await,
        None => std::future::pending().await,
    }
}
