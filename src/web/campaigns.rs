//! `/api/campaigns`: supervisors write campaigns, preview who gets what, start, pause and
//! resume them and read each attempt's result. Everything is checked when the campaign is
//! saved (the refusal names the field); the runner in `serve` does the sending.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::api::ApiErrorBody;
use super::auth::Principal;
use super::error::{ApiError, ApiJson};
use super::AppState;
use crate::campaigns::run::Preview;
use crate::campaigns::spec::{CampaignSpec, Checked};
use crate::store::agents::Role;
use crate::store::campaigns::{Attempt, CampaignRow, CampaignState, Progress};
use crate::time::rfc3339_ms;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/campaigns", get(list_campaigns).post(create_campaign))
        .route(
            "/campaigns/audio",
            post(upload_audio).layer(axum::extract::DefaultBodyLimit::max(MAX_UPLOAD)),
        )
        .route("/campaigns/{id}", get(get_campaign))
        .route("/campaigns/{id}/preview", get(preview_campaign))
        .route("/campaigns/{id}/start", post(start_campaign))
        .route("/campaigns/{id}/pause", post(pause_campaign))
        .route("/campaigns/{id}/resume", post(resume_campaign))
        .route("/campaigns/{id}/attempts", get(list_attempts))
}

/// A campaign, its state and how far it got.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct CampaignOut {
    id: i64,
    name: String,
    state: CampaignState,
    spec: CampaignSpec,
    next_run_at: Option<String>,
    last_run_at: Option<String>,
    created_by: String,
    created_at: String,
    progress: Progress,
}

impl CampaignOut {
    async fn of(s: &AppState, row: CampaignRow) -> Result<CampaignOut, ApiError> {
        let spec: CampaignSpec = serde_json::from_str(&row.spec)
            .map_err(|_| ApiError::internal("reading the campaign"))?;
        let progress = s.store.campaign_progress(row.id).await?;
        Ok(CampaignOut {
            id: row.id,
            name: row.name,
            state: row.state,
            spec,
            next_run_at: row.next_run_at.map(rfc3339_ms),
            last_run_at: row.last_run_at.map(rfc3339_ms),
            created_by: row.created_by,
            created_at: rfc3339_ms(row.created_at),
            progress,
        })
    }
}

fn checked(s: &AppState, row: &CampaignRow) -> Result<Checked, ApiError> {
    Checked::load(&row.spec, &s.campaigns.base).map_err(|e| ApiError::invalid(e.field, e.why))
}

async fn row(s: &AppState, id: i64) -> Result<CampaignRow, ApiError> {
    s.store
        .campaign(id)
        .await?
        .ok_or_else(|| ApiError::not_found("campaign"))
}

/// Saves a campaign (supervisor) as a draft: nothing is sent until it is started.
#[utoipa::path(post, path = "/api/campaigns", request_body = CampaignSpec,
    responses((status = 201, body = CampaignOut), (status = 403, body = ApiErrorBody),
              (status = 422, body = ApiErrorBody)))]
pub(crate) async fn create_campaign(
    State(s): State<AppState>,
    me: Principal,
    ApiJson(spec): ApiJson<CampaignSpec>,
) -> Result<(StatusCode, Json<CampaignOut>), ApiError> {
    me.require(Role::Supervisor)?;
    // Through the API a recording is one uploaded here (or another file under the server's
    // folder): no absolute path or `..`, so the API cannot be used to probe the server's files.
    if let Some(a) = &spec.audio {
        let p = std::path::Path::new(a);
        if p.is_absolute()
            || p.components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(ApiError::invalid(
                "audio",
                "a recording uploaded with POST /api/campaigns/audio (campaign-audio/…), or \
                 another path under the server's folder",
            ));
        }
    }
    let row = crate::campaigns::run::save(&s.store, spec, &s.campaigns.base, &me.username).await?;
    let _ = s
        .store
        .audit(
            &me.username,
            "campaign.create",
            &format!("campaign:{}", row.id),
            Some(&row.name),
        )
        .await;
    Ok((StatusCode::CREATED, Json(CampaignOut::of(&s, row).await?)))
}

/// The largest greeting upload: five minutes of 16-bit 48 kHz stereo, with room to spare.
const MAX_UPLOAD: usize = 64 * 1024 * 1024;

/// Where uploaded greetings are kept, under the campaigns' base directory.
const AUDIO_DIR: &str = "campaign-audio";

/// A greeting recording uploaded from the console: checked (it must play) and kept under
/// `campaign-audio/` by its content's hash, so uploading the same file twice keeps one copy.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Uploaded {
    /// The value for the campaign's `audio`.
    audio: String,
    seconds: f64,
}

/// Takes a WAV for a voice campaign (supervisor): 422 on `audio` when it cannot be played.
#[utoipa::path(post, path = "/api/campaigns/audio", request_body(content = Vec<u8>, content_type = "audio/wav"),
    responses((status = 201, body = Uploaded), (status = 422, body = ApiErrorBody)))]
