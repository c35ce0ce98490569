//! A tiny timing harness (not a benchmark framework). Run with:
//! `cargo test --release -p meridian-classify --test bench -- --ignored --nocapture`

use std::hint::black_box;
use std::time::Instant;

use meridian_classify::{classify, ClassifyCache, FunctionOverrides};

/// A 200-character SELECT with a join, functions, grouping and ordering.
const SQL: &str = "SELECT o.id, c.name, sum(i.qty * i.price) AS total FROM orders o \
    JOIN customers c ON c.id = o.customer_id JOIN items i ON i.order_id = o.id \
    WHERE o.created_at > now() - interval '7 days' GROUP BY 1, 2 LIMIT 50";

fn time_per_call(iterations: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(iterations)
}

#[test]
#[ignore = "timing only; run with --release --ignored --nocapture"]
fn classify_and_cache_hit_timings() {
    let none = FunctionOverrides::none();
    println!("statement length: {} chars", SQL.len());
    let parse_us = time_per_call(20_000, || {
        let dialect = sqlparser::dialect::PostgreSqlDialect {};
        let _ = black_box(sqlparser::parser::Parser::parse_sql(
            &dialect,
            black_box(SQL),
        ));
    });
    println!("sqlparser parse alone:     {parse_us:.2} us");
    let tok_us = time_per_call(20_000, || {
        let dialect = sqlparser::dialect::PostgreSqlDialect {};
        let _ =
            black_box(sqlparser::tokenizer::Tokenizer::new(&dialect, black_box(SQL)).tokenize());
    });
    println!("sqlparser tokenize alone:  {tok_us:.2} us");
    let classify_us = time_per_call(20_000, || {
        black_box(classify(black_box(SQL), &none));
    });
    let cache = ClassifyCache::default();
    cache.get_or_classify(SQL, &none);
    let hit_us = time_per_call(1_000_000, || {
        black_box(cache.get_or_classify(black_box(SQL), &none));
    });
    let write_us = time_per_call(20_000, || {
        black_box(classify(
            black_box("INSERT INTO t (a, b) VALUES ($1, $2)"),
            &none,
        ));
    });
    let fallback_us = time_per_call(20_000, || {
        black_box(classify(
            black_box("REFRESH MATERIALIZED VIEW CONCURRENTLY mv"),
            &none,
        ));
    });
    println!("classify(200-char SELECT): {classify_us:.2} us");
    println!("classify(short INSERT):    {write_us:.2} us");
    println!("classify(keyword fallback): {fallback_us:.2} us");
    println!("cache hit:                 {hit_us:.3} us");
}
