//! The REST resources under `/api/` (see DESIGN.md's contract). Lists are
//! `{"items": [...], "next": cursor-or-null}`; the cursor is the last item's id, passed back
//! as `?cursor=`. `GET /api/openapi.json` is generated from these handlers' annotations.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use utoipa::OpenApi;

use super::auth::{self, hash_password_off_thread, ClientAddr, Principal};
use super::error::{ApiError, ApiJson};
use super::AppState;
use crate::agents::PhoneSetting;
use crate::events::{Event, Payload};
use crate::phone::normalize;
use crate::store::agents::{Agent, NewAgent, NewQueue, Queue, QueuePatch, Role, SipTarget};
use crate::store::calls::{CallFilter, ContactLog, Recording};
use crate::store::customers::{CreatedVia, Customer, CustomerFilter, CustomerPatch, NewCustomer};
use crate::store::work_orders::{
    NewWorkOrder, WorkOrder, WorkOrderChange, WorkOrderFilter, WorkOrderKind, WorkOrderPatch,
    WorkOrderStatus,
};
use crate::time::{parse_rfc3339_ms, rfc3339_ms};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login", post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/me", get(me).patch(update_me))
        .route("/directory", get(directory))
        .route("/audit", get(audit_log))
        .route("/stats/queues", get(super::stats::queues))
        .route("/stats/agents", get(super::stats::agents))
        .route("/openapi.json", get(openapi))
        .route("/agents", get(list_agents).post(create_agent))
        .route("/agents/{id}", get(get_agent).patch(update_agent))
        .route("/queues", get(list_queues).post(create_queue))
        .route("/queues/{id}", axum::routing::patch(update_queue))
        .route("/customers", get(list_customers).post(create_customer))
        // A customer list is larger than any other request: it has its own limit.
        .route(
            "/customers/import",
            post(import_customers).layer(axum::extract::DefaultBodyLimit::max(MAX_IMPORT)),
        )
        .route("/customers/export", get(export_customers))
        .route("/customers/{id}", get(get_customer).patch(update_customer))
        .route("/calls", get(list_calls))
        .route("/calls/{id}", get(get_call).patch(annotate_call))
        .route("/calls/{id}/hangup", post(hangup_call))
        .route("/calls/{id}/hold", post(hold_call))
        .route("/calls/{id}/resume", post(resume_call))
        .route("/calls/{id}/transfer", post(transfer_call))
        .route("/calls/{id}/transfer/complete", post(complete_transfer))
        .route("/calls/{id}/transfer/cancel", post(cancel_transfer))
        .route("/dial", post(dial))
        .route("/recordings/{id}", get(get_recording))
        .route("/recordings/{id}/audio", get(recording_audio))
        .route(
            "/work-orders",
            get(list_work_orders).post(create_work_order),
        )
        .route(
            "/work-orders/{id}",
            get(get_work_order).patch(update_work_order),
        )
        .route("/work-orders/{id}/history", get(work_order_history))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "screenpop", description = "Call-center CTI: customers, calls, recordings, work orders"),
    paths(
        auth::login, auth::logout, me, update_me, directory, audit_log,
        super::stats::queues, super::stats::agents, list_agents, create_agent, get_agent, update_agent, list_queues,
        create_queue, update_queue,
        list_customers, create_customer, get_customer, update_customer, import_customers,
        export_customers,
        list_calls, get_call, annotate_call, hangup_call, hold_call, resume_call, transfer_call, complete_transfer, cancel_transfer, dial, get_recording, recording_audio,
        list_work_orders, create_work_order, get_work_order, update_work_order,
        work_order_history,
        super::webhooks::create_webhook, super::webhooks::list_webhooks, super::webhooks::get_webhook,
        super::webhooks::delete_webhook, super::webhooks::list_deliveries,
        super::blocks::list_blocks, super::blocks::lift_block,
        super::campaigns::create_campaign, super::campaigns::list_campaigns,
        super::campaigns::upload_audio,
        super::campaigns::get_campaign, super::campaigns::preview_campaign,
        super::campaigns::start_campaign, super::campaigns::pause_campaign,
        super::campaigns::resume_campaign, super::campaigns::list_attempts
    ),
    components(schemas(
        AgentOut, NewAgentIn, AgentPatchIn, QueueIn, QueuePatch, Queue, Customer, NewCustomer, CustomerPatch, ContactLog, crate::store::calls::CallAgent, CallPatch,
        Recording, WorkOrder, WorkOrderIn, WorkOrderPatchIn, WorkOrderChange, ImportReport,
        ApiErrorBody, MeOut, MePatch, crate::store::agents::AuditEntry,
        super::stats::QueueStats, super::stats::AgentStats, ControlOut, TransferIn, TransferTarget, DialIn, DialOut,
        super::webhooks::WebhookIn, super::webhooks::WebhookOut, super::webhooks::DeliveryOut,
        super::blocks::BlockOut,
        crate::store::webhooks::DeliveryStatus,
        super::campaigns::CampaignOut, super::campaigns::StartIn, crate::campaigns::spec::CampaignSpec,
        crate::campaigns::spec::Audience, crate::campaigns::spec::ScheduleSpec,
        crate::campaigns::spec::Kind, crate::campaigns::spec::Channel, crate::campaigns::spec::Repeat,
        crate::campaigns::run::Preview, crate::campaigns::run::PreviewItem,
        crate::campaigns::plan::Via, crate::store::campaigns::Attempt,
        crate::store::campaigns::Progress, crate::store::campaigns::CampaignState,
        crate::store::customers::BirthdayCalendar
    )),
    modifiers(&BearerAuth)
)]
pub(crate) struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

/// The error shape every endpoint uses.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ApiErrorBody {
    /// `{"code", "message", "field"?}`
    error: serde_json::Value,
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// A page of a list.
#[derive(Serialize)]
pub(crate) struct Page<T> {
    items: Vec<T>,
    next: Option<String>,
}

fn page<T>(items: Vec<T>, limit: i64, id: impl Fn(&T) -> i64) -> Json<Page<T>> {
    let next = (items.len() as i64 >= limit)
        .then(|| items.last().map(|t| id(t).to_string()))
        .flatten();
    Json(Page { items, next })
}

fn limit_of(v: Option<i64>) -> Result<i64, ApiError> {
    match v {
        None => Ok(50),
        Some(n) if (1..=500).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid("limit", "must be between 1 and 500")),
    }
}

fn cursor_of(v: &Option<String>) -> Result<Option<i64>, ApiError> {
    v.as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| ApiError::invalid("cursor", "not a cursor from a previous page"))
        })
        .transpose()
}

// ---------------------------------------------------------------- the signed-in user

/// Who is signed in, for the pages.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct MeOut {
    agent_id: i64,
    username: String,
    display_name: String,
    role: Role,
    /// The language chosen for the pages, once chosen.
    locale: Option<String>,
    /// How calls reach this user's phone: "pbx" (a SIP URI), "registered" (a phone that
    /// registers with screenpop) or "none" (no calls can be offered: the desktop says so).
    phone: &'static str,
}

