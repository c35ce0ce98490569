//! Graceful shutdown: new clients are refused, idle sessions end with 57P01, open transactions
//! may finish first, and whatever is left after the timeout is closed.

use std::time::Duration;

use crate::support::{sqlstate, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_lets_open_transactions_finish() {
    let env = Env::start(0).await;
    let idle = env.connect().await;
    let busy = env.connect().await;
    busy.batch_execute("CREATE TABLE drained (id int); BEGIN; INSERT INTO drained VALUES (1)")
        .await
        .expect("open transaction");

    let env = std::sync::Arc::new(env);
    let drainer = {
        let env = env.clone();
        tokio::spawn(async move { env.proxy.drain(Duration::from_secs(20)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The idle session was told and closed.
    let err = idle.simple_query("SELECT 1").await.expect_err("closed");
    if let Some(code) = sqlstate(&err) {
        assert_eq!(code, "57P01", "{err}");
    }
    // New connections are not accepted any more.
    assert!(env
        .try_connect(
            meridian_testkit::creds::APP_USER,
            meridian_testkit::creds::APP_PASSWORD
        )
        .await
        .is_err());
    // The open transaction carries on and commits.
    busy.batch_execute("INSERT INTO drained VALUES (2)")
        .await
        .expect("still in the transaction");
    busy.batch_execute("COMMIT").await.expect("commit");
    tokio::time::timeout(Duration::from_secs(10), drainer)
        .await
        .expect("drain finishes once the transaction is done")
        .expect("join");
    assert_eq!(env.primary_sql("SELECT count(*) FROM drained"), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shutdown_timeout_closes_what_is_left() {
    let env = Env::start(0).await;
    let busy = env.connect().await;
    busy.batch_execute("BEGIN; SELECT 1")
        .await
        .expect("open transaction");
    env.proxy.drain(Duration::from_millis(300)).await;
    let err = busy.simple_query("SELECT 1").await.expect_err("closed");
    if let Some(code) = sqlstate(&err) {
        assert_eq!(code, "57P01", "{err}");
    }
}
