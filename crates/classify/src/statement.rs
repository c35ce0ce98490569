//! Classification of one parsed statement.

use sqlparser::ast::{
    ContextModifier, CopySource, CopyTarget, DeclareType, DiscardObject, Expr, Ident, ObjectName,
    ObjectNamePart, Query, Reset, Set, SetExpr, Statement, TransactionAccessMode,
    TransactionIsolationLevel, TransactionMode, UtilityOption, Value,
};

use crate::functions::{display_name, FunctionOverrides};
use crate::kind::{Classification, DiscardScope, IsolationLevel, StatementKind};
use crate::walk::{body_dml_reason, dml_reason, walk_query, walk_statement, Findings};

/// Classifies one statement parsed by sqlparser. Anything not recognised as
/// safe is a `Write` (reason `"utility"` if nothing more specific applies).
pub(crate) fn classify_statement(stmt: &Statement, o: &FunctionOverrides) -> Classification {
    use StatementKind as K;
    match stmt {
        Statement::Query(q) => classify_query(q, o),
        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge(_) => {
            let reason = dml_reason(stmt).unwrap_or("write");
            with_findings(Classification::write(reason), walk_statement(stmt, o))
        }
        Statement::Explain {
            analyze,
            options,
            statement,
            ..
        } => {
            if explain_executes(*analyze, options.as_deref()) {
                classify_statement(statement, o)
            } else {
                Classification::read("explain")
            }
        }
        Statement::ExplainTable { .. } => Classification::read("describe"),
        Statement::ShowVariable { variable } => classify_show(variable),
        Statement::ShowFunctions { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowCharset(_)
        | Statement::ShowObjects(_)
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowCollation { .. } => Classification::read("show"),
        Statement::StartTransaction {
            modes,
            statements,
            exception,
            ..
        } => {
            if !statements.is_empty() || exception.is_some() {
                return Classification::unparsable();
            }
            let (read_only, isolation) = transaction_modes(modes);
            Classification::new(
                K::TxBegin {
                    read_only,
                    isolation,
                },
                "begin",
            )
        }
        Statement::Commit { .. } => Classification::new(K::TxEnd, "commit"),
        Statement::Rollback {
            savepoint: Some(_), ..
        } => Classification::new(K::TxOther, "rollback to savepoint"),
        Statement::Rollback { .. } => Classification::new(K::TxEnd, "rollback"),
        Statement::Savepoint { .. } => Classification::new(K::TxOther, "savepoint"),
        Statement::ReleaseSavepoint { .. } => Classification::new(K::TxOther, "release savepoint"),
        Statement::Set(set) => classify_set(set),
        Statement::Reset(r) => match &r.reset {
            Reset::ALL => Classification::new(K::SessionReset { name: None }, "reset all"),
            Reset::SessionAuthorization => session_reset("session_authorization".into()),
            Reset::ConfigurationParameter(name) => session_reset(setting_name(name)),
        },
        Statement::Discard { object_type } => {
            let scope = match object_type {
                DiscardObject::ALL => DiscardScope::All,
                DiscardObject::PLANS => DiscardScope::Plans,
                DiscardObject::SEQUENCES => DiscardScope::Sequences,
                DiscardObject::TEMP => DiscardScope::Temp,
            };
            Classification::new(K::Discard { scope }, "discard")
        }
        Statement::Prepare {
            name, statement, ..
        } => {
            let inner = Box::new(classify_statement(statement, o));
            Classification::new(
                K::Prepare {
                    name: ident_name(name),
                    inner,
                },
                "prepare",
            )
        }
        Statement::Execute {
            name: Some(name),
            immediate: false,
            ..
        } => Classification::new(
            K::Execute {
                name: display_name(name),
            },
            "execute",
        ),
        Statement::Deallocate { name, .. } => {
            let name = if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") {
                None
            } else {
                Some(ident_name(name))
            };
            Classification::new(K::Deallocate { name }, "deallocate")
        }
        Statement::Declare { stmts } => match stmts.as_slice() {
            [d] if d.declare_type == Some(DeclareType::Cursor) => match &d.for_query {
                Some(q) => cursor_declaration(classify_query(q, o), d.hold == Some(true)),
                None => Classification::unparsable(),
            },
            _ => Classification::unparsable(),
        },
        Statement::Fetch { .. } => Classification::new(K::CursorOp, "fetch"),
        Statement::Close { .. } => Classification::new(K::CursorOp, "close"),
        Statement::LISTEN { .. } => Classification::new(K::Listen, "listen").pinned(),
        Statement::UNLISTEN { .. } => Classification::new(K::Listen, "unlisten").pinned(),
        Statement::NOTIFY { .. } => Classification::write("notify"),
        Statement::Copy {
            source, to, target, ..
        } => classify_copy(source, *to, target, o),
        Statement::CreateTable(ct) => {
            let reason = if ct.query.is_some() {
                "create table as"
            } else {
                "create table"
            };
            let mut c = Classification::write(reason);
            if let Some(q) = &ct.query {
                c = with_findings(c, walk_query(q, o));
            }
            c.pins_session |= ct.temporary || in_pg_temp(&ct.name);
            c
        }
        Statement::CreateView(v) => {
            let reason = if v.materialized {
                "create materialized view"
            } else {
                "create view"
            };
            let mut c = Classification::write(reason);
            if v.materialized {
                c = with_findings(c, walk_query(&v.query, o));
            }
            c.pins_session |= v.temporary || in_pg_temp(&v.name);
            c
        }
        Statement::CreateSequence {
            temporary, name, ..
        } => {
            let mut c = Classification::write("create sequence");
            c.pins_session = *temporary || in_pg_temp(name);
            c
        }
        // LOAD loads a shared library into this backend only.
        Statement::Load { .. } => Classification::write("load").pinned(),
        Statement::Call(_) => with_findings(Classification::write("call"), walk_statement(stmt, o)),
        Statement::Lock(_) | Statement::LockTables { .. } => Classification::write("lock"),
        Statement::Vacuum(_) => Classification::write("vacuum"),
        Statement::Analyze(_) => Classification::write("analyze"),
        Statement::Truncate(_) => Classification::write("truncate"),
        Statement::Comment { .. } => Classification::write("comment"),
        Statement::Grant(_) => Classification::write("grant"),
        Statement::Revoke(_) => Classification::write("revoke"),
        other => Classification::write(ddl_reason(other)),
    }
}

