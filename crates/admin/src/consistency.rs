//! Data consistency check: per-table checksums on the primary and on other nodes at the same WAL
//! position.
//!
//! For each table: checksum it on the primary inside a repeatable-read snapshot and note
//! `pg_current_wal_lsn()` right after; wait until each replica has replayed past that position
//! and checksum it there; then checksum the primary again. If the primary's checksum changed in
//! between, the comparison is void and the table is retried (a few times). A node that is not in
//! recovery (a fenced former primary, say) cannot replay the primary's WAL: it is compared as it
//! is, which is how a divergent node shows up.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use meridian_session::ProxyState;
use meridian_upstream::{NodeState, Role};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_postgres::{Client, IsolationLevel};

use crate::ApiError;

/// How often a table is checked again when the primary changed during the comparison.
const MAX_ATTEMPTS: u32 = 3;

/// The request body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// Database to check (default: `monitor.database`).
    pub database: Option<String>,
    /// Tables to check, as `name` or `schema.name` (default: every permanent user table).
    pub tables: Option<Vec<String>>,
    /// Nodes to compare with the primary (default: every healthy node but the primary).
    pub nodes: Option<Vec<String>>,
    /// How long to wait for a replica to replay the primary's position, per table (default
    /// 10000 ms).
    pub timeout_ms: Option<u64>,
}

/// One node being compared.
struct Target {
    name: String,
    client: Result<Client, String>,
    in_recovery: bool,
}

/// Runs the check and returns the report.
pub async fn run(state: &ProxyState, req: CheckRequest) -> Result<Value, ApiError> {
    let topo = state.topology.load();
    let primary = topo
        .primary_node()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no primary known"))?
        .clone();
    let database = req
        .database
        .clone()
        .unwrap_or_else(|| state.live.load().monitor.database.clone());
    let timeout = Duration::from_millis(req.timeout_ms.unwrap_or(10_000));
    let mut pclient = connect(state, &primary, &database).await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("cannot connect to the primary {}: {e}", primary.name),
        )
    })?;
    let chosen: Vec<&NodeState> = match &req.nodes {
        Some(names) => names
            .iter()
            .map(|name| {
                topo.nodes
                    .iter()
                    .find(|n| &n.name == name && n.name != primary.name)
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::NOT_FOUND,
                            format!("no node named {name:?} other than the primary"),
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
        None => topo
            .nodes
            .iter()
            .filter(|n| n.name != primary.name && n.healthy)
            .collect(),
    };
    let mut targets = Vec::new();
    for n in chosen {
        let client = connect(state, n, &database).await;
        let in_recovery = match &client {
            Ok(c) => c
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .and_then(|r| r.try_get(0))
                .unwrap_or(n.role == Role::Replica),
            Err(_) => n.role == Role::Replica,
        };
        targets.push(Target {
            name: n.name.clone(),
            client,
            in_recovery,
        });
    }
    let tables = list_tables(&pclient, req.tables.as_deref()).await?;
    let mut reports = Vec::new();
    let (mut matched, mut mismatched, mut errors) = (0, 0, 0);
    for table in &tables {
        let report = match table {
            Ok(rel) => check_table(&mut pclient, &targets, rel, timeout).await,
            Err((name, e)) => json!({
                "table": name, "status": "error", "error": e, "attempts": 0,
                "primary_checksum": null, "primary_rows": null, "lsn": null, "nodes": [],
            }),
        };
        match report["status"].as_str() {
            Some("match") => matched += 1,
            Some("mismatch") => mismatched += 1,
            _ => errors += 1,
        }
        reports.push(report);
    }
    Ok(json!({
        "database": database,
        "primary": primary.name,
        "nodes": targets.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        "tables": reports,
        "summary": {
            "tables": tables.len(),
            "matched": matched,
            "mismatched": mismatched,
            "errors": errors,
        },
        "consistent": mismatched == 0 && errors == 0,
    }))
}

/// The tables to check: the requested ones resolved on the primary, or every permanent user
/// table. Each is the `regclass` text (safely quoted) or `(requested name, error)`.
async fn list_tables(
    c: &Client,
    requested: Option<&[String]>,
) -> Result<Vec<Result<String, (String, String)>>, ApiError> {
    let db_err = |e: tokio_postgres::Error| {
        ApiError::new(StatusCode::BAD_GATEWAY, format!("listing tables: {e}"))
    };
    match requested {
        Some(names) => {
            let mut out = Vec::new();
            for name in names {
                let row = c
                    .query_one("SELECT to_regclass($1::text)::text", &[name])
                    .await;
                out.push(match row.map(|r| r.try_get::<_, Option<String>>(0)) {
                    Ok(Ok(Some(rel))) => Ok(rel),
                    Ok(Ok(None)) => Err((name.clone(), "no such table".to_string())),
                    Ok(Err(e)) | Err(e) => Err((name.clone(), e.to_string())),
                });
            }
            Ok(out)
        }
        None => {
            let rows = c
                .query(
                    "SELECT c.oid::regclass::text FROM pg_class c \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE c.relkind = 'r' AND c.relpersistence = 'p' \
                     AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
                     ORDER BY n.nspname, c.relname",
                    &[],
                )
                .await
                .map_err(db_err)?;
            rows.iter()
                .map(|r| r.try_get::<_, String>(0).map(Ok).map_err(db_err))
                .collect()
        }
    }
}

fn checksum_sql(rel: &str) -> String {
    format!(
        "SELECT md5(COALESCE(string_agg(t::text, ',' ORDER BY t::text), '')), count(*) FROM {rel} AS t"
    )
}

async fn checksum(c: &Client, rel: &str) -> Result<(String, i64), String> {
    let row = c
        .query_one(&checksum_sql(rel), &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        row.try_get(0).map_err(|e| e.to_string())?,
        row.try_get(1).map_err(|e| e.to_string())?,
    ))
}

