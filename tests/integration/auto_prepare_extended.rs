//! Auto-preparation of the extended protocol's one-shot form (Parse of the unnamed statement,
//! Bind, Describe, Execute, Sync) on a real cluster: the batch runs as a prepared statement
//! without its Parse, and the client receives exactly what Postgres answers to the batch as
//! sent, errors included.

use std::sync::atomic::Ordering;

use bytes::{BufMut, BytesMut};
use meridian_config::{Config, PoolMode};
use meridian_wire::tag::frontend;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::auto_prepare::{auto, read_replies, setup, Reply};
use crate::support::{raw_login, Env};

/// One frontend frame.
fn put(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_u32(u32::try_from(body.len() + 4).expect("small"));
    out.put_slice(body);
}

/// A parameter: text or binary, or NULL.
#[derive(Clone, Copy)]
enum P<'a> {
    Text(&'a str),
    Bin(&'a [u8]),
    Null,
}

/// The one-shot batch for `sql` with parameter types `types` (0: let the server infer),
/// parameters `params` and result format `result_format` for every column.
fn one_shot(sql: &str, types: &[u32], params: &[P], result_format: i16) -> BytesMut {
    let mut out = BytesMut::new();
    let mut body = BytesMut::new();
    body.put_u8(0);
    body.put_slice(sql.as_bytes());
    body.put_u8(0);
    body.put_i16(i16::try_from(types.len()).expect("few"));
    for t in types {
        body.put_u32(*t);
    }
    put(&mut out, frontend::PARSE, &body);
    let mut body = BytesMut::new();
    body.put_slice(b"\0\0");
    body.put_i16(i16::try_from(params.len()).expect("few"));
    for p in params {
        body.put_i16(i16::from(matches!(p, P::Bin(_))));
    }
    body.put_i16(i16::try_from(params.len()).expect("few"));
    for p in params {
        match p {
            P::Text(v) => {
                body.put_i32(i32::try_from(v.len()).expect("short"));
                body.put_slice(v.as_bytes());
            }
            P::Bin(v) => {
                body.put_i32(i32::try_from(v.len()).expect("short"));
                body.put_slice(v);
            }
            P::Null => body.put_i32(-1),
        }
    }
    body.put_i16(1);
    body.put_i16(result_format);
    put(&mut out, frontend::BIND, &body);
    put(&mut out, frontend::DESCRIBE, b"P\0");
    put(&mut out, frontend::EXECUTE, &[0, 0, 0, 0, 0]);
    put(&mut out, frontend::SYNC, &[]);
    out
}

/// The length of the first frame of `bytes`.
fn frame_len(bytes: &[u8]) -> usize {
    1 + u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize
}

async fn run(s: &mut TcpStream, buf: &mut BytesMut, batch: &[u8]) -> Vec<Reply> {
    s.write_all(batch).await.expect("send");
    read_replies(s, buf, 1).await.pop().unwrap_or_default()
}

/// Batches whose replies are compared; each runs three times in a row (the second run
/// prepares it, the third runs it without its Parse).
fn batches() -> Vec<(&'static str, BytesMut)> {
    vec![
        ("select by id", one_shot("SELECT id, name FROM ap WHERE id = $1", &[0], &[P::Text("1")], 0)),
        ("binary in and out", one_shot("SELECT id, big FROM ap WHERE id = $1", &[23], &[P::Bin(&2i32.to_be_bytes())], 1)),
        ("null parameter", one_shot("SELECT count(*) FROM ap WHERE name = $1", &[25], &[P::Null], 0)),
        ("no rows", one_shot("SELECT name FROM ap WHERE id = $1", &[0], &[P::Text("99")], 0)),
        ("parameter that does not fit", one_shot("SELECT name FROM ap WHERE id = $1", &[0], &[P::Text("abc")], 0)),
        ("error while executing", one_shot("SELECT 1 / $1 FROM ap WHERE id = 1", &[23], &[P::Text("0")], 0)),
        ("error at parse", one_shot("SELECT nosuch FROM ap WHERE id = $1", &[0], &[P::Text("1")], 0)),
        ("write", one_shot("UPDATE ap SET big = big + $1 WHERE id = 2", &[20], &[P::Text("1")], 0)),
        ("returning", one_shot("INSERT INTO ap (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name = $2 RETURNING id, name", &[0, 0], &[P::Text("100"), P::Text("n")], 0)),
        ("no result", one_shot("UPDATE ap SET name = name WHERE id = $1", &[0], &[P::Text("999")], 0)),
    ]
}

async fn compare(env: &Env) {
    let (mut m, mut mbuf) = raw_login(env.addr()).await;
    let (mut d, mut dbuf) = raw_login(env.cluster.primary().addr()).await;
    for (what, batch) in batches() {
        for round in 0..3 {
            let got = run(&mut m, &mut mbuf, &batch).await;
            let want = run(&mut d, &mut dbuf, &batch).await;
            assert_eq!(got, want, "{what} (run {round})");
        }
    }
    // The unnamed statement is the last one parsed, even when that Parse was not sent: a Bind
    // of it without a Parse runs it, as on Postgres.
    for round in 0..2 {
        let (_, last) = batches().pop().expect("batches");
        let rebind = &last[frame_len(&last)..];
        let got = run(&mut m, &mut mbuf, rebind).await;
        assert_eq!(
            got,
            run(&mut d, &mut dbuf, rebind).await,
            "Bind only (run {round})"
        );
        assert!(
            !got.iter().any(|r| matches!(r, Reply::Error(..))),
            "{got:?}"
        );
    }
    // Pipelined: only the first batch goes out without its Parse; an error in it cannot be
    // answered by running it again (the others are on their way), so the client gets the
    // ParseComplete and the error, as from Postgres.
    let all = batches();
    let mut pipeline = BytesMut::new();
    for name in ["parameter that does not fit", "select by id", "write"] {
        if let Some((_, batch)) = all.iter().find(|(what, _)| *what == name) {
            pipeline.extend_from_slice(batch);
        }
    }
    for round in 0..2 {
        m.write_all(&pipeline).await.expect("send");
        d.write_all(&pipeline).await.expect("send");
        let got = read_replies(&mut m, &mut mbuf, 3).await;
        let want = read_replies(&mut d, &mut dbuf, 3).await;
        assert_eq!(got, want, "pipelined (run {round})");
    }
    // The result type changes under a prepared statement (Postgres would refuse it: 0A000),
    // and then its table goes away: the client sees what the batch as sent gets.
    let select = one_shot("SELECT * FROM ap WHERE id = $1", &[0], &[P::Text("1")], 0);
    for _ in 0..3 {
        assert_eq!(
            run(&mut m, &mut mbuf, &select).await,
            run(&mut d, &mut dbuf, &select).await
        );
    }
    env.primary_sql("ALTER TABLE ap ADD COLUMN extra int DEFAULT 7");
    for round in 0..3 {
        let got = run(&mut m, &mut mbuf, &select).await;
        assert_eq!(
            got,
            run(&mut d, &mut dbuf, &select).await,
            "after ALTER (run {round})"
        );
        assert!(
            !got.iter().any(|r| matches!(r, Reply::Error(..))),
            "{got:?}"
        );
    }
    env.primary_sql("DROP TABLE ap");
    let got = run(&mut m, &mut mbuf, &select).await;
    assert_eq!(got, run(&mut d, &mut dbuf, &select).await, "after DROP");
    assert!(
        got.iter()
            .any(|r| matches!(r, Reply::Error(code, _) if code == "42P01")),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_batches_get_the_replies_of_the_batch_as_sent() {
    let env = Env::start_with(0, auto).await;
    setup(&env);
    compare(&env).await;
    let s = &env.proxy.state.stats;
    let executed = s.auto_executed.load(Ordering::Relaxed);
    assert!(executed >= 8, "executed {executed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_batches_match_under_transaction_pooling() {
    let env = Env::start_with(0, |c: &mut Config| {
        auto(c);
        c.pool.pool_mode = PoolMode::Transaction;
        c.pool.pool_size = 2;
    })
    .await;
    setup(&env);
    compare(&env).await;
    assert!(env.proxy.state.stats.auto_executed.load(Ordering::Relaxed) >= 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_extended_runs_prepared_on_replicas() {
    let env = Env::start_with(1, auto).await;
    env.pgbench(&["-i", "-s", "1", "-q"]);
    let out = env.pgbench(&[
        "-S", "-n", "-M", "extended", "-c", "4", "-j", "2", "-t", "500",
    ]);
    assert!(out.contains("number of failed transactions: 0"), "{out}");
    let s = &env.proxy.state.stats;
    assert!(s.auto_executed.load(Ordering::Relaxed) >= 1_500, "{out}");
    assert!(s.reads_replica.load(Ordering::Relaxed) >= 1_500);
    // tokio-postgres and psql keep working on the same proxy.
    let c = env.connect().await;
    for i in 0..5i32 {
        let r: i32 = c
            .query_one("SELECT $1::int + 1", &[&i])
            .await
            .expect("query")
            .get(0);
        assert_eq!(r, i + 1);
    }
}
