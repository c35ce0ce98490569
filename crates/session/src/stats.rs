//! Counters the sessions keep for metrics: where reads went and why, and read-your-writes waits.
//! Plain atomics on the hot path; the admin side renders them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (milliseconds) of the catch-up wait histogram buckets.
pub const WAIT_BUCKETS_MS: [f64; 8] = [0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0];

/// Session-wide counters.
#[derive(Debug, Default)]
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
    /// Catch-up waits: count per bucket (last: overflow), sum in microseconds.
    pub wait_buckets: [AtomicU64; 9],
    /// Sum of catch-up wait time, microseconds.
    pub wait_sum_us: AtomicU64,
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
}

/// Hooks the session calls on its hot path; the metrics side gives them their meaning.
impl Stats {
    /// A statement (or batch) was routed to a node in `role` (`primary` or `replica`) for
    /// `reason` (a short static label such as `write`, `read`, `transaction`, `token`, `lag`).
    pub fn routed(&self, role: &'static str, reason: &'static str) {
        let _ = (role, reason);
    }

    /// A server connection to `node` was opened.
    pub fn server_opened(&self, node: usize) {
        let _ = node;
    }

    /// A server connection to `node` was closed.
    pub fn server_closed(&self, node: usize) {
        let _ = node;
    }

    /// Bytes moved: from the client to servers, and from servers to the client.
    pub fn bytes(&self, client_to_server: u64, server_to_client: u64) {
        let _ = (client_to_server, server_to_client);
    }

    /// A client request finished after `seconds` on a node in `role`.
    pub fn query_done(&self, role: &'static str, seconds: f64) {
        let _ = (role, seconds);
    }
}
