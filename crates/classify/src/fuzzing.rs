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

/// Classifier: the input (lossily decoded as UTF-8) is `A` or `A\0B` (a
/// query string never contains NUL). `A` is classified the way sessions do
/// it, through [`ClassifyCache::get_or_classify_shape`], on a fresh, tiny
/// cache with a fixed set of [`FunctionOverrides`]; then `B` through the same
/// cache, which may answer from the entry `A` left when both have the same
/// shape (literals replaced).
///
/// Checks the documented properties of each result (the hint is the one
/// [`detect_hint`] finds; the kind is `Empty` exactly when no statement is
/// counted; unknown functions are listed once each and are never overridden
/// ones; Meridian commands never need the primary; a `meridian:primary`
/// hint or a pin always does; unparsable SQL does unless hinted to a
/// replica); that the cached answer for `B` is never less safe than
/// classifying `B` itself (needs the primary, pins the session, needs a
/// function lookup whenever that does; unless `B` is unparsable and the
/// answer is its shape's); and the cache's own: a second lookup
/// is a hit returning the same value, an entry just inserted can be found,
/// the limits hold and the counters add up while other entries push entries
/// out.
pub fn classifier(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (sql, other_values) = match text.split_once('\0') {
        Some((a, b)) => (a, Some(b)),
        None => (text.as_ref(), None),
    };
    let o = overrides();
    let cache = ClassifyCache::new(CacheConfig {
        max_entries: 2,
        max_bytes: 8192,
        shards: 1,
    });
    let mut scratch = String::new();

    let c = cache.get_or_classify_shape(sql, o, &mut scratch);
    check_classification(&c, sql, o);
    let stored = cache.len() == 1;
    let again = cache.get_or_classify_shape(sql, o, &mut scratch);
    assert!(*again == *c, "classified differently the second time");
    assert_eq!(Arc::ptr_eq(&c, &again), stored, "second lookup not a hit");
    assert_eq!(cache.len(), usize::from(stored));

    if let Some(b) = other_values {
        let direct = crate::classify(b, o);
        check_classification(&direct, b, o);
        let cached = cache.get_or_classify_shape(b, o, &mut scratch);
        assert_eq!(cached.hint, direct.hint);
        // SQL that sqlparser rejects only for the form of a literal (`0x1F`,
        // `1_000`, `1.2.3`) is routed by its shape, as designed.
        let by_shape = || {
            let mut shape = String::new();
            crate::normalize_literals(b, &mut shape);
            let mut c = crate::classify(&shape, o);
            c.hint = direct.hint;
            *cached == c
        };
        assert!(
            cached.needs_primary()
                || !direct.needs_primary()
                || (direct.kind == StatementKind::Unparsable && by_shape()),
            "cached {cached:?} sends to a replica what needs the primary: {direct:?}"
        );
        assert!(
            cached.pins_session || !direct.pins_session,
            "cached {cached:?} does not pin like {direct:?}"
        );
        assert!(
            cached.needs_primary()
                || cached.needs_function_lookup()
                || !direct.needs_function_lookup(),
            "cached {cached:?} skips the function lookup of {direct:?}"
        );
    }

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

/// Auto-prepare parameterization: the input (lossily decoded as UTF-8) goes through
/// [`crate::parameterize`], which must not panic. When it qualifies, the parameterized text is
/// the input with each parameter's literal replaced by its `$n`, in order (offsets, quoting and
/// numbering are consistent), the values are what the literals denote (doubled quotes undone),
/// and the types are the ones documented.
pub fn parameterize(data: &[u8]) {
    let sql = String::from_utf8_lossy(data);
    let mut p = crate::Parameterized::default();
    if !crate::parameterize(&sql, &mut p) {
        return;
    }
    assert!(p.params.len() <= crate::MAX_AUTO_PARAMS);
    // The text is the input with each literal replaced by `$n`, in order.
    let mut expected = String::new();
    let mut copied = 0;
    for (i, param) in p.params.iter().enumerate() {
        let (lit_start, lit_end) = if param.quoted {
            assert_eq!(param.oid, crate::UNKNOWN_OID);
            assert_eq!(&sql[param.start - 1..param.start], "'");
            assert_eq!(&sql[param.end..param.end + 1], "'");
            assert_eq!(
                p.value(&sql, i),
                sql[param.start..param.end].replace("''", "'")
            );
            (param.start - 1, param.end + 1)
        } else {
            let lit = &sql[param.start..param.end];
            assert!(lit.bytes().next().is_some_and(|b| b.is_ascii_digit()));
            assert!(lit
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-')));
            assert!(matches!(
                param.oid,
                crate::INT4_OID | crate::INT8_OID | crate::NUMERIC_OID
            ));
            (param.start, param.end)
        };
        assert!(lit_start >= copied, "parameters in order, not overlapping");
        expected.push_str(&sql[copied..lit_start]);
        expected.push_str(&format!("${}", i + 1));
        copied = lit_end;
        // `$1` then `1` would read as `$11`.
        assert!(!sql[lit_end..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '$'));
    }
    expected.push_str(&sql[copied..]);
    assert_eq!(
        expected, p.text,
        "the text is the input with $n for the literals"
    );
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
        // A replica hint lets unparsable SQL use a replica, unless a statement in it pins the
        // session (a session `SET` among several statements, found by this target).
        assert_eq!(
            c.needs_primary(),
            c.hint != Some(Hint::Replica) || c.pins_session
        );
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
