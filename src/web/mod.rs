//! HTTP: the pages (`/`, `/login`, `/agent`, `/supervisor`), the REST API under `/api/`, the
//! desktops' WebSocket at `/ws`, `/metrics` and `/healthz`. Thin by design: handlers check input
//! and rights and call the store, the ACD or the event bus; no business rule lives here.

pub mod api;
pub mod auth;
pub mod blocks;
pub mod campaigns;
pub mod error;
pub mod limits;
pub mod pages;
pub mod stats;
pub mod webhooks;
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
pub(crate) struct AppState {
    pub store: Store,
    pub bus: Arc<dyn EventBus>,
    pub acd: AcdHandle,
    /// Accounts, changed together with the registrar and the ACD.
    pub agents: Arc<crate::agents::Agents>,
    /// How numbers typed without their country or area code are read.
    pub plan: crate::phone::NumberPlan,
    /// Failed logins per address and per username.
    pub logins: Arc<limits::LoginGuard>,
    /// The wallboard's live view, kept from the events.
    pub board: stats::SharedBoard,
    /// Recent playbacks, so that one playback is one audit entry.
    pub plays: Arc<limits::RecentPlays>,
    /// Webhook delivery, which the API's changes to webhooks reach at once.
    pub webhooks: crate::webhooks::Webhooks,
    /// The live calls on this node, for call control.
    pub controls: Arc<crate::calls::control::Controls>,
    /// Places calls for agents (click-to-dial); `None` without SIP.
    pub dialer: Option<crate::calls::placing::Dialer>,
    /// The campaign runner, woken when a campaign starts, pauses or resumes.
    pub campaigns: crate::campaigns::runner::Campaigns,
    /// Sources blocked for guessing SIP passwords (the admin lists and lifts them).
    pub sip_guard: Arc<crate::guard::SharedGuard>,
    /// The same for `POST /api/login`.
    pub http_guard: Arc<crate::guard::SharedGuard>,
}

impl AppState {
    /// The state for a server on `store`, `bus` and `acd`; starts following the bus for the
    /// wallboard and for webhooks.
    pub fn new(
        store: Store,
        bus: Arc<dyn EventBus>,
        acd: AcdHandle,
        registrar: Arc<std::sync::Mutex<crate::sip::registrar::Registrar>>,
        realm: String,
        plan: crate::phone::NumberPlan,
    ) -> AppState {
        AppState {
            agents: Arc::new(crate::agents::Agents::new(
                store.clone(),
                registrar,
                acd.clone(),
                bus.clone(),
                realm.clone(),
            )),
            webhooks: crate::webhooks::Webhooks::spawn(store.clone(), bus.clone()),
            store,
            board: stats::follow(bus.clone()),
            bus,
            acd,
            plan,
            logins: Arc::new(limits::LoginGuard::new(limits::LoginLimits::default())),
            plays: Arc::default(),
            controls: crate::calls::control::Controls::new(),
            dialer: None,
            campaigns: crate::campaigns::runner::Campaigns::detached(
                std::env::current_dir().unwrap_or_default(),
            ),
            sip_guard: Arc::default(),
            http_guard: Arc::default(),
        }
    }
}

/// The process-wide Prometheus recorder (installed once; later calls share it).
pub(crate) fn metrics_handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .as_ref()
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::root))
        .route("/login", get(pages::login))
        .route("/agent", get(pages::agent))
        .route("/supervisor", get(pages::supervisor))
        .route("/assets/{*path}", get(pages::assets))
        .route("/favicon.ico", get(pages::favicon))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/ws", get(ws::upgrade))
        .nest(
            "/api",
            api::router()
                .merge(webhooks::router())
                .merge(blocks::router())
                .merge(campaigns::router()),
        )
        .layer(axum::middleware::from_fn(pages::security_headers))
        .with_state(state)
}

/// Binds `addr` and serves in the background; an address in use fails start-up.
pub async fn spawn(addr: SocketAddr, state: AppState) -> anyhow::Result<SocketAddr> {
    metrics_handle();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    info!(http = %local, "HTTP API and WebSocket ready");
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
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