#[utoipa::path(get, path = "/api/me", responses((status = 200, body = MeOut), (status = 401, body = ApiErrorBody)))]
async fn me(State(s): State<AppState>, me: Principal) -> Result<Json<MeOut>, ApiError> {
    let a = s
        .store
        .agent(me.agent_id)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    Ok(Json(MeOut {
        agent_id: a.id,
        username: a.username,
        display_name: a.display_name,
        role: a.role,
        locale: a.locale,
        phone: match a.sip {
            SipTarget::Uri(_) => "pbx",
            SipTarget::Registered { .. } => "registered",
            SipTarget::None => "none",
        },
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MePatch {
    /// "en" or "zh".
    locale: String,
}

/// Remembers the signed-in user's language.
#[utoipa::path(patch, path = "/api/me", request_body = MePatch,
    responses((status = 200, body = MeOut), (status = 422, body = ApiErrorBody)))]
async fn update_me(
    State(s): State<AppState>,
    principal: Principal,
    ApiJson(p): ApiJson<MePatch>,
) -> Result<Json<MeOut>, ApiError> {
    if !["en", "zh"].contains(&p.locale.as_str()) {
        return Err(ApiError::invalid("locale", "one of en, zh"));
    }
    s.store.set_locale(principal.agent_id, &p.locale).await?;
    me(State(s), principal).await
}

/// Names for ids, for every role: the agents and queues (no other account details).
#[utoipa::path(get, path = "/api/directory", responses((status = 200, description = "{agents:[{id,display_name,active}], queues:[{id,name}]}")))]
async fn directory(State(s): State<AppState>, _me: Principal) -> Result<Response, ApiError> {
    let agents: Vec<_> = s
        .store
        .agents()
        .await?
        .into_iter()
        .map(|a| json!({"id": a.id, "display_name": a.display_name, "active": a.active, "role": a.role}))
        .collect();
    let queues: Vec<_> = s
        .store
        .queues()
        .await?
        .into_iter()
        .map(|q| json!({"id": q.id, "name": q.name, "active": q.active}))
        .collect();
    Ok(Json(json!({ "agents": agents, "queues": queues })).into_response())
}

#[derive(Deserialize)]
struct AuditQuery {
    action: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// The audit log, newest first (supervisors): logins, recording plays and downloads with the
/// address they came from, changes to accounts, customers and queues. `action` filters by an
/// exact action or a prefix ending in `.` (`recording.`).
#[utoipa::path(get, path = "/api/audit",
    params(("action" = Option<String>, Query), ("cursor" = Option<String>, Query), ("limit" = Option<i64>, Query)),
    responses((status = 200, body = [crate::store::agents::AuditEntry])))]
async fn audit_log(
    State(s): State<AppState>,
    me: Principal,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    me.require(Role::Supervisor)?;
    let limit = limit_of(q.limit)?;
    let items = s
        .store
        .audit_entries(
            q.action.as_deref().filter(|a| !a.is_empty()),
            cursor_of(&q.cursor)?,
            limit,
        )
        .await?;
    Ok(page(items, limit, |e| e.id).into_response())
}

// ---------------------------------------------------------------- agents

/// An agent as the API shows it (never the password hash or HA1s).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AgentOut {
    id: i64,
    username: String,
    display_name: String,
    role: Role,
    sip_uri: Option<String>,
    sip_username: Option<String>,
    skills: Vec<String>,
    queues: Vec<i64>,
    created_at: String,
    /// False once deactivated: cannot log in, offered no calls.
    active: bool,
}

impl From<Agent> for AgentOut {
    fn from(a: Agent) -> AgentOut {
        let (sip_uri, sip_username) = match a.sip {
            SipTarget::Uri(u) => (Some(u), None),
            SipTarget::Registered { username, .. } => (None, Some(username)),
            SipTarget::None => (None, None),
        };
        AgentOut {
            id: a.id,
            username: a.username,
            display_name: a.display_name,
            role: a.role,
            sip_uri,
            sip_username,
            skills: a.skills.into_iter().collect(),
            queues: a.queues.into_iter().collect(),
            created_at: rfc3339_ms(a.created_at),
            active: a.active,
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewAgentIn {
    username: String,
    password: String,
    display_name: String,
    #[serde(default = "agent_role")]
    role: Role,
    /// A phone on the PBX.
    #[serde(default)]
    sip_uri: Option<String>,
    /// A phone that registers with screenpop (with `sip_password`).
    #[serde(default)]
    sip_username: Option<String>,
    #[serde(default)]
    sip_password: Option<String>,
    #[serde(default)]
    skills: Vec<String>,
    /// Queue ids; when left out, the agent joins the default queue.
    #[serde(default)]
    queues: Option<Vec<i64>>,
}

fn agent_role() -> Role {
    Role::Agent
}

#[utoipa::path(get, path = "/api/agents", responses((status = 200, body = [AgentOut])))]
async fn list_agents(State(s): State<AppState>, me: Principal) -> Result<Response, ApiError> {
    me.require(Role::Supervisor)?;
    let agents: Vec<AgentOut> = s
        .store
        .agents()
        .await?
        .into_iter()
        .map(AgentOut::from)
        .collect();
    Ok(Json(json!({ "items": agents, "next": null })).into_response())
}

#[utoipa::path(get, path = "/api/agents/{id}", responses((status = 200, body = AgentOut), (status = 404, body = ApiErrorBody)))]
async fn get_agent(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<i64>,
) -> Result<Json<AgentOut>, ApiError> {
    if !me.may_access_agent(Some(id)) {
        return Err(ApiError::forbidden("agents see only their own account"));
    }
    let a = s
        .store
        .agent(id)
        .await?
        .ok_or_else(|| ApiError::not_found("agent"))?;
    Ok(Json(a.into()))
}

/// Creates an account (admin only). Give `sip_uri` for a PBX phone, or `sip_username` and
/// `sip_password` for a phone that registers with screenpop.
#[utoipa::path(post, path = "/api/agents", request_body = NewAgentIn,
    responses((status = 201, body = AgentOut), (status = 422, body = ApiErrorBody)))]
async fn create_agent(
    State(s): State<AppState>,
    me: Principal,
    ApiJson(a): ApiJson<NewAgentIn>,
) -> Result<(StatusCode, Json<AgentOut>), ApiError> {
    me.require(Role::Admin)?;
    let hash = hash_password_off_thread(a.password.clone()).await?;
    let sip = s
        .agents
        .sip_target(PhoneSetting {
            uri: a.sip_uri,
            username: a.sip_username,
            password: a.sip_password,
        })?
        .unwrap_or(SipTarget::None);
    let queues = match a.queues {
        Some(q) => q.into_iter().collect(),
        None if a.role == Role::Agent => s
            .store
            .default_queue()
            .await?
            .map(|q| q.id)
            .into_iter()
            .collect(),
        None => Default::default(),
    };
    let agent = s
        .agents
        .create(&NewAgent {
            username: a.username,
            display_name: a.display_name,
            role: a.role,
            password_hash: hash,
            sip,
            skills: a.skills.into_iter().collect(),
            queues,
        })
        .await?;
    let _ = s
        .store
        .audit(
            &me.username,
            "agent.create",
            &format!("agent:{}", agent.id),
            None,
        )
        .await;
    Ok((StatusCode::CREATED, Json(agent.into())))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentPatchIn {
    display_name: Option<String>,
    role: Option<Role>,
    password: Option<String>,
    sip_uri: Option<String>,
    sip_username: Option<String>,
    sip_password: Option<String>,
    skills: Option<Vec<String>>,
    queues: Option<Vec<i64>>,
    /// false deactivates the account (logged out at once, no calls, history keeps the name).
    active: Option<bool>,
}

/// Changes an account (admin only); `queues` replaces the memberships. The ACD picks the
/// change up at once.
#[utoipa::path(patch, path = "/api/agents/{id}", request_body = AgentPatchIn,
    responses((status = 200, body = AgentOut), (status = 404, body = ApiErrorBody), (status = 422, body = ApiErrorBody)))]
