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
    /// Sources blocked for flooding the SIP port.
    pub flood: Arc<crate::flood::FloodGate>,
    /// Body sizes, header timeouts, desktops per user (the profile's `[limits]`).
    pub limits: crate::config::Limits,
    /// Live WebSocket connections per user, for `limits.ws_per_user`.
    pub desks: Arc<ws::DeskCounts>,
    /// Calls in progress and whether screenpop is shutting down (`/healthz` says so).
    pub in_flight: Arc<crate::calls::drain::InFlight>,
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
            flood: Arc::default(),
            limits: crate::config::Limits::default(),
            desks: Arc::default(),
            in_flight: Arc::default(),
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
        .layer(axum::extract::DefaultBodyLimit::max(
            state.limits.http_body(),
        ))
        .with_state(state)
}

/// Binds `addr` and serves in the background; an address in use fails start-up.
pub async fn spawn(addr: SocketAddr, state: AppState) -> anyhow::Result<SocketAddr> {
    metrics_handle();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    info!(http = %local, "HTTP API and WebSocket ready");
    let header_timeout =
        std::time::Duration::from_secs(state.limits.http_header_secs.clamp(1, 3600));
    tokio::spawn(serve(listener, router(state), header_timeout));
    Ok(local)
}

/// Serves HTTP/1.1 connections. A client gets `header_timeout` to send a request's headers,
/// and as long to start the next one on a kept-alive connection: a slow or silent client
/// holds its connection that long and no longer (axum's `serve` sets no such timeout). A
/// WebSocket, once upgraded, is the desktop session's to keep.
async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    header_timeout: std::time::Duration,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower_service::Service;
    let mut make = app.into_make_service_with_connect_info::<SocketAddr>();
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors, most often: wait rather than spin.
                tracing::warn!(error = %e, "http accept");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(svc) = make.call(remote).await;
        let svc = hyper_util::service::TowerToHyperService::new(svc);
        tokio::spawn(async move {
            // HTTP/1.1 only (as before): the header timer runs from the connection's start,
            // so a client that connects and says nothing is closed too.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(peer = %remote, error = %e, "http connection ended");
            }
        });
    }
}

async fn healthz(
    axum::extract::State(s): axum::extract::State<AppState>,
) -> impl axum::response::IntoResponse {
    use axum::http::StatusCode;
    if s.in_flight.refusing() {
        // A load balancer sends desktops and calls elsewhere while this node drains.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "draining", "calls": s.in_flight.len()})),
        );
    }
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
