//! The monitor loop: one task per node keeps a tokio-postgres connection with the monitor
//! credentials, runs one health query per interval, and publishes a new topology snapshot.
//! A later stage widens this into the full health loop with failure thresholds and failover.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_config::{Config, ConfigHandle};
use tokio_postgres::Client;
use tracing::{debug, info, warn};

use crate::{Lsn, NodeState, ReplayTracker, Role, Topology, TopologyHandle};

/// One round trip: role, positions and replay delay (a replica that has replayed no commit since
/// it started counts its age from its start).
const HEALTH_SQL: &str = "SELECT pg_is_in_recovery(), \
    (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text, \
    pg_last_wal_receive_lsn()::text, \
    (EXTRACT(EPOCH FROM (clock_timestamp() - COALESCE(pg_last_xact_replay_timestamp(), pg_postmaster_start_time()))) * 1000)::float8";

/// The raw result of one successful check.
#[derive(Debug, Clone, Copy)]
struct Probe {
    in_recovery: bool,
    lsn: Lsn,
    receive_lsn: Lsn,
    replay_age_ms: f64,
    rtt: Duration,
    /// The lowest `rtt` over the last [`BASE_RTT_SAMPLES`] checks.
    base_rtt: Duration,
}

/// How many health checks the base round-trip time (the lowest) is taken over: 10 s at the
/// default `failover.check_interval_ms` of 250.
pub const BASE_RTT_SAMPLES: usize = 40;

/// The lowest of the last [`BASE_RTT_SAMPLES`] round-trip times.
#[derive(Debug, Default)]
struct BaseRtt(std::collections::VecDeque<Duration>);

impl BaseRtt {
    /// Records a sample and returns the lowest of the window.
    fn observe(&mut self, rtt: Duration) -> Duration {
        if self.0.len() == BASE_RTT_SAMPLES {
            self.0.pop_front();
        }
        self.0.push_back(rtt);
        self.0.iter().copied().min().unwrap_or(rtt)
    }
}

/// Builds the initial (all unknown) topology from the configuration.
pub fn initial_topology(config: &Config) -> Topology {
    Topology {
        nodes: config.nodes.iter().map(unknown_node).collect(),
        primary: None,
        generation: 0,
        writes_held: false,
    }
}

/// A configured node not checked yet.
pub fn unknown_node(n: &meridian_config::NodeConfig) -> NodeState {
    NodeState {
        name: n.name.clone(),
        host: n.host.clone(),
        port: n.port,
        region: n.region.clone(),
        role: Role::Unknown,
        healthy: false,
        lsn: Lsn::ZERO,
        receive_lsn: Lsn::ZERO,
        lag_bytes: 0,
        lag_ms: 0,
        rtt_us: 0,
        base_rtt_us: 0,
        last_ok: None,
        fenced: false,
        removed: false,
    }
}

/// Starts the monitor tasks (a health loop and a replay poller per node in the topology); they
/// run until the returned handle is dropped. After a reload changes the topology's node list,
/// `MonitorTasks::sync` starts, stops or restarts the tasks to match.
pub fn spawn(
    config: ConfigHandle,
    topology: TopologyHandle,
    tracker: Arc<ReplayTracker>,
) -> MonitorTasks {
    let tasks = MonitorTasks {
        config,
        topology,
        tracker,
        probes: Arc::new(Mutex::new(Vec::new())),
        slots: Mutex::new(Vec::new()),
    };
    tasks.sync();
    tasks
}

/// The tasks watching one node slot, and the address they watch.
struct Slot {
    addr: (String, u16),
    health: tokio::task::JoinHandle<()>,
    replay: tokio::task::JoinHandle<()>,
}

impl Slot {
    fn abort(&self) {
        self.health.abort();
        self.replay.abort();
    }
}

/// Owns the monitor tasks; dropping it stops them.
pub struct MonitorTasks {
    config: ConfigHandle,
    topology: TopologyHandle,
    tracker: Arc<ReplayTracker>,
    probes: Arc<Mutex<Vec<Option<Probe>>>>,
    slots: Mutex<Vec<Option<Slot>>>,
}

