//! `GET /api/v1/route`: where a statement would go and why, for a fresh session (no open
//! transaction, no pins, no prepared statements, no read-your-writes token). The rules are those
//! of the session's routing (`want` then `resolve`), in a stateless form.

use meridian_classify::{classify, Hint, StatementKind};
use meridian_config::Consistency;
use meridian_router::NoReplica;
use meridian_session::{want_of, ProxyState, Want};
use meridian_upstream::Lsn;
use serde_json::{json, Value};

fn kind_name(kind: &StatementKind) -> &'static str {
    match kind {
        StatementKind::Read => "read",
        StatementKind::Write => "write",
        StatementKind::TxBegin { .. } => "transaction_begin",
        StatementKind::TxEnd => "transaction_end",
        StatementKind::TxOther => "transaction_other",
        StatementKind::TwoPhase => "two_phase",
        StatementKind::SetTransaction { .. } => "set_transaction",
        StatementKind::SessionSet { .. } => "session_set",
        StatementKind::SessionReset { .. } => "session_reset",
        StatementKind::Discard { .. } => "discard",
        StatementKind::MeridianSet { .. } => "meridian_set",
        StatementKind::MeridianShow { .. } => "meridian_show",
        StatementKind::MeridianReset { .. } => "meridian_reset",
        StatementKind::Execute { .. } => "execute",
        StatementKind::Prepare { .. } => "prepare",
        StatementKind::Deallocate { .. } => "deallocate",
        StatementKind::CursorOp => "cursor",
        StatementKind::Listen => "listen",
        StatementKind::Empty => "empty",
        StatementKind::Unparsable => "unparsable",
    }
}

/// The route of `sql` for a fresh session in `database` with `consistency`, as JSON.
///
/// Asking the replica chooser advances its round-robin position by one, exactly as one real
/// read would; nothing else changes.
pub fn explain(state: &ProxyState, sql: &str, database: &str, consistency: Consistency) -> Value {
    let topo = state.topology.load();
    let cfg = state.live.load();
    let class = if cfg.routing.passthrough {
        None
    } else {
        Some(classify(sql, &state.overrides.load()))
    };
    let primary = topo.primary_node().map(|p| p.name.clone());
    let (target, node, reason): (&str, Option<String>, &str) = match &class {
        None => ("primary", primary.clone(), "passthrough"),
        Some(c) if c.kind.is_meridian() => ("proxy", None, "answered by meridian"),
        Some(c) => match want_of(state, database, c, &|_| None) {
            Want::Primary(reason) => ("primary", primary.clone(), reason),
            Want::Stay => ("primary", primary.clone(), "session"),
            Want::Replica if consistency == Consistency::Strong => {
                ("primary", primary.clone(), "strong")
            }
            Want::Replica => {
                let choice = state.chooser.choose(
                    &topo,
                    &cfg.routing,
                    &cfg.proxy.region,
                    Lsn::ZERO,
                    None,
                    |i| state.replay.current(i),
                );
                match choice {
                    Ok(i) => ("replica", topo.nodes.get(i).map(|n| n.name.clone()), "read"),
                    Err(why @ (NoReplica::NoneHealthy | NoReplica::Lag | NoReplica::Token)) => {
                        ("primary", primary.clone(), why.as_str())
                    }
                }
            }
        },
    };
    let classification = class.as_ref().map(|c| {
        json!({
            "kind": kind_name(&c.kind),
            "reason": c.reason,
            "needs_primary": c.needs_primary(),
            "pins_session": c.pins_session,
            "hint": c.hint.map(|h| match h {
                Hint::Primary => "primary",
                Hint::Replica => "replica",
            }),
            "unknown_functions": c.unknown_functions,
            "statements": c.statements,
        })
    });
    json!({
        "sql": sql,
        "database": database,
        "consistency": consistency.as_str(),
        "target": target,
        "node": node,
        "reason": reason,
        "classification": classification,
    })
}