/// Classifies a query (`SELECT`, `VALUES`, a `WITH` around anything, ...).
pub(crate) fn classify_query(q: &Query, o: &FunctionOverrides) -> Classification {
    let found = walk_query(q, o);
    let c = if let Some(reason) = body_dml_reason(&q.body) {
        Classification::write(reason)
    } else if found.nested_write.is_some() {
        Classification::write("writable cte")
    } else if let Some(reason) = found.write_reason() {
        Classification::write(reason)
    } else {
        Classification::read(match q.body.as_ref() {
            SetExpr::Values(_) => "values",
            SetExpr::Table(_) => "table",
            _ => "select",
        })
    };
    with_findings(c, found)
}

/// Adds the pins and unknown functions of a walk to `c`.
fn with_findings(mut c: Classification, found: Findings) -> Classification {
    c.pins_session |= found.pins || found.select_into == Some(true);
    c.unknown_functions = found.unknown;
    c
}

pub(crate) fn cursor_declaration(mut c: Classification, with_hold: bool) -> Classification {
    if c.kind == StatementKind::Read {
        c.reason = "declare cursor";
    }
    c.pins_session |= with_hold;
    c
}

/// `COPY ... FROM` writes; `COPY ... TO STDOUT` reads (unless its query
/// writes); `COPY ... TO 'file' | PROGRAM` writes on the server's filesystem
/// and goes to the primary.
fn classify_copy(
    source: &CopySource,
    to: bool,
    target: &CopyTarget,
    o: &FunctionOverrides,
) -> Classification {
    if !to {
        return Classification::write("copy from");
    }
    match (target, source) {
        (CopyTarget::Stdout, CopySource::Table { .. }) => Classification::read("copy to"),
        (CopyTarget::Stdout, CopySource::Query(q)) => {
            let mut c = classify_query(q, o);
            if c.kind == StatementKind::Read {
                c.reason = "copy to";
            }
            c
        }
        _ => Classification::write("copy to file"),
    }
}

/// True if `EXPLAIN` runs its statement: `ANALYZE` given as keyword or as an
/// option not explicitly turned off.
fn explain_executes(analyze: bool, options: Option<&[UtilityOption]>) -> bool {
    if analyze {
        return true;
    }
    options.unwrap_or_default().iter().any(|opt| {
        let name = opt.name.value.as_str();
        (name.eq_ignore_ascii_case("analyze") || name.eq_ignore_ascii_case("analyse"))
            && !opt.arg.as_ref().is_some_and(is_false_option)
    })
}

