//! `/api/blocks`: the sources blocked for guessing passwords (SIP digest, and `POST
//! /api/login`) or for flooding the SIP port, for admins to see and to lift (a real phone
//! behind a NAT that shares its address with a guesser, a user who mistyped once too often).

use std::net::IpAddr;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

use super::api::ApiErrorBody;
use super::auth::Principal;
use super::error::ApiError;
use super::AppState;
use crate::guard::SharedGuard;
use crate::store::agents::Role;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/blocks", get(list_blocks))
        .route("/blocks/{scope}/{address}", delete(lift_block))
}

/// A source blocked for guessing passwords.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct BlockOut {
    /// `sip` (digest on REGISTER or a trunk's INVITE), `http` (`POST /api/login`) or `flood`
    /// (too many SIP messages a second).
    scope: &'static str,
    address: String,
    /// When the block ends (RFC 3339).
    until: String,
    remaining_secs: u64,
    /// 1 for a first block; each repeat doubles the ban.
    offence: u32,
}

/// The policies that block, by the scope the API names them with.
enum Blocker<'a> {
    Guard(&'a SharedGuard),
    Flood(&'a crate::flood::FloodGate),
}

impl Blocker<'_> {
    fn blocks(&self, now: Instant) -> Vec<crate::guard::BlockInfo> {
        match self {
            Blocker::Guard(g) => g.lock().blocks(now),
            Blocker::Flood(f) => f.lock().blocks(now),
        }
    }

    fn lift(&self, now: Instant, addr: IpAddr) -> bool {
        match self {
            Blocker::Guard(g) => g.lock().lift(now, addr),
            Blocker::Flood(f) => f.lock().lift(now, addr),
        }
    }
}

const SCOPES: [&str; 3] = ["sip", "http", "flood"];

fn blocker_of<'a>(s: &'a AppState, scope: &str) -> Option<(&'static str, Blocker<'a>)> {
    match scope {
        "sip" => Some(("sip", Blocker::Guard(&s.sip_guard))),
        "http" => Some(("http", Blocker::Guard(&s.http_guard))),
        "flood" => Some(("flood", Blocker::Flood(&s.flood))),
        _ => None,
    }
}

/// The blocks in force (admin).
#[utoipa::path(get, path = "/api/blocks", responses((status = 200, body = [BlockOut])))]
pub(crate) async fn list_blocks(
    State(s): State<AppState>,
    me: Principal,
) -> Result<Json<Value>, ApiError> {
    me.require(Role::Admin)?;
    let now = Instant::now();
    let wall = crate::store::now_ms();
    let mut items = Vec::new();
    for scope in SCOPES {
        let Some((scope, g)) = blocker_of(&s, scope) else {
            continue;
        };
        for b in g.blocks(now) {
            items.push(BlockOut {
                scope,
                address: b.addr.to_string(),
                until: crate::time::rfc3339_ms(wall + b.remaining.as_millis() as i64),
                remaining_secs: b.remaining.as_secs(),
                offence: b.offence,
            });
        }
    }
    Ok(Json(json!({ "items": items, "next": null })))
}

/// Lifts a block (admin): the source starts again with no failures and no offences.
#[utoipa::path(delete, path = "/api/blocks/{scope}/{address}",
    responses((status = 204), (status = 404, body = ApiErrorBody), (status = 422, body = ApiErrorBody)))]
pub(crate) async fn lift_block(
    State(s): State<AppState>,
    me: Principal,
    Path((scope, address)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    me.require(Role::Admin)?;
    let Some((scope, g)) = blocker_of(&s, &scope) else {
        return Err(ApiError::invalid("scope", "sip, http or flood"));
    };
    let addr: IpAddr = address
        .parse()
        .map_err(|_| ApiError::invalid("address", "not an IP address"))?;
    let lifted = g.lift(Instant::now(), addr);
    if !lifted {
        return Err(ApiError::not_found("block"));
    }
    if scope == "http" {
        s.logins.forgive(addr);
    }
    tracing::info!(%addr, scope, by = %me.username, "block lifted");
    let _ = s
        .store
        .audit(
            &me.username,
            "block.lift",
            &format!("address:{addr}"),
            Some(scope),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}
