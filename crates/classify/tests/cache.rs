//! Tests of the bounded classification cache.

use std::sync::Arc;
use std::thread;

use meridian_classify::{classify, CacheConfig, ClassifyCache, FunctionOverrides, StatementKind};

fn one_shard(max_entries: usize, max_bytes: usize) -> ClassifyCache {
    ClassifyCache::new(CacheConfig {
        max_entries,
        max_bytes,
        shards: 1,
    })
}

#[test]
fn hit_returns_the_same_arc_and_counts() {
    let cache = ClassifyCache::default();
    let none = FunctionOverrides::none();
    let a = cache.get_or_classify("SELECT nextval('s')", &none);
    let b = cache.get_or_classify("SELECT nextval('s')", &none);
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(a.kind, StatementKind::Write);
    let s = cache.stats();
    assert_eq!((s.hits, s.misses, s.insertions, s.evictions), (1, 1, 1, 0));
    assert_eq!(s.entries, 1);
    assert!(s.bytes > "SELECT nextval('s')".len());
}

#[test]
fn entries_are_keyed_by_the_full_text() {
    let cache = ClassifyCache::default();
    let none = FunctionOverrides::none();
    cache.get_or_classify("SELECT 1", &none);
    assert!(cache.get("SELECT 1 ").is_none());
    assert!(cache.get("select 1").is_none());
    assert!(cache.get("SELECT 1").is_some());
    cache.insert("SELECT 2", classify("SELECT 2", &none));
    assert_eq!(cache.len(), 2);
    assert_eq!(
        cache.get("SELECT 2").map(|c| c.kind.clone()),
        Some(StatementKind::Read)
    );
}

#[test]
fn entry_count_is_bounded_and_evictions_counted() {
    let cache = one_shard(8, 1 << 20);
    let none = FunctionOverrides::none();
    for i in 0..100 {
        cache.get_or_classify(&format!("SELECT {i}"), &none);
        assert!(cache.len() <= 8);
    }
    let s = cache.stats();
    assert_eq!(
        (s.entries, s.insertions, s.evictions, s.misses),
        (8, 100, 92, 100)
    );
}

#[test]
fn sharded_cache_never_exceeds_max_entries() {
    let cache = ClassifyCache::new(CacheConfig {
        max_entries: 50,
        max_bytes: 1 << 20,
        shards: 8,
    });
    let none = FunctionOverrides::none();
    for i in 0..1000 {
        cache.get_or_classify(&format!("SELECT {i} FROM t"), &none);
    }
    assert!(cache.len() <= 50, "{}", cache.len());
    assert_eq!(cache.insertions() - cache.evictions(), cache.len() as u64);
}

#[test]
fn byte_size_is_bounded() {
    let cache = one_shard(1000, 8 * 1024);
    let none = FunctionOverrides::none();
    let filler = "x".repeat(500);
    for i in 0..100 {
        cache.get_or_classify(&format!("SELECT '{filler}' AS c{i}"), &none);
        assert!(cache.approx_bytes() <= 8 * 1024);
    }
    assert!(cache.len() < 16 && cache.evictions() > 80);
}

#[test]
fn oversized_entries_are_not_stored() {
    let cache = one_shard(10, 1024);
    let none = FunctionOverrides::none();
    let sql = format!("SELECT '{}'", "y".repeat(4000));
    let c = cache.get_or_classify(&sql, &none);
    assert_eq!(c.kind, StatementKind::Read);
    assert!(cache.is_empty());
    assert_eq!(cache.insertions(), 0);
}

#[test]
fn recently_hit_entries_get_a_second_chance() {
    let cache = one_shard(2, 1 << 20);
    let none = FunctionOverrides::none();
    cache.get_or_classify("SELECT 'a'", &none);
    cache.get_or_classify("SELECT 'b'", &none);
    assert!(cache.get("SELECT 'a'").is_some());
    cache.get_or_classify("SELECT 'c'", &none);
    assert!(cache.get("SELECT 'a'").is_some());
    assert!(cache.get("SELECT 'b'").is_none());
    assert!(cache.get("SELECT 'c'").is_some());
    assert_eq!(cache.evictions(), 1);
}

#[test]
fn clear_and_disabled_cache() {
    let cache = ClassifyCache::with_limits(100, 1 << 20);
    let none = FunctionOverrides::none();
    cache.get_or_classify("SELECT 1", &none);
    cache.clear();
    assert!(cache.is_empty() && cache.approx_bytes() == 0);
    let disabled = ClassifyCache::with_limits(0, 1 << 20);
    disabled.get_or_classify("SELECT 1", &none);
    assert!(disabled.is_empty());
    assert_eq!(disabled.stats().misses, 1);
}

#[test]
fn concurrent_use_is_consistent() {
    let cache = Arc::new(ClassifyCache::new(CacheConfig {
        max_entries: 64,
        max_bytes: 1 << 20,
        shards: 4,
    }));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let cache = Arc::clone(&cache);
            thread::spawn(move || {
                let none = FunctionOverrides::none();
                for i in 0..500 {
                    let sql = format!("SELECT {} FROM t{}", i % 100, (i + t) % 3);
                    let c = cache.get_or_classify(&sql, &none);
                    assert_eq!(c.kind, StatementKind::Read);
                }
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().is_ok());
    }
    let s = cache.stats();
    assert_eq!(s.hits + s.misses, 2000);
    assert!(s.entries <= 64);
    assert_eq!(s.insertions - s.evictions, s.entries as u64);
}

/// Found by the `classifier` fuzz target: with `0` as the number placeholder, the shape of
/// `EXPLAIN (ANALYZE 0) UPDATE ...` (a read: nothing runs) answered `EXPLAIN (ANALYZE 1)
/// UPDATE ...`, which runs the UPDATE, and sent it to a replica.
#[test]
fn a_shape_never_answers_a_statement_whose_values_need_the_primary() {
    let cache = ClassifyCache::default();
    let none = FunctionOverrides::none();
    let mut scratch = String::new();
    for (sql, needs_primary) in [
        ("EXPLAIN (ANALYZE 0) UPDATE t SET x = 1", false),
        ("EXPLAIN (ANALYZE 1) UPDATE t SET x = 2", true),
        ("EXPLAIN (ANALYZE 0) UPDATE t SET x = 3", true), // cached by shape: conservative
        ("SELECT set_config('a', 'b', 'true')", false),
        ("SELECT set_config('a', 'b', 'false')", true),
    ] {
        let c = cache.get_or_classify_shape(sql, &none, &mut scratch);
        assert_eq!(c.needs_primary(), needs_primary, "{sql}");
        assert!(
            c.needs_primary() || !classify(sql, &none).needs_primary(),
            "{sql}"
        );
    }
}
