//! Statement classification for Meridian's read/write routing.
//!
//! [`classify`] looks at one query string (simple or extended protocol) and
//! says whether it may run on a streaming replica, must run on the primary,
//! or is transaction control / session state / a Meridian command that the
//! session layer handles. [`ClassifyCache`] memoizes results by SQL text.
//!
//! # The rule
//!
//! Sending a write to a replica fails the user's statement ("cannot execute
//! INSERT in a read-only transaction"); sending a read to the primary is only
//! slower. So **whenever the classifier is unsure, the answer is the
//! primary**: unparsable SQL, unknown statement types and unknown syntax all
//! end up there.
//!
//! # How a string is classified
//!
//! 1. A leading comment hint is detected ([`detect_hint`]):
//!    `/* meridian:primary */` forces the primary; `/* meridian:replica */`
//!    lets an unparsable statement, or one calling functions of unknown
//!    volatility, use a replica. It never moves a statement known to write,
//!    transaction control or session state.
//! 2. The string is parsed with sqlparser's `PostgreSqlDialect`. If that
//!    fails, it is tokenized, split on top-level semicolons, each statement is
//!    parsed alone, and the ones that still fail are decided by their leading
//!    keywords (`fallback`); anything unrecognised is `Unparsable`.
//! 3. Each statement is classified from its AST, walking every nested node
//!    with sqlparser's `Visitor` (CTEs, subqueries, `FROM` functions,
//!    `VALUES`, `RETURNING`, ...).
//!
//! # Statement classes
//!
//! * **Write** (primary): `INSERT`/`UPDATE`/`DELETE`/`MERGE`; all DDL
//!   (`CREATE`/`ALTER`/`DROP`/`TRUNCATE`/`COMMENT`/`GRANT`/`REVOKE`/
//!   `SECURITY LABEL`/`REASSIGN`/...); `SELECT ... FOR UPDATE | NO KEY UPDATE |
//!   SHARE | KEY SHARE`; writable CTEs; `SELECT ... INTO`; `CREATE TABLE AS`;
//!   `COPY ... FROM`; `COPY ... TO 'file' | PROGRAM`; `CALL`; `DO`; `VACUUM`;
//!   `ANALYZE`; `CLUSTER`; `REINDEX`; `REFRESH MATERIALIZED VIEW`; `LOCK`;
//!   `CHECKPOINT`; `NOTIFY`; `LOAD`; `EXPLAIN ANALYZE <write>`; any call of a
//!   built-in in [`WRITE_FUNCTIONS`]/[`SESSION_PIN_FUNCTIONS`] (`nextval`,
//!   `setval`, `currval`, `lastval`, advisory locks, `pg_notify`,
//!   `txid_current`, `pg_current_wal_lsn`, `lo_*` writers, `dblink_exec`,
//!   `pg_terminate_backend`, ...) or of a configured write function; every
//!   statement type not listed elsewhere.
//! * **Read** (replica): `SELECT`/`VALUES`/`TABLE`/`SHOW x`, `COPY ... TO
//!   STDOUT` and `DECLARE` cursors over such queries, `EXPLAIN <anything>`
//!   without `ANALYZE` (nothing is executed), `EXPLAIN ANALYZE <read>`, as
//!   long as no writing function is called. Calls of functions that are
//!   neither in [`READ_ONLY_FUNCTIONS`] nor in the [`FunctionOverrides`] are
//!   listed in [`Classification::unknown_functions`]: the caller resolves
//!   them in `pg_proc` (a `VOLATILE` one means primary), see
//!   [`Classification::needs_function_lookup`].
//! * **Transaction control**: `BEGIN`/`START TRANSACTION` (read-only flag and
//!   isolation level reported; `READ WRITE` and `SERIALIZABLE` need the
//!   primary because hot standbys refuse them), `COMMIT`/`END`/`ROLLBACK`/
//!   `ABORT`, savepoints, `SET TRANSACTION ...`, and two-phase commit
//!   (`PREPARE TRANSACTION`, `COMMIT|ROLLBACK PREPARED`: primary).
//! * **Session state**: `SET [SESSION|LOCAL] x`, `SET ROLE`,
//!   `SET SESSION AUTHORIZATION`, `SET TIME ZONE`, `RESET x|ALL`,
//!   `DISCARD ...`, `PREPARE`/`DEALLOCATE` (the name's class is carried in
//!   [`StatementKind::Prepare::inner`]), `EXECUTE` (reported by name for the
//!   session to look up).
//! * **Meridian commands**: `SET meridian.x = v`, `SHOW meridian.x`,
//!   `RESET meridian.x` (and `SET meridian.x TO DEFAULT`) are answered by the
//!   proxy and never forwarded.
//! * **Cursor operations**: `FETCH`/`MOVE`/`CLOSE` go wherever the cursor is.
//! * **Pinning** ([`Classification::pins_session`]): session advisory locks,
//!   `set_config(.., false)`, named `dblink` connections, `setseed`, `LISTEN`/
//!   `UNLISTEN`, temporary tables/views/sequences (also `SELECT INTO TEMP`),
//!   `DECLARE ... WITH HOLD` and `LOAD` tie the session to the primary
//!   backend; transaction-level advisory locks do not.
//!
//! # Function catalog
//!
//! Every function call (select list, `WHERE`, `FROM` table functions, CTEs,
//! subqueries, `VALUES`, `ORDER BY`, `LIMIT`, ...) is looked up, first in the
//! configured [`FunctionOverrides`] (`write_functions` / `read_only_functions`,
//! compared case-insensitively, `public.`/`pg_catalog.` ignored), then —
//! for unqualified or `pg_catalog.` names only — in three documented static
//! lists of exact names (no prefixes, so `json_upsert()` is not taken for a
//! JSON reader):
//!
//! * [`SESSION_PIN_FUNCTIONS`]: write and pin (`pg_advisory_lock`,
//!   `pg_try_advisory_lock[_shared]`, `dblink_connect`, `setseed`, ...);
//!   `set_config(name, value, is_local)` pins unless `is_local` is literally
//!   true, in which case it is a read;
//! * [`WRITE_FUNCTIONS`]: write (sequences, transaction-level advisory locks
//!   and unlocks, `pg_notify`, `txid_current`/`pg_current_xact_id`, WAL and
//!   backup control, replication slots, `pg_terminate_backend`/
//!   `pg_cancel_backend`, `pg_reload_conf`, stats resets, large objects,
//!   `dblink_exec`, ...); the reason is the function's name;
//! * [`READ_ONLY_FUNCTIONS`]: safe on replicas (aggregates, math, strings,
//!   date/time, JSON, arrays, ranges, catalog inspection, `random`,
//!   `pg_sleep`, `version`, `current_setting`, `pg_is_in_recovery`,
//!   `pg_last_wal_replay_lsn`, ...): not reported.
//!
//! Everything else is reported in [`Classification::unknown_functions`].
//!
//! # Several statements in one string
//!
//! The string's class is the maximum over its statements: any `Unparsable`
//! makes it `Unparsable`; otherwise anything needing the primary, session
//! state (which then also pins), `EXECUTE`, Meridian commands and
//! transactions not started `READ ONLY` make it `Write`; otherwise any read
//! makes it `Read`; a string of transaction control, `SET LOCAL` and cursor
//! operations only takes the class of its first statement.
//!
//! # Limits
//!
//! Functions reached indirectly — through views, operators, casts, column
//! defaults or triggers — are not seen; list them in the overrides or use a
//! hint. A user function overloading a built-in name (same name, other
//! argument types) is taken for the built-in. SQL text longer than
//! [`MAX_PARSED_SQL_BYTES`] (1 MiB) is not parsed and goes to the primary.

