//! The keyword fallback for SQL that sqlparser cannot parse.
//!
//! The string is tokenized (PostgreSQL rules: comments, `E''` strings,
//! dollar quoting), split on top-level semicolons, and each statement is
//! parsed on its own; only the statements that still fail are decided from
//! their leading keywords. Whenever that is not clear-cut, the answer is
//! `Unparsable` (primary).

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::functions::FunctionOverrides;
use crate::kind::{Classification, DiscardScope, IsolationLevel, StatementKind as K};
use crate::statement::{classify_statement, cursor_declaration, is_meridian};

/// Classifies each statement of a string the parser rejected as a whole.
pub(crate) fn classify_unparsed(sql: &str, o: &FunctionOverrides) -> Vec<Classification> {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return vec![Classification::unparsable()];
    };
    split_statements(tokens)
        .into_iter()
        .filter(|group| group.iter().any(|t| !matches!(t, Token::Whitespace(_))))
        .flat_map(|group| classify_group(group, o))
        .collect()
}

/// Splits tokens on top-level semicolons. Semicolons inside a SQL-standard
/// function body (`BEGIN ATOMIC ... END`) do not split.
fn split_statements(tokens: Vec<Token>) -> Vec<Vec<Token>> {
    let mut groups = Vec::new();
    let mut current = Vec::new();
    let mut atomic_depth = 0usize;
    let mut prev_begin = false;
    for token in tokens {
        if let Some(word) = keyword(&token) {
            let opens_atomic = prev_begin && word.eq_ignore_ascii_case("atomic");
            if opens_atomic || (atomic_depth > 0 && word.eq_ignore_ascii_case("case")) {
                atomic_depth += 1;
            } else if atomic_depth > 0 && word.eq_ignore_ascii_case("end") {
                atomic_depth -= 1;
            }
            prev_begin = word.eq_ignore_ascii_case("begin");
        } else if !matches!(token, Token::Whitespace(_)) {
            prev_begin = false;
        }
        if token == Token::SemiColon && atomic_depth == 0 {
            groups.push(std::mem::take(&mut current));
        } else {
            current.push(token);
        }
    }
    groups.push(current);
    groups
}

/// Parses one statement's tokens, or falls back to its keywords.
fn classify_group(group: Vec<Token>, o: &FunctionOverrides) -> Vec<Classification> {
    let significant: Vec<Token> = group
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .cloned()
        .collect();
    match Parser::new(&PostgreSqlDialect {})
        .with_tokens(group)
        .parse_statements()
    {
        Ok(stmts) => stmts.iter().map(|s| classify_statement(s, o)).collect(),
        Err(_) => vec![keyword_fallback(&significant, o)],
    }
}

/// Classifies exactly one statement given as significant tokens.
fn classify_tokens(tokens: &[Token], o: &FunctionOverrides) -> Classification {
    match Parser::new(&PostgreSqlDialect {})
        .with_tokens(tokens.to_vec())
        .parse_statements()
    {
        Ok(stmts) => match stmts.as_slice() {
            [stmt] => classify_statement(stmt, o),
            _ => Classification::unparsable(),
        },
        Err(_) => keyword_fallback(tokens, o),
    }
}

/// The value of an unquoted word token.
fn keyword(t: &Token) -> Option<&str> {
    match t {
        Token::Word(w) if w.quote_style.is_none() => Some(&w.value),
        _ => None,
    }
}

fn is_kw(t: Option<&Token>, kw: &str) -> bool {
    t.and_then(keyword)
        .is_some_and(|w| w.eq_ignore_ascii_case(kw))
}

/// A word token as PostgreSQL folds identifiers: lowercased unless quoted.
fn word_name(t: Option<&Token>) -> Option<String> {
    match t {
        Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_lowercase()),
        Some(Token::Word(w)) => Some(w.value.clone()),
        _ => None,
    }
}

fn new(kind: K, reason: &'static str) -> Classification {
    Classification::new(kind, reason)
}

