//! Deeply nested SQL must not overflow the stack of the thread classifying it
//! (found by fuzzing: dropping the AST of `SELECT 1+1+1...` recursed once per
//! `+`, and ~64 KB of it aborted the whole process on a 2 MiB tokio worker).

use meridian_classify::{classify, FunctionOverrides, StatementKind, MAX_PARSED_SQL_BYTES};

/// Classifies on a thread with a tokio worker's default stack (2 MiB).
fn kind_on_worker_stack(sql: String) -> StatementKind {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || classify(&sql, &FunctionOverrides::none()).kind)
        .expect("spawn")
        .join()
        .expect("classify panicked")
}

#[test]
fn long_operator_chains() {
    // 100 000 levels each: three times what overflowed before.
    let n = 100_000;
    for (sql, kind) in [
        (format!("SELECT 1{}", "+1".repeat(n)), StatementKind::Read),
        (format!("SELECT a{}", "|a".repeat(n)), StatementKind::Read),
        (
            format!("SELECT 1 FROM t WHERE a{}", " OR a".repeat(n)),
            StatementKind::Read,
        ),
        (
            format!("UPDATE t SET x = 1{}", "*1".repeat(n)),
            StatementKind::Write,
        ),
    ] {
        let head = sql.get(..24).unwrap_or_default().to_owned();
        assert_eq!(kind_on_worker_stack(sql), kind, "{head}...");
    }
}

#[test]
fn long_set_operation_chain() {
    let sql = format!("SELECT 1{}", " UNION SELECT 1".repeat(60_000));
    assert_eq!(kind_on_worker_stack(sql), StatementKind::Read);
}

#[test]
fn text_over_the_limit_is_not_parsed() {
    let sql = format!(
        "/* meridian:replica */ SELECT 1{}",
        "+1".repeat(MAX_PARSED_SQL_BYTES / 2)
    );
    assert!(sql.len() > MAX_PARSED_SQL_BYTES);
    let c = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || classify(&sql, &FunctionOverrides::none()))
        .expect("spawn")
        .join()
        .expect("classify panicked");
    assert_eq!(c.kind, StatementKind::Unparsable);
    assert_eq!(c.hint, Some(meridian_classify::Hint::Replica));
}
