//! Transaction pooling: server connections shared between client sessions.
//!
//! One [`Pool`] per (node, user, database, startup parameters). A pool holds its idle
//! connections (reused last-in first-out, so a few stay warm and the rest age out) and counts
//! every connection it opened, idle or checked out, against its size. A checked-out connection
//! carries a [`Ticket`]; dropping the connection anywhere (closed by a session, lost, pruned)
//! drops the ticket, which frees its place and wakes one waiter.
//!
//! Waiting sessions queue in order: a connection given back, or the place of one that closed,
//! goes to the longest waiter, so a session that keeps releasing and taking connections cannot
//! starve the others.
//!
//! A background task closes connections idle longer than `pool.idle_timeout` (keeping
//! `pool.min_idle`) and idle connections their server has closed, opens connections up to
//! `min_idle`, and drops idle connections to nodes that are fenced or gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use meridian_upstream::{ConnectParams, UpstreamError};
use std::collections::VecDeque;

use tokio::sync::oneshot;
use tracing::debug;

use crate::session::Backend;
use crate::session::ServerGuard;
use crate::ProxyState;

/// How often the maintenance task looks at the pools.
const MAINTENANCE_EVERY: Duration = Duration::from_millis(500);

/// Every pool of the proxy.
#[derive(Default)]
pub(crate) struct Pools {
    map: Mutex<HashMap<(usize, String), Arc<Pool>>>,
    /// Server statement names some server accepted (ParseComplete), per pool key.
    known: Mutex<HashMap<String, std::collections::HashSet<String>>>,
    maintenance: AtomicBool,
    closed: AtomicBool,
}

/// What identifies a pool's connections: a server connection can serve any session with the same
/// user, database and startup parameters.
#[derive(Debug, Clone)]
pub(crate) struct PoolIdentity {
    pub user: String,
    pub database: String,
    pub params: Vec<(String, String)>,
}

/// The connections to one node for one identity.
pub(crate) struct Pool {
    node: usize,
    /// The pool key (user, database, startup parameters).
    pub key: String,
    size: usize,
    identity: PoolIdentity,
    inner: Mutex<Inner>,
}

struct Inner {
    idle: Vec<(Backend, Instant)>,
    /// Connections opened and not yet closed (idle, checked out, or being opened).
    open: usize,
    /// Sessions waiting for a connection, oldest first.
    waiters: VecDeque<oneshot::Sender<Grant>>,
}

/// What a waiting session is given.
// Moved once per hand-over, never stored in bulk: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Grant {
    /// A connection given back.
    Conn(Backend),
    /// The place of a connection that closed: open a new one.
    Open(Ticket),
}

/// A connection's place in its pool.
pub(crate) struct Ticket(Option<Arc<Pool>>);

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ticket(node {:?})", self.0.as_ref().map(|p| p.node))
    }
}

impl Ticket {
    /// The pool this connection belongs to.
    pub fn pool(&self) -> Option<&Arc<Pool>> {
        self.0.as_ref()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take() {
            // The place passes to the longest waiter, if any.
            let again = Ticket(Some(pool.clone()));
            pool.hand_over(Grant::Open(again));
        }
    }
}

impl Pools {
    /// The pool for `node` and `key` (user, database and startup parameters), created on first
    /// use with `size` connections at most.
    pub fn get(
        &self,
        state: &Arc<ProxyState>,
        node: usize,
        key: &str,
        size: usize,
        identity: impl FnOnce() -> PoolIdentity,
    ) -> Arc<Pool> {
        if !self.maintenance.swap(true, Ordering::AcqRel) {
            tokio::spawn(maintain(Arc::downgrade(state)));
        }
        let mut map = match self.map.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if let Some(p) = map.get(&(node, key.to_string())) {
            return p.clone();
        }
        let pool = Arc::new(Pool {
            node,
            key: key.to_string(),
            size,
            identity: identity(),
            inner: Mutex::new(Inner {
                idle: Vec::new(),
                open: 0,
                waiters: VecDeque::new(),
            }),
        });
        map.insert((node, key.to_string()), pool.clone());
        pool
    }

    /// Closes every idle connection and forgets the pools (at shutdown).
    pub fn close_all(&self) {
        self.closed.store(true, Ordering::Release);
        let pools: Vec<Arc<Pool>> = match self.map.lock() {
            Ok(mut m) => m.drain().map(|(_, p)| p).collect(),
            Err(_) => return,
        };
        for p in pools {
            drop(p.take_idle(|_, _| true));
        }
    }

