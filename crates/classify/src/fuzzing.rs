//! Fuzz-target body, shared by the `cargo fuzz` target in `fuzz/` and by the
//! corpus replay test (`tests/fuzz_corpus.rs`), so neither can rot.
//!
//! It takes arbitrary bytes and must not panic on any of them. It checks
//! invariants with `assert!`: a violated invariant is a bug the fuzzer is
//! meant to find, and the panic is how libFuzzer reports it. Not part of the
//! crate's API.

use std::sync::{Arc, OnceLock};

use crate::{detect_hint, CacheConfig, Classification, ClassifyCache, FunctionOverrides};
use crate::{Hint, StatementKind};

fn overrides() -> &'static FunctionOverrides {
    static OVERRIDES: OnceLock<FunctionOverrides> = OnceLock::new();
    OVERRIDES.get_or_init(|| {
        FunctionOverrides::new(
            ["report_totals", "public.lookup", "app.\"Read\""],
            ["audit_log", "app.bump", "nextval_custom"],
        )
    })
}

/// Classifier: the input (lossily decoded as UTF-8) is classified through a
/// fresh, tiny [`ClassifyCache`] with a fixed set of [`FunctionOverrides`].
///
/// Checks the documented properties of the result (the hint is the one
/// [`detect_hint`] finds; the kind is `Empty` exactly when no statement is
/// counted; unknown functions are listed once each and are never overridden
/// ones; Meridian commands never need the primary; a `meridian:primary`
/// hint or a pin always does; unparsable SQL does unless hinted to a
/// replica), and the cache's: a second lookup is a hit returning the same
/// value, an entry just inserted can be found, the limits hold and the
/// counters add up while other entries push entries out.
pub fn classifier(data: &[u8]) {
    let sql = String::from_utf8_lossy(data);
    let o = overrides();
    let cache = ClassifyCache::new(CacheConfig {
        max_entries: 2,
        max_bytes: 8192,
        shards: 1,
    });

    let c = cache.get_or_classify(&sql, o);
    check_classification(&c, &sql, o);
    let bytes = sql.len() + c.approx_bytes() + 64;
    let stored = bytes <= 8192;
    let again = cache.get_or_classify(&sql, o);
    assert_eq!(Arc::ptr_eq(&c, &again), stored, "second lookup not a hit");
    assert_eq!(cache.len(), usize::from(stored));
    assert_eq!(
        (cache.hits(), cache.misses()),
        (u64::from(stored), 2 - u64::from(stored))
    );

    // Push entries out with others (no classification needed for those).
    let others = [format!("{sql} "), format!("{sql};"), format!(" {sql}")];
    for other in &others {
        let got = cache.insert(other, Classification::clone(&c));
        assert!(*got == *c);
        if other.len() + c.approx_bytes() + 64 <= 8192 {
            let found = cache.get(other);
            assert!(
                found.is_some_and(|f| Arc::ptr_eq(&f, &got)),
                "new entry not found"
            );
        }
        let s = cache.stats();
        assert!(s.entries <= 2 && s.bytes <= 8192, "cache over its limits");
        assert_eq!(s.insertions - s.evictions, s.entries as u64);
    }
    cache.clear();
    assert!(cache.is_empty() && cache.approx_bytes() == 0);
}

fn check_classification(c: &Classification, sql: &str, o: &FunctionOverrides) {
    assert_eq!(c.hint, detect_hint(sql), "hint differs from detect_hint");
    assert_eq!(
        c.kind == StatementKind::Empty,
        c.statements == 0,
        "empty kind and statement count disagree"
    );
    assert!(!c.reason.is_empty());
    if c.kind.is_meridian() {
        assert!(!c.needs_primary(), "a Meridian command needs the primary");
    } else if c.hint == Some(Hint::Primary) || c.pins_session {
        assert!(c.needs_primary());
    }
    if c.kind == StatementKind::Unparsable {
        assert_eq!(c.reason, "unparsable");
        assert_eq!(c.needs_primary(), c.hint != Some(Hint::Replica));
    }
    if c.needs_function_lookup() {
        assert!(!c.needs_primary() && !c.unknown_functions.is_empty());
    }
    check_functions(c, o);
    let _ = c.approx_bytes();
}

/// Unknown functions are deduplicated, non-empty and not overridden, at the
/// top level and inside `PREPARE`.
fn check_functions(c: &Classification, o: &FunctionOverrides) {
    for (i, f) in c.unknown_functions.iter().enumerate() {
        assert!(!f.is_empty(), "empty unknown function name");
        assert!(
            !c.unknown_functions.iter().skip(i + 1).any(|g| g == f),
            "unknown function {f} listed twice"
        );
        assert!(
            !o.is_write(f) && !o.is_read_only(f),
            "overridden function {f} reported as unknown"
        );
    }
    if let StatementKind::Prepare { inner, .. } = &c.kind {
        check_functions(inner, o);
    }
}
