//! The scrape-time collector: metrics read from the topology snapshot, the failover controller,
//! the classification cache and the session counters each time Prometheus scrapes. Hot-path
//! metrics (statements routed, query durations, bytes, client connections) are registered
//! separately from `meridian_session::Stats::collectors`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use meridian_session::{ProxyState, WAIT_BUCKETS_MS};
use meridian_upstream::Role;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};

use MetricType::{COUNTER, GAUGE, HISTOGRAM};

/// Every family this collector produces: name, help, type, label names.
const SPECS: &[(&str, &str, MetricType, &[&str])] = &[
    ("meridian_build_info", "Meridian's version, as a label; always 1.", GAUGE, &["version"]),
    ("meridian_start_time_seconds", "Unix time when the admin side (and the proxy) started.", GAUGE, &[]),
    ("meridian_node_info", "Configured nodes with their address and region; always 1.", GAUGE, &["node", "host", "port", "region"]),
    ("meridian_node_up", "1 if the node answered its recent health checks, else 0.", GAUGE, &["node"]),
    ("meridian_node_role", "1 for the node's discovered role (primary, replica or unknown), 0 for the others.", GAUGE, &["node", "role"]),
    ("meridian_node_fenced", "1 if the node is fenced (a former or rival primary that gets no traffic).", GAUGE, &["node"]),
    ("meridian_fenced_nodes", "Number of fenced nodes.", GAUGE, &[]),
    ("meridian_primary_known", "1 if a primary is known (writes can be served), else 0.", GAUGE, &[]),
    ("meridian_healthy_replicas", "Replicas that are healthy and not fenced.", GAUGE, &[]),
    ("meridian_node_wal_position_bytes", "The node's WAL position as a byte offset: insert position on the primary, replay position on a replica.", GAUGE, &["node"]),
    ("meridian_replication_lag_bytes", "Bytes of WAL the primary has that the replica has not replayed.", GAUGE, &["node"]),
    ("meridian_replication_lag_seconds", "How far the replica's replay is behind in time (0 when it has replayed everything).", GAUGE, &["node"]),
    ("meridian_health_check_rtt_seconds", "Smoothed round-trip time of the health-check query.", GAUGE, &["node"]),
    ("meridian_server_connections", "Server connections open now from client sessions, by node.", GAUGE, &["node"]),
    ("meridian_server_connections_opened_total", "Server connections opened by client sessions, by node.", COUNTER, &["node"]),
    ("meridian_pool_idle_connections", "Transaction pooling: idle server connections waiting in the pools, by node (included in meridian_server_connections).", GAUGE, &["node"]),
    ("meridian_classify_cache_hits_total", "Classification cache lookups that found the SQL text.", COUNTER, &[]),
    ("meridian_classify_cache_misses_total", "Classification cache lookups that did not find the SQL text.", COUNTER, &[]),
    ("meridian_classify_cache_insertions_total", "Classifications stored in the cache.", COUNTER, &[]),
    ("meridian_classify_cache_evictions_total", "Classifications evicted from the cache to make room.", COUNTER, &[]),
    ("meridian_classify_cache_entries", "Classifications held in the cache now.", GAUGE, &[]),
    ("meridian_classify_cache_size_bytes", "Approximate memory held by the classification cache.", GAUGE, &[]),
    ("meridian_reads_replica_total", "Reads served by a replica.", COUNTER, &[]),
    ("meridian_reads_primary_fallback_total", "Reads sent to the primary instead of a replica, by reason (token: no replica replayed the session's writes in time; unavailable: replicas lag or none is healthy; strong: strong consistency).", COUNTER, &["reason"]),
    ("meridian_read_your_writes_tokens_total", "Write positions recorded as session tokens.", COUNTER, &[]),
    ("meridian_auto_prepare_total", "Auto-preparation of simple-protocol statements, by event (prepared: a statement prepared on a server connection; failed: the server refused the Parse and the statement runs unprepared; executed: a statement run as a prepared statement).", COUNTER, &["event"]),
    ("meridian_read_your_writes_wait_seconds", "Time reads waited for a replica to replay the session's last write.", HISTOGRAM, &[]),
    ("meridian_failovers_total", "Promotions (automatic or manual failovers and switchovers), by result.", COUNTER, &["result"]),
    ("meridian_last_failover_duration_seconds", "Duration of the last completed promotion.", GAUGE, &[]),
    ("meridian_last_failover_timestamp_seconds", "Unix time of the last completed promotion (0 if none).", GAUGE, &[]),
    ("meridian_acknowledged_wal_position_bytes", "Highest WAL position acknowledged to a client as committed.", GAUGE, &[]),
];