async fn update_agent(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<i64>,
    ApiJson(a): ApiJson<AgentPatchIn>,
) -> Result<Json<AgentOut>, ApiError> {
    me.require(Role::Admin)?;
    let password_hash = match a.password {
        Some(pw) => Some(hash_password_off_thread(pw).await?),
        None => None,
    };
    let patch = crate::store::agents::AgentPatch {
        display_name: a.display_name,
        role: a.role,
        password_hash,
        sip: s.agents.sip_target(PhoneSetting {
            uri: a.sip_uri,
            username: a.sip_username,
            password: a.sip_password,
        })?,
        skills: a.skills.map(|v| v.into_iter().collect()),
        queues: a.queues.map(|v| v.into_iter().collect()),
        active: a.active,
    };
    if a.active == Some(false) && id == me.agent_id {
        return Err(ApiError::invalid(
            "active",
            "you cannot deactivate yourself",
        ));
    }
    let agent = s.agents.update(id, &patch).await?;
    let _ = s
        .store
        .audit(&me.username, "agent.update", &format!("agent:{id}"), None)
        .await;
    Ok(Json(agent.into()))
}

// ---------------------------------------------------------------- queues

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueueIn {
    name: String,
    #[serde(default)]
    dialed_numbers: Vec<String>,
    #[serde(default = "d20")]
    ring_timeout_secs: i64,
    #[serde(default = "d120")]
    max_wait_secs: i64,
    #[serde(default = "d10")]
    wrap_up_secs: i64,
    #[serde(default)]
    required_skills: Vec<String>,
    #[serde(default)]
    is_default: bool,
    /// Seconds within which an answer counts towards the service level.
    #[serde(default = "d20")]
    service_level_secs: i64,
    /// A link the desktop opens beside the pop: `https://crm.example/customers?phone={e164}`
    /// with `{e164}`, `{number}`, `{call_id}`, `{contact_log_id}`, `{customer_id}`, `{dialed}`.
    #[serde(default)]
    crm_url: Option<String>,
    /// The queue's own music for waiting callers: the path of a WAV on the server (PCM at any
    /// rate, mono or stereo, or G.711), played as early media; a file that cannot be read is
    /// refused (422 `music`).
    #[serde(default)]
    music: Option<String>,
    /// The post-call satisfaction survey: a WAV on the server played to a caller whose agent
    /// hung up first; the caller's digit (1–9, RFC 4733 or SIP INFO) is the score on the
    /// contact log. Absent: no survey.
    #[serde(default)]
    survey_prompt: Option<String>,
    /// Played after the caller's digit; absent: the call ends at once.
    #[serde(default)]
    survey_thanks: Option<String>,
    /// Seconds after the prompt's end to press a digit (1–60).
    #[serde(default = "d_survey")]
    survey_timeout_secs: i64,
    /// Days the queue's recordings are kept (1–36500); absent or 0: the profile's
    /// `[retention] keep_days`.
    #[serde(default)]
    keep_recordings_days: Option<i64>,
}

fn d_survey() -> i64 {
    crate::store::agents::DEFAULT_SURVEY_TIMEOUT_SECS
}
fn d20() -> i64 {
    20
}
fn d120() -> i64 {
    120
}
fn d10() -> i64 {
    10
}

#[utoipa::path(get, path = "/api/queues", responses((status = 200, body = [Queue])))]
async fn list_queues(State(s): State<AppState>, _me: Principal) -> Result<Response, ApiError> {
    let q = s.store.queues().await?;
    Ok(Json(json!({ "items": q, "next": null })).into_response())
}

#[utoipa::path(post, path = "/api/queues", request_body = QueueIn,
    responses((status = 201, body = Queue), (status = 422, body = ApiErrorBody)))]
async fn create_queue(
    State(s): State<AppState>,
    me: Principal,
    ApiJson(q): ApiJson<QueueIn>,
) -> Result<(StatusCode, Json<Queue>), ApiError> {
    me.require(Role::Admin)?;
    let queue = s
        .store
        .create_queue(&NewQueue {
            name: q.name,
            dialed_numbers: q.dialed_numbers,
            ring_timeout_secs: q.ring_timeout_secs,
            max_wait_secs: q.max_wait_secs,
            wrap_up_secs: q.wrap_up_secs,
            required_skills: q.required_skills,
            is_default: q.is_default,
            service_level_secs: q.service_level_secs,
            active: true,
            crm_url: q.crm_url.filter(|u| !u.trim().is_empty()),
            music: q.music.filter(|m| !m.trim().is_empty()),
            survey_prompt: q.survey_prompt.filter(|m| !m.trim().is_empty()),
            survey_thanks: q.survey_thanks.filter(|m| !m.trim().is_empty()),
            survey_timeout_secs: q.survey_timeout_secs,
            keep_recordings_days: q.keep_recordings_days.filter(|d| *d != 0),
        })
        .await?;
    s.acd.reload();
    Ok((StatusCode::CREATED, Json(queue)))
}

/// Changes a queue (admin only).
#[utoipa::path(patch, path = "/api/queues/{id}", request_body = QueuePatch,
    responses((status = 200, body = Queue), (status = 404, body = ApiErrorBody), (status = 422, body = ApiErrorBody)))]
async fn update_queue(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<i64>,
    ApiJson(q): ApiJson<QueuePatch>,
) -> Result<Json<Queue>, ApiError> {
    me.require(Role::Admin)?;
    let queue = s.store.update_queue(id, &q).await?;
    let _ = s
        .store
        .audit(&me.username, "queue.update", &format!("queue:{id}"), None)
        .await;
    s.acd.reload();
    Ok(Json(queue))
}

// ---------------------------------------------------------------- customers

