//! Read/write routing against a real primary with streaming replicas: where each statement runs
//! (every check asks the server itself with `inet_server_port()`, or looks at the effect on the
//! primary), explicit transactions, session settings and prepared statements that follow a client
//! from node to node, user functions, hints, lagging and distant replicas, a replica that stops
//! mid-run, round robin, and a mixed pgbench workload.
//!
//! Tests that interleave writes and reads and then assert that the reads ran on a replica use
//! `meridian.consistency = eventual` (see [`eventual`]): under the default `session` mode a read
//! right after the session's own write may legitimately go to the primary, which is not what these
//! tests are about.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_config::{Balance, Config, Consistency};
use meridian_testkit::{creds, Cluster, DelayRelay};
use meridian_upstream::Topology;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage, SimpleQueryRow};

use crate::support::{sqlstate, Env};

/// Bound for anything asynchronous (topology discovery, catalog loads, replication catch-up).
/// A liveness guard, never a performance expectation.
const WAIT: Duration = Duration::from_secs(10);

/// The simplest statement that says where it ran.
const WHERE: &str = "SELECT inet_server_port() AS port";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Which node of the cluster served a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum At {
    Primary,
    /// Index into `cluster.replicas()` (0 is `pg2`).
    Replica(usize),
}

impl At {
    fn is_replica(self) -> bool {
        matches!(self, At::Replica(_))
    }
}

/// The node listening on `port` (what `inet_server_port()` returned).
fn at(env: &Env, port: i32) -> At {
    if i32::from(env.cluster.primary().port) == port {
        return At::Primary;
    }
    match env
        .cluster
        .replicas()
        .iter()
        .position(|r| i32::from(r.port) == port)
    {
        Some(i) => At::Replica(i),
        None => panic!("port {port} is not a node of the cluster"),
    }
}

/// Config tweak: reads may go to any replica within the lag limits, even right after the
/// session's own writes.
fn eventual(cfg: &mut Config) {
    cfg.consistency.mode = Consistency::Eventual;
}

/// Config tweak: local replicas count as equally near even when the machine is busy (the
/// monitor's RTT samples of two loopback replicas can differ by more than the default 2 ms
/// tolerance under load, which would send every read to one of them). For tests that need reads
/// on both replicas.
fn equal_replicas(cfg: &mut Config) {
    cfg.routing.latency_tolerance_ms = 50.0;
}

/// A cluster with `replicas` replicas and Meridian in front, once Meridian's monitor sees every
/// node healthy (replica routing is only possible from then on).
async fn start(replicas: usize, tweak: impl FnOnce(&mut Config)) -> Env {
    let env = Env::start_with(replicas, tweak).await;
    wait_healthy(&env, replicas + 1).await;
    env
}

/// Waits until the proxy's topology shows `nodes` healthy nodes.
async fn wait_healthy(env: &Env, nodes: usize) {
    wait_topology(env, "every node healthy", |t| {
        t.nodes.iter().filter(|n| n.healthy).count() == nodes
    })
    .await;
}

/// Waits (bounded) until `pred` holds for the proxy's topology; fails the test otherwise.
async fn wait_topology(env: &Env, what: &str, mut pred: impl FnMut(&Topology) -> bool) {
    let topo = env
        .proxy
        .topology
        .wait_for(Duration::from_secs(20), &mut pred)
        .await;
    assert!(pred(&topo), "timed out waiting for {what}: {topo:#?}");
}

/// SQL on the primary as the superuser (psql), off the async worker.
fn primary_sql(env: &Env, sql: &str) -> String {
    tokio::task::block_in_place(|| env.primary_sql(sql))
}

/// Waits until every running replica has replayed everything the primary has written.
fn caught_up(env: &Env) {
    tokio::task::block_in_place(|| env.cluster.wait_replicas_caught_up(WAIT))
        .expect("replicas caught up");
}

/// A readable description of a client error (SQLSTATE and message when the server sent one).
fn show(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} {}: {}", d.code().code(), d.severity(), d.message()),
        None => e.to_string(),
    }
}

/// Rows of a simple-protocol query (all result sets).
async fn try_simple_rows(
    c: &Client,
    sql: &str,
) -> Result<Vec<SimpleQueryRow>, tokio_postgres::Error> {
    Ok(c.simple_query(sql)
        .await?
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect())
}

