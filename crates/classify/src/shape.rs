//! Statement shapes: the SQL text with its numeric and plain string literals replaced by `1` and
//! `''`. Applications send the same statements with different values (`WHERE aid = 4711`), so
//! the cache keys on the shape: one parse per shape instead of one per value. A shape is only
//! used when it classifies exactly like the original (values rarely change a route: statements
//! such as `SET meridian.min_lsn = '...'` are cached by their full text).
//!
//! The placeholders are the values that route most conservatively wherever a value does matter,
//! so that a statement answered from another one's shape is never sent to a replica when it
//! needs the primary: `1` executes `EXPLAIN (ANALYZE 1) UPDATE ...` (with `0` the shape of
//! `EXPLAIN (ANALYZE 0) UPDATE ...`, a read, answered the `ANALYZE 1` one too), and `''` is
//! not a true `is_local` for `set_config` (found by the `classifier` fuzz target).

/// Writes the shape of `sql` into `out` (cleared first).
pub fn normalize_literals(sql: &str, out: &mut String) {
    out.clear();
    let b = sql.as_bytes();
    let mut i = 0;
    // Start of the last run copied verbatim.
    let mut copied = 0;
    while i < b.len() {
        match b[i] {
            b'\'' => {
                // A plain string, unless it is E'..', U&'..', B'..' or X'..' (kept as is).
                let prefixed = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'&');
                let end = skip_quoted(b, i, b'\'');
                if !prefixed {
                    out.push_str(&sql[copied..i]);
                    out.push_str("''");
                    copied = end;
                }
                i = end;
            }
            b'"' => i = skip_quoted(b, i, b'"'),
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = skip_block_comment(b, i);
            }
            b'$' => i = skip_dollar(b, i),
            c if c.is_ascii_digit() => {
                let ident_before = i > 0
                    && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b'$');
                let mut j = i;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'.' || b[j] == b'_')
                {
                    j += 1;
                }
                if !ident_before {
                    out.push_str(&sql[copied..i]);
                    out.push('1');
                    copied = j;
                }
                i = j;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied.min(sql.len())..]);
}

/// Index just past a quoted run starting at `start` (doubled quotes stay inside).
pub(crate) fn skip_quoted(b: &[u8], start: usize, q: u8) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

pub(crate) fn skip_block_comment(b: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// `$1` parameters, or a dollar-quoted string (`$tag$ ... $tag$`, kept as is).
fn skip_dollar(b: &[u8], start: usize) -> usize {
    let mut j = start + 1;
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
        j += 1;
    }
    if b.get(j) != Some(&b'$') || b[start + 1..j].first().is_some_and(u8::is_ascii_digit) {
        return j; // a parameter like $1, or a lone $
    }
    let tag = &b[start..=j];
    let mut i = j + 1;
    while i + tag.len() <= b.len() {
        if &b[i..i + tag.len()] == tag {
            return i + tag.len();
        }
        i += 1;
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::normalize_literals;

    fn shape(sql: &str) -> String {
        let mut s = String::new();
        normalize_literals(sql, &mut s);
        s
    }

    #[test]
    fn values_become_placeholders() {
        assert_eq!(
            shape("SELECT abalance FROM pgbench_accounts WHERE aid = 4711;"),
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1;"
        );
        assert_eq!(
            shape("SELECT 'a''b', 1.5e3, x1, $1 FROM t2"),
            "SELECT '', 1, x1, $1 FROM t2"
        );
    }

    #[test]
    fn identifiers_comments_and_dollar_quotes_are_kept() {
        let sql = "/* meridian:primary 42 */ SELECT \"col 1\", $$ 'x' 5 $$, E'\\n' -- 7\nFROM t";
        assert_eq!(shape(sql), sql);
    }

    #[test]
    fn odd_input_does_not_panic() {
        for sql in [
            "'",
            "\"",
            "$",
            "$a",
            "$a$ unterminated",
            "/* /* */",
            "--",
            "1.2.3",
            "é'ü'",
        ] {
            let _ = shape(sql);
        }
    }
}