#[derive(Deserialize)]
struct CustomerQuery {
    name: Option<String>,
    phone: Option<String>,
    code: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// Customers, newest first; `name` matches part of the name, `phone` any format of a number.
#[utoipa::path(get, path = "/api/customers",
    params(("name" = Option<String>, Query), ("phone" = Option<String>, Query), ("code" = Option<String>, Query),
           ("cursor" = Option<String>, Query), ("limit" = Option<i64>, Query)),
    responses((status = 200, body = [Customer])))]
async fn list_customers(
    State(s): State<AppState>,
    _me: Principal,
    Query(q): Query<CustomerQuery>,
) -> Result<Response, ApiError> {
    let limit = limit_of(q.limit)?;
    let phone = match q.phone.as_deref().filter(|p| !p.trim().is_empty()) {
        Some(p) => {
            Some(normalize(p, s.plan).map_err(|e| ApiError::invalid("phone", e.to_string()))?)
        }
        None => None,
    };
    let f = CustomerFilter {
        name: q.name.filter(|n| !n.trim().is_empty()),
        phone,
        code: q.code,
        before: cursor_of(&q.cursor)?,
        limit,
    };
    let items = s.store.customers(&f).await?;
    Ok(page(items, limit, |c| c.id).into_response())
}

#[utoipa::path(get, path = "/api/customers/{id}", responses((status = 200, body = Customer), (status = 404, body = ApiErrorBody)))]
async fn get_customer(
    State(s): State<AppState>,
    _me: Principal,
    Path(id): Path<i64>,
) -> Result<Json<Customer>, ApiError> {
    Ok(Json(
        s.store
            .customer(id)
            .await?
            .ok_or_else(|| ApiError::not_found("customer"))?,
    ))
}

#[utoipa::path(post, path = "/api/customers", request_body = NewCustomer,
    responses((status = 201, body = Customer), (status = 422, body = ApiErrorBody)))]
async fn create_customer(
    State(s): State<AppState>,
    me: Principal,
    ApiJson(c): ApiJson<NewCustomer>,
) -> Result<(StatusCode, Json<Customer>), ApiError> {
    let created = s.store.create_customer(&c, CreatedVia::Api, s.plan).await?;
    let _ = s
        .store
        .audit(
            &me.username,
            "customer.create",
            &format!("customer:{}", created.id),
            None,
        )
        .await;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Changes a customer (any role: agents keep the card current from the pop); `phones`
/// replaces every number; `assigned_agent_id: 0` unassigns. Audited.
#[utoipa::path(patch, path = "/api/customers/{id}", request_body = CustomerPatch,
    responses((status = 200, body = Customer), (status = 404, body = ApiErrorBody), (status = 422, body = ApiErrorBody)))]
async fn update_customer(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<i64>,
    ApiJson(p): ApiJson<CustomerPatch>,
) -> Result<Json<Customer>, ApiError> {
    let c = s.store.update_customer(id, &p, s.plan).await?;
    let _ = s
        .store
        .audit(
            &me.username,
            "customer.update",
            &format!("customer:{id}"),
            None,
        )
        .await;
    Ok(Json(c))
}

/// What an import did: every rejected row with its line and reason.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ImportReport {
    pub imported: usize,
    pub rejected: Vec<crate::crm::csv::Rejected>,
}

/// The largest customer CSV taken in one import (about 200,000 rows).
const MAX_IMPORT: usize = 32 * 1024 * 1024;

/// Imports customers from a CSV body (UTF-8). Any rejected row rejects the whole file (422,
/// with every reason); nothing is half-imported.
#[utoipa::path(post, path = "/api/customers/import", request_body(content = String, content_type = "text/csv"),
    responses((status = 200, body = ImportReport), (status = 422, body = ImportReport)))]
async fn import_customers(
    State(s): State<AppState>,
    me: Principal,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    me.require(Role::Supervisor)?;
    let report = crate::crm::csv::import(&s.store, &body, s.plan).await?;
    let status = if report.rejected.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let _ = s
        .store
        .audit(
            &me.username,
            "customer.import",
            "customers",
            Some(&format!(
                "{} imported, {} rejected",
                report.imported,
                report.rejected.len()
            )),
        )
        .await;
    Ok((
        status,
        Json(ImportReport {
            imported: report.imported,
            rejected: report.rejected,
        }),
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/customers/export", responses((status = 200, content_type = "text/csv", body = String)))]
async fn export_customers(State(s): State<AppState>, me: Principal) -> Result<Response, ApiError> {
    me.require(Role::Supervisor)?;
    let mut out = Vec::new();
    crate::crm::csv::export(&s.store, &mut out).await?;
    let _ = s
        .store
        .audit(&me.username, "customer.export", "customers", None)
        .await;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"customers.csv\"",
            ),
        ],
        out,
    )
        .into_response())
}

// ---------------------------------------------------------------- calls

#[derive(Deserialize)]
struct CallQuery {
    from: Option<String>,
    to: Option<String>,
    agent_id: Option<i64>,
    customer_id: Option<i64>,
    number: Option<String>,
    disposition: Option<String>,
    min_talk_secs: Option<i64>,
    max_talk_secs: Option<i64>,
    /// `1`/`true`: only calls with a recording.
    has_recording: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// Contact logs, newest first. Agents see their own calls only.
#[utoipa::path(get, path = "/api/calls",
    params(("from" = Option<String>, Query, description = "RFC 3339 or YYYY-MM-DD, inclusive"),
           ("to" = Option<String>, Query, description = "RFC 3339 or YYYY-MM-DD, exclusive"),
           ("agent_id" = Option<i64>, Query), ("customer_id" = Option<i64>, Query),
           ("number" = Option<String>, Query, description = "caller number in any format"),
           ("disposition" = Option<String>, Query), ("min_talk_secs" = Option<i64>, Query),
           ("max_talk_secs" = Option<i64>, Query), ("has_recording" = Option<bool>, Query),
           ("cursor" = Option<String>, Query), ("limit" = Option<i64>, Query)),
    responses((status = 200, body = [ContactLog])))]