async fn simple_rows(c: &Client, sql: &str) -> Vec<SimpleQueryRow> {
    try_simple_rows(c, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", show(&e)))
}

/// The only row of a simple-protocol query.
async fn simple_row(c: &Client, sql: &str) -> SimpleQueryRow {
    let mut rows = simple_rows(c, sql).await;
    assert_eq!(rows.len(), 1, "{sql}: expected one row");
    rows.remove(0)
}

/// Text of column `name`.
fn text(row: &SimpleQueryRow, name: &str) -> String {
    row.get(name)
        .unwrap_or_else(|| panic!("column {name} is NULL"))
        .to_string()
}

/// The node named by the `port` column.
fn row_at(env: &Env, row: &SimpleQueryRow) -> At {
    let port = text(row, "port");
    at(env, port.parse().expect("port is a number"))
}

/// Runs `sql` (simple protocol) and says where its `port` column was computed.
async fn simple_at(env: &Env, c: &Client, sql: &str) -> At {
    row_at(env, &simple_row(c, sql).await)
}

/// Runs `sql` (extended protocol) and says where its `port` column was computed.
async fn ext_at(env: &Env, c: &Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> At {
    let row = c
        .query_one(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", show(&e)));
    at(env, row.get::<_, i32>("port"))
}

/// Asserts that `sql` runs on a replica with both protocols.
async fn assert_on_replica(env: &Env, c: &Client, sql: &str) {
    let simple = simple_at(env, c, sql).await;
    assert!(simple.is_replica(), "simple {sql}: ran on {simple:?}");
    let ext = ext_at(env, c, sql, &[]).await;
    assert!(ext.is_replica(), "extended {sql}: ran on {ext:?}");
}

/// Asserts that `sql` runs on the primary with both protocols.
async fn assert_on_primary(env: &Env, c: &Client, sql: &str) {
    assert_eq!(simple_at(env, c, sql).await, At::Primary, "simple {sql}");
    assert_eq!(
        ext_at(env, c, sql, &[]).await,
        At::Primary,
        "extended {sql}"
    );
}

/// Retries `f` until it returns true, for at most `WAIT` (for state Meridian learns
/// asynchronously, such as the function catalog).
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if f().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Counts how many of `n` reads (alternating simple and extended protocol, the extended ones
/// through one prepared statement) ran on each node.
async fn spread(env: &Env, c: &Client, n: usize) -> HashMap<At, usize> {
    let stmt = c.prepare(WHERE).await.expect("prepare");
    let mut seen = HashMap::new();
    for i in 0..n {
        let node = if i % 2 == 0 {
            simple_at(env, c, WHERE).await
        } else {
            let row = c
                .query_one(&stmt, &[])
                .await
                .unwrap_or_else(|e| panic!("{WHERE}: {}", show(&e)));
            at(env, row.get::<_, i32>("port"))
        };
        *seen.entry(node).or_insert(0) += 1;
    }
    seen
}

/// Commits small transactions on the primary (directly, not through Meridian) until stopped, so
/// that replicas have WAL to replay.
struct WalWriter {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl WalWriter {
    /// Needs table `wal_gen (pad text)` writable by the app user.
    async fn start(env: &Env) -> WalWriter {
        let url =
            env.cluster
                .primary()
                .url(creds::APP_USER, Some(creds::APP_PASSWORD), creds::APP_DB);
        let (client, conn) = tokio_postgres::connect(&url, NoTls)
            .await
            .expect("direct connection to the primary");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut n = 0;
            while !flag.load(Ordering::Relaxed) {
                client
                    .execute("INSERT INTO wal_gen (pad) VALUES (repeat('x', 200))", &[])
                    .await
                    .expect("insert on the primary");
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            n
        });
        WalWriter { stop, task }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("writer task")
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Reads and writes
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_replicas_and_writes_to_the_primary() {
    let env = start(1, eventual).await;
    primary_sql(
        &env,
        "CREATE TABLE items (id serial PRIMARY KEY, v int NOT NULL);
         CREATE SEQUENCE ids;
         GRANT ALL ON items, items_id_seq, ids TO app;
         INSERT INTO items (v) SELECT g FROM generate_series(1, 10) g;",
    );
    caught_up(&env);
    let c = env.connect().await;

    // Plain reads.
    assert_on_replica(&env, &c, WHERE).await;
    let row = simple_row(
        &c,
        "SELECT count(*) AS n, inet_server_port() AS port FROM items",
    )
    .await;
    assert!(row_at(&env, &row).is_replica());
    assert_eq!(text(&row, "n"), "10");
    let row = c
        .query_one(
            "SELECT sum(v)::int AS s, inet_server_port() AS port FROM items WHERE id <= $1",
            &[&4i32],
        )
        .await
        .expect("extended read");
    assert!(at(&env, row.get("port")).is_replica());
    assert_eq!(row.get::<_, i32>("s"), 10);

    // Everything that writes, locks or needs primary-only state. Each is run with both protocols,
    // and a plain read after each one goes back to a replica.
    let writes = [
        "INSERT INTO items (v) VALUES (100) RETURNING inet_server_port() AS port",
        "UPDATE items SET v = v + 1 WHERE id = 1 RETURNING inet_server_port() AS port",
        "DELETE FROM items WHERE id = (SELECT max(id) FROM items WHERE v = 100) \
         RETURNING inet_server_port() AS port",
        "SELECT v, inet_server_port() AS port FROM items WHERE id = 1 FOR UPDATE",
        "SELECT v, inet_server_port() AS port FROM items WHERE id = 1 FOR SHARE",
        "SELECT nextval('ids') AS n, inet_server_port() AS port",
        "WITH ins AS (INSERT INTO items (v) VALUES (700) RETURNING id) \
         SELECT inet_server_port() AS port FROM ins",
        "SELECT txid_current() AS x, inet_server_port() AS port",
        "SELECT pg_try_advisory_xact_lock(7) AS locked, inet_server_port() AS port",
        "SELECT pg_advisory_xact_lock(8), inet_server_port() AS port",
    ];
    for sql in writes {
        assert_on_primary(&env, &c, sql).await;
        assert_on_replica(&env, &c, WHERE).await;
    }
    // The effects are on the primary: two inserts of 100 and two deletes of them, two updates,
    // two nextval calls, two CTE inserts.
    assert_eq!(
        primary_sql(
            &env,
            "SELECT (SELECT count(*) FROM items WHERE v = 100) || ',' || \
                    (SELECT v FROM items WHERE id = 1) || ',' || \
                    (SELECT last_value FROM ids) || ',' || \
                    (SELECT count(*) FROM items WHERE v = 700)"
        ),
        "0,3,2,2"
    );

    // DDL through Meridian, both protocols: it must run on the primary (a replica refuses it).
    c.simple_query("CREATE TABLE made_simple (x int)")
        .await
        .unwrap_or_else(|e| panic!("CREATE TABLE (simple): {}", show(&e)));
    c.execute("CREATE TABLE made_extended (x int)", &[])
        .await
        .unwrap_or_else(|e| panic!("CREATE TABLE (extended): {}", show(&e)));
    assert_eq!(
        primary_sql(
            &env,
            "SELECT string_agg(relname || ':' || pg_get_userbyid(relowner), ',' ORDER BY relname) \
             FROM pg_class WHERE relname IN ('made_simple', 'made_extended')"
        ),
        "made_extended:app,made_simple:app"
    );
    assert_on_replica(&env, &c, WHERE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_advisory_locks_run_on_the_primary_and_keep_the_session_there() {
    let env = start(1, eventual).await;
    let c = env.connect().await;
    assert_on_replica(&env, &c, WHERE).await;

    let row = simple_row(
        &c,
        "SELECT pg_try_advisory_lock(42) AS locked, inet_server_port() AS port",
    )
    .await;
    assert_eq!(row_at(&env, &row), At::Primary);
    assert_eq!(text(&row, "locked"), "t");
    assert_eq!(
        simple_at(
            &env,
            &c,
            "SELECT pg_advisory_lock(43), inet_server_port() AS port"
        )
        .await,
        At::Primary
    );
    assert_eq!(
        primary_sql(
            &env,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid IN (42, 43)"
        ),
        "2"
    );
    // The lock belongs to that backend: the session stays there for everything after it, and
    // the unlock finds the lock.
    assert_on_primary(&env, &c, WHERE).await;
    let row = c
        .query_one(
            "SELECT pg_advisory_unlock(42) AS a, pg_advisory_unlock(43) AS b, \
             inet_server_port() AS port",
            &[],
        )
        .await
        .expect("unlock");
    assert_eq!(at(&env, row.get("port")), At::Primary);
    assert!(row.get::<_, bool>("a") && row.get::<_, bool>("b"));
}

// ---------------------------------------------------------------------------------------------
// 2. Transactions
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_write_transaction_runs_entirely_on_the_primary() {
    let env = start(2, eventual).await;
    primary_sql(
        &env,
        "CREATE TABLE tx_log (id serial PRIMARY KEY, port int NOT NULL);
         GRANT ALL ON tx_log, tx_log_id_seq TO app;",
    );
    caught_up(&env);
    let mut c = env.connect().await;
    let insert = "INSERT INTO tx_log (port) VALUES (inet_server_port()) RETURNING port";

    for _ in 0..3 {
        c.batch_execute("BEGIN").await.expect("BEGIN");
        assert_eq!(simple_at(&env, &c, WHERE).await, At::Primary);
        assert_eq!(ext_at(&env, &c, WHERE, &[]).await, At::Primary);
        assert_eq!(simple_at(&env, &c, insert).await, At::Primary);
        assert_eq!(simple_at(&env, &c, WHERE).await, At::Primary);
        assert_eq!(ext_at(&env, &c, WHERE, &[]).await, At::Primary);
        c.batch_execute("COMMIT").await.expect("COMMIT");
        // Outside the transaction reads go back to replicas.
        assert!(simple_at(&env, &c, WHERE).await.is_replica());
    }

    // The same through tokio-postgres' transaction API (BEGIN, then extended-protocol statements).
    let tx = c.transaction().await.expect("begin");
    for sql in [WHERE, insert, WHERE] {
        let row = tx.query_one(sql, &[]).await.expect("in transaction");
        assert_eq!(at(&env, row.get("port")), At::Primary, "{sql}");
    }
    tx.commit().await.expect("commit");

    // A rolled-back transaction leaves nothing behind.
    let tx = c.transaction().await.expect("begin");
    tx.execute(insert, &[]).await.expect("insert");
    tx.rollback().await.expect("rollback");

    assert_eq!(
        primary_sql(
            &env,
            "SELECT count(*) || ',' || count(*) FILTER (WHERE port = inet_server_port()) FROM tx_log"
        ),
        "4,4"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_transaction_runs_entirely_on_one_replica() {
    let env = start(2, eventual).await;
    let mut c = env.connect().await;
    for round in 0..4 {
        c.batch_execute("BEGIN READ ONLY").await.expect("BEGIN");
        let mut nodes = Vec::new();
        for i in 0..6 {
            nodes.push(if i % 2 == 0 {
                simple_at(&env, &c, WHERE).await
            } else {
                ext_at(&env, &c, WHERE, &[]).await
            });
        }
        let row = simple_row(&c, "SELECT current_setting('transaction_read_only') AS ro").await;
        assert_eq!(text(&row, "ro"), "on");
        c.batch_execute("COMMIT").await.expect("COMMIT");
        assert!(nodes[0].is_replica(), "round {round}: {nodes:?}");
        assert!(
            nodes.iter().all(|n| *n == nodes[0]),
            "round {round}: statements of one transaction ran on {nodes:?}"
        );
    }

    // tokio-postgres' builder: START TRANSACTION READ ONLY, then extended-protocol statements.
    for _ in 0..2 {
        let tx = c
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .expect("start transaction read only");
        let mut nodes = Vec::new();
        for _ in 0..4 {
            let row = tx.query_one(WHERE, &[]).await.expect("read");
            nodes.push(at(&env, row.get("port")));
        }
        tx.commit().await.expect("commit");
        assert!(nodes[0].is_replica(), "{nodes:?}");
        assert!(nodes.iter().all(|n| *n == nodes[0]), "{nodes:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Session settings
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_follow_the_client_to_every_node() {
    let env = start(1, eventual).await;
    primary_sql(
        &env,
        "CREATE SCHEMA app_s AUTHORIZATION app;
         CREATE TABLE app_s.only_here (id serial PRIMARY KEY, note text);
         GRANT ALL ON app_s.only_here, app_s.only_here_id_seq TO app;
         INSERT INTO app_s.only_here (note) VALUES ('seed');",
    );
    caught_up(&env);
    let c = env.connect().await;
    let initial_app = text(
        &simple_row(&c, "SHOW application_name").await,
        "application_name",
    );

    // `only_here` resolves only with the search_path set, so each check also proves the setting
    // is in effect for name resolution where the statement ran.
    const READ: &str = "SELECT current_setting('search_path') AS sp, \
        current_setting('application_name') AS app, \
        current_setting('statement_timeout') AS st, \
        (SELECT count(*) FROM only_here) AS n, inet_server_port() AS port";
    const WRITE: &str =
        "INSERT INTO only_here (note) VALUES (current_setting('application_name')) \
        RETURNING current_setting('search_path') AS sp, \
        current_setting('application_name') AS app, \
        current_setting('statement_timeout') AS st, \
        id AS n, inet_server_port() AS port";

    /// (search_path, application_name, statement_timeout) on a replica and on the primary, each
    /// read with both protocols.
    async fn settings(env: &Env, c: &Client) -> [(String, String, String); 4] {
        let mut out = Vec::new();
        for (sql, want) in [(READ, "replica"), (WRITE, "primary")] {
            let row = simple_row(c, sql).await;
            let node = row_at(env, &row);
            assert_eq!(
                node.is_replica(),
                want == "replica",
                "simple {sql}: {node:?}"
            );
            out.push((text(&row, "sp"), text(&row, "app"), text(&row, "st")));
            let row = c
                .query_one(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("extended {sql}: {}", show(&e)));
            let node = at(env, row.get("port"));
            assert_eq!(
                node.is_replica(),
                want == "replica",
                "extended {sql}: {node:?}"
            );
            out.push((row.get("sp"), row.get("app"), row.get("st")));
        }
        out.try_into().expect("four results")
    }
    fn all_are(got: &[(String, String, String); 4], sp: &str, app: &str, st: &str) -> bool {
        got.iter().all(|(a, b, c)| a == sp && b == app && c == st)
    }

    // search_path set while the session is on the primary (where it starts) ...
    c.batch_execute("SET search_path = app_s, public")
        .await
        .expect("SET search_path");
    assert!(simple_at(&env, &c, WHERE).await.is_replica());
    // ... the others while it is on the replica.
    c.batch_execute("SET application_name = 'routing-test'")
        .await
        .expect("SET application_name");
    c.batch_execute("SET statement_timeout = '5s'")
        .await
        .expect("SET statement_timeout");
    let got = settings(&env, &c).await;
    assert!(
        all_are(&got, "app_s, public", "routing-test", "5s"),
        "{got:?}"
    );
    let shown = simple_row(&c, "SHOW application_name").await;
    assert_eq!(text(&shown, "application_name"), "routing-test");

    // A SET inside a rolled-back transaction (read-write on the primary, read-only on a
    // replica) is not replayed anywhere.
    c.batch_execute("BEGIN").await.expect("BEGIN");
    c.batch_execute("SET statement_timeout = '7s'")
        .await
        .expect("SET in transaction");
    c.batch_execute("ROLLBACK").await.expect("ROLLBACK");
    c.batch_execute("BEGIN READ ONLY")
        .await
        .expect("BEGIN READ ONLY");
    c.batch_execute("SET application_name = 'rolled-back'")
        .await
        .expect("SET in read-only transaction");
    c.batch_execute("ROLLBACK").await.expect("ROLLBACK");
    let got = settings(&env, &c).await;
    assert!(
        all_are(&got, "app_s, public", "routing-test", "5s"),
        "after ROLLBACK: {got:?}"
    );

    // A SET inside a committed transaction is kept; SET LOCAL is not.
    c.batch_execute("BEGIN").await.expect("BEGIN");
    c.batch_execute("SET statement_timeout = '6s'")
        .await
        .expect("SET in transaction");
    c.batch_execute("COMMIT").await.expect("COMMIT");
    c.batch_execute("BEGIN").await.expect("BEGIN");
    c.batch_execute("SET LOCAL statement_timeout = '9s'")
        .await
        .expect("SET LOCAL");
    c.batch_execute("COMMIT").await.expect("COMMIT");
    let got = settings(&env, &c).await;
    assert!(
        all_are(&got, "app_s, public", "routing-test", "6s"),
        "after COMMIT: {got:?}"
    );

    // A SET through the extended protocol counts too.
    c.execute("SET statement_timeout = '4s'", &[])
        .await
        .expect("extended SET");
    let got = settings(&env, &c).await;
    assert!(
        all_are(&got, "app_s, public", "routing-test", "4s"),
        "after extended SET: {got:?}"
    );

    // RESET one setting.
    c.batch_execute("RESET application_name")
        .await
        .expect("RESET");
    let got = settings(&env, &c).await;
    assert!(
        all_are(&got, "app_s, public", &initial_app, "4s"),
        "after RESET: {got:?}"
    );

    // RESET ALL: the search_path is gone on every node, so `only_here` no longer resolves.
    c.batch_execute("RESET ALL").await.expect("RESET ALL");
    let row = simple_row(
        &c,
        "SELECT current_setting('search_path') AS sp, current_setting('statement_timeout') AS st, \
         inet_server_port() AS port",
    )
    .await;
    assert!(row_at(&env, &row).is_replica());
    assert_eq!(
        (text(&row, "sp"), text(&row, "st")),
        ("\"$user\", public".to_string(), "0".to_string())
    );
    for sql in [READ, WRITE] {
        let err = c
            .simple_query(sql)
            .await
            .err()
            .unwrap_or_else(|| panic!("{sql} after RESET ALL should not resolve only_here"));
        assert_eq!(sqlstate(&err).as_deref(), Some("42P01"), "{}", show(&err));
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Prepared statements
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_prepared_statements_run_wherever_they_are_routed() {
    let env = start(2, |cfg| {
        eventual(cfg);
        equal_replicas(cfg);
    })
    .await;
    primary_sql(
        &env,
        "CREATE TABLE pw (id serial PRIMARY KEY, v int NOT NULL, port int NOT NULL);
         GRANT ALL ON pw, pw_id_seq TO app;",
    );
    caught_up(&env);
    let c = env.connect().await;
    let read = c
        .prepare("SELECT $1::int + 1 AS next, inet_server_port() AS port")
        .await
        .expect("prepare read");
    let write = c
        .prepare("INSERT INTO pw (v, port) VALUES ($1, inet_server_port()) RETURNING v, port")
        .await
        .expect("prepare write");
    let mut reads = HashMap::new();
    for i in 0..30i32 {
        let r = c
            .query_one(&read, &[&i])
            .await
            .unwrap_or_else(|e| panic!("read {i}: {}", show(&e)));
        assert_eq!(r.get::<_, i32>("next"), i + 1);
        let node = at(&env, r.get("port"));
        assert!(node.is_replica(), "read {i} ran on {node:?}");
        *reads.entry(node).or_insert(0) += 1;
        let w = c
            .query_one(&write, &[&i])
            .await
            .unwrap_or_else(|e| panic!("write {i}: {}", show(&e)));
        assert_eq!(w.get::<_, i32>("v"), i);
        assert_eq!(at(&env, w.get("port")), At::Primary, "write {i}");
    }
    assert_eq!(
        primary_sql(&env, "SELECT count(*) || ',' || sum(v) FROM pw"),
        "30,435"
    );
    // Re-preparing where needed happened on both replicas (round robin over equal replicas).
    assert_eq!(reads.len(), 2, "reads ran on {reads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepared_statements_run_wherever_they_are_executed() {
    let env = start(2, |cfg| {
        eventual(cfg);
        equal_replicas(cfg);
    })
    .await;
    primary_sql(
        &env,
        "CREATE TABLE pw (id serial PRIMARY KEY, v int NOT NULL, port int NOT NULL);
         GRANT ALL ON pw, pw_id_seq TO app;",
    );
    caught_up(&env);
    let c = env.connect().await;
    c.batch_execute("PREPARE r AS SELECT inet_server_port() AS port, 'first'::text AS tag")
        .await
        .expect("PREPARE r");
    c.batch_execute(
        "PREPARE w (int) AS INSERT INTO pw (v, port) VALUES ($1, inet_server_port()) RETURNING port",
    )
    .await
    .expect("PREPARE w");
    let mut reads = HashMap::new();
    for i in 0..6 {
        let row = simple_row(&c, "EXECUTE r").await;
        let node = row_at(&env, &row);
        assert!(node.is_replica(), "EXECUTE r ran on {node:?}");
        assert_eq!(text(&row, "tag"), "first");
        *reads.entry(node).or_insert(0) += 1;
        assert_eq!(
            simple_at(&env, &c, &format!("EXECUTE w({})", 1000 + i)).await,
            At::Primary
        );
    }
    assert_eq!(reads.len(), 2, "EXECUTE r ran on {reads:?}");
    assert_eq!(
        primary_sql(
            &env,
            "SELECT count(*) || ',' || count(*) FILTER (WHERE port = inet_server_port()) FROM pw"
        ),
        "6,6"
    );

    // DEALLOCATE removes them wherever they were prepared ...
    c.batch_execute("DEALLOCATE r").await.expect("DEALLOCATE r");
    c.batch_execute("DEALLOCATE w").await.expect("DEALLOCATE w");
    for sql in ["EXECUTE r", "EXECUTE w(1)"] {
        let err = c
            .simple_query(sql)
            .await
            .err()
            .unwrap_or_else(|| panic!("{sql} after DEALLOCATE succeeded"));
        assert_eq!(sqlstate(&err).as_deref(), Some("26000"), "{}", show(&err));
    }
    // ... so the names can be used again, and every node runs the new statement.
    c.batch_execute("PREPARE r AS SELECT inet_server_port() AS port, 'second'::text AS tag")
        .await
        .expect("PREPARE r again");
    let mut reads = HashMap::new();
    for _ in 0..6 {
        let row = simple_row(&c, "EXECUTE r").await;
        let node = row_at(&env, &row);
        assert!(node.is_replica(), "EXECUTE r ran on {node:?}");
        assert_eq!(text(&row, "tag"), "second");
        *reads.entry(node).or_insert(0) += 1;
    }
    assert_eq!(reads.len(), 2, "EXECUTE r ran on {reads:?}");
    c.batch_execute("DEALLOCATE ALL")
        .await
        .expect("DEALLOCATE ALL");
    let err = c
        .simple_query("EXECUTE r")
        .await
        .err()
        .expect("EXECUTE r after DEALLOCATE ALL fails");
    assert_eq!(sqlstate(&err).as_deref(), Some("26000"), "{}", show(&err));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepared_statements_can_be_executed_through_the_extended_protocol() {
    // Drivers that only speak the extended protocol send `EXECUTE name` as Parse/Bind/Execute.
    let env = start(1, eventual).await;
    let c = env.connect().await;
    // Prepared while the session is on the primary, where it starts.
    c.batch_execute("PREPARE r AS SELECT inet_server_port() AS port")
        .await
        .expect("PREPARE r");
    for i in 0..4 {
        let row = c
            .query_one("EXECUTE r", &[])
            .await
            .unwrap_or_else(|e| panic!("extended EXECUTE r #{i}: {}", show(&e)));
        assert!(at(&env, row.get("port")).is_replica());
    }
}

// ---------------------------------------------------------------------------------------------
// 5. User-defined functions
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_functions_are_routed_by_volatility_and_configuration() {
    let env = start(1, |cfg| {
        eventual(cfg);
        cfg.routing.read_only_functions = vec!["f_vol_read".into()];
        cfg.routing.write_functions = vec!["f_stable_forced".into()];
    })
    .await;
    primary_sql(
        &env,
        "CREATE TABLE fn_log (id serial PRIMARY KEY, v int NOT NULL, port int NOT NULL);
         GRANT ALL ON fn_log, fn_log_id_seq TO app;
         CREATE FUNCTION f_insert(x int) RETURNS int LANGUAGE sql VOLATILE
           AS $$ INSERT INTO fn_log (v, port) VALUES (x, inet_server_port()) RETURNING port $$;
         CREATE FUNCTION f_stable() RETURNS int LANGUAGE sql STABLE
           AS $$ SELECT inet_server_port() $$;
         CREATE FUNCTION f_immutable(x int) RETURNS int LANGUAGE sql IMMUTABLE
           AS $$ SELECT x * 2 $$;
         CREATE FUNCTION f_vol_read() RETURNS int LANGUAGE sql VOLATILE
           AS $$ SELECT inet_server_port() $$;
         CREATE FUNCTION f_vol_unlisted() RETURNS int LANGUAGE sql VOLATILE
           AS $$ SELECT inet_server_port() $$;
         CREATE FUNCTION f_stable_forced() RETURNS int LANGUAGE sql STABLE
           AS $$ SELECT inet_server_port() $$;",
    );
    caught_up(&env);
    let c = env.connect().await;

    // A VOLATILE function that writes runs on the primary, and works.
    for i in 0..3 {
        assert_eq!(
            simple_at(&env, &c, &format!("SELECT f_insert({i}) AS port")).await,
            At::Primary
        );
        assert_eq!(
            ext_at(&env, &c, "SELECT f_insert($1) AS port", &[&(10 + i)]).await,
            At::Primary
        );
    }
    assert_eq!(
        primary_sql(
            &env,
            "SELECT count(*) || ',' || sum(v) || ',' || \
             count(*) FILTER (WHERE port = inet_server_port()) FROM fn_log"
        ),
        "6,36,6"
    );

    // STABLE and IMMUTABLE functions go to a replica once Meridian has loaded the catalog
    // (asynchronously: retried, bounded).
    eventually("a STABLE function to run on a replica", || async {
        simple_at(&env, &c, "SELECT f_stable() AS port")
            .await
            .is_replica()
    })
    .await;
    for _ in 0..3 {
        assert_on_replica(&env, &c, "SELECT f_stable() AS port").await;
    }
    eventually("an IMMUTABLE function to run on a replica", || async {
        simple_at(
            &env,
            &c,
            "SELECT f_immutable(21) AS x, inet_server_port() AS port",
        )
        .await
        .is_replica()
    })
    .await;
    let row = c
        .query_one(
            "SELECT f_immutable($1) AS x, inet_server_port() AS port",
            &[&21i32],
        )
        .await
        .expect("immutable");
    assert_eq!(row.get::<_, i32>("x"), 42);
    assert!(at(&env, row.get("port")).is_replica());

    // routing.read_only_functions sends a VOLATILE function to a replica; an unlisted VOLATILE
    // one (same body) still goes to the primary.
    assert_on_replica(&env, &c, "SELECT f_vol_read() AS port").await;
    assert_on_primary(&env, &c, "SELECT f_vol_unlisted() AS port").await;
    // routing.write_functions forces a STABLE function to the primary.
    assert_on_primary(&env, &c, "SELECT f_stable_forced() AS port").await;
    // ... while the other STABLE one still reads from a replica.
    assert_on_replica(&env, &c, "SELECT f_stable() AS port").await;
}

// ---------------------------------------------------------------------------------------------
// 6. Hints
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_hints_override_the_classification() {
    let env = start(1, eventual).await;
    primary_sql(
        &env,
        "CREATE TABLE hinted (x int);
         GRANT ALL ON hinted TO app;
         CREATE FUNCTION f_report() RETURNS int LANGUAGE sql VOLATILE
           AS $$ SELECT inet_server_port() $$;",
    );
    caught_up(&env);
    let c = env.connect().await;

    assert_on_replica(&env, &c, WHERE).await;
    assert_on_primary(&env, &c, &format!("/* meridian:primary */ {WHERE}")).await;
    assert_on_primary(&env, &c, &format!("-- meridian:primary\n{WHERE}")).await;

    // A read Meridian cannot parse goes to the primary, unless hinted.
    let unparsable =
        "SELECT inet_server_port() AS port FROM ROWS FROM (generate_series(1, 1)) AS g(x)";
    assert_on_primary(&env, &c, unparsable).await;
    assert_on_replica(&env, &c, &format!("/* meridian:replica */ {unparsable}")).await;
    // Likewise a function of unknown or VOLATILE volatility.
    assert_on_primary(&env, &c, "SELECT f_report() AS port").await;
    assert_on_replica(&env, &c, "/* meridian:replica */ SELECT f_report() AS port").await;

    // The replica hint never moves a write.
    assert_on_primary(
        &env,
        &c,
        "/* meridian:replica */ INSERT INTO hinted VALUES (1) RETURNING inet_server_port() AS port",
    )
    .await;
    assert_eq!(primary_sql(&env, "SELECT count(*) FROM hinted"), "2");
}

// ---------------------------------------------------------------------------------------------
// 7. Lag
// ---------------------------------------------------------------------------------------------

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
        cfg.routing.max_replica_lag_ms = 500;
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
    wait_topology(&env, "pg3 lagging beyond 500 ms", |t| {
        t.nodes[2].lag_ms > 500
    })
    .await;
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
    wait_topology(&env, "both replicas lagging beyond 500 ms", |t| {
        t.nodes[1].lag_ms > 500 && t.nodes[2].lag_ms > 500
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
            && t.nodes[2].rtt_us >= 30_000
            && t.nodes[1].rtt_us < t.nodes[2].rtt_us
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