/// The primary's checksum in a repeatable-read snapshot, and the WAL position after it.
async fn primary_checksum(c: &mut Client, rel: &str) -> Result<(String, i64, String), String> {
    let tx = c
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let row = tx
        .query_one(&checksum_sql(rel), &[])
        .await
        .map_err(|e| e.to_string())?;
    let sum: String = row.try_get(0).map_err(|e| e.to_string())?;
    let rows: i64 = row.try_get(1).map_err(|e| e.to_string())?;
    let lsn: String = tx
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok((sum, rows, lsn))
}

/// Waits until `c` (a replica) has replayed `lsn`; false on timeout.
async fn wait_replay(c: &Client, lsn: &str, timeout: Duration) -> Result<bool, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let reached: Option<bool> = c
            .query_one(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&lsn],
            )
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| e.to_string())?;
        if reached == Some(true) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn check_table(
    pclient: &mut Client,
    targets: &[Target],
    rel: &str,
    timeout: Duration,
) -> Value {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (sum, rows, lsn) = match primary_checksum(pclient, rel).await {
            Ok(v) => v,
            Err(e) => {
                return json!({
                    "table": rel, "status": "error", "error": format!("on the primary: {e}"),
                    "attempts": attempt, "primary_checksum": null, "primary_rows": null,
                    "lsn": null, "nodes": [],
                })
            }
        };
        let mut nodes = Vec::new();
        for t in targets {
            nodes.push(compare_on(t, rel, &lsn, &sum, timeout).await);
        }
        let after = checksum(pclient, rel).await.ok().map(|(s, _)| s);
        let stable = after.as_deref() == Some(sum.as_str());
        if !stable && attempt < MAX_ATTEMPTS {
            continue;
        }
        let status_of = |s: &str| nodes.iter().any(|n| n["status"] == s);
        let status = if !stable {
            "unstable"
        } else if status_of("mismatch") {
            "mismatch"
        } else if status_of("error") || status_of("timeout") {
            "error"
        } else {
            "match"
        };
        return json!({
            "table": rel,
            "status": status,
            "error": if stable { Value::Null } else {
                json!("the table kept changing on the primary during the comparison")
            },
            "attempts": attempt,
            "primary_checksum": sum,
            "primary_rows": rows,
            "lsn": lsn,
            "nodes": nodes,
        });
    }
}

async fn compare_on(t: &Target, rel: &str, lsn: &str, expected: &str, timeout: Duration) -> Value {
    let result = async {
        let c = t.client.as_ref().map_err(|e| ("error", e.clone()))?;
        if t.in_recovery
            && !wait_replay(c, lsn, timeout)
                .await
                .map_err(|e| ("error", e))?
        {
            return Err((
                "timeout",
                format!("did not replay {lsn} within {} ms", timeout.as_millis()),
            ));
        }
        checksum(c, rel).await.map_err(|e| ("error", e))
    }
    .await;
    match result {
        Ok((sum, rows)) => json!({
            "node": t.name,
            "replica": t.in_recovery,
            "status": if sum == expected { "match" } else { "mismatch" },
            "checksum": sum,
            "rows": rows,
            "error": null,
        }),
        Err((status, e)) => json!({
            "node": t.name,
            "replica": t.in_recovery,
            "status": status,
            "checksum": null,
            "rows": null,
            "error": e,
        }),
    }
}

/// A monitor-credentials connection to `node`'s `database`.
async fn connect(state: &ProxyState, node: &NodeState, database: &str) -> Result<Client, String> {
    let config = state.live.load_full();
    let m = &config.monitor;
    let mut pg = tokio_postgres::Config::new();
    pg.host(&node.host)
        .port(node.port)
        .user(&m.user)
        .password(m.password.as_deref().unwrap_or_default())
        .dbname(database)
        .application_name("meridian-consistency")
        .connect_timeout(Duration::from_millis(m.timeout_ms));
    let tls = meridian_upstream::NodeTls::for_host(&config, &node.host, node.port)
        .map_err(|e| e.to_string())?
        .configure(&mut pg);
    let (client, conn) = pg.connect(tls).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}