async fn list_calls(
    State(s): State<AppState>,
    me: Principal,
    Query(q): Query<CallQuery>,
) -> Result<Response, ApiError> {
    let limit = limit_of(q.limit)?;
    let time = |field: &str, v: &Option<String>| -> Result<Option<i64>, ApiError> {
        v.as_deref()
            .map(|t| {
                parse_rfc3339_ms(t).ok_or_else(|| {
                    ApiError::invalid(field, "not an RFC 3339 time or YYYY-MM-DD date")
                })
            })
            .transpose()
    };
    if let Some(d) = &q.disposition {
        if !["answered", "missed", "abandoned", "rejected", "failed"].contains(&d.as_str()) {
            return Err(ApiError::invalid(
                "disposition",
                "one of answered, missed, abandoned, rejected, failed",
            ));
        }
    }
    let agent = if me.role.sees_all() {
        q.agent_id
    } else {
        if q.agent_id.is_some_and(|a| a != me.agent_id) {
            return Err(ApiError::forbidden("agents see only their own calls"));
        }
        Some(me.agent_id)
    };
    let number = q
        .number
        .as_deref()
        .filter(|n| !n.trim().is_empty())
        .map(|n| match normalize(n, s.plan) {
            Ok(p) => p.e164.unwrap_or_else(|| n.to_string()),
            Err(_) => n.to_string(),
        });
    let f = CallFilter {
        from_ms: time("from", &q.from)?,
        to_ms: time("to", &q.to)?,
        agent,
        customer: q.customer_id,
        number,
        disposition: q.disposition,
        min_talk_secs: q.min_talk_secs,
        max_talk_secs: q.max_talk_secs,
        has_recording: match q.has_recording.as_deref() {
            None | Some("") | Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(_) => return Err(ApiError::invalid("has_recording", "1 or 0")),
        },
        before: cursor_of(&q.cursor)?,
        limit,
    };
    let items = s.store.contact_logs(&f).await?;
    Ok(page(items, limit, |c| c.id).into_response())
}

async fn own_call(s: &AppState, me: &Principal, id: i64) -> Result<ContactLog, ApiError> {
    let c = s
        .store
        .contact_log(id)
        .await?
        .ok_or_else(|| ApiError::not_found("call"))?;
    if !me.may_access_agent(c.agent_id) && !offered_to(s, me, id) {
        // Not "forbidden": an agent cannot learn which other calls exist.
        return Err(ApiError::not_found("call"));
    }
    Ok(c)
}

/// An agent whose desktop is offered a live call handed over by another agent (a transfer or
/// a consultation) may read and annotate its contact log: the card shows the notes so far.
fn offered_to(s: &AppState, me: &Principal, log_id: i64) -> bool {
    let Some(key) = s.controls.call_of_log(log_id) else {
        return false;
    };
    let viewer = crate::events::Viewer {
        agent: me.agent_id,
        sees_all: false,
    };
    s.bus.snapshot(viewer).iter().any(|e| {
        e.agent == Some(me.agent_id)
            && e.call.as_ref().is_some_and(|c| c.as_str() == key)
            && matches!(e.payload, crate::events::Payload::CallOffered(_))
    })
}

#[utoipa::path(get, path = "/api/calls/{id}", responses((status = 200, body = ContactLog), (status = 404, body = ApiErrorBody)))]
async fn get_call(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<i64>,
) -> Result<Json<ContactLog>, ApiError> {
    Ok(Json(own_call(&s, &me, id).await?))
}

// ---------------------------------------------------------------- call control

/// What a call-control request did.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ControlOut {
    call_id: String,
    /// `hangup`, `hold`, `resume`, `transfer`, `consult` (an attended transfer started),
    /// `transfer_complete` or `transfer_cancel`.
    done: &'static str,
}

impl From<crate::calls::control::ControlError> for ApiError {
    fn from(e: crate::calls::control::ControlError) -> ApiError {
        use crate::calls::control::ControlError as E;
        match e {
            E::NotFound => ApiError::not_found("call in progress"),
            E::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            E::PhoneRefused(_) => {
                ApiError::new(StatusCode::CONFLICT, "phone_refused", e.to_string())
            }
        }
    }
}

/// Carries `control` to the live call `id` (screenpop's call id from the events, or the
/// contact log id) on behalf of `me`.
async fn control_call(
    s: &AppState,
    me: &Principal,
    id: &str,
    control: crate::calls::control::Control,
    done: &'static str,
) -> Result<Json<ControlOut>, ApiError> {
    let by = crate::calls::control::Controller {
        agent: Some(me.agent_id),
        supervisor: me.role.sees_all(),
    };
    s.controls.send(id, control, by).await?;
    Ok(Json(ControlOut {
        call_id: id.to_string(),
        done,
    }))
}

/// Hangs up a call in progress: BYE to the caller and to the agent's phone.
#[utoipa::path(post, path = "/api/calls/{id}/hangup",
    params(("id" = String, Path, description = "The call id of the events, or the contact log id")),
    responses((status = 200, body = ControlOut), (status = 404, body = ApiErrorBody),
        (status = 409, body = ApiErrorBody)))]
async fn hangup_call(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<String>,
) -> Result<Json<ControlOut>, ApiError> {
    control_call(
        &s,
        &me,
        &id,
        crate::calls::control::Control::Hangup,
        "hangup",
    )
    .await
}

/// Puts the caller on hold: music to the caller, the agent's phone held by re-INVITE. Answers
/// once the phone took it; a phone that refuses leaves the call as it was (409).
#[utoipa::path(post, path = "/api/calls/{id}/hold",
    params(("id" = String, Path, description = "The call id of the events, or the contact log id")),
    responses((status = 200, body = ControlOut), (status = 404, body = ApiErrorBody),
        (status = 409, body = ApiErrorBody)))]
async fn hold_call(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<String>,
) -> Result<Json<ControlOut>, ApiError> {
    control_call(&s, &me, &id, crate::calls::control::Control::Hold, "hold").await
}

/// Takes the caller off hold.
#[utoipa::path(post, path = "/api/calls/{id}/resume",
    params(("id" = String, Path, description = "The call id of the events, or the contact log id")),
    responses((status = 200, body = ControlOut), (status = 404, body = ApiErrorBody),
        (status = 409, body = ApiErrorBody)))]
async fn resume_call(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<String>,
) -> Result<Json<ControlOut>, ApiError> {
    control_call(
        &s,
        &me,
        &id,
        crate::calls::control::Control::Resume,
        "resume",
    )
    .await
}

/// A call to place for the signed-in agent.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DialIn {
    /// As typed or stored: national, E.164, with spaces or dashes.
    number: String,
    /// The customer the call is for; found by the number when absent.
    #[serde(default)]
    customer_id: Option<i64>,
}

/// The call placed: the agent's phone is ringing; the events follow under `call_id`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct DialOut {
    call_id: String,
    contact_log_id: Option<i64>,
    /// The number called, in E.164.
    number: String,
    customer_id: Option<i64>,
}

impl From<crate::calls::placing::DialFailure> for ApiError {
    fn from(e: crate::calls::placing::DialFailure) -> ApiError {
        use crate::acd::runtime::DialOutError as A;
        use crate::calls::placing::DialFailure as F;
        match &e {
            F::NotConfigured => {
                ApiError::new(StatusCode::CONFLICT, "no_outbound_gateway", e.to_string())
            }
            F::Number(_) => ApiError::invalid("number", e.to_string()),
            F::UnknownCustomer(_) => ApiError::invalid("customer_id", e.to_string()),
            F::Agent(A::NotAnAgent) => ApiError::forbidden("only an active agent places calls"),
            F::Agent(A::Busy) => ApiError::new(StatusCode::CONFLICT, "agent_busy", e.to_string()),
            F::Agent(A::Unreachable) => {
                ApiError::new(StatusCode::CONFLICT, "phone_unreachable", e.to_string())
            }
            F::Agent(A::NobodyFree) => {
                ApiError::new(StatusCode::CONFLICT, "nobody_free", e.to_string())
            }
            F::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            F::Refused(_) => ApiError::new(StatusCode::CONFLICT, "refused", e.to_string()),
        }
    }
}

