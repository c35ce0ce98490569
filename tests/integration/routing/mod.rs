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

mod replicas;
mod sessions;
mod statements;
