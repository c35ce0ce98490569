use super::*;

/// The parameterized text and each parameter's (value, type), or `None`.
fn run(sql: &str) -> Option<(String, Vec<(String, u32)>)> {
    let mut p = Parameterized::default();
    if !parameterize(sql, &mut p) {
        return None;
    }
    let values = (0..p.params.len())
        .map(|i| (p.value(sql, i).into_owned(), p.params[i].oid))
        .collect();
    Some((p.text.clone(), values))
}

fn text(sql: &str) -> String {
    run(sql).map(|(t, _)| t).unwrap_or_else(|| "<none>".into())
}

#[test]
fn pgbench_select_gets_one_int4_parameter() {
    let (t, v) = run("SELECT abalance FROM pgbench_accounts WHERE aid = 4711;").expect("qualifies");
    assert_eq!(t, "SELECT abalance FROM pgbench_accounts WHERE aid = $1;");
    assert_eq!(v, vec![("4711".to_string(), INT4_OID)]);
}

#[test]
fn literal_types_follow_postgres() {
    let (_, v) =
        run("select 1, 3000000000, 99999999999999999999, 1.5, 2e3, 'it''s'").expect("qualifies");
    assert_eq!(
        v,
        vec![
            ("1".into(), INT4_OID),
            ("3000000000".into(), INT8_OID),
            ("99999999999999999999".into(), NUMERIC_OID),
            ("1.5".into(), NUMERIC_OID),
            ("2e3".into(), NUMERIC_OID),
            ("it's".into(), UNKNOWN_OID),
        ]
    );
    // Postgres folds the minus into these two: they stay literals.
    assert_eq!(
        text("select -2147483648, -1, -002147483648, -9223372036854775808"),
        "select -2147483648, -$1, -002147483648, -9223372036854775808"
    );
}

#[test]
fn dml_values_become_parameters() {
    assert_eq!(
        text("INSERT INTO t (a, b) VALUES (1, 'x') ON CONFLICT (a) DO UPDATE SET b = 'y'"),
        "INSERT INTO t (a, b) VALUES ($1, $2) ON CONFLICT (a) DO UPDATE SET b = $3"
    );
    assert_eq!(
        text("update t set n = n + 1 where id in (1,2) returning id"),
        "update t set n = n + $1 where id in ($2,$3) returning id"
    );
    assert_eq!(
        text("delete from t where a between 1 and 5 and b like 'x%' escape '!'"),
        "delete from t where a between $1 and $2 and b like $3 escape $4"
    );
    assert_eq!(
        text("select x from t where ts at time zone 'UTC' > now() limit 10 offset 5"),
        "select x from t where ts at time zone $1 > now() limit $2 offset $3"
    );
    assert_eq!(
        text("select case when a = 1 then 'one' else 'other' end from t"),
        "select case when a = $1 then $2 else $3 end from t"
    );
    assert_eq!(text("SELECT count(*) FROM t"), "SELECT count(*) FROM t");
    assert_eq!(text("select a * 2 from t"), "select a * $1 from t");
}

#[test]
fn positions_and_syntax_stay() {
    assert_eq!(
        text("select a, b from t where c = 1 order by 2, 1 limit 3"),
        "select a, b from t where c = $1 order by 2, 1 limit $2"
    );
    assert_eq!(
        text("select a, count(*) from t group by 1 having count(*) > 2"),
        "select a, count(*) from t group by 1 having count(*) > $1"
    );
    assert_eq!(
        text("select distinct on (1) a from t where b = 2"),
        "select distinct on (1) a from t where b = $1"
    );
    assert_eq!(
        text("select sum(a) over (partition by 1 order by 2) from t where b = 3"),
        "select sum(a) over (partition by 1 order by 2) from t where b = $1"
    );
    assert_eq!(
        text("select 'x'::varchar(10), 1.5::numeric(10, 2), cast(a as char(3)) from t where b = 4"),
        "select $1::varchar(10), $2::numeric(10, 2), cast(a as char(3)) from t where b = $3"
    );
    assert_eq!(
        text("select date '2020-01-01', interval '1 day', E'a\\nb', U&'x', B'101', N'x' from t"),
        "select date '2020-01-01', interval '1 day', E'a\\nb', U&'x', B'101', N'x' from t"
    );
    // Backslashes depend on standard_conforming_strings; continuations are one literal.
    assert_eq!(
        text("select 'a\\b', 'a'\n'b' from t"),
        "select 'a\\b', 'a'\n'b' from t"
    );
    // Comments and quoted identifiers are kept as they are.
    assert_eq!(
        text("/* meridian:primary */ select \"1\" -- 2\n from t where a = 3"),
        "/* meridian:primary */ select \"1\" -- 2\n from t where a = $1"
    );
}

#[test]
fn statements_that_do_not_qualify() {
    for sql in [
        "SET x = 1",
        "CREATE TABLE t (a int DEFAULT 1)",
        "EXPLAIN SELECT 1",
        "select * from t where a = 1",
        "select t.* from t",
        "select a, * from t",
        "insert into t values (1) returning *",
        "select 1 into t2",
        "select $1",
        "select $$x$$",
        "select 1; select 2",
        "select 0x1F",
        "select 1_000",
        "select .5",
        "select 'unterminated",
        "select 'still unterminated''",
        "",
        "   ",
    ] {
        assert_eq!(run(sql), None, "{sql}");
    }
    assert!(run("select 1;  -- done\n").is_some());
    assert!(run("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x").is_none());
    assert_eq!(
        text("with x as (select 1 as a) insert into t select a from x"),
        "with x as (select $1 as a) insert into t select a from x"
    );
}

#[test]
fn too_many_literals_do_not_qualify() {
    let list: Vec<String> = (0..=MAX_AUTO_PARAMS).map(|i| i.to_string()).collect();
    assert!(run(&format!("select a from t where a in ({})", list.join(","))).is_none());
    let list: Vec<String> = (0..MAX_AUTO_PARAMS).map(|i| i.to_string()).collect();
    assert!(run(&format!("select a from t where a in ({})", list.join(","))).is_some());
}

#[test]
fn odd_input_does_not_panic() {
    for sql in [
        "select 'é' || 'ü' from t where x = 'ø'",
        "select ((((1",
        "select )))) 1",
        "select 1e",
        "select 1e+",
        "select 1.",
        "select /* unterminated",
        "select -- comment only",
        "select ''''",
        "select a::",
        "values (1), ('a')",
    ] {
        let _ = run(sql);
    }
    assert_eq!(text("select ''''"), "select $1");
    // A literal glued to what follows stays (`$1` then `1` would be `$11`).
    assert_eq!(text("select 'a'1, 'b'x"), "select 'a'1, 'b'x");
    assert_eq!(run("select ''''").expect("qualifies").1[0].0, "'");
    assert_eq!(text("values (1), ('a')"), "values ($1), ($2)");
}
