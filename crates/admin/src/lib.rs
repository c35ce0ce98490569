//! Meridian's admin side, served over HTTP on `proxy.admin_listen`:
//!
//! * `GET /metrics`: Prometheus text exposition from a `prometheus::Registry`;
//! * `GET /healthz`, `GET /readyz`: for orchestrators (ready = a primary is known);
//! * `/api/v1/...`: the JSON admin API (status, lag, route, events, failover, switchover,
//!   unfence, reload, consistency check), described by `docs/openapi.json`, which is served at
//!   `/api/v1/openapi.json`;
//! * `GET /`: the status dashboard, one self-contained HTML page.
//!
//! Mutating calls (every `POST`) need `Authorization: Bearer <proxy.admin_token>`; without a
//! configured token they are refused with 403.

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use meridian_session::ProxyState;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::watch;

mod actions;
mod api;
pub mod client;
mod consistency;
mod error;
mod metrics;
mod route;

pub use error::ApiError;
pub use metrics::ProxyCollector;

/// The OpenAPI description of the admin API (`docs/openapi.json`).
pub const OPENAPI_JSON: &str = include_str!("../../../docs/openapi.json");

/// The dashboard page.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// Everything the admin handlers share.
pub struct Admin {
    /// The proxy's shared state (configuration, topology, failover controller, stats).
    pub state: Arc<ProxyState>,
    registry: Registry,
    started: Instant,
}

impl Admin {
    /// Builds the admin side for `state`, registering every metric.
    pub fn new(state: Arc<ProxyState>) -> Result<Arc<Admin>, prometheus::Error> {
        let registry = Registry::new();
        registry.register(Box::new(ProxyCollector::new(state.clone())?))?;
        for c in state.stats.collectors() {
            registry.register(c)?;
        }
        Ok(Arc::new(Admin {
            state,
            registry,
            started: Instant::now(),
        }))
    }

    /// The metrics in Prometheus' text format.
    pub fn render_metrics(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }

    /// Seconds since the admin side started.
    pub fn uptime_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// The HTTP routes.
pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/lag", get(api::lag))
        .route("/api/v1/route", get(api::route))
        .route("/api/v1/events", get(api::events))
        .route("/api/v1/failover", post(actions::failover))
        .route("/api/v1/switchover", post(actions::switchover))
        .route("/api/v1/unfence", post(actions::unfence))
        .route("/api/v1/reload", post(actions::reload))
        .route(
            "/api/v1/consistency-check",
            post(actions::consistency_check),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(admin)
}

/// Serves the admin API on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut shutdown: watch::Receiver<bool>) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    if admin.state.live.load().proxy.admin_token.is_none() {
        tracing::info!("proxy.admin_token is not set: mutating admin API calls are refused");
    }
    tracing::info!(admin_addr = ?addr, "admin API listening");
    let stop = async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
    };
    if let Err(e) = axum::serve(listener, router(admin))
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::warn!(error = %e, "admin API stopped");
    }
}

async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        DASHBOARD_HTML,
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn metrics_text(axum::extract::State(admin): axum::extract::State<Arc<Admin>>) -> Response {
    match admin.render_metrics() {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("metrics: {e}"))
            .into_response(),
    }
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
    )
}
