//! Literal values as parameters, for auto-preparation of simple-protocol statements.
//!
//! [`parameterize`] turns `SELECT abalance FROM pgbench_accounts WHERE aid = 4711;` into
//! `SELECT abalance FROM pgbench_accounts WHERE aid = $1;` with one parameter, typed the way
//! Postgres types the literal it replaces, so that the prepared statement means exactly what the
//! text meant:
//!
//! * an integer literal is `int4` when it fits, else `int8`, else `numeric`;
//! * a literal with a decimal point or exponent is `numeric`;
//! * a plain string literal (`'...'`) has no declared type: Postgres infers the parameter's type
//!   from its context as it resolves an untyped literal (`aid = '5'`, `ts > '2020-01-01'`).
//!
//! Literals are left in place wherever their position is part of the syntax or the meaning:
//! `ORDER BY 1` / `GROUP BY 1` / `DISTINCT ON (1)` / `PARTITION BY` lists (column positions),
//! type modifiers (`varchar(10)`, `numeric(10, 2)`), typed literals (`DATE '...'`,
//! `INTERVAL '1 day'`), `E'..'`, `U&'..'`, `B'..'`, `X'..'`, strings with a backslash (their
//! value depends on `standard_conforming_strings`), string continuations, and dollar quotes.
//! A literal is replaced only after an operator, `(`, `[`, `,` or a keyword that takes a value
//! (`SELECT`, `WHERE`, `AND`, `THEN`, `LIMIT`, ...).
//!
//! Only single `SELECT`/`INSERT`/`UPDATE`/`DELETE`/`WITH`/`VALUES` statements qualify, and not
//! `SELECT ... INTO` or statements with `*` in a select list or `RETURNING` (their result
//! columns follow the table definition, and a prepared statement fails with "cached plan must
//! not change result type" after the table changes). Anything the lexer does not understand
//! (`$1` in the text, `0x1F`, `1_000`, `.5`) leaves the statement unprepared.

use crate::shape::{skip_block_comment, skip_quoted};

/// Most parameters one auto-prepared statement gets.
pub const MAX_AUTO_PARAMS: usize = 512;

/// Postgres type OID of `int4` (integer literals that fit).
pub const INT4_OID: u32 = 23;
/// Postgres type OID of `int8` (larger integer literals).
pub const INT8_OID: u32 = 20;
/// Postgres type OID of `numeric` (decimals, exponents, integers beyond `int8`).
pub const NUMERIC_OID: u32 = 1700;
/// Not declared: Postgres infers it.
pub const UNKNOWN_OID: u32 = 0;

/// One literal turned into a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// Start of the literal's value in the original text (inside the quotes for a string).
    pub start: usize,
    /// End (exclusive) of the value.
    pub end: usize,
    /// The declared type ([`UNKNOWN_OID`] for strings).
    pub oid: u32,
    /// A quoted string: doubled quotes in the range stand for one.
    pub quoted: bool,
}

/// A statement with its literals as parameters (reused between calls).
#[derive(Debug, Default, Clone)]
pub struct Parameterized {
    /// The text with `$1`, `$2`, ... in place of the literals.
    pub text: String,
    /// The parameters, in order (`$1` first).
    pub params: Vec<Param>,
}

impl Parameterized {
    /// Parameter `i`'s value as text, in the original's encoding.
    pub fn value<'a>(&self, sql: &'a str, i: usize) -> std::borrow::Cow<'a, str> {
        match self.value_bytes(sql.as_bytes(), i) {
            std::borrow::Cow::Borrowed(b) => String::from_utf8_lossy(b),
            std::borrow::Cow::Owned(b) => {
                std::borrow::Cow::Owned(String::from_utf8_lossy(&b).into_owned())
            }
        }
    }

    /// Parameter `i`'s value as the bytes of the original text (`sql` is that text, or the
    /// bytes it came from); a doubled quote in a string stands for one. Out-of-range offsets
    /// give an empty value.
    pub fn value_bytes<'a>(&self, sql: &'a [u8], i: usize) -> std::borrow::Cow<'a, [u8]> {
        let Some(p) = self.params.get(i) else {
            return std::borrow::Cow::Borrowed(&[]);
        };
        let raw = sql.get(p.start..p.end).unwrap_or_default();
        if !p.quoted || !raw.contains(&b'\'') {
            return std::borrow::Cow::Borrowed(raw);
        }
        let mut out = Vec::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(at) = rest.windows(2).position(|w| w == b"''") {
            out.extend_from_slice(&rest[..=at]);
            rest = &rest[at + 2..];
        }
        out.extend_from_slice(rest);
        std::borrow::Cow::Owned(out)
    }
}

/// The significant token before the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prev {
    Start,
    /// Operator character, `(` or `[`: a value may follow.
    Operand,
    /// `,`: a value may follow.
    Comma,
    /// A keyword after which a value may follow.
    ValueKeyword,
    /// Any other word (an identifier, a type name, `NULL`, ...).
    Word,
    /// A literal, a quoted identifier, `)`, `]`.
    Value,
    /// `.` (qualified names).
    Dot,
    /// `::`.
    Cast,
}