#![warn(missing_docs)]

mod cache;
mod fallback;
mod functions;
mod hint;
mod kind;
mod params;
mod shape;
mod statement;
mod walk;

/// Fuzz-target body shared by `fuzz/` and the corpus replay test; not API.
#[doc(hidden)]
pub mod fuzzing;

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

pub use cache::{CacheConfig, CacheStats, ClassifyCache};
pub use functions::{
    FunctionOverrides, READ_ONLY_FUNCTIONS, SESSION_PIN_FUNCTIONS, WRITE_FUNCTIONS,
};
pub use hint::detect_hint;
pub use kind::{Classification, DiscardScope, Hint, IsolationLevel, StatementKind};
pub use params::{
    parameterize, Param, Parameterized, INT4_OID, INT8_OID, MAX_AUTO_PARAMS, NUMERIC_OID,
    UNKNOWN_OID,
};
pub use shape::normalize_literals;

/// SQL text longer than this is not parsed: it is [`StatementKind::Unparsable`]
/// (primary), with its hint. Such text is bulk data, and parsing it would
/// cost a large stack (see [`classify`]) and memory.
pub const MAX_PARSED_SQL_BYTES: usize = 1 << 20;

/// Stack reserved per byte of SQL text. The AST can nest about as deep as the
/// text is long (`SELECT 1+1+1...` is one level per 2 bytes), and dropping it
/// recurses once per level (~64 bytes of stack per level measured, i.e. 32
/// per byte of text); sqlparser's own parsing and visiting grow their stack
/// on demand, dropping does not.
const STACK_PER_SQL_BYTE: usize = 128;

