//! Limits with clear Postgres errors: per-user connection limits and idle timeouts.

use std::time::Duration;

use meridian_testkit::creds;

use crate::support::{sqlstate, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_over_its_connection_limit_gets_53300() {
    let env = Env::start_with(0, |c| {
        if let Some(u) = c.users.iter_mut().find(|u| u.name == creds::APP_USER) {
            u.max_connections = Some(2);
        }
    })
    .await;
    let a = env.connect().await;
    let b = env.connect().await;
    let err = env
        .try_connect(creds::APP_USER, creds::APP_PASSWORD)
        .await
        .err()
        .expect("third connection refused");
    assert_eq!(sqlstate(&err).as_deref(), Some("53300"), "{err}");
    // Other users are not affected; the first two still work.
    env.try_connect(creds::MD5_USER, creds::MD5_PASSWORD)
        .await
        .expect("another user");
    a.query_one("SELECT 1", &[]).await.expect("a works");
    drop(b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.try_connect(creds::APP_USER, creds::APP_PASSWORD)
        .await
        .expect("a slot was freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_and_idle_transactions_time_out() {
    let env = Env::start_with(0, |c| {
        c.proxy.client_idle_timeout_ms = 400;
        c.proxy.idle_in_transaction_timeout_ms = 400;
    })
    .await;
    let setup = env.connect().await;
    setup
        .batch_execute("CREATE TABLE idle_t (id int)")
        .await
        .expect("create");
    drop(setup);

    let idle = env.connect().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let err = idle.simple_query("SELECT 1").await.expect_err("closed");
    if let Some(code) = sqlstate(&err) {
        assert_eq!(code, "57P05", "{err}");
    } else {
        assert!(err.is_closed(), "{err}");
    }

    let in_tx = env.connect().await;
    in_tx
        .batch_execute("BEGIN; INSERT INTO idle_t VALUES (1)")
        .await
        .expect("tx");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let err = in_tx.simple_query("COMMIT").await.expect_err("closed");
    if let Some(code) = sqlstate(&err) {
        assert_eq!(code, "25P03", "{err}");
    } else {
        assert!(err.is_closed(), "{err}");
    }
    assert_eq!(env.primary_sql("SELECT count(*) FROM idle_t"), "0");
    // A busy session is not idle: a long statement is not cut off.
    let busy = env.connect().await;
    busy.simple_query("SELECT pg_sleep(1)")
        .await
        .expect("a running statement is not idle");
}