/// Keywords a literal may follow as a value.
const VALUE_KEYWORDS: &[&str] = &[
    "select", "where", "and", "or", "not", "like", "ilike", "then", "else", "when", "case",
    "between", "from", "to", "escape", "zone", "limit", "offset", "having", "first", "next",
    "distinct", "all",
];

/// Words clearing an `ORDER BY`/`GROUP BY`/`PARTITION BY` list at its own depth.
const LIST_END: &[&str] = &[
    "limit",
    "offset",
    "fetch",
    "having",
    "window",
    "for",
    "union",
    "intersect",
    "except",
    "returning",
    "where",
    "from",
    "rows",
    "range",
    "groups",
];

/// Type names that take modifiers in parentheses (`varchar(10)`), left alone.
const TYPMOD_TYPES: &[&str] = &[
    "varchar",
    "char",
    "character",
    "varying",
    "bpchar",
    "numeric",
    "decimal",
    "dec",
    "bit",
    "varbit",
    "time",
    "timetz",
    "timestamp",
    "timestamptz",
    "interval",
    "float",
];

/// Statement kinds that qualify, by first keyword.
const FIRST_WORDS: &[&str] = &["select", "insert", "update", "delete", "with", "values"];

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_char(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

fn is_operator_char(c: u8) -> bool {
    matches!(
        c,
        b'+' | b'-'
            | b'*'
            | b'/'
            | b'<'
            | b'>'
            | b'='
            | b'~'
            | b'!'
            | b'@'
            | b'#'
            | b'%'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
    )
}

/// Skips whitespace and comments from `i`.
fn skip_blank(b: &[u8], mut i: usize) -> usize {
    loop {
        match b.get(i) {
            Some(c) if c.is_ascii_whitespace() => i += 1,
            Some(b'-') if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            Some(b'/') if b.get(i + 1) == Some(&b'*') => i = skip_block_comment(b, i),
            _ => return i,
        }
    }
}

/// Fills `out` with `sql`'s literals as parameters. Returns false (and `out` is not to be used)
/// when the statement does not qualify (see the module documentation).
pub fn parameterize(sql: &str, out: &mut Parameterized) -> bool {
    out.text.clear();
    out.params.clear();
    let b = sql.as_bytes();
    let mut i = skip_blank(b, 0);
    let first_end = word_end(b, i);
    if !FIRST_WORDS
        .iter()
        .any(|w| b[i..first_end].eq_ignore_ascii_case(w.as_bytes()))
    {
        return false;
    }
    let mut prev = Prev::Start;
    let mut prev_word: &[u8] = b"";
    let mut depth: i32 = 0;
    // Depth of a list whose literals stay (ORDER BY, type modifiers, ...).
    let mut frozen: Option<i32> = None;
    let mut waiting_by = false;
    let mut copied = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            c if c.is_ascii_whitespace() => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => i = skip_blank(b, i),
            b'/' if b.get(i + 1) == Some(&b'*') => i = skip_blank(b, i),
            b'\'' => {
                let Some(end) = string_end(b, i) else {
                    return false; // unterminated
                };
                let prefixed = i > 0 && (is_ident_char(b[i - 1]) || b[i - 1] == b'&');
                let continued = b.get(skip_blank(b, end)) == Some(&b'\'');
                // `'a'1`: `$11` would be another parameter.
                let glued = b.get(end).is_some_and(|&c| is_ident_char(c));
                let value = &sql[i + 1..end - 1];
                if !prefixed
                    && !continued
                    && !glued
                    && !value.contains('\\')
                    && takes_value(prev, frozen)
                {
                    push_param(
                        sql,
                        out,
                        &mut copied,
                        i,
                        end,
                        i + 1,
                        end - 1,
                        UNKNOWN_OID,
                        true,
                    );
                }
                prev = Prev::Value;
                i = end;
            }
            b'"' => {
                i = skip_quoted(b, i, b'"');
                prev = Prev::Value;
            }
            // A parameter (a simple Query has none) or a dollar-quoted string: left alone.
            b'$' => return false,
            b'.' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => return false,
            b'0'..=b'9' => {
                let (end, decimal) = number_end(b, i);
                if b.get(end).is_some_and(|&c| is_ident_char(c) || c == b'.') {
                    return false; // 0x1F, 1_000, 1.2.3, 12abc
                }
                // `-2147483648` is an int4 constant in Postgres (the minus is folded into the
                // literal), `-$1` with an int8 `$1` would be int8: such values stay.
                let boundary = is_negation_boundary(&sql[i..end]);
                if takes_value(prev, frozen) && !boundary {
                    let oid = if decimal {
                        NUMERIC_OID
                    } else {
                        integer_oid(&sql[i..end])
                    };
                    push_param(sql, out, &mut copied, i, end, i, end, oid, false);
                }
                prev = Prev::Value;
                i = end;
            }
            c if is_ident_start(c) => {
                let end = word_end(b, i);
                let word = &b[i..end];
                let is = |w: &str| word.eq_ignore_ascii_case(w.as_bytes());
                if is("into") && !prev_word.eq_ignore_ascii_case(b"insert") {
                    return false; // SELECT ... INTO creates a table
                }
                if frozen == Some(depth) && LIST_END.iter().any(|w| is(w)) {
                    frozen = None;
                }
                if is("order") || is("group") || is("partition") {
                    waiting_by = true;
                } else if is("by") && waiting_by {
                    frozen.get_or_insert(depth);
                    waiting_by = false;
                } else if is("on") && prev_word.eq_ignore_ascii_case(b"distinct") {
                    frozen.get_or_insert(depth + 1);
                } else {
                    waiting_by = false;
                }
                let next = skip_blank(b, end);
                if b.get(next) == Some(&b'(') && TYPMOD_TYPES.iter().any(|w| is(w)) {
                    frozen.get_or_insert(depth + 1);
                }
                prev = if VALUE_KEYWORDS.iter().any(|w| is(w)) {
                    Prev::ValueKeyword
                } else {
                    Prev::Word
                };
                prev_word = word;
                i = end;
            }
            b'(' | b'[' => {
                depth += 1;
                prev = Prev::Operand;
                i += 1;
            }
            b')' | b']' => {
                depth -= 1;
                if frozen.is_some_and(|f| depth < f) {
                    frozen = None;
                }
                prev = Prev::Value;
                i += 1;
            }
            b',' => {
                prev = Prev::Comma;
                i += 1;
            }
            b';' => {
                if skip_blank(b, i + 1) < b.len() {
                    return false; // more than one statement
                }
                i += 1;
            }
            b':' if b.get(i + 1) == Some(&b':') => {
                prev = Prev::Cast;
                i += 2;
            }
            b'.' => {
                prev = Prev::Dot;
                i += 1;
            }
            // `SELECT *`, `t.*`, `a, *`, `RETURNING *` (not `count(*)` or `a * b`).
            b'*' if prev == Prev::Dot
                || prev == Prev::Comma
                || (prev == Prev::ValueKeyword
                    && [&b"select"[..], b"distinct", b"all"]
                        .iter()
                        .any(|w| prev_word.eq_ignore_ascii_case(w)))
                || (prev == Prev::Word && prev_word.eq_ignore_ascii_case(b"returning")) =>
            {
                return false;
            }
            c if is_operator_char(c) => {
                prev = Prev::Operand;
                i += 1;
            }
            _ => {
                prev = Prev::Value;
                i += 1;
            }
        }
        if out.params.len() > MAX_AUTO_PARAMS {
            return false;
        }
    }
    out.text.push_str(&sql[copied..]);
    true
}

