//! `/api/webhooks`: admins register the URLs that receive events, and watch how delivery to
//! each is going. Admins only, all of it: a webhook's URL often carries a token of the
//! receiver's, and its events carry customers' details.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::api::ApiErrorBody;
use super::auth::Principal;
use super::error::{ApiError, ApiJson};
use super::AppState;
use crate::store::agents::Role;
use crate::store::webhooks::{Delivery, DeliveryStatus, Webhook, WebhookHealth};
use crate::time::rfc3339_ms;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks", get(list_webhooks).post(create_webhook))
        .route("/webhooks/{id}", get(get_webhook).delete(delete_webhook))
        .route("/webhooks/{id}/deliveries", get(list_deliveries))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookIn {
    /// http or https.
    url: String,
    /// Event types (`call.offered`, `agent.state`, …), or `"*"` for all.
    events: Vec<String>,
    /// At least 16 characters: the key of `X-Screenpop-Signature`. Never shown again.
    secret: String,
}

/// A webhook and how its deliveries are doing (the secret is never shown).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct WebhookOut {
    id: i64,
    url: String,
    events: Vec<String>,
    created_by: String,
    created_at: String,
    delivered: i64,
    /// Not yet delivered, still being tried.
    pending: i64,
    /// Pending ones whose last attempt failed: the receiver is failing now.
    failing: i64,
    /// Given up after a day of retries.
    failed: i64,
    last_success_at: Option<String>,
    last_error: Option<String>,
    last_error_at: Option<String>,
}

impl WebhookOut {
    fn of(w: Webhook, h: WebhookHealth) -> WebhookOut {
        WebhookOut {
            id: w.id,
            url: w.url,
            events: w.events,
            created_by: w.created_by,
            created_at: rfc3339_ms(w.created_at),
            delivered: h.delivered,
            pending: h.pending,
            failing: h.failing,
            failed: h.failed,
            last_success_at: h.last_success_at.map(rfc3339_ms),
            last_error: h.last_error,
            last_error_at: h.last_error_at.map(rfc3339_ms),
        }
    }
}

/// One event for one webhook.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct DeliveryOut {
    /// Sent as `X-Screenpop-Delivery`.
    id: i64,
    event_type: String,
    /// What its order is kept within: `call:<id>`, `agent:<id>`, `work_order:<id>` or "".
    subject: String,
    status: DeliveryStatus,
    attempts: i64,
    created_at: String,
    /// Null while it waits behind an earlier delivery of its subject, or once finished.
    next_attempt_at: Option<String>,
    last_attempt_at: Option<String>,
    /// The receiver's HTTP status at the last attempt.
    last_status: Option<i64>,
    last_error: Option<String>,
    delivered_at: Option<String>,
}

impl From<Delivery> for DeliveryOut {
    fn from(d: Delivery) -> DeliveryOut {
        let pending = d.status == DeliveryStatus::Pending;
        DeliveryOut {
            id: d.id,
            event_type: d.event_type,
            subject: d.subject,
            status: d.status,
            attempts: d.attempts,
            created_at: rfc3339_ms(d.created_at),
            next_attempt_at: d.next_attempt_at.filter(|_| pending).map(rfc3339_ms),
            last_attempt_at: d.last_attempt_at.map(rfc3339_ms),
            last_status: d.last_status,
            last_error: d.last_error,
            delivered_at: d.delivered_at.map(rfc3339_ms),
        }
    }
}

/// Registers a webhook (admin): every event of the given types published from now on is
/// POSTed to `url`, signed with `secret`.
#[utoipa::path(post, path = "/api/webhooks", request_body = WebhookIn,
    responses((status = 201, body = WebhookOut), (status = 403, body = ApiErrorBody),
              (status = 422, body = ApiErrorBody)))]
