//! Behaviour tests, one rule each.

mod common;

use common::{c, summary};
use meridian_classify::{
    classify, detect_hint, DiscardScope, FunctionOverrides, Hint, IsolationLevel, StatementKind,
};

#[test]
fn plain_select_is_a_read() {
    let r = c("SELECT id, name FROM users WHERE id = $1");
    assert_eq!(r.kind, StatementKind::Read);
    assert_eq!(r.reason, "select");
    assert!(!r.needs_primary());
    assert!(!r.needs_function_lookup());
    assert_eq!(r.statements, 1);
}

#[test]
fn nextval_is_a_write() {
    let r = c("SELECT nextval('orders_id_seq')");
    assert_eq!(r.kind, StatementKind::Write);
    assert_eq!(r.reason, "nextval");
    assert!(r.needs_primary());
    assert!(!r.pins_session);
}

#[test]
fn nextval_in_nested_subquery_is_a_write() {
    let r = c("SELECT * FROM (SELECT a FROM (SELECT nextval('s') AS a) x) y WHERE true");
    assert_eq!(summary(&r), "write:nextval");
}

#[test]
fn values_with_nextval_default_is_a_write() {
    assert_eq!(
        summary(&c("VALUES (nextval('s'), DEFAULT)")),
        "write:nextval"
    );
    assert_eq!(
        summary(&c("INSERT INTO t (id, a) VALUES (nextval('s'), DEFAULT)")),
        "write:insert"
    );
}

#[test]
fn currval_and_lastval_go_to_primary() {
    assert!(c("SELECT currval('s')").needs_primary());
    assert!(c("SELECT lastval()").needs_primary());
}

#[test]
fn writable_cte_goes_to_primary() {
    let r = c("WITH moved AS (DELETE FROM inbox WHERE done RETURNING *) \
               INSERT INTO archive SELECT * FROM moved");
    assert_eq!(r.kind, StatementKind::Write);
    let r = c("WITH x AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM x");
    assert_eq!(
        (r.kind.clone(), r.reason),
        (StatementKind::Write, "writable cte")
    );
    assert!(r.needs_primary());
}

#[test]
fn explain_analyze_of_insert_is_a_write() {
    let r = c("EXPLAIN ANALYZE INSERT INTO t VALUES (1)");
    assert_eq!((r.kind, r.reason), (StatementKind::Write, "insert"));
    let r = c("EXPLAIN (ANALYZE true, BUFFERS) UPDATE t SET a = 1");
    assert_eq!(r.kind, StatementKind::Write);
}

#[test]
fn explain_of_insert_is_a_read() {
    let r = c("EXPLAIN INSERT INTO t VALUES (nextval('s'))");
    assert_eq!((r.kind.clone(), r.reason), (StatementKind::Read, "explain"));
    assert!(!r.needs_primary());
    assert!(r.unknown_functions.is_empty());
}

#[test]
fn explain_analyze_of_select_is_a_read() {
    assert_eq!(
        c("EXPLAIN ANALYZE SELECT * FROM t").kind,
        StatementKind::Read
    );
}

#[test]
fn select_into_creates_a_table() {
    let r = c("SELECT * INTO archive_2024 FROM orders");
    assert_eq!((r.kind, r.reason), (StatementKind::Write, "select into"));
    assert!(!r.pins_session);
    assert!(c("SELECT * INTO TEMP scratch FROM orders").pins_session);
}

#[test]
fn create_table_as_is_a_write() {
    assert_eq!(
        summary(&c("CREATE TABLE t2 AS SELECT * FROM t")),
        "write:create table as"
    );
}

#[test]
fn locking_reads_are_writes() {
    for sql in [
        "SELECT * FROM t FOR UPDATE",
        "SELECT * FROM t FOR NO KEY UPDATE",
        "SELECT * FROM t FOR SHARE",
        "SELECT * FROM t FOR KEY SHARE",
    ] {
        assert!(c(sql).needs_primary(), "{sql}");
    }
}