/// Stack reserved besides that (sqlparser grows its own below 128 KiB).
const STACK_BASE: usize = 256 << 10;

/// Classifies a query string (one or several statements).
///
/// Never fails: SQL that cannot be understood is [`StatementKind::Unparsable`],
/// which goes to the primary, and so is SQL longer than
/// [`MAX_PARSED_SQL_BYTES`]. Deeply nested SQL cannot overflow the caller's
/// stack (a tokio worker has 2 MiB): when less stack remains than the text
/// may need, the classification runs on a temporary stack of that size.
pub fn classify(sql: &str, overrides: &FunctionOverrides) -> Classification {
    if sql.len() > MAX_PARSED_SQL_BYTES {
        let mut c = Classification::unparsable();
        c.hint = detect_hint(sql);
        return c;
    }
    let stack = STACK_BASE + sql.len() * STACK_PER_SQL_BYTE;
    stacker::maybe_grow(stack, stack, || classify_on_this_stack(sql, overrides))
}

fn classify_on_this_stack(sql: &str, overrides: &FunctionOverrides) -> Classification {
    let parts = match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(stmts) => stmts
            .iter()
            .map(|s| statement::classify_statement(s, overrides))
            .collect(),
        Err(_) => fallback::classify_unparsed(sql, overrides),
    };
    let mut c = combine(parts);
    c.hint = detect_hint(sql);
    c
}

/// How one statement of a multi-statement string weighs in the combination.
enum Weight {
    /// Follows the transaction or cursor; does not decide the route.
    Neutral,
    Read,
    Write(&'static str),
    Unparsable,
}

fn weight(part: &Classification) -> Weight {
    use StatementKind as K;
    match &part.kind {
        K::Unparsable => Weight::Unparsable,
        _ if part.needs_primary() => Weight::Write(part.reason),
        K::Read => Weight::Read,
        K::TxBegin {
            read_only: Some(true),
            ..
        }
        | K::TxEnd
        | K::TxOther
        | K::SetTransaction { .. }
        | K::CursorOp
        | K::SessionSet { local: true, .. } => Weight::Neutral,
        K::TxBegin { .. } => Weight::Write("transaction block"),
        k if k.is_meridian() => Weight::Write("meridian in multi-statement"),
        _ => Weight::Write(part.reason),
    }
}

/// Combines the classifications of a string's statements (see the crate docs).
fn combine(mut parts: Vec<Classification>) -> Classification {
    parts.retain(|p| p.kind != StatementKind::Empty);
    if parts.len() <= 1 {
        return parts.pop().unwrap_or_else(|| Classification {
            statements: 0,
            ..Classification::new(StatementKind::Empty, "empty")
        });
    }
    let mut unknown: Vec<String> = Vec::new();
    let mut pins = false;
    let (mut unparsable, mut write, mut read) = (false, None, None);
    for part in &parts {
        match weight(part) {
            Weight::Unparsable => unparsable = true,
            Weight::Write(reason) => {
                write.get_or_insert(reason);
            }
            Weight::Read => {
                read.get_or_insert(part.reason);
            }
            Weight::Neutral => {}
        }
        let session_state = part.kind.is_session_state()
            && !matches!(part.kind, StatementKind::SessionSet { local: true, .. });
        pins |= part.pins_session || session_state;
        for f in &part.unknown_functions {
            if !unknown.contains(f) {
                unknown.push(f.clone());
            }
        }
    }
    let statements = parts.len();
    let mut c = if unparsable {
        Classification::unparsable()
    } else if let Some(reason) = write {
        Classification::write(reason)
    } else if let Some(reason) = read {
        Classification::read(reason)
    } else {
        let first = parts.swap_remove(0);
        Classification::new(first.kind, first.reason)
    };
    c.pins_session = pins;
    c.unknown_functions = unknown;
    c.statements = statements;
    c
}
