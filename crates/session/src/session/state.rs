//! Session state that must follow a client from backend to backend: `SET` settings, and
//! prepared statements (protocol-level and SQL `PREPARE`). Settings are replayed on a backend
//! before it serves the session; statements are re-prepared where they are executed.
//!
//! Settings are recorded only once the server confirmed them: after a successful autocommit
//! `SET`, or at `COMMIT` for a `SET` inside a transaction (a rolled-back `SET` is undone by
//! Postgres, so it is dropped here too).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use meridian_classify::Classification;

use super::backend::Owner;
use super::Backend;

/// A change to session state, kept if the statement that makes it succeeds.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// `SET name ...` or `RESET name`: replay `sql`.
    Set { name: String, sql: String },
    /// `RESET ALL`: every earlier setting is void.
    ResetAll,
}

/// A protocol-level prepared statement as the client sent it.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The client's Parse frame, replayed on other backends.
    pub parse: Bytes,
    /// What the statement does.
    pub class: Arc<Classification>,
}

/// Per-session state that outlives any one backend.
#[derive(Debug, Default)]
pub(crate) struct SessionState {
    /// Confirmed settings in order: (sequence, name, SQL).
    settings: Vec<(u64, String, String)>,
    /// Sequence of the newest setting.
    seq: u64,
    /// Settings made inside the open transaction, kept at COMMIT.
    in_tx: Vec<Change>,
    /// The last CommandComplete was `COMMIT`.
    pub last_command_commit: bool,
    /// Named protocol-level statements.
    pub prepared: HashMap<String, Prepared>,
    /// The unnamed statement and its version (0: none yet).
    pub unnamed: Option<Prepared>,
    pub unnamed_version: u64,
    /// SQL-level prepared statements: name → (PREPARE text, class of what EXECUTE runs).
    pub sql_prepared: HashMap<String, (String, Arc<Classification>)>,
    /// The session must stay on the primary (LISTEN, temp tables, session advisory locks, ...).
    pub pinned: bool,
    /// Transaction pooling: client statement name → its server statement.
    pub pooled_names: HashMap<String, super::pooled::Named>,
}

impl SessionState {
    /// A client request with `change` succeeded; `in_tx` if a transaction is still open.
    pub fn succeeded(&mut self, change: Change, in_tx: bool) {
        if in_tx {
            self.in_tx.push(change);
        } else {
            self.apply(change);
        }
    }

    /// The transaction ended: keep its settings if it committed.
    pub fn transaction_ended(&mut self) {
        let changes = std::mem::take(&mut self.in_tx);
        if self.last_command_commit {
            for c in changes {
                self.apply(c);
            }
        }
    }

    fn apply(&mut self, change: Change) {
        self.seq += 1;
        match change {
            Change::Set { name, sql } => {
                self.settings.retain(|(_, n, _)| *n != name);
                self.settings.push((self.seq, name, sql));
            }
            Change::ResetAll => {
                self.settings.clear();
                self.settings
                    .push((self.seq, "*".into(), "RESET ALL".into()));
            }
        }
    }

    /// Sequence number of the newest confirmed setting.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Queues on `out` whatever `backend` is missing before it can serve this session, pushing an
    /// owner for each injected request.
    pub fn catch_up(&self, backend: &mut Backend, out: &mut BytesMut, owners: &mut Vec<Owner>) {
        let mut sql = String::new();
        if backend.applied < self.seq {
            for (seq, _, stmt) in &self.settings {
                if *seq > backend.applied {
                    // The newline ends a trailing `--` comment before the separator.
                    sql.push_str(stmt);
                    sql.push_str("\n;\n");
                }
            }
            backend.applied = self.seq;
        }
        for name in backend.deallocate_later.drain(..) {
            sql.push_str("DEALLOCATE ");
            sql.push_str(&quote_ident(&name));
            sql.push_str(";\n");
        }
        if !sql.is_empty() {
            backend.own_query(out, &sql);
            owners.push(Owner::Silent);
        }
    }

    /// Makes sure the SQL-level prepared statement `name` exists on `backend`.
    pub fn ensure_sql_prepared(
        &self,
        name: &str,
        backend: &mut Backend,
        out: &mut BytesMut,
        owners: &mut Vec<Owner>,
    ) {
        if backend.sql_prepared.contains(name) {
            return;
        }
        if let Some((sql, _)) = self.sql_prepared.get(name) {
            backend.own_query(out, sql);
            owners.push(Owner::Silent);
            backend.sql_prepared.insert(name.to_string());
        }
    }
}

/// Quotes an identifier for replayed SQL.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, v: &str) -> Change {
        Change::Set {
            name: name.into(),
            sql: format!("SET {name} = {v}"),
        }
    }

    #[test]
    fn later_settings_replace_earlier_ones() {
        let mut s = SessionState::default();
        s.succeeded(set("search_path", "a"), false);
        s.succeeded(set("timezone", "'UTC'"), false);
        s.succeeded(set("search_path", "b"), false);
        let sqls: Vec<_> = s.settings.iter().map(|x| x.2.as_str()).collect();
        assert_eq!(sqls, ["SET timezone = 'UTC'", "SET search_path = b"]);
    }

    #[test]
    fn rolled_back_transaction_settings_are_dropped() {
        let mut s = SessionState::default();
        s.succeeded(set("a", "1"), true);
        s.last_command_commit = false;
        s.transaction_ended();
        assert!(s.settings.is_empty());
        s.succeeded(set("a", "2"), true);
        s.last_command_commit = true;
        s.transaction_ended();
        assert_eq!(s.settings.len(), 1);
    }

    #[test]
    fn reset_all_voids_earlier_settings() {
        let mut s = SessionState::default();
        s.succeeded(set("a", "1"), false);
        s.succeeded(Change::ResetAll, false);
        let sqls: Vec<_> = s.settings.iter().map(|x| x.2.as_str()).collect();
        assert_eq!(sqls, ["RESET ALL"]);
    }
}