fn keyword_fallback(t: &[Token], o: &FunctionOverrides) -> Classification {
    let Some(first) = t.first().and_then(keyword) else {
        return Classification::unparsable();
    };
    let second = t.get(1);
    let write = Classification::write;
    match first.to_ascii_uppercase().as_str() {
        "SELECT" | "WITH" | "VALUES" => {
            locking_reason(t).map_or_else(Classification::unparsable, write)
        }
        "TABLE" => {
            let mut tokens = vec![
                Token::make_keyword("SELECT"),
                Token::Mul,
                Token::make_keyword("FROM"),
            ];
            tokens.extend_from_slice(&t[1..]);
            let mut c = classify_tokens(&tokens, o);
            if c.kind == K::Read {
                c.reason = "table";
            }
            c
        }
        "INSERT" => write("insert"),
        "UPDATE" => write("update"),
        "DELETE" => write("delete"),
        "MERGE" => write("merge"),
        "CREATE" => {
            let temp = t
                .iter()
                .skip(1)
                .take(5)
                .any(|w| is_kw(Some(w), "temp") || is_kw(Some(w), "temporary"));
            let c = write("create");
            if temp {
                c.pinned()
            } else {
                c
            }
        }
        "ALTER" if is_kw(second, "system") => write("alter system"),
        "ALTER" => write("alter"),
        "DROP" => write("drop"),
        "TRUNCATE" => write("truncate"),
        "COMMENT" => write("comment"),
        "GRANT" => write("grant"),
        "REVOKE" => write("revoke"),
        "SECURITY" => write("security label"),
        "IMPORT" => write("import foreign schema"),
        "REASSIGN" => write("reassign owned"),
        "REFRESH" => write("refresh materialized view"),
        "VACUUM" => write("vacuum"),
        "ANALYZE" | "ANALYSE" => write("analyze"),
        "CLUSTER" => write("cluster"),
        "REINDEX" => write("reindex"),
        "LOCK" => write("lock"),
        "CHECKPOINT" => write("checkpoint"),
        "CALL" => write("call"),
        "DO" => write("do"),
        "NOTIFY" => write("notify"),
        "LOAD" => write("load").pinned(),
        "LISTEN" => new(K::Listen, "listen").pinned(),
        "UNLISTEN" => new(K::Listen, "unlisten").pinned(),
        "DISCARD" => discard(second),
        "SET" => set_fallback(&t[1..]),
        "RESET" => reset_fallback(&t[1..]),
        "SHOW" => match dotted_name(&t[1..]) {
            Some((name, [])) if is_meridian(&name) => {
                new(K::MeridianShow { name }, "meridian show")
            }
            _ => Classification::read("show"),
        },
        "BEGIN" => begin(&t[1..]),
        "START" if is_kw(second, "transaction") => begin(&t[2..]),
        "COMMIT" if is_kw(second, "prepared") => new(K::TwoPhase, "commit prepared"),
        "ROLLBACK" if is_kw(second, "prepared") => new(K::TwoPhase, "rollback prepared"),
        "ROLLBACK" if is_kw(second, "to") => new(K::TxOther, "rollback to savepoint"),
        "COMMIT" | "END" => new(K::TxEnd, "commit"),
        "ROLLBACK" | "ABORT" => new(K::TxEnd, "rollback"),
        "SAVEPOINT" => new(K::TxOther, "savepoint"),
        "RELEASE" => new(K::TxOther, "release savepoint"),
        "PREPARE" if is_kw(second, "transaction") => new(K::TwoPhase, "prepare transaction"),
        "PREPARE" => prepare(t, o),
        "EXECUTE" => match word_name(second) {
            Some(name) => new(K::Execute { name }, "execute"),
            None => Classification::unparsable(),
        },
        "DEALLOCATE" => {
            let target = if is_kw(second, "prepare") {
                t.get(2)
            } else {
                second
            };
            if is_kw(target, "all") {
                new(K::Deallocate { name: None }, "deallocate")
            } else if let Some(name) = word_name(target) {
                new(K::Deallocate { name: Some(name) }, "deallocate")
            } else {
                Classification::unparsable()
            }
        }
        "DECLARE" => declare(t, o),
        "FETCH" => new(K::CursorOp, "fetch"),
        "MOVE" => new(K::CursorOp, "move"),
        "CLOSE" => new(K::CursorOp, "close"),
        // Without ANALYZE nothing is executed; with it (or if unsure) primary.
        "EXPLAIN"
            if !t
                .iter()
                .any(|w| is_kw(Some(w), "analyze") || is_kw(Some(w), "analyse")) =>
        {
            Classification::read("explain")
        }
        "COPY" => copy(&t[1..], o),
        _ => Classification::unparsable(),
    }
}

/// `FOR UPDATE | NO KEY UPDATE | SHARE | KEY SHARE` anywhere in the tokens.
fn locking_reason(t: &[Token]) -> Option<&'static str> {
    t.windows(2).find_map(|w| {
        if !is_kw(w.first(), "for") {
            return None;
        }
        let next = w.get(1);
        if is_kw(next, "update") {
            Some("for update")
        } else if is_kw(next, "share") {
            Some("for share")
        } else if is_kw(next, "no") {
            Some("for no key update")
        } else if is_kw(next, "key") {
            Some("for key share")
        } else {
            None
        }
    })
}

fn discard(what: Option<&Token>) -> Classification {
    let scope = match what
        .and_then(keyword)
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        Some("ALL") => DiscardScope::All,
        Some("PLANS") => DiscardScope::Plans,
        Some("SEQUENCES") => DiscardScope::Sequences,
        Some("TEMP" | "TEMPORARY") => DiscardScope::Temp,
        _ => return Classification::unparsable(),
    };
    new(K::Discard { scope }, "discard")
}

