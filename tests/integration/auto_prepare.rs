//! Auto-preparation (`proxy.auto_prepare`) on a real cluster: simple-protocol statements run as
//! prepared statements, and what the client receives is what Postgres itself answers to the
//! simple Query, frame for frame.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use meridian_config::{Config, PoolMode};
use meridian_wire::tag::backend;
use meridian_wire::{frame, messages, parse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{raw_login, Env};

pub(crate) fn auto(c: &mut Config) {
    c.proxy.auto_prepare = true;
    c.proxy.auto_prepare_min_uses = 2;
}

/// One reply frame, with what may legitimately differ removed: an error's position (a
/// parameter has none) and ParameterStatus (Meridian adds `meridian.lsn`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    Frame(u8, Vec<u8>),
    Error(String, String),
}

/// Sends `sql` as a simple Query and reads its reply up to ReadyForQuery.
async fn simple(s: &mut TcpStream, buf: &mut BytesMut, sql: &str) -> Vec<Reply> {
    pipelined(s, buf, &[sql]).await.pop().unwrap_or_default()
}

/// Statements whose replies are compared; each runs three times in a row (the second run
/// prepares it, the third uses the prepared statement).
const STATEMENTS: &[&str] = &[
    "SELECT id, name FROM ap WHERE id = 1",
    "SELECT id, name FROM ap WHERE id = 1;",
    "SELECT 1, 'a', 1.5, 3000000000, -2147483648, 99999999999999999999, 2e3, -7",
    "SELECT id FROM ap ORDER BY 1 DESC LIMIT 2",
    "SELECT name, count(*) FROM ap GROUP BY 1 HAVING count(*) > 0 ORDER BY 1",
    "SELECT DISTINCT ON (1) name, id FROM ap ORDER BY 1, 2",
    "SELECT 'xyzw'::varchar(3), 12.345::numeric(5,1), cast(12.3 as numeric(4,1))",
    "SELECT date '2020-01-02' + 1, interval '1 day' * 2, timestamptz '2020-01-01 00:00+00' AT TIME ZONE 'UTC'",
    "SELECT 'it''s', E'tab\\there', 'a' || 'b', 'a'\n'b'",
    "SELECT name FROM ap WHERE name LIKE 'a%' AND id BETWEEN 1 AND 3 ORDER BY id",
    "SELECT * FROM ap WHERE id = 1",
    "SELECT amount, amount > 1.5 FROM ap WHERE amount IS NOT NULL ORDER BY id",
    "SELECT id FROM ap WHERE ts > '2020-01-01' AND tags @> '{x}' ORDER BY id",
    "SELECT count(*) FROM ap WHERE id = 'abc'",
    "SELECT nosuch FROM ap WHERE id = 1",
    "SELECT 2147483647 + 1",
    "SELECT 1 / 0 FROM ap WHERE id = 1",
    "UPDATE ap SET big = big + 1 WHERE id = 2",
    "UPDATE ap SET name = 'x' WHERE id = 999",
    "INSERT INTO ap (id, name) VALUES (100, 'n') ON CONFLICT (id) DO UPDATE SET name = 'n' RETURNING id, name",
    "DELETE FROM ap WHERE id = 999 RETURNING id",
    "VALUES (1, 'a'), (2, 'b')",
    "SELECT CASE WHEN id = 1 THEN 'one' ELSE 'other' END, id IN (1, 2) FROM ap ORDER BY id",
    "SELECT x FROM generate_series(1, 3) x",
    "SELECT json_build_object('a', 1)::text",
    "SELECT 'a' = 'a', pg_typeof(1), pg_typeof('a'), pg_typeof(1.5), pg_typeof(3000000000)",
    "SELECT $1",
    "SELECT sum(id) OVER (PARTITION BY name ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM ap ORDER BY id",
    "SELECT substring(name FROM 1 FOR 1), name IS DISTINCT FROM 'b' FROM ap ORDER BY id",
];

