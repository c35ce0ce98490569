//! Read-only endpoints: health, readiness, status, lag, events, route.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use meridian_upstream::{HaEvent, NodeState, Role};
use serde_json::{json, Value};

use crate::{Admin, ApiError};

/// `GET /healthz`: the process is up and serving HTTP.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when a primary is known, 503 otherwise.
pub async fn readyz(State(admin): State<Arc<Admin>>) -> Response {
    let topo = admin.state.topology.load();
    match topo.primary_node() {
        Some(p) => Json(json!({ "ready": true, "primary": p.name })).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "primary": null, "reason": "no primary known" })),
        )
            .into_response(),
    }
}

/// The query parameters, or a JSON 400.
fn query(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {}", e.body_text())))
}

/// The last completed promotion in `events`, if any.
pub fn last_failover(events: &[HaEvent]) -> Option<&HaEvent> {
    events
        .iter()
        .rev()
        .find(|e| matches!(e.kind, "failover" | "promote"))
}

/// One event as JSON.
pub fn event_json(e: &HaEvent) -> Value {
    json!({ "at_ms": e.at_ms, "kind": e.kind, "node": e.node, "message": e.message })
}

fn node_json(n: &NodeState, server_connections: u64) -> Value {
    json!({
        "name": n.name,
        "host": n.host,
        "port": n.port,
        "region": n.region,
        "role": n.role.as_str(),
        "healthy": n.healthy,
        "fenced": n.fenced,
        "removed": n.removed,
        "lsn": n.lsn.to_string(),
        "receive_lsn": n.receive_lsn.to_string(),
        "lag_bytes": n.lag_bytes,
        "lag_ms": n.lag_ms,
        "rtt_ms": n.rtt_us as f64 / 1000.0,
        "base_rtt_ms": n.base_rtt_us as f64 / 1000.0,
        "last_ok_ms_ago": n.last_ok.map(|t| t.elapsed().as_millis() as u64),
        "server_connections": server_connections,
    })
}

/// `GET /api/v1/status`: topology, roles, health, lag, last failover, traffic.
pub async fn status(State(admin): State<Arc<Admin>>) -> Json<Value> {
    let state = &admin.state;
    let topo = state.topology.load();
    let conns = state.stats.server_connections();
    let nodes: Vec<Value> = topo
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| node_json(n, conns.get(i).map_or(0, |c| c.open)))
        .collect();
    let events = state.ha.events();
    let s = &state.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let routed: Vec<Value> = s
        .routed_counts()
        .into_iter()
        .map(
            |(target, reason, count)| json!({ "target": target, "reason": reason, "count": count }),
        )
        .collect();
    let cfg = state.live.load();
    let counters = &state.ha.counters;
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "region": cfg.proxy.region,
        "uptime_s": admin.uptime_s(),
        "generation": topo.generation,
        "primary": topo.primary_node().map(|p| p.name.clone()),
        "acknowledged_lsn": state.ha.acked_lsn().to_string(),
        "nodes": nodes,
        "last_failover": last_failover(&events).map(event_json),
        "failovers": {
            "succeeded": counters.succeeded.load(Ordering::Relaxed),
            "failed": counters.failed.load(Ordering::Relaxed),
            "last_duration_ms": counters.last_duration_ms.load(Ordering::Relaxed),
        },
        "traffic": {
            "routed": routed,
            "reads_replica": load(&s.reads_replica),
            "reads_primary_token": load(&s.reads_primary_token),
            "reads_primary_fallback": load(&s.reads_primary_fallback),
            "reads_primary_strong": load(&s.reads_primary_strong),
        },
        "clients": {
            "startup": s.clients_in("startup"),
            "session": s.clients_in("session"),
        },
        "routing": {
            "passthrough": cfg.routing.passthrough,
            "read_replicas": cfg.routing.read_replicas,
            "consistency": cfg.consistency.mode.as_str(),
            "max_replica_lag_bytes": cfg.routing.max_replica_lag_bytes,
            "max_replica_lag_ms": cfg.routing.max_replica_lag_ms,
        },
        "admin": { "token_configured": cfg.proxy.admin_token.is_some() },
    }))
}

/// `GET /api/v1/lag`: replication lag of every replica.
pub async fn lag(State(admin): State<Arc<Admin>>) -> Json<Value> {
    let topo = admin.state.topology.load();
    let config = admin.state.live.load();
    let routing = &config.routing;
    let replicas: Vec<Value> = topo
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, n)| n.role != Role::Primary && Some(*i) != topo.primary && !n.removed)
        .map(|(_, n)| {
            json!({
                "name": n.name,
                "region": n.region,
                "role": n.role.as_str(),
                "healthy": n.healthy,
                "fenced": n.fenced,
                "lsn": n.lsn.to_string(),
                "lag_bytes": n.lag_bytes,
                "lag_ms": n.lag_ms,
                "within_limits": n.healthy && !n.fenced && n.role == Role::Replica
                    && n.lag_bytes <= routing.max_replica_lag_bytes
                    && n.lag_ms <= routing.max_replica_lag_ms,
            })
        })
        .collect();
    Json(json!({
        "primary": topo.primary_node().map(|p| p.name.clone()),
        "primary_lsn": topo.primary_node().map(|p| p.lsn.to_string()),
        "max_replica_lag_bytes": routing.max_replica_lag_bytes,
        "max_replica_lag_ms": routing.max_replica_lag_ms,
        "replicas": replicas,
    }))
}

/// `GET /api/v1/events[?limit=N]`: failover and fencing history, oldest first.
pub async fn events(
    State(admin): State<Arc<Admin>>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let events = admin.state.ha.events();
    let limit = match q.get("limit") {
        None => events.len(),
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request("limit must be a non-negative integer"))?,
    };
    let skip = events.len().saturating_sub(limit);
    let list: Vec<Value> = events.iter().skip(skip).map(event_json).collect();
    Ok(Json(json!({ "events": list })))
}

/// `GET /api/v1/route?sql=...[&database=...][&consistency=...]`: where a statement from a
/// fresh session would go now, and why.
pub async fn route(
    State(admin): State<Arc<Admin>>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let sql = q
        .get("sql")
        .ok_or_else(|| ApiError::bad_request("query parameter sql is required"))?;
    let consistency = match q.get("consistency") {
        None => admin.state.live.load().consistency.mode,
        Some(c) => c.parse().map_err(|_| {
            ApiError::bad_request("consistency must be session, eventual or strong")
        })?,
    };
    let database = q
        .get("database")
        .cloned()
        .unwrap_or_else(|| admin.state.live.load().monitor.database.clone());
    Ok(Json(crate::route::explain(
        &admin.state,
        sql,
        &database,
        consistency,
    )))
}