/// Click-to-dial: rings the signed-in agent's own phone (the desktop gets `call.offered` with
/// the customer's card at once), and when the agent answers calls the number through the
/// profile's `[outbound]` gateway and bridges the two, recorded, logged as an outbound contact.
/// Numbers outside `outbound.allow` are refused (422 naming `number`, with the reason).
#[utoipa::path(post, path = "/api/dial", request_body = DialIn,
    responses((status = 202, body = DialOut), (status = 409, body = ApiErrorBody),
        (status = 422, body = ApiErrorBody)))]
async fn dial(
    State(s): State<AppState>,
    me: Principal,
    ApiJson(d): ApiJson<DialIn>,
) -> Result<(StatusCode, Json<DialOut>), ApiError> {
    if d.number.trim().is_empty() {
        return Err(ApiError::invalid("number", "a number is required"));
    }
    let Some(dialer) = &s.dialer else {
        return Err(crate::calls::placing::DialFailure::NotConfigured.into());
    };
    let placed = dialer
        .dial(crate::calls::placing::DialRequest {
            agent: me.agent_id,
            number: d.number,
            customer_id: d.customer_id,
        })
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(DialOut {
            call_id: placed.call_id.to_string(),
            contact_log_id: placed.contact_log_id.map(|l| l.get()),
            number: placed.number,
            customer_id: placed.customer_id,
        }),
    ))
}

/// Where a transfer goes: exactly one of the three.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TransferTarget {
    agent_id: Option<i64>,
    queue_id: Option<i64>,
    /// An outside number, called through the profile's `[outbound]` gateway (checked against
    /// `outbound.allow`).
    number: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TransferIn {
    to: TransferTarget,
    /// `blind` (the default): the caller is handed over at once. `attended`: the caller hears
    /// music while the target rings, the agent talks to the target first, then
    /// `/transfer/complete` or `/transfer/cancel`.
    #[serde(default)]
    mode: Option<String>,
}

/// Blind (the default): hands the caller over at once to an agent's phone, into a queue or out
/// to a number: the agent's leg is hung up, the caller hears music while the target rings; a
/// target agent who does not answer leaves the caller in the call's queue.
///
/// Attended: the caller hears music while the target (an agent, whoever of a queue is free, or
/// a number) rings on a consultation leg; once it answers the agent and the target talk
/// (`call.consult` events to both desktops), then `/transfer/complete` joins the caller and the
/// target, `/transfer/cancel` goes back to the caller. A target that refuses or does not
/// answer ends the consultation on its own. The target agent's desktop gets its own
/// `call.offered` with the same customer card.
#[utoipa::path(post, path = "/api/calls/{id}/transfer", request_body = TransferIn,
    params(("id" = String, Path, description = "The call id of the events, or the contact log id")),
    responses((status = 200, body = ControlOut), (status = 404, body = ApiErrorBody),
        (status = 409, body = ApiErrorBody), (status = 422, body = ApiErrorBody)))]
async fn transfer_call(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<String>,
    ApiJson(t): ApiJson<TransferIn>,
) -> Result<Json<ControlOut>, ApiError> {
    use crate::calls::control::{Control, TransferTo};
    let attended = match t.mode.as_deref().unwrap_or("blind") {
        "blind" => false,
        "attended" => true,
        other => {
            return Err(ApiError::invalid(
                "mode",
                format!("{other:?} is not blind or attended"),
            ))
        }
    };
    let to = match (t.to.agent_id, t.to.queue_id, &t.to.number) {
        (Some(agent), None, None) => {
            let known = s.store.agent(agent).await?.is_some_and(|a| a.active);
            if !known {
                return Err(ApiError::invalid("to.agent_id", "no such agent"));
            }
            let state = s
                .board
                .lock()
                .map_err(|_| ApiError::internal("board"))?
                .agent_state(agent)
                .unwrap_or("offline")
                .to_string();
            if state != "available" {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "agent_not_available",
                    format!("that agent is {state}, not available"),
                ));
            }
            TransferTo::Agent(agent)
        }
        (None, Some(queue), None) => {
            let known = s
                .store
                .queues()
                .await?
                .iter()
                .any(|q| q.id == queue && q.active);
            if !known {
                return Err(ApiError::invalid("to.queue_id", "no such queue"));
            }
            TransferTo::Queue(queue)
        }
        (None, None, Some(number)) => {
            let Some(dialer) = &s.dialer else {
                return Err(crate::calls::placing::DialFailure::NotConfigured.into());
            };
            match dialer.gateway_for(number).await {
                Ok(gw) => TransferTo::Number(Box::new(gw)),
                Err(crate::calls::placing::DialFailure::Number(e)) => {
                    return Err(ApiError::invalid("to.number", e.to_string()))
                }
                Err(e) => return Err(e.into()),
            }
        }
        _ => {
            return Err(ApiError::invalid(
                "to",
                "give exactly one of agent_id, queue_id and number",
            ))
        }
    };
    if attended {
        control_call(&s, &me, &id, Control::Consult(to), "consult").await
    } else {
        control_call(&s, &me, &id, Control::Transfer(to), "transfer").await
    }
}

/// Completes an attended transfer: the caller and the consulted party are joined, the first
/// agent's phone is hung up (the recording goes on in the same file). 409 before the target
/// has answered.
#[utoipa::path(post, path = "/api/calls/{id}/transfer/complete",
    params(("id" = String, Path, description = "The call id of the events, or the contact log id")),
    responses((status = 200, body = ControlOut), (status = 404, body = ApiErrorBody),
        (status = 409, body = ApiErrorBody)))]
async fn complete_transfer(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<String>,
) -> Result<Json<ControlOut>, ApiError> {
    use crate::calls::control::Control;
    control_call(&s, &me, &id, Control::CompleteTransfer, "transfer_complete").await
}

/// Cancels an attended transfer: the consultation is hung up (or stops ringing) and the agent
/// is back with the caller.
#[utoipa::path(post, path = "/api/calls/{id}/transfer/cancel",
    params(("id" = String, Path, description = "The call id of the events, or the contact log id")),
    responses((status = 200, body = ControlOut), (status = 404, body = ApiErrorBody),
        (status = 409, body = ApiErrorBody)))]
async fn cancel_transfer(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<String>,
) -> Result<Json<ControlOut>, ApiError> {
    use crate::calls::control::Control;
    control_call(&s, &me, &id, Control::CancelTransfer, "transfer_cancel").await
}

/// The agent's notes and wrap-up code.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallPatch {
    notes: Option<String>,
    disposition: Option<String>,
    /// Links the call to this customer (the agent picked one of several candidates).
    customer_id: Option<i64>,
}

