//! Servers that die and clients that vanish: the client gets a clear error instead of a hang,
//! and no transaction is left open upstream.

use std::time::Duration;

use meridian_testkit::creds;

use bytes::BytesMut;
use meridian_wire::messages;
use tokio::io::AsyncWriteExt;

use crate::support::{raw_login, read_until_ready, sqlstate, Env};

/// Polls `check` on the primary until it returns `want` (liveness guard, not a performance bound).
fn wait_until(env: &Env, sql: &str, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = env.primary_sql(sql);
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{sql} stayed at {got}, wanted {want}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_backend_reports_admin_shutdown() {
    let env = Env::start(0).await;
    let client = env.connect().await;
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let killer = {
        let sql = format!("SELECT pg_sleep(0.5), pg_terminate_backend({pid})");
        let primary_port = env.cluster.primary().port;
        let bin = env.cluster.bin().path("psql");
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(bin)
                .args(["-h", "127.0.0.1", "-p", &primary_port.to_string()])
                .args([
                    "-U",
                    creds::SUPERUSER,
                    "-d",
                    "postgres",
                    "-X",
                    "-At",
                    "-c",
                    &sql,
                ])
                .env("PGPASSWORD", creds::SUPERUSER_PASSWORD)
                .output()
        })
    };
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        client.simple_query("SELECT pg_sleep(60)"),
    )
    .await
    .expect("no hang")
    .expect_err("terminated");
    assert_eq!(sqlstate(&err).as_deref(), Some("57P01"), "{err}");
    killer.await.expect("join").expect("psql");
    // Other clients carry on.
    let other = env.connect().await;
    other
        .query_one("SELECT 1", &[])
        .await
        .expect("new session works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_mid_query_gives_an_error_not_a_hang() {
    let env = Env::start(0).await;
    let client = env.connect().await;
    client.query_one("SELECT 1", &[]).await.expect("warm");
    let running = tokio::spawn(async move {
        let r = client.simple_query("SELECT pg_sleep(60)").await;
        (client, r)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let primary = env.cluster.primary();
    tokio::task::block_in_place(|| primary.kill9()).expect("kill -9");
    let (_client, result) = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("no hang")
        .expect("join");
    let err = result.expect_err("query fails");
    // Either the server's own goodbye or Meridian's report of the lost connection, or the
    // connection closing: what matters is an answer, promptly.
    if let Some(code) = sqlstate(&err) {
        assert!(
            ["08006", "57P01", "57P02"].contains(&code.as_str()),
            "{err}"
        );
    } else {
        assert!(
            err.is_closed() || err.to_string().contains("closed"),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_mid_transaction_leaves_nothing_open() {
    let env = Env::start(0).await;
    env.primary_sql("CREATE TABLE vanish (id int PRIMARY KEY, v int); INSERT INTO vanish VALUES (1, 0); GRANT ALL ON vanish TO app, app_md5");
    {
        let (mut s, mut buf) = raw_login(env.addr()).await;
        let mut q = BytesMut::new();
        messages::query(&mut q, "BEGIN; UPDATE vanish SET v = 1 WHERE id = 1");
        s.write_all(&q).await.expect("write");
        read_until_ready(&mut s, &mut buf).await;
        wait_until(
            &env,
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app_md5' AND state LIKE 'idle in transaction%'",
            "1",
        );
        // Dropping the socket closes it without COMMIT or Terminate.
    }
    wait_until(
        &env,
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app_md5' AND state LIKE 'idle in transaction%'",
        "0",
    );
    // The row lock is gone and the update was rolled back.
    assert_eq!(env.primary_sql("SELECT v FROM vanish WHERE id = 1"), "0");
    let other = env.connect().await;
    other
        .batch_execute("SET lock_timeout = '2s'; UPDATE vanish SET v = 2 WHERE id = 1")
        .await
        .expect("lock free");

    // A client that vanishes during a long statement gets it cancelled.
    {
        let (mut s, _buf) = raw_login(env.addr()).await;
        let mut q = BytesMut::new();
        messages::query(&mut q, "SELECT pg_sleep(300)");
        s.write_all(&q).await.expect("write");
        wait_until(
            &env,
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app_md5' AND query LIKE 'SELECT pg_sleep(300)%' AND state = 'active'",
            "1",
        );
    }
    wait_until(
        &env,
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app_md5' AND query LIKE 'SELECT pg_sleep(300)%' AND state = 'active'",
        "0",
    );
}
