//! Shared helpers for the classification tests.

#![allow(dead_code)]

use meridian_classify::{
    classify, Classification, DiscardScope, FunctionOverrides, IsolationLevel, StatementKind,
};

/// Classifies with no overrides.
pub fn c(sql: &str) -> Classification {
    classify(sql, &FunctionOverrides::none())
}

/// A compact, readable summary used by the table test:
/// `read`, `write:<reason>`, `begin ro serializable`, `set local x`, ...
/// followed by `+pin` if the session is pinned and `?f,g` for unknown functions.
pub fn summary(c: &Classification) -> String {
    let mut s = kind(&c.kind, c.reason);
    if c.pins_session {
        s.push_str("+pin");
    }
    if !c.unknown_functions.is_empty() {
        s.push('?');
        s.push_str(&c.unknown_functions.join(","));
    }
    s
}

fn modes(read_only: &Option<bool>, isolation: &Option<IsolationLevel>) -> String {
    let mut s = String::new();
    match read_only {
        Some(true) => s.push_str(" ro"),
        Some(false) => s.push_str(" rw"),
        None => {}
    }
    match isolation {
        Some(IsolationLevel::ReadUncommitted) => s.push_str(" read uncommitted"),
        Some(IsolationLevel::ReadCommitted) => s.push_str(" read committed"),
        Some(IsolationLevel::RepeatableRead) => s.push_str(" repeatable read"),
        Some(IsolationLevel::Serializable) => s.push_str(" serializable"),
        None => {}
    }
    s
}

fn kind(k: &StatementKind, reason: &str) -> String {
    use StatementKind as K;
    match k {
        K::Read => "read".into(),
        K::Write => format!("write:{reason}"),
        K::TxBegin {
            read_only,
            isolation,
        } => format!("begin{}", modes(read_only, isolation)),
        K::TxEnd => "end".into(),
        K::TxOther => "txother".into(),
        K::TwoPhase => "twophase".into(),
        K::SetTransaction {
            read_only,
            isolation,
        } => format!("settx{}", modes(read_only, isolation)),
        K::SessionSet { name, local: true } => format!("set local {name}"),
        K::SessionSet { name, local: false } => format!("set {name}"),
        K::SessionReset { name: Some(n) } => format!("reset {n}"),
        K::SessionReset { name: None } => "reset all".into(),
        K::Discard { scope } => format!(
            "discard {}",
            match scope {
                DiscardScope::All => "all",
                DiscardScope::Plans => "plans",
                DiscardScope::Sequences => "sequences",
                DiscardScope::Temp => "temp",
            }
        ),
        K::MeridianSet { name, value } => format!("mset {name}={value}"),
        K::MeridianShow { name } => format!("mshow {name}"),
        K::MeridianReset { name } => format!("mreset {name}"),
        K::Execute { name } => format!("execute {name}"),
        K::Prepare { name, inner } => format!("prepare {name} [{}]", summary(inner)),
        K::Deallocate { name: Some(n) } => format!("deallocate {n}"),
        K::Deallocate { name: None } => "deallocate all".into(),
        K::CursorOp => "cursor".into(),
        K::Listen => "listen".into(),
        K::Empty => "empty".into(),
        K::Unparsable => "unparsable".into(),
    }
}