/// Reads the proxy's shared state when Prometheus scrapes.
pub struct ProxyCollector {
    state: Arc<ProxyState>,
    descs: Vec<Desc>,
    started_unix_s: f64,
}

impl ProxyCollector {
    /// A collector over `state`.
    pub fn new(state: Arc<ProxyState>) -> Result<Self, prometheus::Error> {
        let descs = SPECS
            .iter()
            .map(|(name, help, _, labels)| {
                Desc::new(
                    (*name).to_string(),
                    (*help).to_string(),
                    labels.iter().map(|l| (*l).to_string()).collect(),
                    HashMap::new(),
                )
            })
            .collect::<Result<_, _>>()?;
        let started_unix_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Ok(ProxyCollector {
            state,
            descs,
            started_unix_s,
        })
    }
}

impl Collector for ProxyCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = Families::default();
        let state = &self.state;
        let topo = state.topology.load();
        out.gauge("meridian_build_info", &[env!("CARGO_PKG_VERSION")], 1.0);
        out.gauge("meridian_start_time_seconds", &[], self.started_unix_s);
        let conns = state.stats.server_connections();
        let mut pool_idle = vec![0usize; topo.nodes.len()];
        for (node, _, idle) in state.pool_counts() {
            if let Some(n) = pool_idle.get_mut(node) {
                *n += idle;
            }
        }
        let mut fenced = 0;
        let mut healthy_replicas = 0;
        // Nodes removed by a reload keep their slot but are no longer reported.
        for (i, n) in topo.nodes.iter().enumerate().filter(|(_, n)| !n.removed) {
            let name = n.name.as_str();
            out.gauge(
                "meridian_node_info",
                &[name, &n.host, &n.port.to_string(), &n.region],
                1.0,
            );
            out.gauge("meridian_node_up", &[name], flag(n.healthy));
            for role in [Role::Primary, Role::Replica, Role::Unknown] {
                out.gauge(
                    "meridian_node_role",
                    &[name, role.as_str()],
                    flag(n.role == role),
                );
            }
            out.gauge("meridian_node_fenced", &[name], flag(n.fenced));
            fenced += usize::from(n.fenced);
            healthy_replicas += usize::from(n.healthy && n.role == Role::Replica && !n.fenced);
            out.gauge("meridian_node_wal_position_bytes", &[name], n.lsn.0 as f64);
            if n.role == Role::Replica {
                out.gauge(
                    "meridian_replication_lag_bytes",
                    &[name],
                    n.lag_bytes as f64,
                );
                out.gauge(
                    "meridian_replication_lag_seconds",
                    &[name],
                    n.lag_ms as f64 / 1000.0,
                );
            }
            if n.last_ok.is_some() {
                out.gauge(
                    "meridian_health_check_rtt_seconds",
                    &[name],
                    n.rtt_us as f64 / 1e6,
                );
            }
            let c = conns.get(i).copied().unwrap_or_default();
            out.gauge("meridian_server_connections", &[name], c.open as f64);
            out.counter(
                "meridian_server_connections_opened_total",
                &[name],
                c.opened as f64,
            );
            if state.config.pool.pool_mode == meridian_config::PoolMode::Transaction
                || pool_idle.get(i).is_some_and(|n| *n > 0)
            {
                let idle = pool_idle.get(i).copied().unwrap_or(0);
                out.gauge("meridian_pool_idle_connections", &[name], idle as f64);
            }
        }
        out.gauge("meridian_fenced_nodes", &[], fenced as f64);
        out.gauge("meridian_primary_known", &[], flag(topo.primary.is_some()));
        out.gauge("meridian_healthy_replicas", &[], healthy_replicas as f64);

        let cache = state.cache.stats();
        out.counter("meridian_classify_cache_hits_total", &[], cache.hits as f64);
        out.counter(
            "meridian_classify_cache_misses_total",
            &[],
            cache.misses as f64,
        );
        out.counter(
            "meridian_classify_cache_insertions_total",
            &[],
            cache.insertions as f64,
        );
        out.counter(
            "meridian_classify_cache_evictions_total",
            &[],
            cache.evictions as f64,
        );
        out.gauge("meridian_classify_cache_entries", &[], cache.entries as f64);
        out.gauge(
            "meridian_classify_cache_size_bytes",
            &[],
            cache.bytes as f64,
        );

        let s = &state.stats;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
        out.counter("meridian_reads_replica_total", &[], load(&s.reads_replica));
        for (reason, counter) in [
            ("token", &s.reads_primary_token),
            ("unavailable", &s.reads_primary_fallback),
            ("strong", &s.reads_primary_strong),
        ] {
            out.counter(
                "meridian_reads_primary_fallback_total",
                &[reason],
                load(counter),
            );
        }
        out.counter(
            "meridian_read_your_writes_tokens_total",
            &[],
            load(&s.tokens_recorded),
        );
        for (event, counter) in [
            ("prepared", &s.auto_prepared),
            ("failed", &s.auto_prepare_failed),
            ("executed", &s.auto_executed),
        ] {
            out.counter("meridian_auto_prepare_total", &[event], load(counter));
        }
        let counts: Vec<u64> = s
            .wait_buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let bounds: Vec<f64> = WAIT_BUCKETS_MS.iter().map(|ms| ms / 1000.0).collect();
        out.histogram(
            "meridian_read_your_writes_wait_seconds",
            &bounds,
            &counts,
            s.wait_sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        );

        let ha = &state.ha;
        out.counter(
            "meridian_failovers_total",
            &["success"],
            ha.counters.succeeded.load(Ordering::Relaxed) as f64,
        );
        out.counter(
            "meridian_failovers_total",
            &["failure"],
            ha.counters.failed.load(Ordering::Relaxed) as f64,
        );
        out.gauge(
            "meridian_last_failover_duration_seconds",
            &[],
            ha.counters.last_duration_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        );
        let last = crate::api::last_failover(&ha.events()).map_or(0, |e| e.at_ms);
        out.gauge(
            "meridian_last_failover_timestamp_seconds",
            &[],
            last as f64 / 1000.0,
        );
        out.gauge(
            "meridian_acknowledged_wal_position_bytes",
            &[],
            ha.acked_lsn().0 as f64,
        );
        out.finish()
    }
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// Families under construction, in `SPECS` order.
#[derive(Default)]
struct Families {
    by_name: HashMap<&'static str, MetricFamily>,
}