#[utoipa::path(patch, path = "/api/calls/{id}", request_body = CallPatch,
    responses((status = 200, body = ContactLog), (status = 404, body = ApiErrorBody)))]
async fn annotate_call(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<i64>,
    ApiJson(p): ApiJson<CallPatch>,
) -> Result<Json<ContactLog>, ApiError> {
    own_call(&s, &me, id).await?;
    if p.notes.as_ref().is_some_and(|n| n.len() > 10_000) {
        return Err(ApiError::invalid("notes", "at most 10000 bytes"));
    }
    if let Some(d) = &p.disposition {
        if d.trim().is_empty() || d.len() > 64 {
            return Err(ApiError::invalid("disposition", "1 to 64 characters"));
        }
    }
    if let Some(c) = p.customer_id {
        s.store.link_call_customer(id, c).await?;
    }
    let log = s
        .store
        .annotate_call(id, p.notes.as_deref(), p.disposition.as_deref())
        .await?;
    let _ = s
        .store
        .audit(&me.username, "call.annotate", &format!("call:{id}"), None)
        .await;
    Ok(Json(log))
}

// ---------------------------------------------------------------- recordings

async fn own_recording(s: &AppState, me: &Principal, id: i64) -> Result<Recording, ApiError> {
    let r = s
        .store
        .recording(id)
        .await?
        .ok_or_else(|| ApiError::not_found("recording"))?;
    if !me.role.sees_all() && !s.store.recording_is_agents(id, me.agent_id).await? {
        return Err(ApiError::not_found("recording"));
    }
    Ok(r)
}

#[utoipa::path(get, path = "/api/recordings/{id}", responses((status = 200, body = Recording), (status = 404, body = ApiErrorBody)))]
async fn get_recording(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<i64>,
) -> Result<Json<Recording>, ApiError> {
    Ok(Json(own_recording(&s, &me, id).await?))
}

/// Streams the WAV; honours `Range: bytes=a-b` (206) so players can seek. Every access is
/// audited.
#[utoipa::path(get, path = "/api/recordings/{id}/audio",
    responses((status = 200, content_type = "audio/wav", body = Vec<u8>), (status = 206, description = "a byte range"),
              (status = 410, description = "deleted by retention", body = ApiErrorBody),
              (status = 416, body = ApiErrorBody)))]
async fn recording_audio(
    State(s): State<AppState>,
    me: Principal,
    addr: ClientAddr,
    Path(id): Path<i64>,
    Query(q): Query<AudioQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let download = matches!(q.download.as_deref(), Some("1") | Some("true"));
    let r = own_recording(&s, &me, id).await?;
    // Retention removed it (the contact log stays): gone for good, not "not found".
    let stored = match (&r.expired_at, &r.archived_to) {
        (_, Some(archived)) => archived.clone(),
        (Some(at), None) => {
            let when = jiff::Timestamp::from_millisecond(*at)
                .map(|t| t.strftime("%Y-%m-%d").to_string())
                .unwrap_or_default();
            return Err(ApiError::new(
                StatusCode::GONE,
                "expired",
                format!("recording {id} expired on {when} (retention) and was deleted"),
            ));
        }
        (None, None) => r.path.clone(),
    };
    let path = std::path::PathBuf::from(&stored);
    let path = if path.is_absolute() {
        path
    } else {
        std::env::current_dir()
            .map(|d| d.join(&path))
            .unwrap_or(path)
    };
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| ApiError::not_found("recording file"))?;
    let len = file
        .metadata()
        .await
        .map_err(|_| ApiError::not_found("recording file"))?
        .len();
    // Every request is audited, but a player asks for many ranges while seeking: the requests
    // of one user for one recording within a minute are one playback entry.
    if download || s.plays.first_in_a_while(&me.username, id) {
        let _ = s
            .store
            .audit_from(
                &me.username,
                if download {
                    "recording.download"
                } else {
                    "recording.play"
                },
                &format!("recording:{id}"),
                None,
                addr.text().as_deref(),
            )
            .await;
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, len));
    let (start, end, status) = match range {
        None => (0, len.saturating_sub(1), StatusCode::OK),
        Some(Some((a, b))) => (a, b, StatusCode::PARTIAL_CONTENT),
        Some(None) => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
                Json(json!({"error": {"code": "range", "message": "range not satisfiable", "field": "Range"}})),
            )
                .into_response())
        }
    };
    let count = if len == 0 { 0 } else { end - start + 1 };
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|_| ApiError::not_found("recording file"))?;
    let stream = tokio_util_stream(file.take(count));
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "audio/wav")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, count.to_string());
    if status == StatusCode::PARTIAL_CONTENT {
        resp = resp.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
    }
    if download {
        resp = resp.header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"recording-{id}.wav\""),
        );
    }
    resp.body(Body::from_stream(stream))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

#[derive(Deserialize)]
struct AudioQuery {
    /// `1`: sent as an attachment, audited as a download.
    download: Option<String>,
}

/// Reads a file in 64 KiB chunks as a body stream.
fn tokio_util_stream(
    mut r: tokio::io::Take<tokio::fs::File>,
) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> {
    futures_util::stream::poll_fn(move |cx| {
        let mut buf = vec![0u8; 65536];
        let mut rb = tokio::io::ReadBuf::new(&mut buf);
        match tokio::io::AsyncRead::poll_read(std::pin::Pin::new(&mut r), cx, &mut rb) {
            std::task::Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    std::task::Poll::Ready(None)
                } else {
                    buf.truncate(n);
                    std::task::Poll::Ready(Some(Ok(buf)))
                }
            }
            std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Some(Err(e))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    })
}

/// One `bytes=` range (RFC 9110 §14.1.2): `a-b`, `a-` or `-n`. `None` when unsatisfiable.
fn parse_range(v: &str, len: u64) -> Option<(u64, u64)> {
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || len == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return None;
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            len - 1
        } else {
            b.parse::<u64>().ok()?.min(len - 1)
        };
        (start, end)
    };
    (start <= end && start < len).then_some((start, end))
}

// ---------------------------------------------------------------- work orders

#[derive(Deserialize)]
struct WorkOrderQuery {
    status: Option<String>,
    assignee_agent_id: Option<i64>,
    customer_id: Option<i64>,
    kind: Option<WorkOrderKind>,
    /// RFC 3339: only orders due before it.
    due_before: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/work-orders",
    params(("status" = Option<String>, Query), ("assignee_agent_id" = Option<i64>, Query), ("customer_id" = Option<i64>, Query),
           ("kind" = Option<String>, Query), ("due_before" = Option<String>, Query),
           ("cursor" = Option<String>, Query), ("limit" = Option<i64>, Query)),
    responses((status = 200, body = [WorkOrder])))]
