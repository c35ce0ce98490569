//! Simple and extended protocol, pipelining, COPY both ways, errors and cancellation through
//! Meridian, with tokio-postgres against a real cluster.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{future, SinkExt, StreamExt};
use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::support::{sqlstate, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_extended_queries_return_what_postgres_returns() {
    let env = Env::start(1).await;
    let client = env.connect().await;

    let msgs = client
        .simple_query("SELECT 1 AS one, 'two' AS two; SELECT 3")
        .await
        .expect("simple query");
    let rows: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
            _ => None,
        })
        .collect();
    assert_eq!(rows, vec![Some("1".to_string()), Some("3".to_string())]);

    // Extended protocol with parameters and binary results.
    let row = client
        .query_one("SELECT $1::int8 * 2, $2::text || '!'", &[&21i64, &"hi"])
        .await
        .expect("extended query");
    assert_eq!(row.get::<_, i64>(0), 42);
    assert_eq!(row.get::<_, String>(1), "hi!");

    // Named prepared statement reused many times.
    let stmt = client
        .prepare("SELECT generate_series(1, $1::int)")
        .await
        .expect("prepare");
    for n in [1, 10, 1000] {
        let rows = client.query(&stmt, &[&n]).await.expect("execute");
        assert_eq!(rows.len(), n as usize);
    }

    // Data that round-trips through the proxy is bit-for-bit what the server sent.
    let big = "x".repeat(3 * 1024 * 1024);
    let row = client
        .query_one("SELECT $1::text, length($1::text)", &[&big])
        .await
        .expect("large value");
    assert_eq!(row.get::<_, String>(0), big);
    assert_eq!(row.get::<_, i32>(1), big.len() as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_queries_come_back_in_order() {
    let env = Env::start(1).await;
    let client = env.connect().await;
    let stmt = client.prepare("SELECT $1::int + 0").await.expect("prepare");
    // tokio-postgres pipelines concurrent requests on one connection.
    let futures = (0..200).map(|i| {
        let client = &client;
        let stmt = &stmt;
        async move {
            client
                .query_one(stmt, &[&i])
                .await
                .map(|r| r.get::<_, i32>(0))
        }
    });
    let results = future::join_all(futures).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.expect("pipelined query"), i as i32);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_copy_out_work() {
    let env = Env::start(1).await;
    let client = env.connect().await;
    client
        .batch_execute("CREATE TABLE copy_t (id int PRIMARY KEY, name text)")
        .await
        .expect("create");

    let sink = client
        .copy_in("COPY copy_t (id, name) FROM STDIN")
        .await
        .expect("copy in starts");
    futures_util::pin_mut!(sink);
    let mut data = String::new();
    for i in 0..5000 {
        data.push_str(&format!("{i}\tname {i}\n"));
    }
    for chunk in data.as_bytes().chunks(4096) {
        sink.send(Bytes::copy_from_slice(chunk))
            .await
            .expect("copy data");
    }
    let n = sink.finish().await.expect("copy done");
    assert_eq!(n, 5000);

    let stream = client
        .copy_out("COPY (SELECT id, name FROM copy_t ORDER BY id) TO STDOUT")
        .await
        .expect("copy out");
    futures_util::pin_mut!(stream);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("copy chunk"));
    }
    assert_eq!(String::from_utf8(out).expect("utf8"), data);

    // A failing COPY (bad data) gives the server's error and the session continues.
    let sink = client
        .copy_in("COPY copy_t (id, name) FROM STDIN")
        .await
        .expect("copy in starts");
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"not-a-number\tx\n"))
        .await
        .expect("send");
    let err = sink.finish().await.expect_err("bad copy data fails");
    assert_eq!(sqlstate(&err).as_deref(), Some("22P02"));
    let row = client
        .query_one("SELECT count(*) FROM copy_t", &[])
        .await
        .expect("session usable");
    assert_eq!(row.get::<_, i64>(0), 5000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_reach_the_client_unchanged_and_the_session_stays_usable() {
    let env = Env::start(1).await;
    let client = env.connect().await;

    let err = client.simple_query("SELECT 1/0").await.expect_err("error");
    let db = err.as_db_error().expect("server error");
    assert_eq!(db.code().code(), "22012");
    assert_eq!(db.message(), "division by zero");
    assert_eq!(db.severity(), "ERROR");

    let err = client
        .query("SELECT * FROM no_such_table", &[])
        .await
        .expect_err("error");
    let db = err.as_db_error().expect("server error");
    assert_eq!(db.code().code(), "42P01");
    assert!(db.position().is_some(), "error fields are forwarded intact");

    // Inside a transaction: the error aborts it exactly as on Postgres.
    client.batch_execute("BEGIN").await.expect("begin");
    let err = client.simple_query("SELECT 1/0").await.expect_err("error");
    assert_eq!(sqlstate(&err).as_deref(), Some("22012"));
    let err = client.simple_query("SELECT 1").await.expect_err("aborted");
    assert_eq!(sqlstate(&err).as_deref(), Some("25P02"));
    client.batch_execute("ROLLBACK").await.expect("rollback");

    let row = client.query_one("SELECT 7", &[]).await.expect("usable");
    assert_eq!(row.get::<_, i32>(0), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_reaches_the_running_backend() {
    let env = Env::start(1).await;
    let client = env.connect().await;
    let token = client.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(NoTls).await
    });
    let err = client
        .simple_query("SELECT pg_sleep(60)")
        .await
        .expect_err("cancelled");
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    canceller.await.expect("join").expect("cancel sent");
    // The session is still usable after the cancel.
    let row = client.query_one("SELECT 1", &[]).await.expect("usable");
    assert_eq!(row.get::<_, i32>(0), 1);

    // A cancel with a wrong key does nothing to anybody.
    let other = env.connect().await;
    let row = other
        .query_one("SELECT 2", &[])
        .await
        .expect("other session");
    assert_eq!(row.get::<_, i32>(0), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unnamed_statement_outlives_the_write_position_probe() {
    use bytes::{BufMut, BytesMut};
    use meridian_wire::tag::frontend;
    use tokio::io::AsyncWriteExt;

    fn put(out: &mut BytesMut, tag: u8, body: &[u8]) {
        out.put_u8(tag);
        out.put_u32(u32::try_from(body.len() + 4).expect("small"));
        out.put_slice(body);
    }
    let env = Env::start(1).await;
    env.primary_sql("CREATE TABLE unnamed_w (id int); GRANT ALL ON unnamed_w TO PUBLIC");
    // A write through the unnamed statement; in `session` consistency Meridian follows it with
    // a probe of the write position, itself a simple Query, which Postgres answers by dropping
    // the unnamed statement. Binding it again without a Parse must still work, as on Postgres.
    let mut parse = BytesMut::new();
    put(
        &mut parse,
        frontend::PARSE,
        b"\0INSERT INTO unnamed_w VALUES (1)\0\0\0",
    );
    let mut bind = BytesMut::new();
    put(&mut bind, frontend::BIND, b"\0\0\0\0\0\0\0\0");
    put(&mut bind, frontend::EXECUTE, &[0, 0, 0, 0, 0]);
    put(&mut bind, frontend::SYNC, &[]);
    let (mut s, mut buf) = crate::support::raw_login(env.addr()).await;
    let mut first = parse.clone();
    first.extend_from_slice(&bind);
    for request in [&first, &bind, &bind] {
        s.write_all(request).await.expect("send");
        let reply = crate::auto_prepare::read_replies(&mut s, &mut buf, 1).await;
        let failed = reply[0]
            .iter()
            .any(|r| matches!(r, crate::auto_prepare::Reply::Error(..)));
        assert!(!failed, "{reply:?}");
    }
    assert_eq!(env.primary_sql("SELECT count(*) FROM unnamed_w"), "3");
}
