//! Transaction pooling (`pool.pool_mode = "transaction"`) on a real cluster: sessions share a
//! few server connections, prepared statements and session settings stay per client, and the
//! pool copes with busy and broken connections.

use std::collections::HashSet;
use std::time::Duration;

use meridian_config::{Config, Millis, PoolMode};
use meridian_testkit::Cluster;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::support::{sqlstate, Env};

fn pooled(size: usize) -> impl FnOnce(&mut Config) {
    move |c: &mut Config| {
        c.pool.pool_mode = PoolMode::Transaction;
        c.pool.pool_size = size;
    }
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

async fn pid(client: &Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0)
}

/// Client backends of the app user on the primary, as the server counts them.
fn app_backends(env: &Env) -> usize {
    env.primary_sql(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend'",
    )
    .trim()
    .parse()
    .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_share_few_server_connections() {
    let env = Env::start_with(0, |c| {
        pooled(3)(c);
        c.proxy.admin_listen = Some("127.0.0.1:0".into());
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(env.connect().await);
    }
    let mut tasks = Vec::new();
    for c in clients {
        tasks.push(tokio::spawn(async move {
            let mut pids = HashSet::new();
            for _ in 0..20 {
                pids.insert(pid(&c).await);
                let tx = c.simple_query("BEGIN; SELECT 1; COMMIT").await;
                tx.expect("transaction");
            }
            (c, pids)
        }));
    }
    let mut pids = HashSet::new();
    let mut clients = Vec::new();
    for t in tasks {
        let (c, p) = t.await.expect("task");
        pids.extend(p);
        clients.push(c);
    }
    assert!(
        !pids.is_empty() && pids.len() <= 3,
        "20 clients used {} server connections",
        pids.len()
    );
    // All 20 clients are still connected; the server sees the pool, not them.
    let backends = app_backends(&env);
    assert!(
        (1..=3).contains(&backends),
        "{backends} server connections for 20 clients with pool_size 3"
    );
    // Between statements the connections wait in the pool, and the metrics say so.
    let body = crate::admin::get(&env, "/metrics").await.body;
    let idle = crate::admin::metric(&body, "meridian_pool_idle_connections", &[("node", "pg1")]);
    assert!(
        idle.is_some_and(|n| (1.0..=3.0).contains(&n)),
        "meridian_pool_idle_connections {idle:?}"
    );
    for c in &clients {
        assert_eq!(text(c, "SELECT 1").await, "1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_follow_clients_across_server_connections() {
    let env = Env::start_with(0, pooled(2)).await;
    env.connect()
        .await
        .batch_execute("CREATE TABLE prep (id int PRIMARY KEY, v int)")
        .await
        .expect("create");
    let mut tasks = Vec::new();
    for i in 0..6i32 {
        let c = env.connect().await;
        tasks.push(tokio::spawn(async move {
            // Every client has its own statements under the same driver-chosen names, some
            // with the same text as other clients' and some with text of their own.
            let shared = c.prepare("SELECT $1::int + 1").await.expect("prepare");
            let own = c
                .prepare(&format!("SELECT $1::int * {}", i + 2))
                .await
                .expect("prepare own");
            let insert = c
                .prepare("INSERT INTO prep (id, v) VALUES ($1, $2)")
                .await
                .expect("prepare insert");
            let mut pids = HashSet::new();
            for n in 0..40i32 {
                let r: i32 = c.query_one(&shared, &[&n]).await.expect("shared").get(0);
                assert_eq!(r, n + 1);
                let r: i32 = c.query_one(&own, &[&n]).await.expect("own").get(0);
                assert_eq!(r, n * (i + 2));
                c.execute(&insert, &[&(i * 1000 + n), &n])
                    .await
                    .expect("insert");
                pids.insert(pid(&c).await);
            }
            pids
        }));
    }
    let mut pids = HashSet::new();
    for t in tasks {
        pids.extend(t.await.expect("client task"));
    }
    assert!(pids.len() <= 2, "{} server connections", pids.len());
    assert_eq!(env.primary_sql("SELECT count(*) FROM prep"), "240");

    // SQL-level PREPARE follows its client too, and does not leak to the next one.
    let a = env.connect().await;
    let b = env.connect().await;
    a.batch_execute("PREPARE twice(int) AS SELECT $1 * 2")
        .await
        .expect("prepare");
    b.batch_execute("BEGIN").await.expect("begin");
    let b_pid = pid(&b).await;
    // b holds one connection, so a's EXECUTE may well run on the other one.
    assert_eq!(text(&a, "EXECUTE twice(21)").await, "42");
    let e = b
        .simple_query("EXECUTE twice(1)")
        .await
        .err()
        .expect("b never prepared twice");
    assert_eq!(sqlstate(&e).as_deref(), Some("26000"), "{e}");
    b.batch_execute("ROLLBACK").await.expect("rollback");
    assert!(b_pid > 0);
    assert_eq!(text(&a, "EXECUTE twice(5)").await, "10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_runs_through_the_pool() {
    let env = Env::start_with(0, pooled(4)).await;
    let pgbench = |args: &[&str]| env.pgbench(args);
    pgbench(&["-i", "-s", "1", "-q"]);
    for mode in ["prepared", "extended", "simple"] {
        let text = pgbench(&["-c", "16", "-j", "2", "-t", "100", "-M", mode]);
        assert!(
            text.contains("number of failed transactions: 0"),
            "{mode}: {text}"
        );
        assert!(
            text.contains("number of transactions actually processed: 1600/1600"),
            "{mode}: {text}"
        );
    }
    assert_eq!(
        env.primary_sql("SELECT count(*) FROM pgbench_history"),
        "1600"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_do_not_leak_between_clients() {
    let env = Env::start_with(0, pooled(1)).await;
    let a = env.connect().await;
    let b = env.connect().await;
    // One server connection: both clients necessarily run on it.
    assert_eq!(pid(&a).await, pid(&b).await);
    a.batch_execute("SET statement_timeout = '1234ms'")
        .await
        .expect("set");
    // A SET inside a transaction counts once committed. (Sent as one multi-statement string it
    // would pin a's session to the connection instead: see the pins test.)
    for sql in ["BEGIN", "SET application_name = 'client_a'", "COMMIT"] {
        a.batch_execute(sql).await.expect(sql);
    }
    assert_eq!(text(&b, "SHOW statement_timeout").await, "0");
    let b_app: String = b
        .query_one("SELECT current_setting('application_name')", &[])
        .await
        .expect("show")
        .get(0);
    assert_ne!(b_app, "client_a");
    assert_eq!(text(&a, "SHOW statement_timeout").await, "1234ms");
    assert_eq!(
        text(&a, "SELECT current_setting('application_name')").await,
        "client_a"
    );
    assert_eq!(text(&b, "SHOW statement_timeout").await, "0");
    // b's own setting stays b's.
    b.batch_execute("SET statement_timeout = '5s'")
        .await
        .expect("set");
    assert_eq!(text(&a, "SHOW statement_timeout").await, "1234ms");
    assert_eq!(text(&b, "SHOW statement_timeout").await, "5s");
    a.batch_execute("RESET ALL").await.expect("reset");
    assert_eq!(text(&a, "SHOW statement_timeout").await, "0");
    // A SET sent with the extended protocol is tracked the same way.
    b.execute("SET search_path TO pg_catalog", &[])
        .await
        .expect("extended SET");
    assert_eq!(text(&b, "SHOW search_path").await, "pg_catalog");
    assert_eq!(text(&a, "SHOW search_path").await, "\"$user\", public");
    assert_eq!(text(&b, "SHOW search_path").await, "pg_catalog");
    assert_eq!(pid(&a).await, pid(&b).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pool_fails_checkout_after_checkout_timeout() {
    let env = Env::start_with(0, |c| {
        pooled(1)(c);
        c.pool.checkout_timeout = Millis(300);
    })
    .await;
    let a = env.connect().await;
    let b = env.connect().await;
    a.batch_execute("BEGIN; SELECT 1").await.expect("begin");
    let e = b
        .simple_query("SELECT 1")
        .await
        .err()
        .expect("the only connection is in a's transaction");
    assert_eq!(sqlstate(&e).as_deref(), Some("53300"), "{e}");
    let message = e.as_db_error().map(|d| d.message().to_string());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("checkout_timeout") && m.contains("pool_size")),
        "{message:?}"
    );
    // The failed checkout costs b nothing else: once a commits, b goes on.
    a.batch_execute("COMMIT").await.expect("commit");
    assert_eq!(text(&b, "SELECT 41 + 1").await, "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_idle_pooled_connections_are_replaced() {
    let env = Env::start_with(0, pooled(3)).await;
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(env.connect().await);
    }
    for c in &clients {
        let _ = c.prepare("SELECT $1::int").await.expect("prepare");
        assert_eq!(text(c, "SELECT 1").await, "1");
    }
    let killed = env.primary_sql(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE usename = 'app' AND backend_type = 'client backend') t",
    );
    assert_ne!(killed, "0", "the pool had connections to terminate");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for c in &clients {
        assert_eq!(text(c, "SELECT 2").await, "2");
        let stmt = c.prepare("SELECT $1::int").await.expect("prepare again");
        let r: i32 = c.query_one(&stmt, &[&7]).await.expect("prepared").get(0);
        assert_eq!(r, 7);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reads_its_own_writes_in_transaction_mode() {
    let cluster = tokio::task::spawn_blocking(|| {
        Cluster::builder()
            .replicas(2)
            .replica_setting(0, "recovery_min_apply_delay", "500ms")
            .replica_setting(1, "recovery_min_apply_delay", "500ms")
            .start()
            .expect("cluster")
    })
    .await
    .expect("join");
    let env = Env::with_cluster(cluster, |c| {
        pooled(4)(c);
        c.consistency.wait_timeout_ms = 2;
    })
    .await;
    env.proxy
        .topology
        .wait_for(Duration::from_secs(15), |t| {
            t.nodes.iter().filter(|n| n.healthy).count() == 3
        })
        .await;
    let setup = env.connect().await;
    setup
        .batch_execute("CREATE TABLE ryw (id int PRIMARY KEY)")
        .await
        .expect("create");
    tokio::task::block_in_place(|| {
        env.cluster
            .wait_replicas_caught_up(Duration::from_secs(30))
            .expect("caught up")
    });
    // Several clients at once, so server connections change hands between their statements.
    let mut tasks = Vec::new();
    for k in 0..4i32 {
        let c = env.connect().await;
        tasks.push(tokio::spawn(async move {
            let mut misses = 0;
            for i in 0..150i32 {
                let id = k * 10_000 + i;
                c.execute("INSERT INTO ryw (id) VALUES ($1)", &[&id])
                    .await
                    .expect("insert");
                let n: i64 = c
                    .query_one("SELECT count(*) FROM ryw WHERE id = $1", &[&id])
                    .await
                    .expect("read")
                    .get(0);
                if n != 1 {
                    misses += 1;
                }
            }
            misses
        }));
    }
    for t in tasks {
        assert_eq!(
            t.await.expect("task"),
            0,
            "a read missed its client's write"
        );
    }
    // The same with eventual consistency misses: the replicas really lag.
    let c = env.connect().await;
    c.batch_execute("SET meridian.consistency = 'eventual'")
        .await
        .expect("set");
    let mut misses = 0;
    for id in 100_000..100_030i32 {
        c.execute("INSERT INTO ryw (id) VALUES ($1)", &[&id])
            .await
            .expect("insert");
        let n: i64 = c
            .query_one("SELECT count(*) FROM ryw WHERE id = $1", &[&id])
            .await
            .expect("read")
            .get(0);
        if n != 1 {
            misses += 1;
        }
    }
    assert!(
        misses > 0,
        "eventual reads on 500ms-late replicas should miss"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_sessions_keep_their_connection() {
    let env = Env::start_with(0, |c| {
        pooled(1)(c);
        c.pool.checkout_timeout = Millis(300);
    })
    .await;
    let a = env.connect().await;
    let b = env.connect().await;
    assert_eq!(text(&b, "SELECT 1").await, "1");
    // A temporary table lives on one server connection: a's session keeps it.
    a.batch_execute("CREATE TEMP TABLE mine (x int); INSERT INTO mine VALUES (7)")
        .await
        .expect("temp table");
    let e = b
        .simple_query("SELECT 1")
        .await
        .err()
        .expect("the only connection is pinned by a");
    assert_eq!(sqlstate(&e).as_deref(), Some("53300"), "{e}");
    assert_eq!(text(&a, "SELECT x FROM mine").await, "7");
    drop(a);
    // Once a is gone its connection is closed (it held a's temp table) and b gets a new one.
    let mut answered = false;
    for _ in 0..50 {
        if let Ok(rows) = b
            .simple_query("SELECT to_regclass('pg_temp.mine') IS NULL")
            .await
        {
            answered = rows
                .iter()
                .any(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get(0) == Some("t")));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "b should get a clean connection once a has left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_warmed_to_min_idle_and_pruned_after_idle_timeout() {
    let env = Env::start_with(0, |c| {
        pooled(3)(c);
        c.pool.min_idle = 2;
        c.pool.idle_timeout = Millis(300);
    })
    .await;
    let counts = |env: &Env| {
        env.proxy
            .state
            .pool_counts()
            .iter()
            .fold((0, 0), |(o, i), (_, open, idle)| (o + open, i + idle))
    };
    let wait_for = |want: (usize, usize)| {
        let env = &env;
        async move {
            for _ in 0..100 {
                if counts(env) == want {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }
    };
    // Three transactions at once open the whole pool.
    let clients = [
        env.connect().await,
        env.connect().await,
        env.connect().await,
    ];
    for c in &clients {
        c.batch_execute("BEGIN").await.expect("begin");
        assert_eq!(text(c, "SELECT 1").await, "1");
    }
    assert_eq!(counts(&env), (3, 0));
    for c in &clients {
        c.batch_execute("COMMIT").await.expect("commit");
    }
    // Idle past idle_timeout, the pool shrinks to min_idle and stays there.
    assert!(
        wait_for((2, 2)).await,
        "pool (open, idle) = {:?}",
        counts(&env)
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(counts(&env), (2, 2));
    assert_eq!(app_backends(&env), 2);
    // Idle connections killed by the server are noticed and replaced up to min_idle, with no
    // client doing anything.
    let before = env.primary_sql(
        "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity \
         WHERE usename = 'app' AND backend_type = 'client backend'",
    );
    env.primary_sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE usename = 'app' AND backend_type = 'client backend'",
    );
    let mut replaced = false;
    for _ in 0..100 {
        let now = env.primary_sql(
            "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity \
             WHERE usename = 'app' AND backend_type = 'client backend'",
        );
        if app_backends(&env) == 2 && now != before && counts(&env) == (2, 2) {
            replaced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(replaced, "pool (open, idle) = {:?}", counts(&env));
    assert_eq!(text(&clients[0], "SELECT 3").await, "3");
}

/// One frontend message: tag, length, body.
fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Parse `name` as `sql` (no parameter types), then Sync.
fn parse_sync(name: &str, sql: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    body.extend_from_slice(sql.as_bytes());
    body.push(0);
    body.extend_from_slice(&0i16.to_be_bytes());
    let mut out = msg(b'P', &body);
    out.extend(msg(b'S', &[]));
    out
}

/// Bind `name` to the unnamed portal (no parameters), Execute, Sync.
fn bind_execute_sync(name: &str) -> Vec<u8> {
    let mut body = vec![0];
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut out = msg(b'B', &body);
    out.extend(msg(b'E', &[0, 0, 0, 0, 0]));
    out.extend(msg(b'S', &[]));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_statements_deallocated_with_sql_are_forgotten() {
    use tokio::io::AsyncWriteExt;
    let env = Env::start_with(0, pooled(2)).await;
    let (mut s, mut buf) = crate::support::raw_login(env.addr()).await;
    let mut query = b"DEALLOCATE a1".to_vec();
    query.push(0);
    let steps: [(Vec<u8>, &[&str]); 6] = [
        (parse_sync("a1", "SELECT 41 + 1"), &[]),
        (bind_execute_sync("a1"), &[]),
        (msg(b'Q', &query), &[]),
        (bind_execute_sync("a1"), &["26000"]),
        // The name can be prepared again, with other text.
        (parse_sync("a1", "SELECT 2"), &[]),
        (bind_execute_sync("a1"), &[]),
    ];
    for (i, (bytes, want)) in steps.into_iter().enumerate() {
        s.write_all(&bytes).await.expect("write");
        let codes = crate::support::read_until_ready(&mut s, &mut buf).await;
        assert_eq!(codes, want, "step {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_sessions_carry_on_after_a_failover() {
    let cluster = tokio::task::spawn_blocking(|| {
        Cluster::builder()
            .replicas(2)
            .synchronous(true)
            .start()
            .expect("cluster")
    })
    .await
    .expect("join");
    let env = Env::with_cluster(cluster, pooled(4)).await;
    env.proxy
        .topology
        .wait_for(Duration::from_secs(15), |t| {
            t.nodes.iter().filter(|n| n.healthy).count() == 3
        })
        .await;
    let setup = env.connect().await;
    setup
        .batch_execute("CREATE TABLE after_failover (id int PRIMARY KEY, app text)")
        .await
        .expect("create");
    let mut clients = Vec::new();
    for i in 0..6 {
        let c = env.connect().await;
        c.batch_execute(&format!("SET application_name = 'client-{i}'"))
            .await
            .expect("set");
        c.execute(
            "INSERT INTO after_failover VALUES ($1, current_setting('application_name'))",
            &[&i],
        )
        .await
        .expect("insert before");
        clients.push(c);
    }
    let old = env.cluster.primary().clone();
    tokio::task::block_in_place(|| old.kill9()).expect("kill -9");
    // The same sessions write again once a new primary is in charge, with their settings.
    for (i, c) in clients.iter().enumerate() {
        let id = 100 + i as i32;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let r = c
                .execute(
                    "INSERT INTO after_failover VALUES ($1, current_setting('application_name'))",
                    &[&id],
                )
                .await;
            match r {
                Ok(_) => break,
                Err(e) => {
                    assert!(!c.is_closed(), "session {i} closed: {e}");
                    assert!(
                        std::time::Instant::now() < deadline,
                        "no write after failover: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let port: i32 = c
            .query_one("/* meridian:primary */ SELECT inet_server_port()", &[])
            .await
            .expect("port")
            .get(0);
        assert_ne!(
            port,
            i32::from(old.port),
            "session {i} still on the old primary"
        );
    }
    let rows = text(
        &clients[0],
        "SELECT string_agg(id || '=' || app, ',' ORDER BY id) FROM after_failover WHERE id >= 100",
    )
    .await;
    assert_eq!(
        rows,
        "100=client-0,101=client-1,102=client-2,103=client-3,104=client-4,105=client-5"
    );
}

/// Tags of the messages up to and including the `n`th ReadyForQuery (ParameterStatus left out:
/// Meridian reports `meridian.lsn` that way).
async fn tags_until_ready(
    s: &mut tokio::net::TcpStream,
    buf: &mut bytes::BytesMut,
    n: usize,
) -> String {
    use tokio::io::AsyncReadExt;
    let mut tags = String::new();
    let mut ready = 0;
    loop {
        while let Some((tag, _)) = meridian_wire::frame::split_frame(buf, 1 << 30).expect("frame") {
            if tag != b'S' {
                tags.push(tag as char);
            }
            if tag == b'Z' {
                ready += 1;
                if ready == n {
                    return tags;
                }
            }
        }
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_buf(buf))
            .await
            .expect("timely answer")
            .expect("read");
        assert!(read > 0, "closed; got {tags}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_prepared_behind_a_pipelined_request_stays_invisible() {
    use tokio::io::AsyncWriteExt;
    let env = Env::start_with(0, pooled(2)).await;
    let (mut a, mut abuf) = crate::support::raw_login(env.addr()).await;
    let (mut b, mut bbuf) = crate::support::raw_login(env.addr()).await;
    a.write_all(&parse_sync("a1", "SELECT 41 + 1"))
        .await
        .expect("write");
    assert_eq!(tags_until_ready(&mut a, &mut abuf, 1).await, "1Z");
    // b's transaction holds the connection a1 was prepared on.
    let mut begin = b"BEGIN".to_vec();
    begin.push(0);
    b.write_all(&msg(b'Q', &begin)).await.expect("write");
    assert_eq!(tags_until_ready(&mut b, &mut bbuf, 1).await, "CZ");
    // a pipelines a query and an execution of a1: both go to the other connection, which needs
    // a1 prepared first while the query is still in flight. Its ParseComplete is Meridian's.
    let mut one = b"SELECT 1".to_vec();
    one.push(0);
    let mut bytes = msg(b'Q', &one);
    bytes.extend(bind_execute_sync("a1"));
    a.write_all(&bytes).await.expect("write");
    assert_eq!(tags_until_ready(&mut a, &mut abuf, 2).await, "TDCZ2DCZ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_whose_result_type_changed_is_prepared_afresh() {
    let env = Env::start_with(0, pooled(2)).await;
    let a = env.connect().await;
    let b = env.connect().await;
    a.batch_execute(
        "CREATE TABLE reshape (id int PRIMARY KEY, a int); INSERT INTO reshape VALUES (1, 2)",
    )
    .await
    .expect("create");
    // Both server connections get the statement: a holds one in a transaction while b
    // prepares it on the other.
    let old = a.prepare("SELECT * FROM reshape").await.expect("prepare");
    a.batch_execute("BEGIN").await.expect("begin");
    assert_eq!(a.query(&old, &[]).await.expect("query")[0].len(), 2);
    let a_pid = pid(&a).await;
    let b_old = b.prepare("SELECT * FROM reshape").await.expect("prepare b");
    assert_eq!(b.query(&b_old, &[]).await.expect("query b")[0].len(), 2);
    assert_ne!(pid(&b).await, a_pid, "b ran beside a's transaction");
    a.batch_execute("COMMIT").await.expect("commit");

    env.primary_sql("ALTER TABLE reshape ADD COLUMN b int");
    // As on Postgres itself: a statement prepared before refuses to run.
    let e = a.query(&old, &[]).await.err().expect("stale statement");
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{e}");
    // Prepared again, it has the new shape on every server connection it runs on, including
    // the one that still holds the copy prepared before the change.
    let new = a
        .prepare("SELECT * FROM reshape")
        .await
        .expect("prepare again");
    let mut pids = HashSet::new();
    for round in 0..10 {
        if round % 2 == 0 {
            b.batch_execute("BEGIN").await.expect("b begin");
            pid(&b).await;
        }
        a.batch_execute("BEGIN").await.expect("a begin");
        let rows = a.query(&new, &[]).await.expect("query again");
        assert_eq!(rows[0].len(), 3);
        pids.insert(pid(&a).await);
        a.batch_execute("COMMIT").await.expect("a commit");
        if round % 2 == 0 {
            b.batch_execute("COMMIT").await.expect("b commit");
        }
    }
    assert_eq!(pids.len(), 2, "ran on both server connections");
    // And for the next client.
    drop(a);
    let d = env.connect().await;
    let s = d
        .prepare("SELECT * FROM reshape")
        .await
        .expect("prepare, next client");
    assert_eq!(
        d.query(&s, &[]).await.expect("query, next client")[0].len(),
        3
    );
}
