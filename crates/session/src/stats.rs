//! Counters the sessions keep for metrics: where statements went and why, read-your-writes
//! waits, query durations, bytes, client and server connections.
//!
//! Everything here is cheap on the hot path: plain atomics, or `prometheus` metric handles
//! (themselves atomics behind a label lookup). The admin crate registers the handles
//! ([`Stats::collectors`]) and reads the atomics when Prometheus scrapes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
};

/// Upper bounds (milliseconds) of the catch-up wait histogram buckets.
pub const WAIT_BUCKETS_MS: [f64; 8] = [0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0];

/// Upper bounds (seconds) of the query duration histogram buckets.
pub const QUERY_BUCKETS_S: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Server connections to one node.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServerConns {
    /// Connections open now.
    pub open: u64,
    /// Connections opened since start.
    pub opened: u64,
}

/// Session-wide counters.
#[derive(Debug)]
pub struct Stats {
    /// Reads served by a replica.
    pub reads_replica: AtomicU64,
    /// Reads sent to the primary because no replica had reached the session's token in time.
    pub reads_primary_token: AtomicU64,
    /// Reads sent to the primary because replicas lag or none is healthy.
    pub reads_primary_fallback: AtomicU64,
    /// Reads sent to the primary because of `strong` consistency.
    pub reads_primary_strong: AtomicU64,
    /// Write-position probes that advanced a session token.
    pub tokens_recorded: AtomicU64,
    /// Auto-preparation: statements prepared on a server connection.
    pub auto_prepared: AtomicU64,
    /// Auto-preparation: Parse requests the server refused (the statement runs unprepared).
    pub auto_prepare_failed: AtomicU64,
    /// Auto-preparation: simple-protocol statements run as a prepared statement.
    pub auto_executed: AtomicU64,
    /// Catch-up waits: count per bucket (last: overflow), sum in microseconds.
    pub wait_buckets: [AtomicU64; 9],
    /// Sum of catch-up wait time, microseconds.
    pub wait_sum_us: AtomicU64,
    routed: IntCounterVec,
    query_duration: HistogramVec,
    query_primary: Histogram,
    query_replica: Histogram,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
    clients: IntGaugeVec,
    clients_accepted: IntCounter,
    clients_rejected: IntCounter,
    servers: Mutex<Vec<ServerConns>>,
}

impl Default for Stats {
    fn default() -> Self {
        // Names and labels are constants: creating these metrics cannot fail.
        let routed = IntCounterVec::new(
            Opts::new(
                "meridian_statements_routed_total",
                "Statements (or extended-protocol batches) routed, by target role and reason.",
            ),
            &["target", "reason"],
        )
        .expect("valid metric");
        let query_duration = HistogramVec::new(
            HistogramOpts::new(
                "meridian_query_duration_seconds",
                "Time from sending a client request to a server until its ReadyForQuery, by target role.",
            )
            .buckets(QUERY_BUCKETS_S.to_vec()),
            &["target"],
        )
        .expect("valid metric");
        let query_primary = query_duration.with_label_values(&["primary"]);
        let query_replica = query_duration.with_label_values(&["replica"]);
        let clients = IntGaugeVec::new(
            Opts::new(
                "meridian_client_connections",
                "Client connections open now, by state (startup: negotiating or authenticating; session: authenticated).",
            ),
            &["state"],
        )
        .expect("valid metric");
        for state in ["startup", "session"] {
            clients.with_label_values(&[state]).set(0);
        }
        Stats {
            reads_replica: AtomicU64::new(0),
            reads_primary_token: AtomicU64::new(0),
            reads_primary_fallback: AtomicU64::new(0),
            reads_primary_strong: AtomicU64::new(0),
            tokens_recorded: AtomicU64::new(0),
            auto_prepared: AtomicU64::new(0),
            auto_prepare_failed: AtomicU64::new(0),
            auto_executed: AtomicU64::new(0),
            wait_buckets: Default::default(),
            wait_sum_us: AtomicU64::new(0),
            routed,
            query_duration,
            query_primary,
            query_replica,
            bytes_in: IntCounter::new(
                "meridian_client_to_server_bytes_total",
                "Bytes forwarded from clients to Postgres servers.",
            )
            .expect("valid metric"),
            bytes_out: IntCounter::new(
                "meridian_server_to_client_bytes_total",
                "Bytes forwarded from Postgres servers to clients.",
            )
            .expect("valid metric"),
            clients,
            clients_accepted: IntCounter::new(
                "meridian_client_connections_accepted_total",
                "Client connections accepted (within the connection limit).",
            )
            .expect("valid metric"),
            clients_rejected: IntCounter::new(
                "meridian_client_connections_rejected_total",
                "Client connections refused with 53300 because max_client_connections was reached.",
            )
            .expect("valid metric"),
            servers: Mutex::new(Vec::new()),
        }
    }
}

impl Stats {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one catch-up wait.
    pub fn observe_wait(&self, waited: Duration) {
        let ms = waited.as_secs_f64() * 1000.0;
        let i = WAIT_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(WAIT_BUCKETS_MS.len());
        if let Some(b) = self.wait_buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.wait_sum_us
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
    }