impl MonitorTasks {
    /// Matches the tasks to the topology: a node without tasks (added by a reload) gets them, a
    /// removed node loses them (and is published as unhealthy), a node whose address changed
    /// is watched afresh.
    pub fn sync(&self) {
        let topo = self.topology.load_full();
        let mut slots = lock(&self.slots);
        let mut probes = lock(&self.probes);
        if probes.len() < topo.nodes.len() {
            probes.resize(topo.nodes.len(), None);
        }
        if slots.len() < topo.nodes.len() {
            slots.resize_with(topo.nodes.len(), || None);
        }
        let mut dropped = false;
        for (index, node) in topo.nodes.iter().enumerate() {
            let addr = (node.host.clone(), node.port);
            let keep = !node.removed
                && slots[index]
                    .as_ref()
                    .is_some_and(|s| s.addr == addr && !s.health.is_finished());
            if keep {
                continue;
            }
            if let Some(old) = slots[index].take() {
                old.abort();
                probes[index] = None;
                self.tracker.reset(index);
                dropped = true;
            }
            if node.removed {
                continue;
            }
            let health = {
                let (config, topology) = (self.config.clone(), self.topology.clone());
                let (probes, tracker) = (self.probes.clone(), self.tracker.clone());
                tokio::spawn(async move {
                    node_loop(index, config, topology, probes, tracker).await;
                })
            };
            let replay = crate::replay::spawn_poller(
                index,
                self.config.clone(),
                self.topology.clone(),
                self.tracker.clone(),
            );
            slots[index] = Some(Slot {
                addr,
                health,
                replay,
            });
        }
        if dropped {
            self.topology.update(|prev| build(prev, &probes));
        }
    }
}

