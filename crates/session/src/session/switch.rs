//! Switching a session's active backend: opening or checking out the connection a statement
//! needs, falling back when a node refuses, and bringing the connection up to date with the
//! session's state (pending closes, a pooled connection's reset, settings replay) before it
//! serves the next statement.

use bytes::BytesMut;
use meridian_upstream::UpstreamError;
use meridian_wire::tag::frontend;
use tracing::debug;

use super::backend::Owner;
use super::Session;

/// Result of trying to make a node the active backend.
pub(super) enum Switched {
    Ready(usize),
    Stall,
    Failed(UpstreamError),
}

impl Session {
    /// Makes `target` the active backend if that can happen now, bringing it up to date with the
    /// session's state.
    pub(super) async fn switch_to(
        &mut self,
        target: Result<(usize, &'static str), UpstreamError>,
    ) -> Switched {
        let (target, reason) = match target {
            Ok(t) => t,
            Err(e) => return Switched::Failed(e),
        };
        self.grow_slots(target);
        if self.active != Some(target) || self.backends[target].is_none() {
            if !self.owners.is_empty() || !self.to_backend.is_empty() {
                return Switched::Stall;
            }
            // A connection left idle may have been closed by its server meanwhile.
            if let Some(b) = self.backends[target].as_mut() {
                if !b.idle_and_alive() {
                    debug!(
                        node = target,
                        "idle server connection went away; reconnecting"
                    );
                    self.backends[target] = None;
                }
            }
            if let Err(e) = self.ensure_backend(target).await {
                // A read bound for a replica that refuses connections goes to the primary
                // instead (and other sessions avoid that replica until the monitor catches up).
                let primary = self.state.topology.load().primary;
                let pool_busy = matches!(e, UpstreamError::PoolTimeout { .. });
                if reason.starts_with("read") && primary.is_some_and(|p| p != target) && !pool_busy
                {
                    self.state.chooser.suspect(target);
                    if self.read_replica == Some(target) {
                        self.read_replica = None;
                    }
                    tracing::info!(node = target, error = %e, "replica unreachable; read goes to the primary");
                    return Box::pin(
                        self.switch_to(self.primary().await.map(|p| (p, "replica unreachable"))),
                    )
                    .await;
                }
                // The primary refuses connections: it may be dying before the health loop has
                // noticed. Hold the statement until a new primary is in charge (bounded).
                let unreachable =
                    matches!(e, UpstreamError::Io { .. } | UpstreamError::Timeout { .. });
                if unreachable && primary == Some(target) {
                    let hold = std::time::Duration::from_millis(
                        self.state.live.load().failover.hold_timeout_ms,
                    );
                    let next = self
                        .state
                        .topology
                        .wait_for(hold, |t| t.writable().is_some_and(|p| p != target))
                        .await
                        .writable()
                        .filter(|p| *p != target);
                    if let Some(p) = next {
                        return Box::pin(self.switch_to(Ok((p, "new primary")))).await;
                    }
                }
                return Switched::Failed(e);
            }
            self.activate(target);
        }
        debug!(node = target, reason, "route");
        let role = self.role_of(Some(target));
        self.count_route(role, reason);
        self.catch_up(target);
        Switched::Ready(target)
    }

    /// Counts a routing decision (the session keeps the counters it has used, so the hot path
    /// does no label lookup).
    fn count_route(&mut self, role: &'static str, reason: &'static str) {
        if let Some((_, _, c)) = self
            .route_counters
            .iter()
            .find(|(r, why, _)| *r == role && *why == reason)
        {
            c.inc();
            return;
        }
        let c = self.state.stats.routed_counter(role, reason);
        c.inc();
        self.route_counters.push((role, reason, c));
    }

    /// Replays settings and pending closes on `node` before it serves the next statement.
    fn catch_up(&mut self, node: usize) {
        let before = self.owners.len();
        let Some(b) = self.backends[node].as_mut() else {
            return;
        };
        if !b.close_later.is_empty() {
            let mut out = BytesMut::new();
            for name in std::mem::take(&mut b.close_later) {
                b.close(&mut out, &name, before);
            }
            self.to_backend.extend_from_slice(&out);
        }
        if let Some(sql) = b.reset.take() {
            // A pooled connection another session left settings or statements on. (After the
            // Closes above: their CloseComplete must come before this request's ReadyForQuery,
            // which ends the dropping of CloseComplete.)
            b.own_query(&mut self.to_backend, &sql);
            self.owners.push_back(Owner::Silent);
        }
        let mut injected = Vec::new();
        let mut out = BytesMut::new();
        self.sstate.catch_up(b, &mut out, &mut injected);
        if !out.is_empty() {
            self.to_backend.extend_from_slice(&out);
            self.owners.extend(injected);
        }
    }
}

/// A Close message for statement `name`.
pub(super) fn close_statement(out: &mut BytesMut, name: &str) {
    use bytes::BufMut;
    out.put_u8(frontend::CLOSE);
    let len = 4 + 1 + name.len() + 1;
    out.put_u32(len as u32);
    out.put_u8(b'S');
    out.put_slice(name.as_bytes());
    out.put_u8(0);
}
