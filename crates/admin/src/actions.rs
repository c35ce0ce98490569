//! Mutating endpoints (every `POST`): bearer-token check, then failover, switchover, unfence,
//! reload and the consistency check.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use meridian_upstream::HaReport;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{Admin, ApiError};

/// Checks `Authorization: Bearer <token>` against `proxy.admin_token` in constant time.
pub fn authorize(admin: &Admin, headers: &HeaderMap) -> Result<(), ApiError> {
    let config = admin.state.live.load();
    let Some(expected) = config.proxy.admin_token.as_deref() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "mutating admin calls are disabled: set proxy.admin_token (or proxy.admin_token_env) \
             in the configuration and send it as 'Authorization: Bearer <token>'",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match presented {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing 'Authorization: Bearer <token>' header",
        )),
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid admin token",
        )),
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// Parses a JSON body; an empty body is `T::default()`.
fn body<T: DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// An error string from the failover controller as an HTTP error.
fn ha_error(message: String) -> ApiError {
    let status = if message.starts_with("no node named") {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::CONFLICT
    };
    ApiError::new(status, message)
}

fn report_json(r: &HaReport) -> Value {
    json!({
        "new_primary": r.new_primary,
        "fenced": r.fenced,
        "duration_ms": r.duration_ms,
        "lost_range": r.lost_range.map(|(from, to)| json!({
            "from": from.to_string(),
            "to": to.to_string(),
        })),
    })
}

/// Body of failover and switchover.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToBody {
    to: Option<String>,
}

/// Body of unfence.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeBody {
    node: Option<String>,
}

/// `POST /api/v1/failover` `{"to": "pg2"}` (optional): promote now.
pub async fn failover(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize(&admin, &headers)?;
    let b: ToBody = body(&bytes)?;
    tracing::info!(to = ?b.to, "failover requested through the admin API");
    let report = admin
        .state
        .ha
        .failover(b.to.as_deref())
        .await
        .map_err(ha_error)?;
    Ok(Json(report_json(&report)))
}

/// `POST /api/v1/switchover` `{"to": "pg2"}`: planned switchover without losing writes.
pub async fn switchover(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize(&admin, &headers)?;
    let b: ToBody = body(&bytes)?;
    let to = b
        .to
        .ok_or_else(|| ApiError::bad_request("\"to\" (the node to switch over to) is required"))?;
    tracing::info!(%to, "switchover requested through the admin API");
    let report = admin.state.ha.switchover(&to).await.map_err(ha_error)?;
    Ok(Json(report_json(&report)))
}

/// `POST /api/v1/unfence` `{"node": "pg1"}`: lift a fence after the node was rejoined.
pub async fn unfence(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize(&admin, &headers)?;
    let b: NodeBody = body(&bytes)?;
    let node = b
        .node
        .ok_or_else(|| ApiError::bad_request("\"node\" is required"))?;
    admin.state.ha.unfence(&node).map_err(ha_error)?;
    Ok(Json(json!({ "node": node, "fenced": false })))
}

/// `POST /api/v1/reload`: re-reads the configuration file and applies it. 200 with
/// `{ok, changed, restart_required}`; 400 with `{ok: false, error, errors}` when the new file is
/// refused (the running configuration stays); 409 when there is no file to reload from.
pub async fn reload(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    authorize(&admin, &headers)?;
    let Some(reloader) = admin.state.reloader.get().cloned() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "this Meridian was started without a configuration file to reload",
        ));
    };
    // Reading the file and deriving SCRAM verifiers is blocking work.
    let outcome = tokio::task::spawn_blocking(move || reloader.reload())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("reload: {e}")))?;
    Ok(match outcome {
        Ok(report) => Json(json!({
            "ok": true,
            "changed": report.changed,
            "restart_required": report.restart_required,
        }))
        .into_response(),
        Err(refused) => (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "ok": false,
                "error": refused.to_string(),
                "errors": refused.errors,
            })),
        )
            .into_response(),
    })
}

/// `POST /api/v1/consistency-check`: per-table checksums on the primary and every other node.
pub async fn consistency_check(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize(&admin, &headers)?;
    let request: crate::consistency::CheckRequest = body(&bytes)?;
    let report = crate::consistency::run(&admin.state, request).await?;
    Ok(Json(report))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