async fn list_work_orders(
    State(s): State<AppState>,
    me: Principal,
    Query(q): Query<WorkOrderQuery>,
) -> Result<Response, ApiError> {
    let limit = limit_of(q.limit)?;
    if !me.role.sees_all() && q.assignee_agent_id.is_some_and(|a| a != me.agent_id) {
        return Err(ApiError::forbidden(
            "agents see their own and unassigned work orders",
        ));
    }
    let status = q
        .status
        .as_deref()
        .map(|v| {
            WorkOrderStatus::parse(v).ok_or_else(|| {
                ApiError::invalid("status", "one of open, in_progress, resolved, closed")
            })
        })
        .transpose()?;
    let items = s
        .store
        .work_orders(&WorkOrderFilter {
            status,
            assignee: q.assignee_agent_id,
            customer: q.customer_id,
            kind: q.kind,
            visible_to: (!me.role.sees_all()).then_some(me.agent_id),
            before: cursor_of(&q.cursor)?,
            due_before: q
                .due_before
                .as_deref()
                .filter(|d| !d.trim().is_empty())
                .map(|d| {
                    parse_rfc3339_ms(d)
                        .ok_or_else(|| ApiError::invalid("due_before", "not an RFC 3339 time"))
                })
                .transpose()?,
            limit,
        })
        .await?;
    Ok(page(items, limit, |w| w.id).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkOrderIn {
    kind: WorkOrderKind,
    title: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default = "d3")]
    priority: i64,
    #[serde(default)]
    assignee_agent_id: Option<i64>,
    /// RFC 3339.
    #[serde(default)]
    due_at: Option<String>,
    /// The contact log it comes from (the pop's `contact_log_id`).
    #[serde(default)]
    call_id: Option<i64>,
    #[serde(default)]
    customer_id: Option<i64>,
}

fn d3() -> i64 {
    3
}

/// Creates a work order; from the pop, pass the call's `contact_log_id` as `call_id` (its
/// customer is taken from the call when not given).
#[utoipa::path(post, path = "/api/work-orders", request_body = WorkOrderIn,
    responses((status = 201, body = WorkOrder), (status = 422, body = ApiErrorBody)))]
async fn create_work_order(
    State(s): State<AppState>,
    me: Principal,
    ApiJson(w): ApiJson<WorkOrderIn>,
) -> Result<(StatusCode, Json<WorkOrder>), ApiError> {
    if !me.role.sees_all() && w.assignee_agent_id.is_some_and(|a| a != me.agent_id) {
        return Err(ApiError::invalid(
            "assignee_agent_id",
            "agents assign work orders to themselves only",
        ));
    }
    let mut customer = w.customer_id;
    if let Some(call) = w.call_id {
        let c = own_call(&s, &me, call)
            .await
            .map_err(|_| ApiError::invalid("call_id", "no such call of yours"))?;
        customer = customer.or(c.customer_id);
    }
    let due_at = w
        .due_at
        .as_deref()
        .map(|d| {
            parse_rfc3339_ms(d).ok_or_else(|| ApiError::invalid("due_at", "not an RFC 3339 time"))
        })
        .transpose()?;
    let wo = s
        .store
        .create_work_order(
            &NewWorkOrder {
                kind: w.kind,
                priority: w.priority,
                title: w.title,
                description: w.description,
                assignee_agent_id: w
                    .assignee_agent_id
                    .or(Some(me.agent_id).filter(|_| me.role == Role::Agent)),
                due_at,
                call_id: w.call_id,
                customer_id: customer,
            },
            &me.username,
        )
        .await?;
    s.bus.publish(Event::new(Payload::WorkOrderCreated {
        work_order: Box::new(wo.clone()),
    }));
    Ok((StatusCode::CREATED, Json(wo)))
}

#[utoipa::path(get, path = "/api/work-orders/{id}", responses((status = 200, body = WorkOrder), (status = 404, body = ApiErrorBody)))]
async fn get_work_order(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<i64>,
) -> Result<Json<WorkOrder>, ApiError> {
    Ok(Json(visible_work_order(&s, &me, id).await?))
}

/// A work order the caller may see: agents their own and unassigned ones.
async fn visible_work_order(s: &AppState, me: &Principal, id: i64) -> Result<WorkOrder, ApiError> {
    let wo = s
        .store
        .work_order(id)
        .await?
        .ok_or_else(|| ApiError::not_found("work order"))?;
    if !me.role.sees_all() && wo.assignee_agent_id.is_some_and(|a| a != me.agent_id) {
        return Err(ApiError::not_found("work order"));
    }
    Ok(wo)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkOrderPatchIn {
    status: Option<WorkOrderStatus>,
    priority: Option<i64>,
    /// null unassigns.
    #[serde(default, deserialize_with = "some_option")]
    #[schema(value_type = Option<i64>)]
    assignee_agent_id: Option<Option<i64>>,
    #[serde(default, deserialize_with = "some_option")]
    #[schema(value_type = Option<String>)]
    due_at: Option<Option<String>>,
    description: Option<String>,
}

/// Tells "absent" (None) from "null" (Some(None)).
fn some_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Moves a work order along (open → in_progress → resolved → closed, or reopens it) or
/// changes its priority, assignee, due time or description; each change is in its history.
#[utoipa::path(patch, path = "/api/work-orders/{id}", request_body = WorkOrderPatchIn,
    responses((status = 200, body = WorkOrder), (status = 422, body = ApiErrorBody)))]
async fn update_work_order(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<i64>,
    ApiJson(p): ApiJson<WorkOrderPatchIn>,
) -> Result<Json<WorkOrder>, ApiError> {
    visible_work_order(&s, &me, id).await?;
    if !me.role.sees_all()
        && p.assignee_agent_id
            .is_some_and(|a| a.is_some_and(|a| a != me.agent_id))
    {
        return Err(ApiError::invalid(
            "assignee_agent_id",
            "agents take work orders themselves or release them",
        ));
    }
    let due_at = match p.due_at {
        None => None,
        Some(None) => Some(None),
        Some(Some(d)) => {
            Some(Some(parse_rfc3339_ms(&d).ok_or_else(|| {
                ApiError::invalid("due_at", "not an RFC 3339 time")
            })?))
        }
    };
    let wo = s
        .store
        .update_work_order(
            id,
            &WorkOrderPatch {
                status: p.status,
                priority: p.priority,
                assignee_agent_id: p.assignee_agent_id,
                due_at,
                description: p.description,
            },
            &me.username,
        )
        .await?;
    s.bus.publish(Event::new(Payload::WorkOrderUpdated {
        work_order: Box::new(wo.clone()),
    }));
    Ok(Json(wo))
}

#[utoipa::path(get, path = "/api/work-orders/{id}/history", responses((status = 200, body = [WorkOrderChange])))]
async fn work_order_history(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    visible_work_order(&s, &me, id).await?;
    let items = s.store.work_order_history(id).await?;
    Ok(Json(json!({ "items": items, "next": null })).into_response())
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some((0, 99)));
        assert_eq!(parse_range("bytes=900-", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=-100", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=990-2000", 1000), Some((990, 999)));
        assert_eq!(parse_range("bytes=1000-", 1000), None);
        assert_eq!(parse_range("bytes=5-1", 1000), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
    }
}