#[test]
fn dollar_quoted_string_with_insert_text_is_a_read() {
    let r = c("SELECT $body$ INSERT INTO t VALUES (1); DELETE FROM t $body$ AS txt");
    assert_eq!(r.kind, StatementKind::Read);
    assert_eq!(r.statements, 1);
    assert_eq!(c("SELECT $$nextval('s')$$").kind, StatementKind::Read);
}

#[test]
fn quoted_identifiers_are_kept() {
    let r = c(r#"SELECT "MyFunc"(1), Other(2), "My Schema"."Fn"(), s."a.b"() FROM "Tbl""#);
    assert_eq!(
        r.unknown_functions,
        vec!["MyFunc", "other", "My Schema.Fn", "s.\"a.b\""]
    );
    assert_eq!(
        c(r#"EXECUTE "CamelPlan""#).kind,
        StatementKind::Execute {
            name: "CamelPlan".into()
        }
    );
}

#[test]
fn schema_qualified_functions_are_reported_qualified() {
    let r = c("SELECT Billing.Charge(1), pg_catalog.lower('A'), public.helper()");
    assert_eq!(r.unknown_functions, vec!["billing.charge", "public.helper"]);
}

#[test]
fn functions_in_from_are_collected() {
    let r = c("SELECT * FROM report.monthly(2024) m JOIN LATERAL expand(m.x) e ON true");
    assert_eq!(r.unknown_functions, vec!["report.monthly", "expand"]);
    assert!(r.needs_function_lookup());
    assert_eq!(summary(&c("SELECT * FROM generate_series(1, 3)")), "read");
}

#[test]
fn unknown_functions_are_deduplicated_in_order() {
    let r = c("SELECT b(a(1)), a(2), b(3) FROM t WHERE c(a(4))");
    assert_eq!(r.unknown_functions, vec!["b", "a", "c"]);
}

#[test]
fn overrides_apply_before_the_catalog() {
    let o = FunctionOverrides::new(["public.safe_report", "NEXTVAL"], ["audit.log_access"]);
    let r = classify("SELECT safe_report(1), Audit.Log_Access('x')", &o);
    assert_eq!(
        (r.kind.clone(), r.reason),
        (StatementKind::Write, "write function (config)")
    );
    assert!(r.unknown_functions.is_empty());
    let r = classify("SELECT nextval('s'), public.SAFE_REPORT()", &o);
    assert_eq!(r.kind, StatementKind::Read);
    let r = classify("SELECT other.safe_report()", &o);
    assert_eq!(r.unknown_functions, vec!["other.safe_report"]);
}

#[test]
fn session_advisory_lock_pins_but_xact_lock_does_not() {
    let r = c("SELECT pg_advisory_lock(42)");
    assert!(r.pins_session && r.needs_primary());
    let r = c("SELECT pg_try_advisory_xact_lock(42)");
    assert!(!r.pins_session && r.needs_primary());
}

#[test]
fn set_config_session_scope_pins() {
    assert!(c("SELECT set_config('app.user', '7', false)").pins_session);
    assert!(!c("SELECT set_config('app.user', '7', true)").needs_primary());
}

#[test]
fn comment_hint_forces_primary() {
    let r = c("/* meridian:primary */ SELECT * FROM t");
    assert_eq!(r.kind, StatementKind::Read);
    assert_eq!(r.hint, Some(Hint::Primary));
    assert!(r.needs_primary());
    let r = c("-- meridian:primary\nSELECT 1");
    assert!(r.needs_primary());
    // Only leading comments count.
    assert!(!c("SELECT 1 /* meridian:primary */").needs_primary());
}

#[test]
fn replica_hint_waives_function_lookup_and_unparsable() {
    let r = c("/* meridian:replica */ SELECT my_report()");
    assert_eq!(r.hint, Some(Hint::Replica));
    assert!(!r.needs_primary() && !r.needs_function_lookup());
    assert!(!c("/* meridian:replica */ SELECT xmlelement(name foo)").needs_primary());
    assert!(c("SELECT xmlelement(name foo)").needs_primary());
}

#[test]
fn replica_hint_never_moves_writes_or_session_state() {
    assert!(c("/* meridian:replica */ INSERT INTO t VALUES (1)").needs_primary());
    assert!(c("/* meridian:replica */ SELECT nextval('s')").needs_primary());
    assert!(c("/* meridian:replica */ BEGIN READ WRITE").needs_primary());
    assert!(c("/* meridian:replica */ SELECT pg_advisory_lock(1)").needs_primary());
    let r = c("/* meridian:replica */ SET search_path = x");
    assert!(r.kind.is_session_state());
}

#[test]
fn detect_hint_is_exported() {
    assert_eq!(
        detect_hint("/* meridian:replica */ SELECT 1"),
        Some(Hint::Replica)
    );
}

#[test]
fn unparsable_sql_goes_to_primary() {
    for sql in ["SELEKT 1", "SELECT (", "SELECT 'unterminated", "\u{1F600}"] {
        let r = c(sql);
        assert_eq!(
            (r.kind.clone(), r.reason),
            (StatementKind::Unparsable, "unparsable"),
            "{sql}"
        );
        assert!(r.needs_primary(), "{sql}");
    }
}

#[test]
fn keyword_fallback_decides_unsupported_syntax() {
    assert_eq!(
        summary(&c("REFRESH MATERIALIZED VIEW mv")),
        "write:refresh materialized view"
    );
    assert_eq!(summary(&c("CHECKPOINT")), "write:checkpoint");
    assert_eq!(summary(&c("DO $$BEGIN END$$")), "write:do");
    assert_eq!(summary(&c("MOVE FORWARD 5 IN c")), "cursor");
    assert_eq!(summary(&c("RESET TIME ZONE")), "reset timezone");
}

#[test]
fn set_local_is_transaction_scoped() {
    let r = c("SET LOCAL statement_timeout = '5s'");
    assert_eq!(
        r.kind,
        StatementKind::SessionSet {
            name: "statement_timeout".into(),
            local: true
        }
    );
    assert_eq!(r.reason, "set local");
    let r = c("SET Statement_Timeout = '5s'");
    assert_eq!(
        r.kind,
        StatementKind::SessionSet {
            name: "statement_timeout".into(),
            local: false
        }
    );
    assert!(!r.needs_primary());
}

#[test]
fn discard_all_resets_session() {
    let r = c("DISCARD ALL");
    assert_eq!(
        r.kind,
        StatementKind::Discard {
            scope: DiscardScope::All
        }
    );
    assert!(r.kind.is_session_state());
}

#[test]
fn show_is_a_read() {
    let r = c("SHOW statement_timeout");
    assert_eq!((r.kind, r.reason), (StatementKind::Read, "show"));
}

#[test]
fn meridian_settings_are_answered_by_the_proxy() {
    let r = c("SET meridian.consistency = 'strong'");
    assert_eq!(
        r.kind,
        StatementKind::MeridianSet {
            name: "meridian.consistency".into(),
            value: "strong".into()
        }
    );
    assert!(!r.needs_primary() && r.kind.is_meridian());
    assert_eq!(
        c("SHOW meridian.lsn").kind,
        StatementKind::MeridianShow {
            name: "meridian.lsn".into()
        }
    );
    assert_eq!(
        c("RESET meridian.min_lsn").kind,
        StatementKind::MeridianReset {
            name: "meridian.min_lsn".into()
        }
    );
}

#[test]
fn multi_statement_with_write_is_a_write() {
    let r = c("SELECT 1; UPDATE t SET a = 2; SELECT 3");
    assert_eq!((r.kind.clone(), r.reason), (StatementKind::Write, "update"));
    assert_eq!(r.statements, 3);
    assert!(r.needs_primary());
}

#[test]
fn multi_statement_of_reads_is_a_read() {
    let r = c("SELECT 1; SELECT 2;");
    assert_eq!((r.kind, r.statements), (StatementKind::Read, 2));
}

#[test]
fn multi_statement_with_session_state_pins() {
    let r = c("SET search_path = app; SELECT 1");
    assert!(r.pins_session && r.needs_primary());
}

#[test]
fn transaction_control_is_its_own_class() {
    assert_eq!(
        c("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").kind,
        StatementKind::TxBegin {
            read_only: Some(true),
            isolation: Some(IsolationLevel::RepeatableRead)
        }
    );
    assert!(c("BEGIN").kind.is_transaction_control());
    assert!(!c("BEGIN").needs_primary());
    assert!(c("START TRANSACTION READ WRITE").needs_primary());
    assert!(c("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY").needs_primary());
    assert_eq!(c("END").kind, StatementKind::TxEnd);
    assert_eq!(c("ROLLBACK TO SAVEPOINT s1").kind, StatementKind::TxOther);
    assert!(c("COMMIT PREPARED 'gid'").needs_primary());
    assert_eq!(
        c("SET TRANSACTION READ ONLY").kind,
        StatementKind::SetTransaction {
            read_only: Some(true),
            isolation: None
        }
    );
}

#[test]
fn prepare_carries_the_inner_class_and_execute_reports_the_name() {
    let r = c("PREPARE ins(int) AS INSERT INTO t VALUES ($1)");
    let StatementKind::Prepare { name, inner } = &r.kind else {
        panic!("not a prepare: {r:?}");
    };
    assert_eq!(name, "ins");
    assert!(inner.needs_primary());
    assert!(!r.needs_primary());
    assert_eq!(
        c("EXECUTE ins(1)").kind,
        StatementKind::Execute { name: "ins".into() }
    );
    assert_eq!(
        c("DEALLOCATE ALL").kind,
        StatementKind::Deallocate { name: None }
    );
}

#[test]
fn cursors() {
    assert_eq!(c("DECLARE c CURSOR FOR SELECT 1").kind, StatementKind::Read);
    assert!(c("DECLARE c CURSOR WITH HOLD FOR SELECT 1").pins_session);
    assert_eq!(c("FETCH 100 FROM c").kind, StatementKind::CursorOp);
    assert_eq!(c("CLOSE c").kind, StatementKind::CursorOp);
}

#[test]
fn listen_pins_the_session() {
    let r = c("LISTEN jobs");
    assert_eq!(r.kind, StatementKind::Listen);
    assert!(r.pins_session && r.needs_primary());
}

#[test]
fn temporary_tables_pin_the_session() {
    assert!(c("CREATE TEMP TABLE scratch (a int)").pins_session);
    assert!(c("CREATE TEMPORARY TABLE scratch AS SELECT 1").pins_session);
    assert!(!c("CREATE TABLE scratch (a int)").pins_session);
}

#[test]
fn copy_direction_decides() {
    assert!(c("COPY t FROM STDIN").needs_primary());
    assert!(!c("COPY t TO STDOUT").needs_primary());
    assert!(!c("COPY (SELECT * FROM t) TO STDOUT").needs_primary());
}

#[test]
fn empty_input_is_empty() {
    let r = c("  -- nothing\n ; ");
    assert_eq!((r.kind, r.statements), (StatementKind::Empty, 0));
}

#[test]
fn sql_standard_function_body_is_one_statement() {
    let r = c("CREATE FUNCTION f() RETURNS int LANGUAGE sql \
               BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END");
    assert_eq!((r.kind, r.statements), (StatementKind::Write, 1));
}

#[test]
fn a_call_of_an_empty_quoted_name_goes_to_the_primary() {
    // Postgres rejects `""` (a zero-length identifier): nothing to look up in the catalog.
    let r = c("SELECT \"\"(1), lower('x')");
    assert!(r.needs_primary(), "{r:?}");
    assert!(r.unknown_functions.is_empty(), "{r:?}");
}