    /// Notes that a server accepted the Parse of statement `name` for pool `key`.
    pub fn note_known(&self, key: &str, name: &str) {
        if let Ok(mut k) = self.known.lock() {
            match k.get_mut(key) {
                Some(set) => {
                    if !set.contains(name) {
                        set.insert(name.to_string());
                    }
                }
                None => {
                    k.insert(key.to_string(), std::iter::once(name.to_string()).collect());
                }
            }
        }
    }

    /// Whether a server already accepted the Parse of every statement in `names` for `key`.
    pub fn all_known<'a>(&self, key: &str, mut names: impl Iterator<Item = &'a str>) -> bool {
        match self.known.lock() {
            Ok(k) => match k.get(key) {
                Some(set) => names.all(|n| set.contains(n)),
                None => false,
            },
            Err(_) => false,
        }
    }

    fn snapshot(&self) -> Vec<Arc<Pool>> {
        match self.map.lock() {
            Ok(m) => m.values().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// (node, open, idle) for every pool, for metrics and tests.
    pub fn counts(&self) -> Vec<(usize, usize, usize)> {
        self.snapshot()
            .iter()
            .filter_map(|p| p.inner.lock().ok().map(|g| (p.node, g.open, g.idle.len())))
            .collect()
    }
}

/// What a checkout does next.
#[allow(clippy::large_enum_variant)]
enum Next {
    Reuse(Backend),
    Open(Ticket),
    Wait(oneshot::Receiver<Grant>),
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// A connection for a session: an idle one that is still alive, a new one while the pool is
    /// below its size, or, in turn with other waiters, the next one freed within `timeout`.
    pub async fn checkout(
        self: &Arc<Self>,
        state: &Arc<ProxyState>,
        timeout: Duration,
    ) -> Result<Backend, UpstreamError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = {
                let mut g = self.lock();
                if let Some((b, _)) = g.idle.pop() {
                    Next::Reuse(b)
                } else if g.open < self.size {
                    g.open += 1;
                    Next::Open(Ticket(Some(self.clone())))
                } else {
                    let (tx, rx) = oneshot::channel();
                    g.waiters.push_back(tx);
                    Next::Wait(rx)
                }
            };
            let grant = match next {
                Next::Reuse(b) => Grant::Conn(b),
                Next::Open(t) => Grant::Open(t),
                Next::Wait(mut rx) => match tokio::time::timeout_at(deadline, &mut rx).await {
                    Ok(Ok(grant)) => grant,
                    Ok(Err(_)) => continue,
                    Err(_) => {
                        // A grant sent just as the wait ended is still taken.
                        rx.close();
                        match rx.try_recv() {
                            Ok(grant) => grant,
                            Err(_) => return Err(self.timeout_error(state, timeout)),
                        }
                    }
                },
            };
            match grant {
                Grant::Conn(mut b) => {
                    if b.idle_and_alive() {
                        return Ok(b);
                    }
                    // Closed by its server while idle (pg_terminate_backend, restart): its
                    // place goes to a new connection.
                    debug!(
                        node = self.node,
                        "pooled server connection went away; replacing it"
                    );
                }
                Grant::Open(ticket) => return self.open(state, ticket).await,
            }
        }
    }

    fn timeout_error(&self, state: &ProxyState, timeout: Duration) -> UpstreamError {
        let node = state
            .config
            .nodes
            .get(self.node)
            .map(|n| n.name.clone())
            .unwrap_or_default();
        UpstreamError::PoolTimeout {
            node,
            pool_size: self.size,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Gives a connection, or the place of a closed one, to the longest waiter; without
    /// waiters the connection goes idle and the place is freed.
    fn hand_over(&self, mut grant: Grant) {
        loop {
            let waiter = {
                let mut g = self.lock();
                match g.waiters.pop_front() {
                    Some(w) => w,
                    None => {
                        match grant {
                            Grant::Conn(b) => g.idle.push((b, Instant::now())),
                            Grant::Open(mut t) => {
                                g.open = g.open.saturating_sub(1);
                                drop(g);
                                // The place is freed above, not handed over again.
                                t.0 = None;
                            }
                        }
                        return;
                    }
                }
            };
            match waiter.send(grant) {
                Ok(()) => return,
                // That waiter gave up: the next one.
                Err(back) => grant = back,
            }
        }
    }

    /// Opens a connection in the place `ticket` holds.
    async fn open(
        self: &Arc<Self>,
        state: &Arc<ProxyState>,
        ticket: Ticket,
    ) -> Result<Backend, UpstreamError> {
        let topo = state.topology.load();
        let Some(n) = topo.nodes.get(self.node) else {
            return Err(UpstreamError::NoPrimary);
        };
        let id = &self.identity;
        let password = state
            .users
            .get(&id.user)
            .map(|u| u.password.clone())
            .unwrap_or_default();
        let params = ConnectParams {
            node: self.node,
            host: &n.host,
            port: n.port,
            user: &id.user,
            password: &password,
            database: &id.database,
            extra: &id.params,
            tls: &state.upstream_tls.load().for_host(&n.host, n.port),
            max_message_bytes: state.config.proxy.max_message_bytes,
            timeout: Duration::from_millis(state.config.proxy.connect_timeout_ms),
        };
        let conn = meridian_upstream::connect(&params).await?;
        debug!(node = %n.name, pid = conn.pid, "pooled server connection opened");
        let guard = ServerGuard::new(state.clone(), self.node);
        let mut b = Backend::new(conn, guard);
        b.ticket = Some(ticket);
        Ok(b)
    }

    /// Takes back a connection whose session has let it go.
    pub fn checkin(&self, b: Backend) {
        self.hand_over(Grant::Conn(b));
    }

    /// Removes the idle connections `drop_it` selects (the caller drops them outside the lock).
    fn take_idle(&self, mut drop_it: impl FnMut(&mut Backend, Instant) -> bool) -> Vec<Backend> {
        let mut out = Vec::new();
        if let Ok(mut g) = self.inner.lock() {
            let mut keep = Vec::with_capacity(g.idle.len());
            for (mut b, since) in g.idle.drain(..) {
                if drop_it(&mut b, since) {
                    out.push(b);
                } else {
                    keep.push((b, since));
                }
            }
            g.idle = keep;
        }
        out
    }
}

/// Prunes idle connections past `idle_timeout` (beyond `min_idle`) and on fenced or removed
/// nodes, and opens connections up to `min_idle`.
async fn maintain(state: Weak<ProxyState>) {
    loop {
        tokio::time::sleep(MAINTENANCE_EVERY).await;
        let Some(state) = state.upgrade() else {
            return;
        };
        if state.pools.closed.load(Ordering::Acquire) {
            return;
        }
        let cfg = &state.config.pool;
        let idle_timeout = cfg.idle_timeout.duration();
        let topo = state.topology.load();
        for pool in state.pools.snapshot() {
            let usable = topo
                .nodes
                .get(pool.node)
                .is_some_and(|n| !n.fenced && n.healthy);
            let idle_now = pool.inner.lock().map(|g| g.idle.len()).unwrap_or(0);
            let mut excess = idle_now.saturating_sub(cfg.min_idle);
            let now = Instant::now();
            let gone = pool.take_idle(|b, since| {
                // Closed by its server while idle: replaced below if min_idle asks for it.
                if !usable || !b.idle_and_alive() {
                    return true;
                }
                // The oldest idle connections come first in the list.
                if excess > 0 && !idle_timeout.is_zero() && now - since >= idle_timeout {
                    excess -= 1;
                    return true;
                }
                false
            });
            if !gone.is_empty() {
                debug!(
                    node = pool.node,
                    closed = gone.len(),
                    "idle pooled connections closed"
                );
            }
            drop(gone);
            if !usable {
                continue;
            }
            // Warm up to min_idle, one connection per pool per round.
            let opening = {
                let mut g = match pool.inner.lock() {
                    Ok(g) => g,
                    Err(_) => continue,
                };
                if g.idle.len() < cfg.min_idle && g.open < pool.size {
                    g.open += 1;
                    Some(Ticket(Some(pool.clone())))
                } else {
                    None
                }
            };
            if let Some(ticket) = opening {
                match pool.open(&state, ticket).await {
                    Ok(b) => pool.checkin(b),
                    Err(e) => debug!(node = pool.node, error = %e, "warming the pool failed"),
                }
            }
        }
    }
}
