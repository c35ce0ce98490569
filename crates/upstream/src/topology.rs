//! The topology snapshot: what the monitor last saw of every node. Sessions read it on every
//! routing decision through an `ArcSwap`, so the hot path takes no lock; the monitor publishes a
//! fresh snapshot after each round and bumps a watch channel for anyone waiting on a change.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::Lsn;

/// What a node currently is, as discovered (never configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not yet reached, or unreachable since start.
    Unknown,
    /// Accepts writes (`pg_is_in_recovery() = false`).
    Primary,
    /// A hot standby in recovery.
    Replica,
}

impl Role {
    /// Lower-case name for logs, metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Unknown => "unknown",
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// One node as last observed.
#[derive(Debug, Clone)]
pub struct NodeState {
    /// Configured name.
    pub name: String,
    /// Host to connect to.
    pub host: String,
    /// Port to connect to.
    pub port: u16,
    /// Configured region.
    pub region: String,
    /// Discovered role.
    pub role: Role,
    /// Whether the node answered its recent health checks.
    pub healthy: bool,
    /// Primary: current WAL insert position. Replica: last replayed position.
    pub lsn: Lsn,
    /// Replica: last position received from the primary.
    pub receive_lsn: Lsn,
    /// Replica: bytes of WAL the primary has that this node has not replayed.
    pub lag_bytes: u64,
    /// Replica: how far replay is behind in time (zero when fully caught up).
    pub lag_ms: u64,
    /// Smoothed round-trip time of the health query, in microseconds.
    pub rtt_us: u64,
    /// The lowest round-trip time of the health query over the last
    /// [`crate::monitor::BASE_RTT_SAMPLES`] checks, in microseconds: the distance to the node,
    /// without the queueing and scheduling delays a busy host adds to single checks. Replica
    /// choice compares nodes by this.
    pub base_rtt_us: u64,
    /// When this node was last checked successfully.
    pub last_ok: Option<Instant>,
    /// Fenced: a former primary on a divergent timeline (or a second node claiming to be
    /// primary). It gets no traffic until an operator rejoins it and unfences it.
    pub fenced: bool,
    /// Removed from the configuration by a reload: no health checks, no new traffic. Its slot
    /// (index) stays so that indices held by sessions stay valid; a later reload that names the
    /// node again reuses it.
    pub removed: bool,
}

impl NodeState {
    /// Whether `host:port` names this node.
    pub fn addr_string(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// An immutable picture of the cluster.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    /// Every configured node, in configuration order.
    pub nodes: Vec<NodeState>,
    /// Index into `nodes` of the node writes go to, if one is known.
    pub primary: Option<usize>,
    /// Incremented on every publish.
    pub generation: u64,
    /// A switchover is moving the primary: statements that need it wait.
    pub writes_held: bool,
}

impl Topology {
    /// The primary's state, if known.
    pub fn primary_node(&self) -> Option<&NodeState> {
        self.primary.and_then(|i| self.nodes.get(i))
    }

    /// The node writes may go to right now (none while held).
    pub fn writable(&self) -> Option<usize> {
        self.primary.filter(|_| !self.writes_held)
    }

    /// The index of the configured (not removed) node called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name && !n.removed)
    }
}

/// Shared, cheaply clonable access to the current topology.
#[derive(Clone)]
pub struct TopologyHandle {
    current: Arc<ArcSwap<Topology>>,
    changed: watch::Sender<u64>,
    /// Serializes writers (monitor, failover) so that no update is lost; readers never lock.
    writer: Arc<std::sync::Mutex<()>>,
}

impl TopologyHandle {
    /// A handle starting from `initial`.
    pub fn new(initial: Topology) -> Self {
        let (changed, _) = watch::channel(initial.generation);
        TopologyHandle {
            current: Arc::new(ArcSwap::from_pointee(initial)),
            changed,
            writer: Arc::new(std::sync::Mutex::new(())),
        }
    }

    /// The current snapshot (lock-free, and without touching a shared reference count: cheap
    /// enough for every statement). Do not hold it across an `.await`; use `load_full` there.
    pub fn load(&self) -> arc_swap::Guard<Arc<Topology>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`, to keep.
    pub fn load_full(&self) -> Arc<Topology> {
        self.current.load_full()
    }

    /// Replaces the snapshot with `f(current)` and wakes waiters. Writers are serialized.
    pub fn update(&self, f: impl FnOnce(&Topology) -> Topology) {
        let _guard = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let prev = self.current.load_full();
        let mut next = f(&prev);
        next.generation = prev.generation + 1;
        let generation = next.generation;
        self.current.store(Arc::new(next));
        self.changed.send_replace(generation);
    }

    /// Subscribes to change notifications.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Waits until `pred` holds for a snapshot, or `timeout` passes; returns the last snapshot seen.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Topology) -> bool,
    ) -> Arc<Topology> {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let topo = self.load_full();
            if pred(&topo) {
                return topo;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return self.load_full(),
            }
        }
    }
}
