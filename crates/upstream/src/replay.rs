//! Fresh replay positions for read-your-writes. The monitor reports every replica's replay LSN
//! once per interval; a session that needs a replica to reach a position sooner registers as a
//! waiter, and while anyone waits, a poller per replica asks that replica for
//! `pg_last_wal_replay_lsn()` every millisecond on one shared connection. No query is sent per
//! waiting statement, and nothing is polled while nobody waits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meridian_config::ConfigHandle;
use tokio::sync::{watch, Notify};
use tracing::debug;

use crate::{Lsn, TopologyHandle};

struct Track {
    lsn: watch::Sender<Lsn>,
    waiters: AtomicUsize,
    wake: Notify,
}

/// Latest known replay position of every node, with waiting.
pub struct ReplayTracker {
    nodes: Vec<Track>,
}

impl ReplayTracker {
    /// A tracker for `n` nodes.
    pub fn new(n: usize) -> Self {
        ReplayTracker {
            nodes: (0..n)
                .map(|_| Track {
                    lsn: watch::channel(Lsn::ZERO).0,
                    waiters: AtomicUsize::new(0),
                    wake: Notify::new(),
                })
                .collect(),
        }
    }

    /// Records that `node` has replayed at least `lsn`.
    pub fn observe(&self, node: usize, lsn: Lsn) {
        if let Some(t) = self.nodes.get(node) {
            t.lsn.send_if_modified(|cur| {
                if lsn > *cur {
                    *cur = lsn;
                    true
                } else {
                    false
                }
            });
        }
    }

    /// Forgets what was known of `node` (it was restarted, promoted or re-pointed).
    pub fn reset(&self, node: usize) {
        if let Some(t) = self.nodes.get(node) {
            t.lsn.send_replace(Lsn::ZERO);
        }
    }

    /// The latest known replay position of `node`.
    pub fn current(&self, node: usize) -> Lsn {
        self.nodes
            .get(node)
            .map(|t| *t.lsn.borrow())
            .unwrap_or_default()
    }

    /// Waits until `node` has replayed `lsn`, up to `timeout`. Returns whether it did.
    pub async fn wait(&self, node: usize, lsn: Lsn, timeout: Duration) -> bool {
        let Some(t) = self.nodes.get(node) else {
            return false;
        };
        if *t.lsn.borrow() >= lsn {
            return true;
        }
        let mut rx = t.lsn.subscribe();
        t.waiters.fetch_add(1, Ordering::AcqRel);
        t.wake.notify_one();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|v| *v >= lsn))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false);
        t.waiters.fetch_sub(1, Ordering::AcqRel);
        reached
    }
}

/// Starts the poller of node slot `node`; it sleeps while nobody waits.
pub fn spawn_poller(
    node: usize,
    config: ConfigHandle,
    topology: TopologyHandle,
    tracker: Arc<ReplayTracker>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { poll_node(node, config, topology, tracker).await })
}

async fn poll_node(
    node: usize,
    config: ConfigHandle,
    topology: TopologyHandle,
    tracker: Arc<ReplayTracker>,
) {
    let Some(track) = tracker.nodes.get(node) else {
        return;
    };
    let mut client: Option<tokio_postgres::Client> = None;
    loop {
        // The connection is opened ahead of need (authentication takes longer than a wait is
        // allowed to), then the poller sleeps until someone waits.
        if client.as_ref().is_some_and(|c| !c.is_closed())
            && track.waiters.load(Ordering::Acquire) == 0
        {
            track.wake.notified().await;
            continue;
        }
        let config = config.load_full();
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            let topo = topology.load();
            let Some(n) = topo.nodes.get(node).filter(|n| !n.removed) else {
                return;
            };
            let mut pg = tokio_postgres::Config::new();
            pg.host(&n.host)
                .port(n.port)
                .user(&config.monitor.user)
                .password(config.monitor.password.as_deref().unwrap_or_default())
                .dbname(&config.monitor.database)
                .application_name("meridian-replay-watch")
                .connect_timeout(Duration::from_millis(config.monitor.timeout_ms));
            let tls = match crate::NodeTls::for_host(&config, &n.host, n.port) {
                Ok(t) => t.configure(&mut pg),
                Err(e) => {
                    tracing::debug!(error = %e, "replay watcher: TLS setting unusable");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            match pg.connect(tls).await {
                Ok((c, conn)) => {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    client = Some(c);
                }
                Err(e) => {
                    debug!(node, error = %e, "replay watcher cannot connect");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
            continue;
        }
        let Some(c) = client.as_ref() else { continue };
        let q = c.query_one(
            "SELECT COALESCE(pg_last_wal_replay_lsn(), pg_current_wal_lsn())::text",
            &[],
        );
        match tokio::time::timeout(Duration::from_millis(config.monitor.timeout_ms), q).await {
            Ok(Ok(row)) => {
                if let Some(lsn) = row
                    .try_get::<_, String>(0)
                    .ok()
                    .and_then(|s| s.parse::<Lsn>().ok())
                {
                    tracker.observe(node, lsn);
                }
            }
            _ => client = None,
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_when_the_position_is_reached() {
        let t = Arc::new(ReplayTracker::new(2));
        t.observe(1, Lsn(100));
        assert!(t.wait(1, Lsn(50), Duration::from_millis(1)).await);
        let t2 = t.clone();
        let waiter =
            tokio::spawn(async move { t2.wait(1, Lsn(200), Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        t.observe(1, Lsn(150));
        t.observe(1, Lsn(250));
        assert!(waiter.await.expect("join"));
        assert!(!t.wait(0, Lsn(1), Duration::from_millis(5)).await);
        t.observe(1, Lsn(10));
        assert_eq!(t.current(1), Lsn(250), "positions never go back");
    }
}
