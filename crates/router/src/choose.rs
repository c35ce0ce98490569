//! Replica choice.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use meridian_config::{Balance, RoutingConfig};
use meridian_upstream::{Lsn, Role, Topology};

/// Why no replica could take a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoReplica {
    /// Replica reads are disabled or no replica is healthy.
    NoneHealthy,
    /// Healthy replicas exist but all lag beyond the limits.
    Lag,
    /// Replicas are within limits but none has replayed the required position yet.
    Token,
}

impl NoReplica {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            NoReplica::NoneHealthy => "no_replica",
            NoReplica::Lag => "lag",
            NoReplica::Token => "token",
        }
    }
}

/// The outcome of a replica choice.
pub type Choice = Result<usize, NoReplica>;

/// Picks replicas; shared by all sessions (balance state is atomic).
#[derive(Debug)]
pub struct ReplicaChooser {
    next: AtomicUsize,
    in_use: Vec<AtomicUsize>,
    /// Per node: until when (ms since `epoch`) sessions should avoid it because a connection to
    /// it just failed; the monitor needs a few checks to notice.
    suspect_until: Vec<AtomicU64>,
    epoch: Instant,
}

/// How long a node that refused a session's connection is avoided.
const SUSPECT_FOR: Duration = Duration::from_secs(2);

impl ReplicaChooser {
    /// A chooser for `nodes` nodes (indices as in the topology).
    pub fn new(nodes: usize) -> Self {
        ReplicaChooser {
            next: AtomicUsize::new(0),
            in_use: (0..nodes).map(|_| AtomicUsize::new(0)).collect(),
            suspect_until: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
        }
    }

    /// A session could not connect to `node`: avoid it for reads for a short while.
    pub fn suspect(&self, node: usize) {
        if let Some(s) = self.suspect_until.get(node) {
            let until = (self.epoch.elapsed() + SUSPECT_FOR).as_millis() as u64;
            s.store(until, Ordering::Relaxed);
        }
    }

    fn is_suspect(&self, node: usize) -> bool {
        self.suspect_until.get(node).is_some_and(|s| {
            let until = s.load(Ordering::Relaxed);
            until != 0 && (self.epoch.elapsed().as_millis() as u64) < until
        })
    }

    /// Records that a session started (`+1`) or stopped (`-1`) using `node`, for
    /// least-connections balancing.
    pub fn track(&self, node: usize, starting: bool) {
        if let Some(c) = self.in_use.get(node) {
            if starting {
                c.fetch_add(1, Ordering::Relaxed);
            } else {
                let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
            }
        }
    }

