//! Nodes reached through their Unix-domain sockets (`host` = the socket directory, as in
//! libpq): routing, writes, cancels, both pool modes and failover work as over TCP.

use std::time::{Duration, Instant};

use meridian_config::PoolMode;
use tokio_postgres::NoTls;

use crate::support::{sqlstate, Env};

/// A cluster whose nodes Meridian reaches through their sockets in the cluster's directory.
async fn start(pool_mode: PoolMode) -> Env {
    start_with(1, false, pool_mode).await
}

async fn start_with(replicas: usize, sync: bool, pool_mode: PoolMode) -> Env {
    let cluster = tokio::task::spawn_blocking(move || {
        meridian_testkit::Cluster::builder()
            .replicas(replicas)
            .synchronous(sync)
            .start()
            .expect("cluster starts")
    })
    .await
    .expect("cluster task");
    let dir = cluster.dir().to_string_lossy().into_owned();
    let env = Env::with_cluster(cluster, move |c| {
        for n in &mut c.nodes {
            n.host = dir.clone();
        }
        c.pool.pool_mode = pool_mode;
    })
    .await;
    env.wait_all_healthy().await;
    env
}

/// `inet_server_addr()` is NULL on a connection that came in through a Unix-domain socket.
async fn over_unix(client: &tokio_postgres::Client, hint: &str) -> (bool, bool) {
    let row = client
        .query_one(
            &format!("{hint}SELECT inet_server_addr() IS NULL, pg_is_in_recovery()"),
            &[],
        )
        .await
        .expect("query");
    (row.get(0), row.get(1))
}

/// Cancels a `pg_sleep` on the primary through the client's cancel key: 57014.
async fn cancel_reaches_the_statement(client: &tokio_postgres::Client) {
    let token = client.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(NoTls).await
    });
    let err = client
        .simple_query("/* meridian:primary */ SELECT pg_sleep(60)")
        .await
        .expect_err("cancelled");
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    canceller.await.expect("join").expect("cancel sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_writes_and_cancels_go_through_unix_sockets() {
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let env = start(mode).await;
        let client = env.connect().await;

        // Reads go to the replica, writes to the primary, both over their sockets.
        assert_eq!(over_unix(&client, "").await, (true, true), "{mode:?}");
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS unix_t (v int); INSERT INTO unix_t VALUES (1)",
            )
            .await
            .expect("write");
        let n: i64 = client
            .query_one("SELECT count(*) FROM unix_t", &[])
            .await
            .expect("read your write")
            .get(0);
        assert_eq!(n, 1, "{mode:?}");
        assert_eq!(
            over_unix(&client, "/* meridian:primary */ ").await,
            (true, false),
            "{mode:?}"
        );

        // A CancelRequest reaches the server process through its socket.
        cancel_reaches_the_statement(&client).await;
        let row = client.query_one("SELECT 1", &[]).await.expect("usable");
        assert_eq!(row.get::<_, i32>(0), 1);

        // The health loop reaches the nodes the same way.
        let topo = env.proxy.topology.load();
        assert!(topo.nodes.iter().all(|n| n.healthy), "{mode:?}");
        env.cluster
            .psql(env.cluster.primary(), "app", "DROP TABLE unix_t")
            .expect("drop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_promotes_and_repoints_through_unix_sockets() {
    let env = start_with(2, true, PoolMode::Session).await;
    let setup = env.connect().await;
    setup
        .batch_execute("CREATE TABLE ledger (id int PRIMARY KEY); INSERT INTO ledger VALUES (1)")
        .await
        .expect("create");

    let old = env.cluster.primary().clone();
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| old.kill9()).expect("kill -9");
    crate::failover::first_write_after(&env, killed_at).await;

    let topo = env.proxy.topology.load();
    let new_primary = topo.primary_node().expect("a new primary").clone();
    assert_ne!(new_primary.port, old.port);
    // The acknowledged row is there, and writes reach the new primary over its socket.
    let c = env.connect().await;
    let n: i64 = c
        .query_one(
            "/* meridian:primary */ SELECT count(*) FROM ledger WHERE id = 1",
            &[],
        )
        .await
        .expect("read on the new primary")
        .get(0);
    assert_eq!(n, 1);
    assert_eq!(
        over_unix(&c, "/* meridian:primary */ ").await,
        (true, false)
    );
    // The other replica was re-pointed at the new primary (its socket directory and port).
    let other = env
        .cluster
        .replicas()
        .iter()
        .find(|n| n.port != new_primary.port)
        .expect("other replica")
        .clone();
    crate::failover::setup_follow_check(&env, &other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_connect_through_meridians_own_socket() {
    let sockets = tempfile_dir();
    let dir = sockets.clone();
    let env = crate::support::Env::start_with(1, move |c| {
        c.proxy.unix_socket_dir = Some(dir.to_string_lossy().into_owned());
    })
    .await;
    env.wait_all_healthy().await;
    let port = env.addr().port();
    let path = sockets.join(format!(".s.PGSQL.{port}"));
    assert_eq!(env.proxy.unix_socket.as_deref(), Some(path.as_path()));

    // tokio-postgres, as libpq does, takes a directory as the host of a Unix-domain socket.
    let mut cfg = env.pg_config(
        meridian_testkit::creds::APP_USER,
        meridian_testkit::creds::APP_PASSWORD,
    );
    cfg.host_path(&sockets).port(port);
    let (client, conn) = cfg.connect(NoTls).await.expect("connect over the socket");
    tokio::spawn(conn);
    // Routing is as over TCP: a read on the replica, a write on the primary.
    let row = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .expect("read");
    assert!(row.get::<_, bool>(0));
    client
        .batch_execute("CREATE TABLE unix_client_t (v int); INSERT INTO unix_client_t VALUES (1)")
        .await
        .expect("write");

    // A CancelRequest through the socket reaches the running statement.
    cancel_reaches_the_statement(&client).await;

    // psql with `-h <directory>`.
    let psql = env.cluster.bin().path("psql");
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(psql)
            .arg("-h")
            .arg(&sockets)
            .args([
                "-p",
                &port.to_string(),
                "-U",
                meridian_testkit::creds::APP_USER,
            ])
            .args(["-d", meridian_testkit::creds::APP_DB, "-Atc"])
            .arg("SELECT count(*) FROM unix_client_t")
            .env("PGPASSWORD", meridian_testkit::creds::APP_PASSWORD)
            .output()
            .expect("psql runs")
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    client
        .batch_execute("DROP TABLE unix_client_t")
        .await
        .expect("drop");

    // The socket goes away with the proxy.
    drop(client);
    drop(env);
    assert!(!path.exists(), "socket file left behind");
    let _ = std::fs::remove_dir(&sockets);
}

/// A fresh directory for a socket (removed by the test).
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "meridian-sock-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).expect("socket directory");
    dir
}
