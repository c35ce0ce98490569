//! Where a statement goes. A classification becomes a `Want` (primary, replica, or stay where the
//! session is); the wants of everything up to a statement boundary combine into a `Need`, which
//! is resolved against the session (open transaction, pins) and the topology.

use std::time::{Duration, Instant};

use meridian_classify::{Classification, Hint, StatementKind};
use meridian_config::Consistency;
use meridian_router::NoReplica;
use meridian_upstream::{Lsn, UpstreamError, Volatility};
use tracing::debug;

use std::sync::Arc;

use super::Session;
use crate::ProxyState;
use crate::Stats;

/// What a batch of statements needs, combined over its statements.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Need {
    /// Something must run on the primary; the first reason.
    pub primary: Option<&'static str>,
    /// Something must run where the session already is (transaction control, cursors, session
    /// state).
    pub stay: bool,
    /// Something would be fine on a replica.
    pub replica: bool,
}

impl Need {
    /// Adds one statement's want.
    pub fn add(&mut self, want: Want) {
        match want {
            Want::Primary(reason) => {
                self.primary.get_or_insert(reason);
            }
            Want::Stay => self.stay = true,
            Want::Replica => self.replica = true,
        }
    }
}

/// What one statement wants, before the session and the topology are consulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// It must run on the primary, for this reason.
    Primary(&'static str),
    /// It runs where the session already is (transaction control, cursors, session state).
    Stay,
    /// A replica may serve it.
    Replica,
}

/// The want of one classified statement in `database`. `prepared` gives the classification of
/// a SQL-level prepared statement by name (for `EXECUTE`). Used by sessions and by the admin
/// API's `route` endpoint, so both follow the same rules.
pub fn want_of(
    state: &ProxyState,
    database: &str,
    class: &Classification,
    prepared: &dyn Fn(&str) -> Option<Arc<Classification>>,
) -> Want {
    if class.hint == Some(Hint::Primary) {
        return Want::Primary("hint");
    }
    match &class.kind {
        StatementKind::TxBegin { .. } if class.needs_primary() => Want::Primary("transaction"),
        StatementKind::TxBegin {
            read_only: Some(true),
            ..
        } => Want::Replica,
        StatementKind::TxBegin { .. } => Want::Primary("transaction"),
        StatementKind::Execute { name } => match prepared(name) {
            Some(inner) => want_of(state, database, &inner, prepared),
            None => Want::Primary("unknown prepared statement"),
        },
        _ if class.needs_primary() => Want::Primary(if class.pins_session {
            "pinned"
        } else {
            class.reason
        }),
        StatementKind::Read => {
            if class.needs_function_lookup() {
                if let Some(reason) = volatile_function(state, database, class) {
                    return Want::Primary(reason);
                }
            }
            Want::Replica
        }
        StatementKind::Unparsable => Want::Replica, // only reached with a replica hint
        _ => Want::Stay,
    }
}

/// `Some(reason)` if any function the classifier did not know may write.
fn volatile_function(
    state: &ProxyState,
    database: &str,
    class: &Classification,
) -> Option<&'static str> {
    let catalog = &state.functions;
    for f in &class.unknown_functions {
        match catalog.lookup(database, f) {
            Some(Volatility::Volatile) => return Some("volatile function"),
            Some(_) => {}
            None => {
                catalog.request_refresh();
                return Some("unknown function");
            }
        }
    }
    None
}

impl Session {
    /// The want of one classified statement in this session.
    pub(super) fn want(&self, class: &Classification) -> Want {
        let prepared = |name: &str| self.sstate.sql_prepared.get(name).map(|(_, c)| c.clone());
        want_of(&self.state, &self.auth.database, class, &prepared)
    }

    /// Makes sure `node` has a backend slot: a reload may have added nodes since the session
    /// started (node indices only grow).
    pub(super) fn grow_slots(&mut self, node: usize) {
        if self.backends.len() <= node {
            self.backends.resize_with(node + 1, || None);
        }
    }

    /// Resolves a need to a node index, with the reason for logs.
    pub(super) async fn resolve(
        &mut self,
        need: Need,
    ) -> Result<(usize, &'static str), UpstreamError> {
        if self.tx_status != b'I' {
            if let Some(a) = self.active {
                return Ok((a, "transaction"));
            }
        }
        if self.sstate.pinned {
            return Ok((self.primary().await?, "pinned"));
        }
        if let Some(reason) = need.primary {
            return Ok((self.primary().await?, reason));
        }
        if need.stay || !need.replica {
            return match self.active {
                Some(a) => Ok((a, "session")),
                None => Ok((self.primary().await?, "session")),
            };
        }
        self.read_target().await
    }

    /// Where a read goes under the session's consistency mode.
    async fn read_target(&mut self) -> Result<(usize, &'static str), UpstreamError> {
        let state = &self.state;
        let stats = &state.stats;
        let (required, prefer) = match self.consistency {
            Consistency::Strong => {
                Stats::inc(&stats.reads_primary_strong);
                return Ok((self.primary().await?, "strong"));
            }
            Consistency::Eventual => (self.min_lsn, None),
            Consistency::Session => (
                self.token.max(self.min_lsn).max(self.seen),
                self.read_replica,
            ),
        };
        let topo = state.topology.load();
        let cfg = state.live.load();
        let replay = &state.replay;
        let choose = |min: Lsn| {
            state
                .chooser
                .choose(&topo, &cfg.routing, &cfg.proxy.region, min, prefer, |i| {
                    replay.current(i)
                })
        };
        let chosen = match choose(required) {
            Ok(i) => Some((i, "read")),
            Err(NoReplica::Token) => match choose(Lsn::ZERO) {
                // A replica within the lag limits has not replayed the session's position yet:
                // wait a little for it rather than load the primary.
                Ok(candidate) => {
                    let wait = Duration::from_millis(cfg.consistency.wait_timeout_ms);
                    let started = Instant::now();
                    let reached = replay.wait(candidate, required, wait).await;
                    stats.observe_wait(started.elapsed());
                    reached.then_some((candidate, "read after catch-up"))
                }
                Err(_) => None,
            },
            Err(why) => {
                Stats::inc(&stats.reads_primary_fallback);
                debug!(why = why.as_str(), "no replica for read, using the primary");
                return Ok((self.primary().await?, why.as_str()));
            }
        };
        match chosen {
            Some((node, reason)) => {
                Stats::inc(&stats.reads_replica);
                if self.consistency == Consistency::Session {
                    self.read_replica = Some(node);
                    let node_lsn = topo.nodes.get(node).map(|n| n.lsn).unwrap_or_default();
                    self.seen = self.seen.max(node_lsn.max(replay.current(node)));
                }
                Ok((node, reason))
            }
            None => {
                Stats::inc(&stats.reads_primary_token);
                Ok((self.primary().await?, "token"))
            }
        }
    }
}