/// `name(.name)*` at the start of `t`, lowercased (setting names are
/// case-insensitive), and the remaining tokens.
fn dotted_name(t: &[Token]) -> Option<(String, &[Token])> {
    let mut name = word_name(t.first())?.to_lowercase();
    let mut i = 1;
    while t.get(i) == Some(&Token::Period) {
        name.push('.');
        name.push_str(&word_name(t.get(i + 1))?.to_lowercase());
        i += 2;
    }
    Some((name, &t[i..]))
}

fn set_fallback(t: &[Token]) -> Classification {
    let session = |name: &str, local: bool| {
        let reason = if local { "set local" } else { "set" };
        new(
            K::SessionSet {
                name: name.to_owned(),
                local,
            },
            reason,
        )
    };
    let (local, r) = if is_kw(t.first(), "local") {
        (true, &t[1..])
    } else if is_kw(t.first(), "session")
        && !is_kw(t.get(1), "characteristics")
        && !is_kw(t.get(1), "authorization")
    {
        (false, &t[1..])
    } else {
        (false, t)
    };
    let first = r.first().and_then(keyword).map(str::to_ascii_uppercase);
    let second = r.get(1);
    match first.as_deref() {
        Some("TRANSACTION") if is_kw(second, "snapshot") => set_transaction(None, None),
        Some("TRANSACTION") => match transaction_modes(&r[1..]) {
            Some((read_only, isolation)) => set_transaction(read_only, isolation),
            None => Classification::unparsable(),
        },
        Some("SESSION") if is_kw(second, "characteristics") => {
            session("session_characteristics", false)
        }
        Some("SESSION") if is_kw(second, "authorization") => {
            session("session_authorization", local)
        }
        Some("CONSTRAINTS") => session("constraints", true),
        Some("TIME") if is_kw(second, "zone") => session("timezone", local),
        Some("XML") if is_kw(second, "option") => session("xmloption", local),
        Some("ROLE") => session("role", local),
        Some("NAMES") => session("client_encoding", local),
        Some("SCHEMA") => session("search_path", local),
        _ => {
            let Some((name, rest)) = dotted_name(r) else {
                return Classification::unparsable();
            };
            let value = match rest.split_first() {
                Some((Token::Eq, value)) => value,
                Some((to, value)) if is_kw(Some(to), "to") => value,
                _ => return Classification::unparsable(),
            };
            if !is_meridian(&name) {
                return session(&name, local);
            }
            match value {
                [v] if is_kw(Some(v), "default") => {
                    new(K::MeridianReset { name }, "meridian reset")
                }
                _ => new(
                    K::MeridianSet {
                        name,
                        value: render_tokens(value),
                    },
                    "meridian set",
                ),
            }
        }
    }
}

fn set_transaction(read_only: Option<bool>, isolation: Option<IsolationLevel>) -> Classification {
    new(
        K::SetTransaction {
            read_only,
            isolation,
        },
        "set transaction",
    )
}

