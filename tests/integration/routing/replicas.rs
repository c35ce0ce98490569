//! Replica choice: lag, geography, stopped replicas, balance, mixed load.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_far_behind_the_primary_gets_no_reads() {
    // pg3 applies WAL only 30 s after the primary committed it.
    let cluster = tokio::task::spawn_blocking(|| {
        Cluster::builder()
            .replicas(2)
            .replica_setting(1, "recovery_min_apply_delay", "30s")
            .start()
            .expect("cluster starts")
    })
    .await
    .expect("cluster task");
    let env = Env::with_cluster(cluster, |cfg| {
        eventual(cfg);
        cfg.routing.max_replica_lag_ms = 500;
    })
    .await;
    wait_healthy(&env, 3).await;
    primary_sql(
        &env,
        "CREATE TABLE wal_gen (id bigserial PRIMARY KEY, pad text); GRANT ALL ON wal_gen, wal_gen_id_seq TO app;",
    );
    let writer = WalWriter::start(&env).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // pg3 really is seconds behind: it has not even applied the CREATE TABLE, while pg2 has
    // applied inserts.
    let on = |i: usize, sql: &str| {
        let node = &env.cluster.replicas()[i];
        tokio::task::block_in_place(|| node.psql(creds::APP_DB, sql)).expect("query a replica")
    };
    assert_eq!(on(1, "SELECT to_regclass('wal_gen') IS NULL"), "t");
    assert_ne!(on(0, "SELECT count(*) FROM wal_gen"), "0");
    // Meridian's monitor has had time to look at both (it polls every 200 ms), and sees pg3
    // behind the primary.
    wait_topology(&env, "pg3 seen behind the primary", |t| {
        t.nodes[2].healthy && t.nodes[2].lag_bytes > 0
    })
    .await;

    let c = env.connect().await;
    let seen = spread(&env, &c, 60).await;
    let topo = env.proxy.topology.load();
    let replayed = on(
        1,
        "SELECT coalesce(pg_last_xact_replay_timestamp()::text, 'NULL')",
    );
    writer.stop().await;
    assert_eq!(
        seen.get(&At::Replica(0)).copied().unwrap_or(0),
        60,
        "every read should go to pg2 while pg3 is seconds behind (max_replica_lag_ms = 500); \
         reads ran on {seen:?}; Meridian saw pg3 as lag_bytes={} lag_ms={}; \
         pg3's pg_last_xact_replay_timestamp() = {replayed}",
        topo.nodes[2].lag_bytes,
        topo.nodes[2].lag_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lagging_replicas_are_skipped_and_reads_fall_back_to_the_primary() {
    let env = start(2, |cfg| {
        eventual(cfg);
        // Well above what a loaded test machine shows for a healthy replica.
        cfg.routing.max_replica_lag_ms = 3000;
    })
    .await;
    primary_sql(
        &env,
        "CREATE TABLE wal_gen (id bigserial PRIMARY KEY, pad text); GRANT ALL ON wal_gen, wal_gen_id_seq TO app;",
    );
    caught_up(&env);
    let c = env.connect().await;
    let seen = spread(&env, &c, 10).await;
    assert!(
        seen.keys().all(|n| n.is_replica()),
        "reads before any lag ran on {seen:?}"
    );

    // pg3 starts applying WAL 30 s late; the primary keeps committing.
    tokio::task::block_in_place(|| {
        env.cluster.replicas()[1].set_setting("recovery_min_apply_delay", "30s")
    })
    .expect("delay pg3");
    let writer = WalWriter::start(&env).await;
    wait_topology(&env, "pg3 lagging beyond 3 s", |t| t.nodes[2].lag_ms > 3000).await;
    let seen = spread(&env, &c, 40).await;
    assert_eq!(
        seen.get(&At::Replica(0)).copied().unwrap_or(0),
        40,
        "with pg3 lagging every read should go to pg2; reads ran on {seen:?}"
    );

    // Now pg2 lags too: reads go to the primary, without errors.
    tokio::task::block_in_place(|| {
        env.cluster.replicas()[0].set_setting("recovery_min_apply_delay", "30s")
    })
    .expect("delay pg2");
    wait_topology(&env, "both replicas lagging beyond 3 s", |t| {
        t.nodes[1].lag_ms > 3000 && t.nodes[2].lag_ms > 3000
    })
    .await;
    let seen = spread(&env, &c, 40).await;
    assert_eq!(
        seen.get(&At::Primary).copied().unwrap_or(0),
        40,
        "with every replica lagging every read should go to the primary; reads ran on {seen:?}"
    );
    // New sessions too.
    let c2 = env.connect().await;
    assert_on_primary(&env, &c2, WHERE).await;
    writer.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 8. Geography
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_prefer_the_proxy_region_then_the_nearest_replica() {
    let cluster = tokio::task::spawn_blocking(|| {
        Cluster::builder()
            .replicas(2)
            .start()
            .expect("cluster starts")
    })
    .await
    .expect("cluster task");
    // pg3 is "far": reached through a relay adding 20 ms each way.
    let relay =
        DelayRelay::start(cluster.replicas()[1].addr(), Duration::from_millis(20)).expect("relay");
    let relay_port = relay.port;
    let far_is_slow = |t: &Topology| {
        t.nodes.iter().all(|n| n.healthy)
            && t.nodes[2].base_rtt_us >= 30_000
            && t.nodes[1].base_rtt_us < t.nodes[2].base_rtt_us
    };

    // Both replicas in the proxy's region: the near one (lower RTT) gets every read.
    let env = Env::with_cluster(cluster, |cfg| {
        eventual(cfg);
        cfg.proxy.region = "eu".into();
        for n in &mut cfg.nodes {
            n.region = "eu".into();
        }
        cfg.nodes[2].port = relay_port;
    })
    .await;
    wait_topology(&env, "pg3 measured slower than pg2", far_is_slow).await;
    let c = env.connect().await;
    let seen = spread(&env, &c, 40).await;
    assert_eq!(
        seen.get(&At::Replica(0)).copied().unwrap_or(0),
        40,
        "same region: the nearer replica pg2 should get every read; reads ran on {seen:?}"
    );
    drop(c);

    // The far replica in the proxy's region, the near one elsewhere: region beats latency.
    let Env { proxy, cluster } = env;
    proxy.stop().await;
    let env = Env::with_cluster(cluster, |cfg| {
        eventual(cfg);
        cfg.proxy.region = "eu".into();
        for n in &mut cfg.nodes {
            n.region = "eu".into();
        }
        cfg.nodes[1].region = "us".into();
        cfg.nodes[2].port = relay_port;
    })
    .await;
    wait_topology(&env, "pg3 measured slower than pg2", far_is_slow).await;
    let c = env.connect().await;
    let seen = spread(&env, &c, 40).await;
    assert_eq!(
        seen.get(&At::Replica(1)).copied().unwrap_or(0),
        40,
        "the replica in the proxy's region (pg3, far) should get every read; reads ran on {seen:?}"
    );
    assert!(relay.total_connections() > 0);
}

// ---------------------------------------------------------------------------------------------
// 9. A replica stops mid-run
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_replica_is_skipped_without_client_errors() {
    let env = start(2, |cfg| {
        eventual(cfg);
        equal_replicas(cfg);
    })
    .await;
    let stopped_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();

    // Two clients loop reads, one with the simple protocol, one with a prepared statement.
    let mut readers = Vec::new();
    for extended in [false, true] {
        let c = env.connect().await;
        let stopped_at = stopped_at.clone();
        readers.push(tokio::spawn(async move {
            let stmt = c.prepare(WHERE).await.expect("prepare");
            // (port, finished after the stop completed)
            let mut ports = Vec::new();
            let mut errors = Vec::new();
            for i in 0..300 {
                let result = if extended {
                    c.query_one(&stmt, &[])
                        .await
                        .map(|r| r.get::<_, i32>("port"))
                } else {
                    match try_simple_rows(&c, WHERE).await {
                        Ok(rows) => Ok(rows
                            .first()
                            .and_then(|r| r.get("port"))
                            .and_then(|p| p.parse().ok())
                            .unwrap_or(-1)),
                        Err(e) => Err(e),
                    }
                };
                let after_stop = stopped_at.lock().map(|g| g.is_some()).unwrap_or(false);
                match result {
                    Ok(p) => ports.push((p, after_stop)),
                    Err(e) => {
                        errors.push(format!("read {i}: {}", show(&e)));
                        if c.is_closed() {
                            errors.push(format!("the connection was closed after read {i}"));
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (ports, errors)
        }));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    let victim = &env.cluster.replicas()[1];
    tokio::task::block_in_place(|| victim.stop()).expect("stop pg3");
    *stopped_at.lock().expect("lock") = Some(Instant::now());

    let mut before = Vec::new();
    for (which, r) in ["simple", "extended"].iter().zip(readers) {
        let (ports, errors) = r.await.expect("reader");
        assert!(
            errors.is_empty(),
            "{which}: reads failed around the stop of pg3: {errors:#?}"
        );
        assert_eq!(ports.len(), 300, "{which}");
        before.extend(
            ports
                .iter()
                .filter(|(_, after)| !after)
                .map(|(p, _)| at(&env, *p)),
        );
        let after: Vec<At> = ports
            .iter()
            .filter(|(_, after)| *after)
            .map(|(p, _)| at(&env, *p))
            .collect();
        // Reads went on after the stop, elsewhere.
        assert!(!after.is_empty(), "{which}: no reads after the stop");
        assert!(
            after.iter().all(|n| *n != At::Replica(1)),
            "{which}: {after:?}"
        );
    }
    // The run did use pg3 before it stopped.
    assert!(
        before.contains(&At::Replica(1)),
        "pg3 never served a read before it stopped: {before:?}"
    );
}

/// Found by the soak: with `pool_mode = "transaction"`, reads in flight on a replica stopped with
/// `-m immediate` failed with 08006. Such a shutdown says so in a NoticeResponse (WARNING 57P01)
/// before the connection drops, which used to reach the client and end the read's retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_in_flight_on_a_replica_stopped_immediately_are_retried() {
    let env = start(2, |cfg| {
        eventual(cfg);
        equal_replicas(cfg);
        cfg.pool.pool_mode = meridian_config::PoolMode::Transaction;
        cfg.pool.pool_size = 4;
    })
    .await;
    let stopped = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..12 {
        let c = env.connect().await;
        let (stopped, done) = (stopped.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            // (reads, reads after the stop, errors)
            let (mut reads, mut after, mut errors) = (0u32, 0u32, Vec::new());
            while !done.load(Ordering::Acquire) {
                match try_simple_rows(&c, WHERE).await {
                    Ok(_) => {
                        reads += 1;
                        after += u32::from(stopped.load(Ordering::Acquire));
                    }
                    Err(e) => {
                        errors.push(show(&e));
                        if c.is_closed() {
                            break;
                        }
                    }
                }
            }
            (reads, after, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let victim = env.cluster.replicas()[1].clone();
    tokio::task::block_in_place(|| victim.stop_immediate()).expect("stop pg3");
    stopped.store(true, Ordering::Release);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    done.store(true, Ordering::Release);
    for r in readers {
        let (reads, after, errors) = r.await.expect("reader");
        assert!(
            errors.is_empty(),
            "reads failed around the immediate stop of pg3: {errors:#?}"
        );
        assert!(
            reads > 0 && after > 0,
            "reads {reads}, after the stop {after}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 10. Mixed workload
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mixed_pgbench_workload_runs_without_failures() {
    let env = start(2, |_| {}).await;
    let pgbench = env.cluster.bin().path("pgbench");
    let port = env.addr().port().to_string();
    // pgbench with `args` through Meridian: (succeeded, output).
    let run = move |args: Vec<&'static str>| {
        let pgbench = pgbench.clone();
        let port = port.clone();
        tokio::task::spawn_blocking(move || {
            let out = Command::new(&pgbench)
                .args(["-h", "127.0.0.1", "-p", &port, "-U", creds::APP_USER])
                .args(&args)
                .arg(creds::APP_DB)
                .env("PGPASSWORD", creds::APP_PASSWORD)
                .output()
                .expect("pgbench runs");
            let text = format!(
                "pgbench {args:?}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.success(), text)
        })
    };
    let (ok, text) = run(vec!["-i", "-s", "2", "-q"]).await.expect("pgbench -i");
    assert!(ok, "{text}");
    caught_up(&env);
    let replica_commits = |env: &Env| -> i64 {
        tokio::task::block_in_place(|| {
            env.cluster
                .replicas()
                .iter()
                .map(|r| {
                    r.psql(
                        "postgres",
                        "SELECT xact_commit FROM pg_stat_database WHERE datname = 'app'",
                    )
                    .expect("replica stats")
                    .parse::<i64>()
                    .expect("number")
                })
                .sum()
        })
    };
    let before = replica_commits(&env);

    let writes = run(vec!["-c", "4", "-j", "2", "-t", "150"]);
    // `-n`: no VACUUM/TRUNCATE of pgbench_history before the read-only runs.
    let reads = run(vec![
        "-n", "-S", "-c", "4", "-j", "2", "-t", "400", "-M", "prepared",
    ]);
    let reads_ext = run(vec![
        "-n", "-S", "-c", "2", "-j", "1", "-t", "300", "-M", "extended",
    ]);
    let (writes, reads, reads_ext) = (
        writes.await.expect("tpcb-like"),
        reads.await.expect("select-only"),
        reads_ext.await.expect("select-only extended"),
    );
    for ((ok, text), processed) in [
        (&writes, "600/600"),
        (&reads, "1600/1600"),
        (&reads_ext, "600/600"),
    ] {
        assert!(ok, "{text}");
        assert!(text.contains("number of failed transactions: 0"), "{text}");
        assert!(
            text.contains(&format!(
                "number of transactions actually processed: {processed}"
            )),
            "{text}"
        );
    }
    assert_eq!(
        primary_sql(&env, "SELECT count(*) FROM pgbench_history"),
        "600"
    );
    // The select-only clients' transactions ran on the replicas.
    tokio::time::sleep(Duration::from_millis(600)).await; // stats are flushed every ~0.5 s
    let served = replica_commits(&env) - before;
    assert!(
        served >= 2200,
        "replicas committed {served} transactions; expected the 2200 select-only ones"
    );
}

// ---------------------------------------------------------------------------------------------
// 11. Balance
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_reads_over_equal_replicas() {
    let env = start(2, |cfg| {
        eventual(cfg);
        equal_replicas(cfg);
        cfg.routing.balance = Balance::RoundRobin;
    })
    .await;
    let c = env.connect().await;
    let seen = spread(&env, &c, 40).await;
    assert_eq!(seen.get(&At::Primary), None, "{seen:?}");
    for r in [At::Replica(0), At::Replica(1)] {
        assert!(
            seen.get(&r).copied().unwrap_or(0) >= 10,
            "{r:?} got too few of 40 reads: {seen:?}"
        );
    }

    // Several sessions at once.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let c = env.connect().await;
        tasks.push(tokio::spawn(async move {
            let mut ports = Vec::new();
            for _ in 0..10 {
                let rows = try_simple_rows(&c, WHERE).await.expect("read");
                let port = rows.first().and_then(|r| r.get("port")).unwrap_or("-1");
                ports.push(port.parse::<i32>().expect("port"));
            }
            ports
        }));
    }
    let mut seen: HashMap<At, usize> = HashMap::new();
    for t in tasks {
        for p in t.await.expect("reader") {
            *seen.entry(at(&env, p)).or_insert(0) += 1;
        }
    }
    assert_eq!(seen.get(&At::Primary), None, "{seen:?}");
    assert!(
        seen.contains_key(&At::Replica(0)) && seen.contains_key(&At::Replica(1)),
        "{seen:?}"
    );
}