impl Drop for MonitorTasks {
    fn drop(&mut self) {
        for s in lock(&self.slots).iter().flatten() {
            s.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The monitor credentials a connection was opened with; a reload that changes them makes the
/// health loop reconnect.
fn credentials(config: &Config) -> (String, Option<String>, String) {
    let m = &config.monitor;
    (m.user.clone(), m.password.clone(), m.database.clone())
}

async fn node_loop(
    index: usize,
    config: ConfigHandle,
    topology: TopologyHandle,
    probes: Arc<Mutex<Vec<Option<Probe>>>>,
    tracker: Arc<ReplayTracker>,
) {
    let mut client: Option<Client> = None;
    let mut client_creds = None;
    let mut smoothed_rtt: Option<Duration> = None;
    let mut base_rtt = BaseRtt::default();
    // A node is declared down only after `failure_threshold` consecutive failed checks; until
    // then its last good probe stands.
    let mut last_good: Option<Probe> = None;
    let mut failures: u32 = 0;
    // A node that was declared down comes back only after `success_threshold` good checks.
    let mut down = false;
    let mut successes: u32 = 0;
    loop {
        // Intervals, thresholds and credentials are read each round so that a reload applies.
        let config = config.load_full();
        let interval = Duration::from_millis(config.failover.check_interval_ms);
        let timeout = Duration::from_millis(config.monitor.timeout_ms);
        let creds = credentials(&config);
        if client_creds.as_ref() != Some(&creds) {
            client = None;
            client_creds = Some(creds);
        }
        let (name, host, port) = match topology.load().nodes.get(index) {
            Some(n) if !n.removed => (n.name.clone(), n.host.clone(), n.port),
            _ => return,
        };
        let started = Instant::now();
        let result = tokio::time::timeout(timeout, check(&host, port, &config, &mut client)).await;
        let probe = match result {
            Ok(Ok(mut p)) => {
                let rtt = match smoothed_rtt {
                    None => p.rtt,
                    Some(prev) => (prev * 7 + p.rtt) / 8,
                };
                smoothed_rtt = Some(rtt);
                p.base_rtt = base_rtt.observe(p.rtt);
                p.rtt = rtt;
                tracker.observe(index, p.lsn);
                failures = 0;
                successes += 1;
                last_good = Some(p);
                if down && successes < config.failover.success_threshold {
                    None
                } else {
                    down = false;
                    Some(p)
                }
            }
            Ok(Err(e)) => {
                debug!(node = %name, error = %e, "health check failed");
                client = None;
                failures += 1;
                successes = 0;
                down |= failures >= config.failover.failure_threshold;
                last_good.filter(|_| !down)
            }
            Err(_) => {
                debug!(node = %name, "health check timed out");
                client = None;
                failures += 1;
                successes = 0;
                down |= failures >= config.failover.failure_threshold;
                last_good.filter(|_| !down)
            }
        };
        {
            let mut all = lock(&probes);
            if let Some(slot) = all.get_mut(index) {
                *slot = probe;
            }
            topology.update(|prev| {
                let next = build(prev, &all);
                log_changes(prev, &next);
                next
            });
        }
        let elapsed = started.elapsed();
        tokio::time::sleep(interval.saturating_sub(elapsed)).await;
    }
}

async fn check(
    host: &str,
    port: u16,
    config: &Config,
    client: &mut Option<Client>,
) -> Result<Probe, String> {
    if client.is_none() {
        let mut pg = tokio_postgres::Config::new();
        pg.host(host)
            .port(port)
            .user(&config.monitor.user)
            .password(config.monitor.password.as_deref().unwrap_or_default())
            .dbname(&config.monitor.database)
            .application_name("meridian-monitor")
            .connect_timeout(Duration::from_millis(config.monitor.timeout_ms));
        let tls = crate::NodeTls::for_host(config, host, port)
            .map_err(|e| e.to_string())?
            .configure(&mut pg);
        let (c, connection) = pg.connect(tls).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        *client = Some(c);
    }
    let Some(c) = client.as_ref() else {
        return Err("no monitor connection".into());
    };
    let t0 = Instant::now();
    let row = c
        .query_one(HEALTH_SQL, &[])
        .await
        .map_err(|e| e.to_string())?;
    let rtt = t0.elapsed();
    let lsn_of = |i: usize| -> Lsn {
        row.try_get::<_, Option<String>>(i)
            .ok()
            .flatten()
            .and_then(|s| s.parse().ok())
            .unwrap_or_default()
    };
    Ok(Probe {
        in_recovery: row.try_get(0).map_err(|e| e.to_string())?,
        lsn: lsn_of(1),
        receive_lsn: lsn_of(2),
        replay_age_ms: row.try_get(3).map_err(|e| e.to_string())?,
        rtt,
        base_rtt: rtt,
    })
}

/// Derives a topology from the latest probes (a node without a probe is unhealthy).
fn build(previous: &Topology, probes: &[Option<Probe>]) -> Topology {
    let mut nodes = previous.nodes.clone();
    for (node, probe) in nodes.iter_mut().zip(probes) {
        match probe {
            // A removed node's last probe may race its task being stopped: it stays down.
            Some(_) if node.removed => node.healthy = false,
            Some(p) => {
                node.healthy = true;
                node.role = if p.in_recovery {
                    Role::Replica
                } else {
                    Role::Primary
                };
                node.lsn = p.lsn;
                node.receive_lsn = p.receive_lsn;
                node.rtt_us = u64::try_from(p.rtt.as_micros()).unwrap_or(u64::MAX);
                node.base_rtt_us = u64::try_from(p.base_rtt.as_micros()).unwrap_or(u64::MAX);
                node.last_ok = Some(Instant::now());
            }
            None => node.healthy = false,
        }
    }
    // Keep the current primary while it stays healthy and writable; otherwise take the first
    // healthy writable node in configuration order.
    // Fenced nodes never become primary again on their own.
    let keeps = previous.primary.filter(|&i| {
        nodes
            .get(i)
            .is_some_and(|n| n.healthy && n.role == Role::Primary && !n.fenced)
    });
    let primary = keeps.or_else(|| {
        nodes
            .iter()
            .position(|n| n.healthy && n.role == Role::Primary && !n.fenced)
    });
    let primary_lsn = primary.map(|i| nodes[i].lsn).unwrap_or_default();
    for (node, probe) in nodes.iter_mut().zip(probes) {
        if let (Role::Replica, Some(p)) = (node.role, probe) {
            node.lag_bytes = primary_lsn.bytes_after(node.lsn);
            // An idle primary writes nothing, so replay age grows without any lag: count time
            // only while the replica is actually behind.
            node.lag_ms = if node.lag_bytes == 0 {
                0
            } else {
                p.replay_age_ms.max(0.0) as u64
            };
        }
    }
    Topology {
        nodes,
        primary,
        generation: previous.generation,
        writes_held: previous.writes_held,
    }
}

fn log_changes(prev: &Topology, next: &Topology) {
    if prev.primary != next.primary {
        match next.primary_node() {
            Some(p) => info!(node = %p.name, "primary discovered"),
            None => warn!("no reachable primary"),
        }
    }
    for (a, b) in prev.nodes.iter().zip(&next.nodes) {
        if a.healthy != b.healthy || a.role != b.role {
            info!(node = %b.name, role = b.role.as_str(), healthy = b.healthy, "node state changed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_rtt_is_the_lowest_of_the_recent_checks() {
        let ms = Duration::from_millis;
        let mut b = BaseRtt::default();
        assert_eq!(b.observe(ms(5)), ms(5));
        // Scheduling delays on single checks do not move it...
        assert_eq!(b.observe(ms(12)), ms(5));
        assert_eq!(b.observe(ms(1)), ms(1));
        assert_eq!(b.observe(ms(9)), ms(1));
        // ... until the low sample leaves the window: a node that moved away is seen as far.
        for _ in 0..BASE_RTT_SAMPLES - 1 {
            b.observe(ms(40));
        }
        assert_eq!(b.observe(ms(45)), ms(40));
    }
}
