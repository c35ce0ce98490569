//! Failover with real kills: no acknowledged write lost, the other replica follows, the old
//! primary is fenced when it returns, a proxy-side partition promotes nothing, idle sessions
//! carry on and a transaction caught mid-way gets a clear error and a usable session.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_testkit::{creds, Cluster, DelayRelay};
use tokio_postgres::Client;

use crate::support::{sqlstate, Env};

async fn cluster(replicas: usize, sync: bool) -> Cluster {
    tokio::task::spawn_blocking(move || {
        Cluster::builder()
            .replicas(replicas)
            .synchronous(sync)
            .start()
            .expect("cluster")
    })
    .await
    .expect("join")
}

async fn wait_events(env: &Env, kind: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if env.proxy.ha.events().iter().any(|e| e.kind == kind) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Inserts rows `base..` in a loop until `stop`, recording every acknowledged id.
async fn ledger_writer(
    env_cfg: tokio_postgres::Config,
    client: Client,
    base: i32,
    acked: Arc<Mutex<BTreeSet<i32>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Client {
    let mut client = client;
    let mut id = base;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        match client
            .execute("INSERT INTO ledger (id) VALUES ($1)", &[&id])
            .await
        {
            Ok(_) => {
                acked.lock().expect("lock").insert(id);
            }
            Err(_) => {
                // Back off a little, and reconnect as an application would if the connection
                // is gone.
                tokio::time::sleep(Duration::from_millis(5)).await;
                if client.is_closed() {
                    if let Ok((c, conn)) = env_cfg.connect(tokio_postgres::NoTls).await {
                        tokio::spawn(conn);
                        client = c;
                    }
                }
            }
        }
        id += 1;
    }
    client
}

pub(crate) async fn first_write_after(env: &Env, since: Instant) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(c) = env.try_connect(creds::APP_USER, creds::APP_PASSWORD).await {
            if c.execute(
                "INSERT INTO ledger (id) VALUES (-1) ON CONFLICT DO NOTHING",
                &[],
            )
            .await
            .is_ok()
            {
                return since.elapsed();
            }
        }
        assert!(Instant::now() < deadline, "writes never resumed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_primary_loses_no_acknowledged_write() {
    let env = Env::with_cluster(cluster(2, true).await, |_| {}).await;
    env.wait_all_healthy().await;
    let setup = env.connect().await;
    setup
        .batch_execute("CREATE TABLE ledger (id int PRIMARY KEY)")
        .await
        .expect("create");
    // An idle session, and one caught in the middle of a transaction.
    let idle = env.connect().await;
    idle.batch_execute("SET application_name = 'idle-one'")
        .await
        .expect("set");
    let in_tx = env.connect().await;
    in_tx
        .batch_execute("BEGIN; INSERT INTO ledger (id) VALUES (-2)")
        .await
        .expect("open tx");

    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let c = env.connect().await;
        writers.push(tokio::spawn(ledger_writer(
            env.pg_config(creds::APP_USER, creds::APP_PASSWORD),
            c,
            w * 1_000_000,
            acked.clone(),
            stop.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let old = env.cluster.primary().clone();
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| old.kill9()).expect("kill -9");
    let resumed = first_write_after(&env, killed_at).await;
    println!(
        "first write through Meridian {} ms after kill -9",
        resumed.as_millis()
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }

    let topo = env.proxy.topology.load();
    let new_primary = topo.primary_node().expect("a new primary").clone();
    assert_ne!(new_primary.port, old.port);
    let node = env
        .cluster
        .nodes()
        .find(|n| n.port == new_primary.port)
        .expect("node")
        .clone();
    let present: BTreeSet<i32> = tokio::task::block_in_place(|| {
        node.psql("app", "SELECT id FROM ledger WHERE id >= 0")
            .expect("ledger")
            .lines()
            .map(|l| l.parse().expect("id"))
            .collect()
    });
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() > 100,
        "the writers made progress ({})",
        acked.len()
    );
    let lost: Vec<_> = acked.difference(&present).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");

    // The idle session carries on without reconnecting.
    let row = idle
        .query_one("SELECT current_setting('application_name')", &[])
        .await
        .expect("idle session works after failover");
    assert_eq!(row.get::<_, String>(0), "idle-one");
    // The session caught in a transaction gets a clear error, then is usable again.
    let err = in_tx
        .simple_query("INSERT INTO ledger (id) VALUES (-3)")
        .await
        .expect_err("the transaction is gone");
    assert_eq!(sqlstate(&err).as_deref(), Some("08006"), "{err}");
    in_tx.batch_execute("ROLLBACK").await.expect("rollback");
    in_tx
        .batch_execute("INSERT INTO ledger (id) VALUES (-4)")
        .await
        .expect("usable after rollback");

    // The remaining replica follows the new primary.
    let other = env
        .cluster
        .replicas()
        .iter()
        .find(|n| n.port != new_primary.port)
        .expect("other replica")
        .clone();
    setup_follow_check(&env, &other).await;

    // The old primary comes back as a writable server on a dead timeline: fenced, no traffic.
    tokio::task::block_in_place(|| old.start()).expect("restart old primary");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let t = env.proxy.topology.load();
        let o = t.nodes.iter().find(|n| n.port == old.port).expect("old");
        if o.healthy && o.fenced {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old primary not shown as fenced: {o:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = env.connect().await;
    for i in 0..20 {
        let row = c
            .query_one(
                "INSERT INTO ledger (id) VALUES ($1) RETURNING inet_server_port()",
                &[&(-100 - i)],
            )
            .await
            .expect("write after the old primary returned");
        assert_eq!(row.get::<_, i32>(0), new_primary.port as i32);
        let row = c
            .query_one("SELECT inet_server_port()", &[])
            .await
            .expect("read");
        assert_ne!(
            row.get::<_, i32>(0),
            old.port as i32,
            "a read went to the fenced node"
        );
    }
    assert!(env.proxy.ha.events().iter().any(|e| e.kind == "failover"));
}

pub(crate) async fn setup_follow_check(env: &Env, replica: &meridian_testkit::Node) {
    let c = env.connect().await;
    c.execute("INSERT INTO ledger (id) VALUES (-50)", &[])
        .await
        .expect("write on new primary");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = tokio::task::block_in_place(|| {
            replica
                .psql("app", "SELECT count(*) FROM ledger WHERE id = -50")
                .unwrap_or_default()
        });
        if seen == "1" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} does not follow the new primary",
            replica.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_between_meridian_and_the_primary_promotes_nothing() {
    let cluster = cluster(1, false).await;
    let relay = DelayRelay::start(cluster.primary().addr(), Duration::ZERO).expect("relay");
    let relay_port = relay.port;
    let env = Env::with_cluster(cluster, move |c| {
        c.nodes[0].port = relay_port;
        c.failover.hold_timeout_ms = 500;
    })
    .await;
    env.wait_all_healthy().await;
    relay.block(true);
    relay.disconnect_all();
    assert!(
        wait_events(&env, "witness", Duration::from_secs(15)).await,
        "the witness check should stop the promotion: {:?}",
        env.proxy.ha.events()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let replica = env.cluster.replicas()[0].clone();
    assert!(
        tokio::task::block_in_place(|| replica.is_in_recovery()).expect("query"),
        "the replica must not be promoted"
    );
    assert!(!env.proxy.ha.events().iter().any(|e| e.kind == "failover"));
    // When the link heals, the same primary serves writes again.
    relay.block(false);
    let c = env.connect().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match c
            .query_one("/* meridian:primary */ SELECT pg_is_in_recovery()", &[])
            .await
        {
            Ok(r) if !r.get::<_, bool>(0) => break,
            _ => {}
        }
        assert!(Instant::now() < deadline, "primary not back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A replica that receives WAL two seconds late (its replication goes through a delay relay).
async fn late_replica_env(allow_data_loss: bool) -> (Env, DelayRelay) {
    let cluster = cluster(1, false).await;
    let relay = DelayRelay::start(cluster.primary().addr(), Duration::from_secs(2)).expect("relay");
    let replica = cluster.replicas()[0].clone();
    let conninfo = format!(
        "host=127.0.0.1 port={} user={} password={} application_name={}",
        relay.port,
        creds::REPL_USER,
        creds::REPL_PASSWORD,
        replica.name
    );
    tokio::task::block_in_place(|| replica.set_setting("primary_conninfo", &conninfo))
        .expect("re-point through relay");
    let env = Env::with_cluster(cluster, move |c| {
        c.failover.allow_data_loss = allow_data_loss;
        c.failover.hold_timeout_ms = 1000;
    })
    .await;
    env.wait_all_healthy().await;
    (env, relay)
}

async fn write_then_kill(env: &Env, relay: &DelayRelay) {
    let c = env.connect().await;
    c.batch_execute("CREATE TABLE ledger (id int PRIMARY KEY)")
        .await
        .expect("create");
    // Let the table reach the replica, then write rows it will not have received.
    let replica = env.cluster.replicas()[0].clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::task::block_in_place(|| {
        replica
            .psql(
                "app",
                "SELECT count(*) FROM pg_class WHERE relname = 'ledger'",
            )
            .unwrap_or_default()
    }) != "1"
    {
        assert!(Instant::now() < deadline, "replica never got the table");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..20 {
        c.execute("INSERT INTO ledger (id) VALUES ($1)", &[&i])
            .await
            .expect("insert");
    }
    // The primary dies with its last writes still on the way: what the relay holds is dropped
    // (as when a machine dies with WAL not yet sent), so the replica never gets those rows.
    relay.block(true);
    relay.disconnect_all();
    let primary = env.cluster.primary().clone();
    tokio::task::block_in_place(|| primary.kill9()).expect("kill -9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_replication_never_promotes_a_replica_missing_acknowledged_writes() {
    let (env, relay) = late_replica_env(false).await;
    write_then_kill(&env, &relay).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let refused = env
            .proxy
            .ha
            .events()
            .iter()
            .any(|e| e.kind == "refused" && e.message.contains("acknowledged"));
        if refused {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", env.proxy.ha.events());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let replica = env.cluster.replicas()[0].clone();
    assert!(tokio::task::block_in_place(|| replica.is_in_recovery()).expect("query"));
    // Writes fail clearly instead of landing on a node missing acknowledged data.
    let c = env.connect().await;
    let err = c
        .execute("INSERT INTO ledger (id) VALUES (1000)", &[])
        .await
        .expect_err("no primary");
    assert_eq!(sqlstate(&err).as_deref(), Some("57P03"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_data_loss_promotes_and_reports_the_lost_range() {
    let (env, relay) = late_replica_env(true).await;
    write_then_kill(&env, &relay).await;
    assert!(
        wait_events(&env, "data_loss", Duration::from_secs(20)).await,
        "{:?}",
        env.proxy.ha.events()
    );
    let event = env
        .proxy
        .ha
        .events()
        .into_iter()
        .find(|e| e.kind == "data_loss")
        .expect("event");
    assert!(
        event.message.contains(".."),
        "range reported: {}",
        event.message
    );
    env.proxy
        .topology
        .wait_for(Duration::from_secs(10), |t| t.primary.is_some())
        .await;
    let c = env.connect().await;
    c.execute("INSERT INTO ledger (id) VALUES (5000)", &[])
        .await
        .expect("writes resume on the promoted replica");
    // What the replica had is there; the reported range is what is not.
    let n: i64 = c
        .query_one("SELECT count(*) FROM ledger WHERE id < 20", &[])
        .await
        .expect("count")
        .get(0);
    assert!(
        n < 20,
        "some acknowledged rows were expected to be lost ({n})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_under_load_pauses_writers_without_errors_or_loss() {
    let env = Env::with_cluster(cluster(2, false).await, |_| {}).await;
    env.wait_all_healthy().await;
    let setup = env.connect().await;
    setup
        .batch_execute("CREATE TABLE ledger (id int PRIMARY KEY)")
        .await
        .expect("create");
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let c = env.connect().await;
        let (acked, errors, stop) = (acked.clone(), errors.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut id = w * 1_000_000;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match c
                    .execute("INSERT INTO ledger (id) VALUES ($1)", &[&id])
                    .await
                {
                    Ok(_) => {
                        acked.lock().expect("lock").insert(id);
                    }
                    Err(e) => {
                        errors.lock().expect("lock").push(format!("{e:?}"));
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                id += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let target = env.cluster.replicas()[0].clone();
    let report = env
        .proxy
        .ha
        .switchover(&target.name)
        .await
        .expect("switchover");
    println!(
        "switchover to {} took {} ms",
        report.new_primary, report.duration_ms
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let errors = errors.lock().expect("lock").clone();
    assert!(errors.is_empty(), "clients saw errors: {errors:?}");
    let present: BTreeSet<i32> = tokio::task::block_in_place(|| {
        target
            .psql("app", "SELECT id FROM ledger")
            .expect("ledger")
            .lines()
            .map(|l| l.parse().expect("id"))
            .collect()
    });
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() > 50);
    let lost: Vec<_> = acked.difference(&present).collect();
    assert!(lost.is_empty(), "rows lost in the switchover: {lost:?}");
    assert_eq!(
        env.proxy.topology.load().primary_node().map(|n| n.port),
        Some(target.port)
    );
    // Writes after the switchover land on the new primary.
    let row = setup
        .query_one(
            "INSERT INTO ledger (id) VALUES (-1) RETURNING inet_server_port()",
            &[],
        )
        .await
        .expect("write after switchover");
    assert_eq!(row.get::<_, i32>(0), target.port as i32);
}