/// Whether a literal after `prev` is a value that may become a parameter.
fn takes_value(prev: Prev, frozen: Option<i32>) -> bool {
    frozen.is_none() && matches!(prev, Prev::Operand | Prev::Comma | Prev::ValueKeyword)
}

#[allow(clippy::too_many_arguments)]
fn push_param(
    sql: &str,
    out: &mut Parameterized,
    copied: &mut usize,
    lit_start: usize,
    lit_end: usize,
    start: usize,
    end: usize,
    oid: u32,
    quoted: bool,
) {
    out.text.push_str(&sql[*copied..lit_start]);
    out.params.push(Param {
        start,
        end,
        oid,
        quoted,
    });
    use std::fmt::Write;
    let _ = write!(out.text, "${}", out.params.len());
    *copied = lit_end;
}

/// Index just past the quoted string starting at `start` (doubled quotes stay inside), or
/// `None` if it is not terminated.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == b'\'' {
            if b.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// End of the identifier or keyword starting at `i`.
fn word_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_ident_char(b[i]) {
        i += 1;
    }
    i
}

/// End of the numeric literal starting at `i` and whether it has a point or an exponent.
fn number_end(b: &[u8], mut i: usize) -> (usize, bool) {
    let mut decimal = false;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if b.get(i) == Some(&b'.') && b.get(i + 1) != Some(&b'.') {
        decimal = true;
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if b.get(j).is_some_and(u8::is_ascii_digit) {
            decimal = true;
            i = j;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    (i, decimal)
}

/// `2147483648` and `9223372036854775808` (leading zeros or not): negated, Postgres types them
/// one size smaller than the positive value.
fn is_negation_boundary(digits: &str) -> bool {
    let digits = digits.trim_start_matches('0');
    matches!(digits, "2147483648" | "9223372036854775808")
}

/// The type Postgres gives an integer literal.
fn integer_oid(digits: &str) -> u32 {
    if digits.parse::<i32>().is_ok() {
        INT4_OID
    } else if digits.parse::<i64>().is_ok() {
        INT8_OID
    } else {
        NUMERIC_OID
    }
}

#[cfg(test)]
mod tests;
