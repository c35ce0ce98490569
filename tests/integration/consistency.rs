//! Read-your-writes, monotonic reads and tokens that cross connections, on a real cluster with
//! replicas held back by `recovery_min_apply_delay`.

use std::time::Duration;

use bytes::BytesMut;
use meridian_testkit::Cluster;
use meridian_wire::tag::backend;
use meridian_wire::{frame, messages, parse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::support::{raw_login, Env};

/// A cluster whose replicas apply WAL `delays` late (one entry per replica).
async fn lagging_env(delays: &[&str], tweak: impl FnOnce(&mut meridian_config::Config)) -> Env {
    let delays: Vec<String> = delays.iter().map(|d| d.to_string()).collect();
    let cluster = tokio::task::spawn_blocking(move || {
        let mut b = Cluster::builder().replicas(delays.len());
        for (i, d) in delays.iter().enumerate() {
            b = b.replica_setting(i, "recovery_min_apply_delay", d.as_str());
        }
        b.start().expect("cluster")
    })
    .await
    .expect("join");
    let env = Env::with_cluster(cluster, tweak).await;
    let replicas = env.cluster.replicas().len();
    env.proxy
        .topology
        .wait_for(Duration::from_secs(15), |t| {
            t.nodes.iter().filter(|n| n.healthy).count() == replicas + 1
        })
        .await;
    env
}

async fn setup_table(env: &Env, client: &Client) {
    client
        .batch_execute("CREATE TABLE ryw (id int PRIMARY KEY, note text)")
        .await
        .expect("create");
    // Let the replicas have the table before reads are routed to them.
    tokio::task::block_in_place(|| {
        env.cluster
            .wait_replicas_caught_up(Duration::from_secs(30))
            .expect("caught up")
    });
}

async fn text(client: &Client, sql: &str) -> String {
    let msgs = client.simple_query(sql).await.expect(sql);
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default()
}

/// Runs `n` insert→read pairs; returns (misses, reads served by replicas).
async fn write_read_pairs(env: &Env, client: &Client, start: i32, n: i32) -> (u32, u32) {
    let primary_port = env.cluster.primary().port as i32;
    let mut misses = 0;
    let mut on_replica = 0;
    for i in start..start + n {
        client
            .execute("INSERT INTO ryw (id) VALUES ($1)", &[&i])
            .await
            .expect("insert");
        let row = client
            .query_one(
                "SELECT count(*)::int, inet_server_port() FROM ryw WHERE id = $1",
                &[&i],
            )
            .await
            .expect("read");
        if row.get::<_, i32>(0) != 1 {
            misses += 1;
        }
        if row.get::<_, i32>(1) != primary_port {
            on_replica += 1;
        }
    }
    (misses, on_replica)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reads_its_own_writes_despite_replica_lag() {
    let env = lagging_env(&["500ms", "500ms"], |c| c.consistency.wait_timeout_ms = 2).await;
    let client = env.connect().await;
    setup_table(&env, &client).await;
    let (misses, _) = write_read_pairs(&env, &client, 0, 1000).await;
    assert_eq!(misses, 0, "a read missed the session's own write");

    // The same pairs with eventual consistency do miss: the test can tell.
    client
        .batch_execute("SET meridian.consistency = 'eventual'")
        .await
        .expect("set");
    let (misses, on_replica) = write_read_pairs(&env, &client, 10_000, 50).await;
    assert!(on_replica > 0, "eventual reads should use replicas");
    assert!(
        misses > 0,
        "eventual reads on 500ms-late replicas should miss writes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_little_lag_most_reads_after_writes_stay_on_replicas() {
    let env = lagging_env(&["0", "0"], |_| {}).await;
    let client = env.connect().await;
    setup_table(&env, &client).await;
    let (misses, on_replica) = write_read_pairs(&env, &client, 0, 200).await;
    assert_eq!(misses, 0);
    assert!(
        on_replica > 100,
        "only {on_replica} of 200 reads after writes used a replica"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_cross_connections() {
    let env = lagging_env(&["1s"], |c| c.consistency.wait_timeout_ms = 2).await;
    let a = env.connect().await;
    setup_table(&env, &a).await;
    assert!(text(&a, "SHOW meridian.lsn").await.contains('/'));

    for i in 0..20 {
        a.execute("INSERT INTO ryw (id) VALUES ($1)", &[&i])
            .await
            .expect("insert");
        let token = text(&a, "SHOW meridian.lsn").await;
        assert_ne!(token, "0/0");
        // Another connection, eventual mode (it would read the lagging replica), told the token.
        let b = env.connect().await;
        b.batch_execute("SET meridian.consistency = 'eventual'")
            .await
            .expect("eventual");
        b.batch_execute(&format!("SET meridian.min_lsn = '{token}'"))
            .await
            .expect("min_lsn");
        assert_eq!(text(&b, "SHOW meridian.min_lsn").await, token);
        let n = text(&b, &format!("SELECT count(*) FROM ryw WHERE id = {i}")).await;
        assert_eq!(n, "1", "connection B did not see A's write {i} at {token}");
    }

    // The startup option form: -c meridian.min_lsn=...
    a.execute("INSERT INTO ryw (id) VALUES (1000)", &[])
        .await
        .expect("insert");
    let token = text(&a, "SHOW meridian.lsn").await;
    let mut cfg = env.pg_config(
        meridian_testkit::creds::APP_USER,
        meridian_testkit::creds::APP_PASSWORD,
    );
    cfg.options(format!(
        "-c meridian.min_lsn={token} -c meridian.consistency=eventual"
    ));
    let (c, conn) = cfg.connect(tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    assert_eq!(text(&c, "SHOW meridian.min_lsn").await, token);
    assert_eq!(
        text(&c, "SELECT count(*) FROM ryw WHERE id = 1000").await,
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_arrives_as_parameter_status_before_ready_for_query() {
    let env = lagging_env(&["1s"], |c| c.consistency.wait_timeout_ms = 2).await;
    let a = env.connect().await;
    setup_table(&env, &a).await;
    a.batch_execute("GRANT ALL ON ryw TO app_md5")
        .await
        .expect("grant");

    let (mut s, mut buf) = raw_login(env.addr()).await;
    let mut q = BytesMut::new();
    messages::query(&mut q, "INSERT INTO ryw (id) VALUES (7)");
    s.write_all(&q).await.expect("write");
    // Collect frames up to ReadyForQuery; the ParameterStatus must come before it.
    let mut token = None;
    'outer: loop {
        while let Some((tag, f)) = frame::split_frame(&mut buf, 1 << 20).expect("frame") {
            match tag {
                backend::PARAMETER_STATUS => {
                    let (k, v) = parse::parameter_status(frame::body(&f)).expect("status");
                    if k == "meridian.lsn" {
                        token = Some(v.to_string());
                    }
                }
                backend::READY_FOR_QUERY => break 'outer,
                _ => {}
            }
        }
        let n = s.read_buf(&mut buf).await.expect("read");
        assert!(n > 0);
    }
    let token = token.expect("meridian.lsn ParameterStatus before ReadyForQuery");
    let b = env.connect().await;
    b.batch_execute(&format!(
        "SET meridian.consistency = 'eventual'; SET meridian.min_lsn = '{token}'"
    ))
    .await
    .expect("set");
    assert_eq!(text(&b, "SELECT count(*) FROM ryw WHERE id = 7").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_never_go_back_in_time_when_the_session_changes_replica() {
    // pg2 applies at once, pg3 two seconds late.
    let env = lagging_env(&["0", "2s"], |c| c.consistency.wait_timeout_ms = 2).await;
    let writer = env.connect().await;
    setup_table(&env, &writer).await;
    let reader = env.connect().await;
    let mut last = 0i64;
    for round in 0..60 {
        writer
            .execute("INSERT INTO ryw (id) VALUES ($1)", &[&round])
            .await
            .expect("insert");
        tokio::time::sleep(Duration::from_millis(20)).await;
        if round == 30 {
            // Take the up-to-date replica away: the session must not fall back to the late one.
            let fast = env.cluster.replicas()[0].clone();
            tokio::task::block_in_place(|| fast.stop()).expect("stop");
        }
        let n: i64 = text(&reader, "SELECT count(*) FROM ryw")
            .await
            .parse()
            .expect("count");
        assert!(
            n >= last,
            "read went back in time: {n} after {last} (round {round})"
        );
        last = n;
    }
    // A reader that started on the late replica sees the rows once it has replayed them; keep
    // checking monotonicity until then (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while last == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n: i64 = text(&reader, "SELECT count(*) FROM ryw")
            .await
            .parse()
            .expect("count");
        assert!(n >= last, "read went back in time: {n} after {last}");
        last = n;
    }
    assert!(last > 0, "the reader saw rows at all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_committed_writes_advance_the_token() {
    let env = lagging_env(&["0"], |_| {}).await;
    let client = env.connect().await;
    setup_table(&env, &client).await;
    client
        .batch_execute(
            "CREATE FUNCTION add_row(i int) RETURNS int LANGUAGE sql VOLATILE AS \
             $$ INSERT INTO ryw (id) VALUES (i) RETURNING id $$",
        )
        .await
        .expect("function");
    client
        .execute("INSERT INTO ryw (id) VALUES (1)", &[])
        .await
        .expect("insert");
    let t1 = text(&client, "SHOW meridian.lsn").await;

    client
        .batch_execute("BEGIN; INSERT INTO ryw (id) VALUES (2); ROLLBACK")
        .await
        .expect("rolled back");
    client.batch_execute("BEGIN").await.expect("begin");
    client
        .batch_execute("INSERT INTO ryw (id) VALUES (3)")
        .await
        .expect("insert");
    client.batch_execute("ROLLBACK").await.expect("rollback");
    assert_eq!(
        text(&client, "SHOW meridian.lsn").await,
        t1,
        "rollback moved the token"
    );

    client
        .batch_execute("BEGIN READ ONLY; SELECT count(*) FROM ryw; COMMIT")
        .await
        .expect("read-only tx");
    client
        .batch_execute("BEGIN READ ONLY")
        .await
        .expect("begin ro");
    text(&client, "SELECT count(*) FROM ryw").await;
    client.batch_execute("COMMIT").await.expect("commit ro");
    assert_eq!(
        text(&client, "SHOW meridian.lsn").await,
        t1,
        "read-only tx moved the token"
    );

    // A write inside a function called by SELECT (routed to the primary) does advance it.
    tokio::time::sleep(Duration::from_millis(1500)).await; // let the catalog learn add_row
    text(&client, "SELECT add_row(4)").await;
    let t2 = text(&client, "SHOW meridian.lsn").await;
    let lsn = |s: &str| s.parse::<meridian_upstream::Lsn>().expect("lsn");
    assert!(
        lsn(&t2) > lsn(&t1),
        "write through a function did not advance {t1} -> {t2}"
    );
    assert_eq!(
        text(&client, "SELECT count(*) FROM ryw WHERE id = 4").await,
        "1"
    );
}
