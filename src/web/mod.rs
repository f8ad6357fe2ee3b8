//! HTTP: the REST API under `/api/`, the desktops' WebSocket at `/ws`, `/metrics` and
//! `/healthz`. Thin by design: handlers check input and rights and call the store, the ACD or
//! the event bus; no business rule lives here.

pub mod api;
pub mod auth;
pub mod error;
pub mod ws;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::info;

use crate::acd::runtime::AcdHandle;
use crate::events::EventBus;
use crate::store::Store;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub bus: Arc<dyn EventBus>,
    pub acd: AcdHandle,
    /// The SIP realm, for the HA1s of phones that register with screenpop.
    pub realm: String,
    /// Region for reading phone numbers typed without a country code.
    pub region: phonenumber::country::Id,
    /// Open desktops per agent: when an agent's last one closes, the agent goes offline.
    pub desktops: Arc<std::sync::Mutex<std::collections::HashMap<i64, usize>>>,
}

/// The process-wide Prometheus recorder (installed once; later calls share it).
pub fn metrics_handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .as_ref()
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/ws", get(ws::upgrade))
        .nest("/api", api::router())
        .with_state(state)
}

/// Binds `addr` and serves in the background; an address in use fails start-up.
pub async fn spawn(addr: SocketAddr, state: AppState) -> anyhow::Result<SocketAddr> {
    metrics_handle();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    info!(http = %local, "HTTP API and WebSocket ready");
    let app = router(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok(local)
}

async fn healthz(
    axum::extract::State(s): axum::extract::State<AppState>,
) -> impl axum::response::IntoResponse {
    use axum::http::StatusCode;
    match sqlx::query("SELECT 1").execute(s.store.pool()).await {
        Ok(_) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ok"})),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                serde_json::json!({"status": "database unavailable", "error": e.to_string()}),
            ),
        ),
    }
}

async fn metrics() -> impl axum::response::IntoResponse {
    let body = metrics_handle().map(|h| h.render()).unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
}