fn is_false_option(e: &Expr) -> bool {
    let text = match e {
        Expr::Value(v) => match &v.value {
            Value::Boolean(b) => return !b,
            Value::Number(n, _) => n.clone(),
            Value::SingleQuotedString(s) => s.clone(),
            _ => return false,
        },
        Expr::Identifier(i) => i.value.clone(),
        _ => return false,
    };
    ["false", "off", "no", "0", "f", "n"].contains(&text.to_ascii_lowercase().as_str())
}

fn classify_show(variable: &[Ident]) -> Classification {
    let name = variable
        .iter()
        .map(|i| i.value.to_lowercase())
        .collect::<Vec<_>>()
        .join(".");
    if is_meridian(&name) {
        Classification::new(StatementKind::MeridianShow { name }, "meridian show")
    } else {
        Classification::read("show")
    }
}

fn classify_set(set: &Set) -> Classification {
    use StatementKind as K;
    let session = |name: &str, local: bool| {
        Classification::new(
            K::SessionSet {
                name: name.to_owned(),
                local,
            },
            if local { "set local" } else { "set" },
        )
    };
    let is_local = |m: &Option<ContextModifier>| matches!(m, Some(ContextModifier::Local));
    match set {
        Set::SingleAssignment {
            scope,
            variable,
            values,
            hivevar: false,
        } => {
            let name = setting_name(variable);
            if let Some(c) = transaction_guc(&name, values) {
                return c;
            }
            if !is_meridian(&name) {
                return session(&name, is_local(scope));
            }
            match values.as_slice() {
                [Expr::Identifier(i)]
                    if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default") =>
                {
                    Classification::new(K::MeridianReset { name }, "meridian reset")
                }
                _ => {
                    let value = values
                        .iter()
                        .map(render_value)
                        .collect::<Vec<_>>()
                        .join(", ");
                    Classification::new(K::MeridianSet { name, value }, "meridian set")
                }
            }
        }
        Set::SetRole {
            context_modifier, ..
        } => session("role", is_local(context_modifier)),
        Set::SetSessionAuthorization(p) => {
            session("session_authorization", p.scope == ContextModifier::Local)
        }
        Set::SetTimeZone { local, .. } => session("timezone", *local),
        Set::SetNames { .. } | Set::SetNamesDefault {} => session("client_encoding", false),
        Set::SetTransaction { session: true, .. } => session("session_characteristics", false),
        Set::SetTransaction { modes, .. } => {
            let (read_only, isolation) = transaction_modes(modes);
            Classification::new(
                K::SetTransaction {
                    read_only,
                    isolation,
                },
                "set transaction",
            )
        }
        _ => Classification::unparsable(),
    }
}

/// `SET transaction_read_only | transaction_isolation = ...` act like
/// `SET TRANSACTION ...` (and a hot standby refuses `READ WRITE` and
/// `SERIALIZABLE` in the same way).
fn transaction_guc(name: &str, values: &[Expr]) -> Option<Classification> {
    let value = match values {
        [v] => render_value(v).to_ascii_lowercase(),
        _ => String::new(),
    };
    let (read_only, isolation) = match name {
        "transaction_read_only" => {
            let ro = match value.as_str() {
                "on" | "true" | "yes" | "1" | "t" | "y" => Some(true),
                "off" | "false" | "no" | "0" | "f" | "n" => Some(false),
                // Unknown or DEFAULT: assume the worst.
                _ => Some(false),
            };
            (ro, None)
        }
        "transaction_isolation" => {
            let level = match value.as_str() {
                "read uncommitted" => IsolationLevel::ReadUncommitted,
                "read committed" => IsolationLevel::ReadCommitted,
                "repeatable read" => IsolationLevel::RepeatableRead,
                _ => IsolationLevel::Serializable,
            };
            (None, Some(level))
        }
        _ => return None,
    };
    Some(Classification::new(
        StatementKind::SetTransaction {
            read_only,
            isolation,
        },
        "set transaction",
    ))
}

fn session_reset(name: String) -> Classification {
    if is_meridian(&name) {
        Classification::new(StatementKind::MeridianReset { name }, "meridian reset")
    } else {
        Classification::new(StatementKind::SessionReset { name: Some(name) }, "reset")
    }
}

/// True for Meridian's own settings (`meridian.*`).
pub(crate) fn is_meridian(name: &str) -> bool {
    name.starts_with("meridian.")
}

