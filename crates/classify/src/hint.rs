//! Routing hints in leading comments.

use crate::kind::Hint;

/// Finds a routing hint in the comments before the first token of `sql`.
///
/// Only whitespace and comments before the statement are looked at, so this
/// costs a few nanoseconds. Accepted forms (case-insensitive, spaces around
/// the colon allowed): `/* meridian:primary */`, `/* meridian:replica */`,
/// `-- meridian:primary`, `-- meridian:replica`. Block comments nest as in
/// PostgreSQL. If several hints are present, `primary` wins.
pub fn detect_hint(sql: &str) -> Option<Hint> {
    let bytes = sql.as_bytes();
    let mut i = 0;
    let mut found = None;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' => i += 1,
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                let start = i + 2;
                let end = bytes[start..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |p| start + p);
                found = merge(found, parse_hint(&sql[start..end]));
                i = end;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let start = i + 2;
                let mut depth = 1usize;
                let mut j = start;
                let mut body_end = bytes.len();
                while j < bytes.len() {
                    if bytes[j] == b'/' && bytes.get(j + 1) == Some(&b'*') {
                        depth += 1;
                        j += 2;
                    } else if bytes[j] == b'*' && bytes.get(j + 1) == Some(&b'/') {
                        depth -= 1;
                        j += 2;
                        if depth == 0 {
                            body_end = j - 2;
                            break;
                        }
                    } else {
                        j += 1;
                    }
                }
                if depth != 0 {
                    // Unterminated comment: the statement will not parse anyway.
                    return found;
                }
                found = merge(found, parse_hint(&sql[start..body_end]));
                i = j;
            }
            _ => break,
        }
    }
    found
}

fn merge(a: Option<Hint>, b: Option<Hint>) -> Option<Hint> {
    match (a, b) {
        (Some(Hint::Primary), _) | (_, Some(Hint::Primary)) => Some(Hint::Primary),
        (x, None) => x,
        (_, y) => y,
    }
}

fn parse_hint(body: &str) -> Option<Hint> {
    let body = body.trim();
    let rest = strip_prefix_ci(body, "meridian")?;
    let rest = rest.trim_start().strip_prefix(':')?.trim();
    if rest.eq_ignore_ascii_case("primary") {
        Some(Hint::Primary)
    } else if rest.eq_ignore_ascii_case("replica") {
        Some(Hint::Replica)
    } else {
        None
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(
            detect_hint("/* meridian:primary */ SELECT 1"),
            Some(Hint::Primary)
        );
        assert_eq!(
            detect_hint("/*meridian:replica*/SELECT 1"),
            Some(Hint::Replica)
        );
        assert_eq!(
            detect_hint("  -- Meridian : Replica\nSELECT 1"),
            Some(Hint::Replica)
        );
        assert_eq!(detect_hint("--meridian:primary"), Some(Hint::Primary));
        assert_eq!(
            detect_hint("/* x /* nested */ y */ /* meridian:primary */ SELECT 1"),
            Some(Hint::Primary)
        );
        assert_eq!(
            detect_hint("/* meridian:replica */ -- meridian:primary\nSELECT 1"),
            Some(Hint::Primary)
        );
    }

    #[test]
    fn only_leading_comments_count() {
        assert_eq!(detect_hint("SELECT 1 /* meridian:primary */"), None);
        assert_eq!(detect_hint("SELECT '/* meridian:primary */'"), None);
        assert_eq!(detect_hint("/* meridian:primaryx */ SELECT 1"), None);
        assert_eq!(detect_hint("/* not a hint */ SELECT 1"), None);
        assert_eq!(detect_hint("/* meridian:primary SELECT 1"), None);
        assert_eq!(detect_hint(""), None);
        assert_eq!(
            detect_hint("/* é */ /* meridian:replica */ SELECT 1"),
            Some(Hint::Replica)
        );
    }
}