    /// Sessions currently using `node`.
    pub fn sessions_on(&self, node: usize) -> usize {
        self.in_use
            .get(node)
            .map(|c| c.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Chooses a replica for a read that must see at least `min_lsn`. `prefer` (the replica the
    /// session used last) wins whenever it is among the best candidates, so that a session stays
    /// on one replica; `fresh` gives a more recent replay position than the snapshot, if known.
    pub fn choose(
        &self,
        topo: &Topology,
        cfg: &RoutingConfig,
        region: &str,
        min_lsn: Lsn,
        prefer: Option<usize>,
        fresh: impl Fn(usize) -> Lsn,
    ) -> Choice {
        if !cfg.read_replicas {
            return Err(NoReplica::NoneHealthy);
        }
        let mut any_healthy = false;
        let mut any_in_lag = false;
        // Candidates as (index, same_region, base_rtt_us), collected without allocating.
        let mut best: [(usize, bool, u64); 16] = [(0, false, 0); 16];
        let mut n = 0;
        for (i, node) in topo.nodes.iter().enumerate() {
            if node.role != Role::Replica
                || !node.healthy
                || node.fenced
                || node.removed
                || Some(i) == topo.primary
                || self.is_suspect(i)
            {
                continue;
            }
            any_healthy = true;
            if node.lag_bytes > cfg.max_replica_lag_bytes || node.lag_ms > cfg.max_replica_lag_ms {
                continue;
            }
            any_in_lag = true;
            if node.lsn.max(fresh(i)) < min_lsn {
                continue;
            }
            if n < best.len() {
                best[n] = (i, node.region == region, node.base_rtt_us);
                n += 1;
            }
        }
        if n == 0 {
            return Err(if !any_healthy {
                NoReplica::NoneHealthy
            } else if !any_in_lag {
                NoReplica::Lag
            } else {
                NoReplica::Token
            });
        }
        let cands = &mut best[..n];
        let local = cands.iter().any(|c| c.1);
        let min_rtt = cands
            .iter()
            .filter(|c| c.1 == local)
            .map(|c| c.2)
            .min()
            .unwrap_or(0);
        let tolerance = (cfg.latency_tolerance_ms * 1000.0) as u64;
        let eligible = |c: &(usize, bool, u64)| c.1 == local && c.2 <= min_rtt + tolerance;
        if let Some(p) = prefer {
            if cands.iter().any(|c| c.0 == p && eligible(c)) {
                return Ok(p);
            }
        }
        let count = cands.iter().filter(|c| eligible(c)).count();
        let pick = match cfg.balance {
            Balance::RoundRobin => {
                let k = self.next.fetch_add(1, Ordering::Relaxed) % count.max(1);
                cands.iter().filter(|c| eligible(c)).nth(k).map(|c| c.0)
            }
            Balance::LeastConnections => cands
                .iter()
                .filter(|c| eligible(c))
                .min_by_key(|c| self.sessions_on(c.0))
                .map(|c| c.0),
        };
        pick.ok_or(NoReplica::NoneHealthy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_upstream::NodeState;

    fn node(name: &str, role: Role, region: &str, rtt_us: u64, lsn: u64, lag: u64) -> NodeState {
        NodeState {
            name: name.into(),
            host: "127.0.0.1".into(),
            port: 1,
            region: region.into(),
            role,
            healthy: true,
            lsn: Lsn(lsn),
            receive_lsn: Lsn(lsn),
            lag_bytes: lag,
            lag_ms: 0,
            rtt_us,
            base_rtt_us: rtt_us,
            last_ok: None,
            fenced: false,
            removed: false,
        }
    }

    fn topo(nodes: Vec<NodeState>) -> Topology {
        Topology {
            nodes,
            primary: Some(0),
            generation: 1,
            writes_held: false,
        }
    }

    #[test]
    fn same_region_beats_lower_latency_elsewhere() {
        let t = topo(vec![
            node("p", Role::Primary, "eu", 100, 100, 0),
            node("far", Role::Replica, "us", 100, 100, 0),
            node("near", Role::Replica, "eu", 5_000, 100, 0),
        ]);
        let c = ReplicaChooser::new(3);
        for _ in 0..10 {
            assert_eq!(
                c.choose(&t, &RoutingConfig::default(), "eu", Lsn(0), None, |_| Lsn(
                    0
                )),
                Ok(2)
            );
        }
    }

    #[test]
    fn lowest_latency_wins_within_a_region_and_ties_rotate() {
        let t = topo(vec![
            node("p", Role::Primary, "eu", 100, 100, 0),
            node("a", Role::Replica, "eu", 200, 100, 0),
            node("b", Role::Replica, "eu", 300, 100, 0),
            node("slow", Role::Replica, "eu", 50_000, 100, 0),
        ]);
        let c = ReplicaChooser::new(4);
        let mut seen = [0; 4];
        for _ in 0..20 {
            let i = c
                .choose(&t, &RoutingConfig::default(), "eu", Lsn(0), None, |_| {
                    Lsn(0)
                })
                .expect("replica");
            seen[i] += 1;
        }
        assert_eq!(seen, [0, 10, 10, 0]);
    }

    #[test]
    fn lagging_and_behind_token_replicas_are_skipped() {
        let cfg = RoutingConfig {
            max_replica_lag_bytes: 1000,
            ..RoutingConfig::default()
        };
        let t = topo(vec![
            node("p", Role::Primary, "eu", 100, 10_000, 0),
            node("lagging", Role::Replica, "eu", 100, 5_000, 5_000),
            node("ok", Role::Replica, "eu", 900, 9_500, 500),
        ]);
        let c = ReplicaChooser::new(3);
        assert_eq!(c.choose(&t, &cfg, "eu", Lsn(0), None, |_| Lsn(0)), Ok(2));
        assert_eq!(
            c.choose(&t, &cfg, "eu", Lsn(9_600), None, |_| Lsn(0)),
            Err(NoReplica::Token)
        );
        // A fresher position than the snapshot makes it eligible.
        assert_eq!(
            c.choose(&t, &cfg, "eu", Lsn(9_600), None, |i| Lsn(if i == 2 {
                9_700
            } else {
                0
            })),
            Ok(2)
        );
        let t2 = topo(vec![
            node("p", Role::Primary, "eu", 100, 10_000, 0),
            node("lagging", Role::Replica, "eu", 100, 5_000, 5_000),
        ]);
        assert_eq!(
            c.choose(&t2, &cfg, "eu", Lsn(0), None, |_| Lsn(0)),
            Err(NoReplica::Lag)
        );
        let t3 = topo(vec![node("p", Role::Primary, "eu", 100, 10_000, 0)]);
        assert_eq!(
            c.choose(&t3, &cfg, "eu", Lsn(0), None, |_| Lsn(0)),
            Err(NoReplica::NoneHealthy)
        );
    }

    #[test]
    fn least_connections_prefers_the_idler_replica() {
        let cfg = RoutingConfig {
            balance: Balance::LeastConnections,
            ..RoutingConfig::default()
        };
        let t = topo(vec![
            node("p", Role::Primary, "eu", 100, 100, 0),
            node("a", Role::Replica, "eu", 100, 100, 0),
            node("b", Role::Replica, "eu", 100, 100, 0),
        ]);
        let c = ReplicaChooser::new(3);
        c.track(1, true);
        c.track(1, true);
        c.track(2, true);
        assert_eq!(c.choose(&t, &cfg, "eu", Lsn(0), None, |_| Lsn(0)), Ok(2));
        c.track(1, false);
        c.track(1, false);
        assert_eq!(c.choose(&t, &cfg, "eu", Lsn(0), None, |_| Lsn(0)), Ok(1));
    }

    #[test]
    fn the_preferred_replica_sticks_while_it_is_among_the_best() {
        let t = topo(vec![
            node("p", Role::Primary, "eu", 100, 100, 0),
            node("a", Role::Replica, "eu", 100, 100, 0),
            node("b", Role::Replica, "eu", 100, 100, 0),
            node("far", Role::Replica, "us", 100, 100, 0),
        ]);
        let c = ReplicaChooser::new(4);
        for _ in 0..5 {
            assert_eq!(
                c.choose(&t, &RoutingConfig::default(), "eu", Lsn(0), Some(2), |_| {
                    Lsn(0)
                }),
                Ok(2)
            );
        }
        // A preferred replica outside the best group does not stick.
        let got = c.choose(&t, &RoutingConfig::default(), "eu", Lsn(0), Some(3), |_| {
            Lsn(0)
        });
        assert!(matches!(got, Ok(1) | Ok(2)));
    }

    #[test]
    fn unhealthy_replicas_are_skipped() {
        let mut down = node("down", Role::Replica, "eu", 100, 100, 0);
        down.healthy = false;
        let t = topo(vec![
            node("p", Role::Primary, "eu", 100, 100, 0),
            down,
            node("up", Role::Replica, "eu", 100, 100, 0),
        ]);
        let c = ReplicaChooser::new(3);
        for _ in 0..5 {
            assert_eq!(
                c.choose(&t, &RoutingConfig::default(), "eu", Lsn(0), None, |_| Lsn(
                    0
                )),
                Ok(2)
            );
        }
    }
}