/// Renders value tokens: strings unquoted, identifiers folded, comma lists
/// joined by `", "`.
fn render_tokens(t: &[Token]) -> String {
    t.split(|tok| *tok == Token::Comma)
        .map(|item| {
            item.iter()
                .map(|tok| match tok {
                    Token::SingleQuotedString(s) | Token::EscapedStringLiteral(s) => s.clone(),
                    Token::DollarQuotedString(d) => d.value.clone(),
                    Token::Word(_) => word_name(Some(tok)).unwrap_or_default(),
                    other => other.to_string(),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn reset_fallback(t: &[Token]) -> Classification {
    let reset = |name: Option<&str>| {
        new(
            K::SessionReset {
                name: name.map(str::to_owned),
            },
            if name.is_some() { "reset" } else { "reset all" },
        )
    };
    match t {
        [all] if is_kw(Some(all), "all") => reset(None),
        [a, b] if is_kw(Some(a), "time") && is_kw(Some(b), "zone") => reset(Some("timezone")),
        [a, b] if is_kw(Some(a), "session") && is_kw(Some(b), "authorization") => {
            reset(Some("session_authorization"))
        }
        [a, b] if is_kw(Some(a), "xml") && is_kw(Some(b), "option") => reset(Some("xmloption")),
        _ => match dotted_name(t) {
            Some((name, [])) if is_meridian(&name) => {
                new(K::MeridianReset { name }, "meridian reset")
            }
            Some((name, [])) => reset(Some(&name)),
            _ => Classification::unparsable(),
        },
    }
}

/// `BEGIN`/`START TRANSACTION` modes (after the leading keyword).
fn begin(t: &[Token]) -> Classification {
    let t = match t.first() {
        Some(w) if is_kw(Some(w), "work") || is_kw(Some(w), "transaction") => &t[1..],
        _ => t,
    };
    match transaction_modes(t) {
        Some((read_only, isolation)) => new(
            K::TxBegin {
                read_only,
                isolation,
            },
            "begin",
        ),
        None => Classification::unparsable(),
    }
}

/// Parses transaction modes; `None` if anything unexpected is found.
fn transaction_modes(t: &[Token]) -> Option<(Option<bool>, Option<IsolationLevel>)> {
    let mut read_only = None;
    let mut isolation = None;
    let mut i = 0;
    let word = |i: usize| t.get(i).and_then(keyword).map(str::to_ascii_uppercase);
    while i < t.len() {
        if t[i] == Token::Comma {
            i += 1;
            continue;
        }
        match (
            word(i).as_deref(),
            word(i + 1).as_deref(),
            word(i + 2).as_deref(),
        ) {
            (Some("READ"), Some("ONLY"), _) => (read_only, i) = (Some(true), i + 2),
            (Some("READ"), Some("WRITE"), _) => (read_only, i) = (Some(false), i + 2),
            (Some("NOT"), Some("DEFERRABLE"), _) => i += 2,
            (Some("DEFERRABLE"), _, _) => i += 1,
            (Some("ISOLATION"), Some("LEVEL"), Some(level)) => {
                let (lvl, len) = match (level, word(i + 3).as_deref()) {
                    ("SERIALIZABLE", _) => (IsolationLevel::Serializable, 1),
                    ("REPEATABLE", Some("READ")) => (IsolationLevel::RepeatableRead, 2),
                    ("READ", Some("COMMITTED")) => (IsolationLevel::ReadCommitted, 2),
                    ("READ", Some("UNCOMMITTED")) => (IsolationLevel::ReadUncommitted, 2),
                    _ => return None,
                };
                isolation = Some(lvl);
                i += 2 + len;
            }
            _ => return None,
        }
    }
    Some((read_only, isolation))
}

/// `PREPARE name [(types)] AS statement`.
fn prepare(t: &[Token], o: &FunctionOverrides) -> Classification {
    let Some(name) = word_name(t.get(1)) else {
        return Classification::unparsable();
    };
    let mut depth = 0usize;
    for (i, tok) in t.iter().enumerate().skip(2) {
        match tok {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            _ if depth == 0 && is_kw(Some(tok), "as") => {
                let inner = Box::new(classify_tokens(&t[i + 1..], o));
                return new(K::Prepare { name, inner }, "prepare");
            }
            _ => {}
        }
    }
    Classification::unparsable()
}

/// `DECLARE name ... CURSOR [WITH HOLD | WITHOUT HOLD] FOR query`.
fn declare(t: &[Token], o: &FunctionOverrides) -> Classification {
    let Some(cursor) = t.iter().position(|w| is_kw(Some(w), "cursor")) else {
        return Classification::unparsable();
    };
    let Some(offset) = t[cursor..].iter().position(|w| is_kw(Some(w), "for")) else {
        return Classification::unparsable();
    };
    let for_at = cursor + offset;
    let options = &t[cursor + 1..for_at];
    let with_hold = options
        .windows(2)
        .any(|w| is_kw(w.first(), "with") && is_kw(w.get(1), "hold"));
    cursor_declaration(classify_tokens(&t[for_at + 1..], o), with_hold)
}

/// `COPY` after the keyword: `(query) TO ...` or `table [(cols)] FROM|TO ...`.
fn copy(t: &[Token], o: &FunctionOverrides) -> Classification {
    let to_target = |rest: &[Token], query: Option<Classification>| {
        if !is_kw(rest.get(1), "stdout") {
            return Classification::write("copy to file");
        }
        match query {
            Some(mut c) => {
                if c.kind == K::Read {
                    c.reason = "copy to";
                }
                c
            }
            None => Classification::read("copy to"),
        }
    };
    if t.first() == Some(&Token::LParen) {
        let mut depth = 0usize;
        for (i, tok) in t.iter().enumerate() {
            match tok {
                Token::LParen => depth += 1,
                Token::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        let rest = &t[i + 1..];
                        if !is_kw(rest.first(), "to") {
                            return Classification::unparsable();
                        }
                        return to_target(rest, Some(classify_tokens(&t[1..i], o)));
                    }
                }
                _ => {}
            }
        }
        return Classification::unparsable();
    }
    let mut depth = 0usize;
    for (i, tok) in t.iter().enumerate() {
        match tok {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            _ if depth == 0 && is_kw(Some(tok), "from") => {
                return Classification::write("copy from")
            }
            _ if depth == 0 && is_kw(Some(tok), "to") => return to_target(&t[i..], None),
            _ => {}
        }
    }
    Classification::unparsable()
}
