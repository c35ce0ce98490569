//! Where a statement goes. A classification becomes a `Want` (primary, replica, or stay where the
//! session is); the wants of everything up to a statement boundary combine into a `Need`, which
//! is resolved against the session (open transaction, pins) and the topology.

use meridian_classify::{Classification, Hint, StatementKind};
use meridian_upstream::{UpstreamError, Volatility};
use tracing::debug;

use super::Session;

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

/// What one statement wants.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Want {
    Primary(&'static str),
    Stay,
    Replica,
}

impl Session {
    /// The want of one classified statement.
    pub(super) fn want(&self, class: &Classification) -> Want {
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
            StatementKind::Execute { name } => match self.sstate.sql_prepared.get(name) {
                Some((_, inner)) => {
                    let inner = inner.clone();
                    self.want(&inner)
                }
                None => Want::Primary("unknown prepared statement"),
            },
            _ if class.needs_primary() => Want::Primary(if class.pins_session {
                "pinned"
            } else {
                class.reason
            }),
            StatementKind::Read => {
                if class.needs_function_lookup() {
                    if let Some(reason) = self.volatile_function(class) {
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
    fn volatile_function(&self, class: &Classification) -> Option<&'static str> {
        let catalog = &self.state.functions;
        for f in &class.unknown_functions {
            match catalog.lookup(&self.auth.database, f) {
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

    /// Resolves a need to a node index, with the reason for logs.
    pub(super) async fn resolve(&self, need: Need) -> Result<(usize, &'static str), UpstreamError> {
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
        let topo = self.state.topology.load();
        let cfg = &self.state.config;
        match self.state.chooser.choose(
            &topo,
            &cfg.routing,
            &cfg.proxy.region,
            meridian_upstream::Lsn::ZERO,
        ) {
            Ok(i) => Ok((i, "read")),
            Err(why) => {
                debug!(why = why.as_str(), "no replica for read, using the primary");
                Ok((self.primary().await?, "fallback"))
            }
        }
    }
}