pub(crate) async fn upload_audio(
    State(s): State<AppState>,
    me: Principal,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    use sha2::{Digest, Sha256};
    me.require(Role::Supervisor)?;
    if body.is_empty() {
        return Err(ApiError::invalid("audio", "the upload is empty"));
    }
    let bytes = body.clone();
    let (clip, hash) = tokio::task::spawn_blocking(move || {
        let clip = crate::media::player::Clip::from_wav_at_most(
            &bytes,
            "the upload",
            crate::campaigns::spec::MAX_AUDIO,
        )?;
        Ok::<_, crate::media::player::ClipError>((clip, hex::encode(Sha256::digest(&bytes))))
    })
    .await
    .map_err(|_| ApiError::internal("reading the upload"))?
    .map_err(|e| ApiError::invalid("audio", e.to_string()))?;
    let name = format!("{AUDIO_DIR}/{}.wav", &hash[..24]);
    let dir = s.campaigns.base.join(AUDIO_DIR);
    let path = s.campaigns.base.join(&name);
    let tmp = dir.join(format!(".upload-{:016x}", rand::random::<u64>()));
    let write = async {
        tokio::fs::create_dir_all(&dir).await?;
        tokio::fs::write(&tmp, &body).await?;
        tokio::fs::rename(&tmp, &path).await
    };
    if let Err(e) = write.await {
        let _ = tokio::fs::remove_file(&tmp).await;
        tracing::warn!(error = %e, path = %path.display(), "greeting upload not kept");
        return Err(ApiError::internal("keeping the upload"));
    }
    let _ = s
        .store
        .audit(&me.username, "campaign.audio", &name, None)
        .await;
    Ok((
        StatusCode::CREATED,
        Json(Uploaded {
            audio: name,
            seconds: clip.duration().as_secs_f64(),
        }),
    ))
}

/// Every campaign with its progress, newest first (supervisor).
#[utoipa::path(get, path = "/api/campaigns", responses((status = 200, body = [CampaignOut])))]
pub(crate) async fn list_campaigns(
    State(s): State<AppState>,
    me: Principal,
) -> Result<Json<serde_json::Value>, ApiError> {
    me.require(Role::Supervisor)?;
    let mut items = Vec::new();
    for row in s.store.campaigns().await? {
        items.push(CampaignOut::of(&s, row).await?);
    }
    Ok(Json(serde_json::json!({ "items": items, "next": null })))
}

#[utoipa::path(get, path = "/api/campaigns/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = CampaignOut), (status = 404, body = ApiErrorBody)))]
pub(crate) async fn get_campaign(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<i64>,
) -> Result<Json<CampaignOut>, ApiError> {
    me.require(Role::Supervisor)?;
    let row = row(&s, id).await?;
    Ok(Json(CampaignOut::of(&s, row).await?))
}

#[derive(Deserialize)]
pub(crate) struct PreviewQuery {
    /// The local day to plan (`YYYY-MM-DD`); default today in the campaign's zone.
    day: Option<String>,
    limit: Option<usize>,
}

/// Who a run would contact and what each would get, without sending anything.
#[utoipa::path(get, path = "/api/campaigns/{id}/preview",
    params(("id" = i64, Path), ("day" = Option<String>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = Preview), (status = 404, body = ApiErrorBody)))]
pub(crate) async fn preview_campaign(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<i64>,
    Query(q): Query<PreviewQuery>,
) -> Result<Json<Preview>, ApiError> {
    me.require(Role::Supervisor)?;
    let row = row(&s, id).await?;
    let c = checked(&s, &row)?;
    let day = match &q.day {
        Some(d) => d
            .parse::<jiff::civil::Date>()
            .map_err(|_| ApiError::invalid("day", "a YYYY-MM-DD date"))?,
        None => c.schedule.local_date(jiff::Timestamp::now()),
    };
    let limit = q.limit.unwrap_or(100).min(10_000);
    Ok(Json(
        crate::campaigns::run::preview(&s.store, &c, id, day, limit).await?,
    ))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartIn {
    /// Run once now (today's occasions) and then on the schedule; otherwise the first run is
    /// the schedule's next.
    #[serde(default)]
    run_now: bool,
}

/// Starts a draft (or a finished campaign again): its runs follow the schedule.
#[utoipa::path(post, path = "/api/campaigns/{id}/start", params(("id" = i64, Path)),
    request_body = StartIn,
    responses((status = 200, body = CampaignOut), (status = 409, body = ApiErrorBody)))]