impl Families {
    fn family(&mut self, name: &str) -> Option<(&mut MetricFamily, &'static [&'static str])> {
        let (name, help, kind, labels) = SPECS.iter().find(|s| s.0 == name)?;
        let family = self.by_name.entry(name).or_insert_with(|| {
            let mut f = MetricFamily::default();
            f.set_name((*name).to_string());
            f.set_help((*help).to_string());
            f.set_field_type(*kind);
            f
        });
        Some((family, labels))
    }

    fn push(&mut self, name: &str, values: &[&str], fill: impl FnOnce(&mut proto::Metric)) {
        let Some((family, labels)) = self.family(name) else {
            debug_assert!(false, "metric {name} is not in SPECS");
            return;
        };
        debug_assert_eq!(labels.len(), values.len(), "labels of {name}");
        let pairs = labels
            .iter()
            .zip(values)
            .map(|(l, v)| {
                let mut p = LabelPair::default();
                p.set_name((*l).to_string());
                p.set_value((*v).to_string());
                p
            })
            .collect();
        let mut m = proto::Metric::from_label(pairs);
        fill(&mut m);
        family.mut_metric().push(m);
    }

    fn gauge(&mut self, name: &str, labels: &[&str], value: f64) {
        self.push(name, labels, |m| {
            let mut g = proto::Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        });
    }

    fn counter(&mut self, name: &str, labels: &[&str], value: f64) {
        self.push(name, labels, |m| {
            let mut c = proto::Counter::default();
            c.set_value(value);
            m.set_counter(c);
        });
    }

    /// A histogram from per-bucket (not cumulative) counts; the last count is the overflow.
    fn histogram(&mut self, name: &str, bounds: &[f64], counts: &[u64], sum: f64) {
        self.push(name, &[], |m| {
            let mut h = proto::Histogram::default();
            let mut cumulative = 0;
            let mut buckets = Vec::new();
            for (bound, count) in bounds.iter().zip(counts) {
                cumulative += count;
                let mut b = proto::Bucket::default();
                b.set_upper_bound(*bound);
                b.set_cumulative_count(cumulative);
                buckets.push(b);
            }
            h.set_bucket(buckets);
            h.set_sample_count(counts.iter().sum());
            h.set_sample_sum(sum);
            m.set_histogram(h);
        });
    }

    fn finish(mut self) -> Vec<MetricFamily> {
        SPECS
            .iter()
            .filter_map(|s| self.by_name.remove(s.0))
            .collect()
    }
}