pub(crate) async fn create_webhook(
    State(s): State<AppState>,
    me: Principal,
    ApiJson(w): ApiJson<WebhookIn>,
) -> Result<(StatusCode, Json<WebhookOut>), ApiError> {
    me.require(Role::Admin)?;
    let hook = s
        .webhooks
        .create(&w.url, &w.events, &w.secret, &me.username)
        .await?;
    let _ = s
        .store
        .audit(
            &me.username,
            "webhook.create",
            &format!("webhook:{}", hook.id),
            Some(&hook.url),
        )
        .await;
    let health = s.store.webhook_health(hook.id).await?;
    Ok((StatusCode::CREATED, Json(WebhookOut::of(hook, health))))
}

/// The webhooks with their delivery status (admin).
#[utoipa::path(get, path = "/api/webhooks",
    responses((status = 200, body = [WebhookOut]), (status = 403, body = ApiErrorBody)))]
pub(crate) async fn list_webhooks(
    State(s): State<AppState>,
    me: Principal,
) -> Result<Response, ApiError> {
    me.require(Role::Admin)?;
    let items: Vec<WebhookOut> = s
        .webhooks
        .list()
        .await?
        .into_iter()
        .map(|(w, h)| WebhookOut::of(w, h))
        .collect();
    Ok(Json(json!({ "items": items, "next": null })).into_response())
}

#[utoipa::path(get, path = "/api/webhooks/{id}",
    responses((status = 200, body = WebhookOut), (status = 404, body = ApiErrorBody)))]
pub(crate) async fn get_webhook(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<i64>,
) -> Result<Json<WebhookOut>, ApiError> {
    me.require(Role::Admin)?;
    let hook = s
        .store
        .webhook(id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    let health = s.store.webhook_health(id).await?;
    Ok(Json(WebhookOut::of(hook, health)))
}

/// Deletes a webhook (admin) with its deliveries, pending ones included.
#[utoipa::path(delete, path = "/api/webhooks/{id}",
    responses((status = 204), (status = 404, body = ApiErrorBody)))]
pub(crate) async fn delete_webhook(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    me.require(Role::Admin)?;
    s.webhooks.delete(id).await?;
    let _ = s
        .store
        .audit(
            &me.username,
            "webhook.delete",
            &format!("webhook:{id}"),
            None,
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(crate) struct DeliveryQuery {
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// A webhook's recent deliveries, newest first (admin); `status` filters (pending, delivered,
/// failed).
#[utoipa::path(get, path = "/api/webhooks/{id}/deliveries",
    params(("status" = Option<String>, Query), ("cursor" = Option<String>, Query), ("limit" = Option<i64>, Query)),
    responses((status = 200, body = [DeliveryOut]), (status = 404, body = ApiErrorBody)))]
pub(crate) async fn list_deliveries(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<i64>,
    Query(q): Query<DeliveryQuery>,
) -> Result<Response, ApiError> {
    me.require(Role::Admin)?;
    let limit = match q.limit {
        None => 50,
        Some(n) if (1..=500).contains(&n) => n,
        Some(_) => return Err(ApiError::invalid("limit", "must be between 1 and 500")),
    };
    let status = q
        .status
        .as_deref()
        .filter(|v| !v.is_empty())
        .map(|v| {
            DeliveryStatus::parse(v)
                .ok_or_else(|| ApiError::invalid("status", "one of pending, delivered, failed"))
        })
        .transpose()?;
    let before = q
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| ApiError::invalid("cursor", "not a cursor from a previous page"))
        })
        .transpose()?;
    if s.store.webhook(id).await?.is_none() {
        return Err(ApiError::not_found("webhook"));
    }
    let items: Vec<DeliveryOut> = s
        .store
        .webhook_deliveries(id, status, before, limit)
        .await?
        .into_iter()
        .map(DeliveryOut::from)
        .collect();
    let next = (items.len() as i64 >= limit)
        .then(|| items.last().map(|d| d.id.to_string()))
        .flatten();
    Ok(Json(json!({ "items": items, "next": next })).into_response())
}