pub(crate) async fn start_campaign(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Result<Json<CampaignOut>, ApiError> {
    me.require(Role::Supervisor)?;
    // The body is optional: none starts on the schedule.
    let start: StartIn = if body.iter().all(u8::is_ascii_whitespace) {
        StartIn::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid("run_now", format!("the body does not parse: {e}")))?
    };
    let row = row(&s, id).await?;
    let c = checked(&s, &row)?;
    let now = jiff::Timestamp::now();
    let next = if start.run_now {
        Some(now.as_millisecond())
    } else {
        c.schedule.next_run(now).map(|t| t.as_millisecond())
    };
    let Some(next) = next else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "its single run is past: start it with run_now, or save it with a new time",
        ));
    };
    // "Run now" also brings an active campaign's next run forward (as the CLI does); a
    // paused one is resumed, not run.
    let moved = if start.run_now {
        s.store.run_campaign_now(id, next).await?
    } else {
        s.store
            .set_campaign_state(
                id,
                &[CampaignState::Draft, CampaignState::Done],
                CampaignState::Active,
                Some(Some(next)),
            )
            .await?
    };
    if !moved {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "the campaign is {}; only a draft or a finished one starts (an active one \
                 can run now; a paused one resumes)",
                row.state.as_str()
            ),
        ));
    }
    let _ = s
        .store
        .audit(
            &me.username,
            "campaign.start",
            &format!("campaign:{id}"),
            None,
        )
        .await;
    s.campaigns.wake();
    Ok(Json(CampaignOut::of(&s, self::row(&s, id).await?).await?))
}

/// Holds a running campaign: nothing more is sent until it is resumed (a message already on
/// its way finishes).
#[utoipa::path(post, path = "/api/campaigns/{id}/pause", params(("id" = i64, Path)),
    responses((status = 200, body = CampaignOut), (status = 409, body = ApiErrorBody)))]
pub(crate) async fn pause_campaign(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<i64>,
) -> Result<Json<CampaignOut>, ApiError> {
    transition(
        &s,
        &me,
        id,
        CampaignState::Active,
        CampaignState::Paused,
        "campaign.pause",
    )
    .await
}

/// Resumes a paused campaign where it stood.
#[utoipa::path(post, path = "/api/campaigns/{id}/resume", params(("id" = i64, Path)),
    responses((status = 200, body = CampaignOut), (status = 409, body = ApiErrorBody)))]
pub(crate) async fn resume_campaign(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<i64>,
) -> Result<Json<CampaignOut>, ApiError> {
    transition(
        &s,
        &me,
        id,
        CampaignState::Paused,
        CampaignState::Active,
        "campaign.resume",
    )
    .await
}

async fn transition(
    s: &AppState,
    me: &Principal,
    id: i64,
    from: CampaignState,
    to: CampaignState,
    action: &str,
) -> Result<Json<CampaignOut>, ApiError> {
    me.require(Role::Supervisor)?;
    let row = row(s, id).await?;
    if !s.store.set_campaign_state(id, &[from], to, None).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "the campaign is {}, not {}",
                row.state.as_str(),
                from.as_str()
            ),
        ));
    }
    let _ = s
        .store
        .audit(&me.username, action, &format!("campaign:{id}"), None)
        .await;
    s.campaigns.wake();
    Ok(Json(CampaignOut::of(s, self::row(s, id).await?).await?))
}

#[derive(Deserialize)]
pub(crate) struct AttemptQuery {
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

const STATUSES: &[&str] = &[
    "pending",
    "sending",
    "sent",
    "delivered",
    "answered",
    "busy",
    "no_answer",
    "failed",
    "skipped",
];

/// Each customer's attempt: status, tries, reason and the last try's contact log.
#[utoipa::path(get, path = "/api/campaigns/{id}/attempts",
    params(("id" = i64, Path), ("status" = Option<String>, Query), ("cursor" = Option<String>, Query),
           ("limit" = Option<i64>, Query)),
    responses((status = 200, body = [Attempt])))]
pub(crate) async fn list_attempts(
    State(s): State<AppState>,
    me: Principal,
    Path(id): Path<i64>,
    Query(q): Query<AttemptQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    me.require(Role::Supervisor)?;
    row(&s, id).await?;
    if let Some(st) = &q.status {
        if !STATUSES.contains(&st.as_str()) {
            return Err(ApiError::invalid(
                "status",
                format!("one of {}", STATUSES.join(", ")),
            ));
        }
    }
    let limit = match q.limit {
        None => 100,
        Some(n) if (1..=1000).contains(&n) => n,
        Some(_) => return Err(ApiError::invalid("limit", "must be between 1 and 1000")),
    };
    let after = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => c
            .parse::<i64>()
            .map_err(|_| ApiError::invalid("cursor", "not a cursor from a previous page"))?,
        None => 0,
    };
    let items = s
        .store
        .campaign_attempts(id, q.status.as_deref(), after, limit)
        .await?;
    let next = (items.len() as i64 >= limit)
        .then(|| items.last().map(|a| a.id.to_string()))
        .flatten();
    Ok(Json(serde_json::json!({ "items": items, "next": next })))
}