    /// The metric handles this struct owns, for registration in a `prometheus::Registry`.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.routed.clone()),
            Box::new(self.query_duration.clone()),
            Box::new(self.bytes_in.clone()),
            Box::new(self.bytes_out.clone()),
            Box::new(self.clients.clone()),
            Box::new(self.clients_accepted.clone()),
            Box::new(self.clients_rejected.clone()),
        ]
    }

    /// Statements routed so far as `(target, reason, count)`, sorted.
    pub fn routed_counts(&self) -> Vec<(String, String, u64)> {
        let mut out = Vec::new();
        for family in self.routed.collect() {
            for m in family.get_metric() {
                let label = |name: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_string())
                        .unwrap_or_default()
                };
                out.push((
                    label("target"),
                    label("reason"),
                    m.get_counter().get_value() as u64,
                ));
            }
        }
        out.sort();
        out
    }

    /// Server connections per node index (nodes never connected to may be missing at the end).
    pub fn server_connections(&self) -> Vec<ServerConns> {
        lock(&self.servers).clone()
    }

    /// Client connections now in `state` (`startup` or `session`).
    pub fn clients_in(&self, state: &str) -> i64 {
        self.clients.with_label_values(&[state]).get()
    }

    /// Counts a client connection refused at the connection limit.
    pub fn client_rejected(&self) {
        self.clients_rejected.inc();
    }

    /// Counts an accepted client connection until the returned guard is dropped; it starts in
    /// the `startup` state.
    pub fn client_connected(&self) -> ClientGuard<'_> {
        self.clients_accepted.inc();
        self.clients.with_label_values(&["startup"]).inc();
        ClientGuard {
            stats: self,
            state: "startup",
        }
    }

    fn server_conns(&self, node: usize, f: impl FnOnce(&mut ServerConns)) {
        let mut all = lock(&self.servers);
        if all.len() <= node {
            all.resize(node + 1, ServerConns::default());
        }
        if let Some(c) = all.get_mut(node) {
            f(c);
        }
    }
}

/// Hooks the session calls on its hot path.
impl Stats {
    /// A statement (or batch) was routed to a node in `role` (`primary` or `replica`) for
    /// `reason` (a short static label such as `write`, `read`, `transaction`, `token`, `lag`).
    pub fn routed(&self, role: &'static str, reason: &'static str) {
        self.routed.with_label_values(&[role, reason]).inc();
    }

    /// The counter behind [`Self::routed`] for one (role, reason), for callers that keep it.
    pub fn routed_counter(
        &self,
        role: &'static str,
        reason: &'static str,
    ) -> prometheus::IntCounter {
        self.routed.with_label_values(&[role, reason])
    }

    /// A server connection to `node` was opened.
    pub fn server_opened(&self, node: usize) {
        self.server_conns(node, |c| {
            c.open += 1;
            c.opened += 1;
        });
    }

    /// A server connection to `node` was closed.
    pub fn server_closed(&self, node: usize) {
        self.server_conns(node, |c| c.open = c.open.saturating_sub(1));
    }

    /// Bytes moved: from the client to servers, and from servers to the client.
    pub fn bytes(&self, client_to_server: u64, server_to_client: u64) {
        if client_to_server > 0 {
            self.bytes_in.inc_by(client_to_server);
        }
        if server_to_client > 0 {
            self.bytes_out.inc_by(server_to_client);
        }
    }

    /// A client request finished after `seconds` on a node in `role`.
    pub fn query_done(&self, role: &'static str, seconds: f64) {
        match role {
            "primary" => self.query_primary.observe(seconds),
            "replica" => self.query_replica.observe(seconds),
            other => self
                .query_duration
                .with_label_values(&[other])
                .observe(seconds),
        }
    }
}

/// One counted client connection (see [`Stats::client_connected`]).
#[derive(Debug)]
pub struct ClientGuard<'a> {
    stats: &'a Stats,
    state: &'static str,
}

impl ClientGuard<'_> {
    /// The client authenticated: it now counts in the `session` state.
    pub fn authenticated(&mut self) {
        self.set_state("session");
    }

    fn set_state(&mut self, state: &'static str) {
        if self.state != state {
            self.stats.clients.with_label_values(&[self.state]).dec();
            self.stats.clients.with_label_values(&[state]).inc();
            self.state = state;
        }
    }
}

impl Drop for ClientGuard<'_> {
    fn drop(&mut self) {
        self.stats.clients.with_label_values(&[self.state]).dec();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_move_the_metrics() {
        let s = Stats::default();
        s.routed("replica", "read");
        s.routed("replica", "read");
        s.routed("primary", "write");
        assert_eq!(
            s.routed_counts(),
            vec![
                ("primary".into(), "write".into(), 1),
                ("replica".into(), "read".into(), 2)
            ]
        );
        s.server_opened(2);
        s.server_opened(2);
        s.server_closed(2);
        s.server_closed(0);
        let conns = s.server_connections();
        assert_eq!(conns[2], ServerConns { open: 1, opened: 2 });
        assert_eq!(conns[0], ServerConns::default());
        {
            let mut g = s.client_connected();
            assert_eq!(s.clients_in("startup"), 1);
            g.authenticated();
            assert_eq!((s.clients_in("startup"), s.clients_in("session")), (0, 1));
        }
        assert_eq!(s.clients_in("session"), 0);
        s.bytes(10, 0);
        s.query_done("primary", 0.002);
        assert_eq!(s.bytes_in.get(), 10);
        assert_eq!(s.query_primary.get_sample_count(), 1);
    }
}
