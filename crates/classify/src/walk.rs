//! The AST walk: finds what makes a query need the primary, wherever it is
//! nested (CTEs, subqueries, `FROM` functions, `VALUES`, ...).

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, LockType, ObjectName, Query, Select,
    SetExpr, Statement, TableFactor, Value, Visit, Visitor,
};

use crate::functions::{builtin_name, catalog_lookup, display_name, FnClass, FunctionOverrides};

/// What a walk found.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    /// A data-modifying statement nested inside the walked node (a writable
    /// CTE, `COPY (INSERT ...) TO`), with its reason.
    pub nested_write: Option<&'static str>,
    /// `FOR UPDATE` / `FOR SHARE` anywhere.
    pub locking: Option<&'static str>,
    /// `SELECT ... INTO` anywhere: `Some(true)` if the new table is temporary.
    pub select_into: Option<bool>,
    /// The first known writing function called.
    pub function_write: Option<&'static str>,
    /// A function that pins the session was called.
    pub pins: bool,
    /// Functions neither the overrides nor the catalog know.
    pub unknown: Vec<String>,
}

impl Findings {
    /// The reason the walked node needs the primary, if any, most specific first.
    pub fn write_reason(&self) -> Option<&'static str> {
        self.nested_write
            .or(self.locking)
            .or(self.select_into.map(|_| "select into"))
            .or(self.function_write)
    }
}

struct Walker<'a> {
    overrides: &'a FunctionOverrides,
    /// Statements deeper than this are nested data-modifying statements.
    root_depth: usize,
    depth: usize,
    found: Findings,
}

/// Walks a whole statement (the statement itself is not reported as nested).
pub(crate) fn walk_statement(stmt: &Statement, overrides: &FunctionOverrides) -> Findings {
    run(stmt, overrides, 1)
}

/// Walks a query (any statement found inside it counts as nested).
pub(crate) fn walk_query(query: &Query, overrides: &FunctionOverrides) -> Findings {
    run(query, overrides, 0)
}

fn run<T: Visit>(node: &T, overrides: &FunctionOverrides, root_depth: usize) -> Findings {
    let mut walker = Walker {
        overrides,
        root_depth,
        depth: 0,
        found: Findings::default(),
    };
    // The walker never breaks, so the result is always `Continue`.
    let _ = node.visit(&mut walker);
    walker.found
}

/// The reason for a data-modifying statement, if `stmt` is one.
pub(crate) fn dml_reason(stmt: &Statement) -> Option<&'static str> {
    match stmt {
        Statement::Insert(_) => Some("insert"),
        Statement::Update(_) => Some("update"),
        Statement::Delete(_) => Some("delete"),
        Statement::Merge(_) => Some("merge"),
        _ => None,
    }
}

/// The reason for a query whose body is itself data-modifying
/// (`WITH x AS (...) INSERT ...`).
pub(crate) fn body_dml_reason(body: &SetExpr) -> Option<&'static str> {
    match body {
        SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) => {
            dml_reason(s).or(Some("write"))
        }
        SetExpr::Query(q) => body_dml_reason(&q.body),
        _ => None,
    }
}

impl Walker<'_> {
    fn function(&mut self, name: &ObjectName, args: Option<&FunctionArguments>) {
        if !self.overrides.is_empty() {
            let shown = display_name(name);
            if self.overrides.is_write(&shown) {
                self.found
                    .function_write
                    .get_or_insert("write function (config)");
                return;
            }
            if self.overrides.is_read_only(&shown) {
                return;
            }
        }
        let class = builtin_name(name).and_then(|n| catalog_lookup(&n));
        match class {
            Some(FnClass::Read) => {}
            Some(FnClass::Write(reason)) => {
                self.found.function_write.get_or_insert(reason);
            }
            Some(FnClass::Pin(reason)) => {
                self.found.function_write.get_or_insert(reason);
                self.found.pins = true;
            }
            Some(FnClass::SetConfig) => {
                if !set_config_is_local(args) {
                    self.found.function_write.get_or_insert("set_config");
                    self.found.pins = true;
                }
            }
            None => {
                let shown = display_name(name);
                if shown.is_empty() {
                    // `""(1)`: Postgres rejects a zero-length name; there is nothing to look
                    // up (found by the classifier fuzz target).
                    self.found.function_write.get_or_insert("unnamed function");
                    return;
                }
                if !self.found.unknown.contains(&shown) {
                    self.found.unknown.push(shown);
                }
            }
        }
    }
}

/// True if a `set_config(name, value, is_local)` call has a literal true
/// `is_local`: it then only lasts for the current transaction.
fn set_config_is_local(args: Option<&FunctionArguments>) -> bool {
    let Some(FunctionArguments::List(list)) = args else {
        return false;
    };
    let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) = list.args.get(2) else {
        return false;
    };
    match &v.value {
        Value::Boolean(b) => *b,
        Value::SingleQuotedString(s) => {
            ["true", "t", "on", "yes", "y", "1"].contains(&s.trim().to_ascii_lowercase().as_str())
        }
        _ => false,
    }
}

impl Visitor for Walker<'_> {
    type Break = ();

    fn pre_visit_statement(&mut self, stmt: &Statement) -> ControlFlow<()> {
        self.depth += 1;
        if self.depth > self.root_depth && !matches!(stmt, Statement::Query(_)) {
            let reason = dml_reason(stmt).unwrap_or("nested statement");
            self.found.nested_write.get_or_insert(reason);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, _stmt: &Statement) -> ControlFlow<()> {
        self.depth = self.depth.saturating_sub(1);
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(lock) = query.locks.first() {
            self.found.locking.get_or_insert(match lock.lock_type {
                LockType::Update => "for update",
                LockType::Share => "for share",
            });
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        if let Some(into) = &select.into {
            let temp = into.temporary || self.found.select_into == Some(true);
            self.found.select_into = Some(temp);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        match factor {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            } => self.function(name, None),
            TableFactor::Function { name, .. } => self.function(name, None),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr {
            self.function(&f.name, Some(&f.args));
        }
        ControlFlow::Continue(())
    }
}