/// A setting name: parts joined by `.`, lowercased (GUC names are case-insensitive).
fn setting_name(name: &ObjectName) -> String {
    let mut out = String::new();
    for (i, part) in name.0.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        match part {
            ObjectNamePart::Identifier(ident) => out.push_str(&ident.value.to_lowercase()),
            other => out.push_str(&other.to_string().to_lowercase()),
        }
    }
    out
}

/// An identifier as PostgreSQL folds it: lowercased unless quoted.
pub(crate) fn ident_name(i: &Ident) -> String {
    match i.quote_style {
        None => i.value.to_lowercase(),
        Some(_) => i.value.clone(),
    }
}

fn render_value(e: &Expr) -> String {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => s.clone(),
            Value::DollarQuotedString(d) => d.value.clone(),
            Value::Number(n, _) => n.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(i) => ident_name(i),
        other => other.to_string(),
    }
}

/// `(read_only, isolation)` from transaction modes.
fn transaction_modes(modes: &[TransactionMode]) -> (Option<bool>, Option<IsolationLevel>) {
    let mut read_only = None;
    let mut isolation = None;
    for mode in modes {
        match mode {
            TransactionMode::AccessMode(TransactionAccessMode::ReadOnly) => read_only = Some(true),
            TransactionMode::AccessMode(TransactionAccessMode::ReadWrite) => {
                read_only = Some(false)
            }
            TransactionMode::IsolationLevel(level) => {
                isolation = match level {
                    TransactionIsolationLevel::ReadUncommitted => {
                        Some(IsolationLevel::ReadUncommitted)
                    }
                    TransactionIsolationLevel::ReadCommitted => Some(IsolationLevel::ReadCommitted),
                    TransactionIsolationLevel::RepeatableRead => {
                        Some(IsolationLevel::RepeatableRead)
                    }
                    // `SNAPSHOT` is not PostgreSQL; treat it as the strictest.
                    TransactionIsolationLevel::Serializable
                    | TransactionIsolationLevel::Snapshot => Some(IsolationLevel::Serializable),
                }
            }
        }
    }
    (read_only, isolation)
}

/// True if the object is created in the session's temporary schema.
fn in_pg_temp(name: &ObjectName) -> bool {
    match name.0.first() {
        Some(ObjectNamePart::Identifier(i)) if name.0.len() > 1 => {
            i.value.eq_ignore_ascii_case("pg_temp")
                || i.value.to_ascii_lowercase().starts_with("pg_temp_")
        }
        _ => false,
    }
}

/// A metrics-friendly reason for DDL and other utility statements.
fn ddl_reason(stmt: &Statement) -> &'static str {
    match stmt {
        Statement::CreateIndex(_) => "create index",
        Statement::CreateFunction(_) | Statement::CreateProcedure { .. } => "create function",
        Statement::CreateTrigger(_) => "create trigger",
        Statement::CreateSchema { .. } => "create schema",
        Statement::CreateDatabase { .. } => "create database",
        Statement::CreateExtension(_) => "create extension",
        Statement::CreateRole(_) | Statement::CreateUser(_) => "create role",
        Statement::CreateType { .. } | Statement::CreateDomain(_) => "create type",
        Statement::CreatePolicy(_)
        | Statement::CreateServer(_)
        | Statement::CreateCollation(_)
        | Statement::CreateOperator(_)
        | Statement::CreateOperatorFamily(_)
        | Statement::CreateOperatorClass(_)
        | Statement::CreateTextSearch(_)
        | Statement::CreateVirtualTable { .. } => "create",
        Statement::AlterTable(_) => "alter table",
        Statement::AlterSchema(_)
        | Statement::AlterIndex { .. }
        | Statement::AlterView { .. }
        | Statement::AlterFunction(_)
        | Statement::AlterType(_)
        | Statement::AlterCollation(_)
        | Statement::AlterOperator(_)
        | Statement::AlterOperatorFamily(_)
        | Statement::AlterOperatorClass(_)
        | Statement::AlterTextSearch(_)
        | Statement::AlterRole { .. }
        | Statement::AlterPolicy(_)
        | Statement::AlterUser(_) => "alter",
        Statement::Drop { .. }
        | Statement::DropFunction(_)
        | Statement::DropDomain(_)
        | Statement::DropProcedure { .. }
        | Statement::DropPolicy(_)
        | Statement::DropExtension(_)
        | Statement::DropOperator(_)
        | Statement::DropOperatorFamily(_)
        | Statement::DropOperatorClass(_)
        | Statement::DropTrigger(_) => "drop",
        _ => "utility",
    }
}