pub(crate) fn setup(env: &Env) {
    env.primary_sql(
        "CREATE TABLE ap (id int PRIMARY KEY, name text, amount numeric(10,2), big bigint, \
         ts timestamptz, tags text[]);
         INSERT INTO ap VALUES (1, 'a', 1.25, 5000000000, '2021-01-01', '{x,y}'),
                               (2, 'b', 2.50, 1, '2019-01-01', '{z}'),
                               (3, 'a', NULL, NULL, '2022-06-01', '{x}');
         GRANT ALL ON ap TO PUBLIC;",
    );
}

async fn compare(meridian: SocketAddr, direct: SocketAddr) {
    let (mut m, mut mbuf) = raw_login(meridian).await;
    let (mut d, mut dbuf) = raw_login(direct).await;
    for sql in STATEMENTS {
        for round in 0..3 {
            let got = simple(&mut m, &mut mbuf, sql).await;
            let want = simple(&mut d, &mut dbuf, sql).await;
            assert_eq!(got, want, "{sql} (run {round})");
        }
    }
    // In a transaction: statements prepared earlier are used, errors abort it as usual.
    for sql in [
        "BEGIN",
        "SELECT id, name FROM ap WHERE id = 2",
        "SELECT id, name FROM ap WHERE id = 3",
        "SELECT 1 / 0 FROM ap WHERE id = 1",
        "SELECT id, name FROM ap WHERE id = 1",
        "ROLLBACK",
        "SELECT id, name FROM ap WHERE id = 1",
    ] {
        let got = simple(&mut m, &mut mbuf, sql).await;
        let want = simple(&mut d, &mut dbuf, sql).await;
        assert_eq!(got, want, "{sql} (in a transaction)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_are_those_of_the_simple_query() {
    let env = Env::start_with(0, auto).await;
    setup(&env);
    compare(env.addr(), env.cluster.primary().addr()).await;
    let s = &env.proxy.state.stats;
    let prepared = s.auto_prepared.load(Ordering::Relaxed);
    let executed = s.auto_executed.load(Ordering::Relaxed);
    let failed = s.auto_prepare_failed.load(Ordering::Relaxed);
    assert!(prepared >= 15, "prepared {prepared}");
    assert!(executed >= 30, "executed {executed}");
    // json_build_object('a', ...) and pg_typeof('a') take "any": an untyped parameter there
    // cannot be prepared, and the Query ran as it came.
    assert!(failed >= 2, "failed {failed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_match_under_transaction_pooling() {
    let env = Env::start_with(0, |c| {
        auto(c);
        c.pool.pool_mode = PoolMode::Transaction;
        c.pool.pool_size = 2;
    })
    .await;
    setup(&env);
    compare(env.addr(), env.cluster.primary().addr()).await;
    assert!(env.proxy.state.stats.auto_executed.load(Ordering::Relaxed) >= 30);
}

/// `n` of a one-value reply.
async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    let msgs = client.simple_query(sql).await.expect(sql);
    msgs.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
        .expect("a value")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_are_prepared_again_after_discard_and_schema_changes() {
    let env = Env::start_with(0, auto).await;
    setup(&env);
    let client = env.connect().await;
    // (Dollar-quoted: this query itself is never auto-prepared.)
    let mine = "SELECT count(*) FROM pg_prepared_statements WHERE name ~ $$^meridian_auto_$$";
    for _ in 0..3 {
        client
            .simple_query("SELECT name FROM ap WHERE id = 1")
            .await
            .expect("select");
    }
    assert!(count(&client, mine).await >= 1);
    for reset in ["DEALLOCATE ALL", "DISCARD ALL"] {
        client.simple_query(reset).await.expect(reset);
        assert_eq!(count(&client, mine).await, 0, "after {reset}");
        for _ in 0..3 {
            let rows = client
                .simple_query("SELECT name FROM ap WHERE id = 1")
                .await
                .expect("select after reset");
            assert!(rows.iter().any(
                |m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("a"))
            ));
        }
        assert!(
            count(&client, mine).await >= 1,
            "prepared again after {reset}"
        );
    }
    // A DEALLOCATE ALL Meridian does not see (sent with the extended protocol): the statement is
    // gone from the server (26000 at Bind), and the Query runs again as it came.
    client
        .execute("DEALLOCATE ALL", &[])
        .await
        .expect("deallocate");
    let select = "SELECT name FROM ap WHERE id = 1";
    client.simple_query(select).await.expect("statement lost");
    for _ in 0..3 {
        client.simple_query(select).await.expect("prepared again");
    }
    assert!(count(&client, mine).await >= 1);
    // The result type changes: Postgres refuses the prepared statement (0A000 "cached plan
    // must not change result type"); outside a transaction the Query runs again as it came.
    env.primary_sql("ALTER TABLE ap ALTER COLUMN name TYPE varchar(20)");
    client.simple_query(select).await.expect("after ALTER");
    for _ in 0..3 {
        client.simple_query(select).await.expect("prepared again");
    }
    // Inside a transaction nothing can be run again: the error reaches the client once, as it
    // would with any prepared statement. (Another statement shape: the one above was found stale
    // twice on this connection and is no longer prepared here.)
    let other = "SELECT id, name FROM ap WHERE id = 2";
    for _ in 0..3 {
        client.simple_query(other).await.expect("other statement");
    }
    env.primary_sql("ALTER TABLE ap ALTER COLUMN name TYPE text");
    client.simple_query("BEGIN").await.expect("begin");
    let e = client
        .simple_query(other)
        .await
        .err()
        .expect("stale statement in a transaction");
    assert_eq!(
        crate::support::sqlstate(&e).as_deref(),
        Some("0A000"),
        "{e}"
    );
    client.simple_query("ROLLBACK").await.expect("rollback");
    // The stale statement is still on the server under its name: preparing it again closes it
    // first, so the Parse is not refused.
    let stats = &env.proxy.state.stats;
    let failed = stats.auto_prepare_failed.load(Ordering::Relaxed);
    let executed = stats.auto_executed.load(Ordering::Relaxed);
    for _ in 0..3 {
        client
            .simple_query(other)
            .await
            .expect("after the transaction");
        client.simple_query(select).await.expect("unprepared");
    }
    assert_eq!(stats.auto_prepare_failed.load(Ordering::Relaxed), failed);
    assert!(
        stats.auto_executed.load(Ordering::Relaxed) > executed,
        "prepared again"
    );
    let s = &env.proxy.state.stats;
    assert!(s.auto_executed.load(Ordering::Relaxed) >= 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_select_only_runs_prepared_on_replicas() {
    let env = Env::start_with(1, auto).await;
    env.pgbench(&["-i", "-s", "1", "-q"]);
    let out = env.pgbench(&["-S", "-n", "-c", "4", "-j", "2", "-t", "500"]);
    assert!(out.contains("number of failed transactions: 0"), "{out}");
    let s = &env.proxy.state.stats;
    assert!(s.auto_executed.load(Ordering::Relaxed) >= 1_500, "{out}");
    assert!(s.reads_replica.load(Ordering::Relaxed) >= 1_500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_used_in_transactions_are_prepared_between_them() {
    let env = Env::start_with(0, auto).await;
    setup(&env);
    let client = env.connect().await;
    let mine = "SELECT count(*) FROM pg_prepared_statements WHERE name ~ $$^meridian_auto_$$";
    let executed = || env.proxy.state.stats.auto_executed.load(Ordering::Relaxed);
    for i in 0..2 {
        client.simple_query("BEGIN").await.expect("begin");
        client
            .simple_query(&format!("UPDATE ap SET big = big + {i} WHERE id = 2"))
            .await
            .expect("update");
        client
            .simple_query("SELECT name FROM ap WHERE id = 2")
            .await
            .expect("select");
        client.simple_query("COMMIT").await.expect("commit");
    }
    // Nothing is prepared inside a transaction (a refused Parse would abort it) ...
    assert_eq!(executed(), 0);
    // ... but at the next idle moment, ahead of the next statement.
    client.simple_query("BEGIN").await.expect("begin");
    assert_eq!(count(&client, mine).await, 2);
    client
        .simple_query("UPDATE ap SET big = big + 5 WHERE id = 2")
        .await
        .expect("update");
    let rows = client
        .simple_query("SELECT name FROM ap WHERE id = 2")
        .await
        .expect("select");
    assert!(rows
        .iter()
        .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("b"))));
    client.simple_query("COMMIT").await.expect("commit");
    assert_eq!(
        executed(),
        2,
        "both statements ran prepared in the transaction"
    );
    let big = env.primary_sql("SELECT big FROM ap WHERE id = 2");
    assert_eq!(big.trim(), "7", "1 + 0 + 1 + 5");
}

/// Sends all `sqls` as simple Queries in one write and reads the replies to all of them.
async fn pipelined(s: &mut TcpStream, buf: &mut BytesMut, sqls: &[&str]) -> Vec<Vec<Reply>> {
    let mut out = BytesMut::new();
    for sql in sqls {
        messages::query(&mut out, sql);
    }
    s.write_all(&out).await.expect("send");
    read_replies(s, buf, sqls.len()).await
}

/// Reads the replies to `n` requests (each up to its ReadyForQuery).
pub(crate) async fn read_replies(
    s: &mut TcpStream,
    buf: &mut BytesMut,
    n: usize,
) -> Vec<Vec<Reply>> {
    let mut replies = Vec::new();
    let mut current = Vec::new();
    while replies.len() < n {
        while let Some((tag, f)) = frame::split_frame(buf, 1 << 30).expect("frame") {
            match tag {
                backend::PARAMETER_STATUS => {}
                backend::ERROR_RESPONSE | backend::NOTICE_RESPONSE => {
                    let e = parse::ErrorFields::parse(frame::body(&f)).expect("fields");
                    current.push(Reply::Error(
                        e.code().unwrap_or_default().to_string(),
                        e.message().unwrap_or_default().to_string(),
                    ));
                }
                _ => current.push(Reply::Frame(tag, frame::body(&f).to_vec())),
            }
            if tag == backend::READY_FOR_QUERY {
                replies.push(std::mem::take(&mut current));
            }
        }
        if replies.len() == n {
            break;
        }
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_buf(buf))
            .await
            .expect("timely answer")
            .expect("read");
        assert!(got > 0, "closed during a pipeline");
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_queries_keep_their_order_while_statements_are_prepared() {
    let env = Env::start_with(0, |c| {
        auto(c);
        c.proxy.auto_prepare_min_uses = 1;
    })
    .await;
    setup(&env);
    let (mut m, mut mbuf) = raw_login(env.addr()).await;
    let (mut d, mut dbuf) = raw_login(env.cluster.primary().addr()).await;
    // Every first sight of a shape prepares it (min_uses = 1) while later Queries of the same
    // write wait behind; errors, a transaction and a refused Parse sit in between.
    let batch = [
        "SELECT id, name FROM ap WHERE id = 1",
        "SELECT id, name FROM ap WHERE id = 2",
        "SELECT amount FROM ap WHERE id = 1",
        "SELECT 1 / 0 FROM ap WHERE id = 1",
        "SELECT id, name FROM ap WHERE id = 3",
        "BEGIN",
        "SELECT json_build_object('a', 1)::text",
        "UPDATE ap SET big = big + 1 WHERE id = 2 RETURNING big - big",
        "SELECT count(*) FROM ap WHERE name = 'zz'",
        "COMMIT",
        "SELECT count(*) FROM ap WHERE name = 'a'",
    ];
    for round in 0..3 {
        let got = pipelined(&mut m, &mut mbuf, &batch).await;
        let want = pipelined(&mut d, &mut dbuf, &batch).await;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "{} (round {round})", batch[i]);
        }
    }
    let s = &env.proxy.state.stats;
    assert!(s.auto_executed.load(Ordering::Relaxed) >= 12);
    assert!(s.auto_prepare_failed.load(Ordering::Relaxed) >= 1);
}
