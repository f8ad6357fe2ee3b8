//! The desktops' WebSocket (`/ws`). The token comes as `?token=`, as a first message
//! `{"type":"auth","token":…}`, or (the pages) as the session cookie. A browser connecting from
//! another origin is refused before the upgrade (cross-site WebSocket hijacking). On connecting (and after falling behind) a desktop gets what it
//! may see of the live state: agent states, callers waiting (supervisors) and the calls in
//! progress, closed by `{"type":"synced"}`; then every event as it happens. Desktops send `{"type":"set_state","state":"available"|"paused"}`.
//!
//! The screen-pop latency is measured here, after the `call.offered` frame has been written to
//! the socket, from the instant the INVITE came off the SIP socket.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, info, info_span, Instrument};

use super::auth::{principal_of, Principal};
use super::AppState;
use crate::events::{Event, Payload, Viewer};

/// Live WebSocket connections per user (agent id): a user may hold `limits.ws_per_user` (a
/// desktop in a few windows, a wallboard), not enough to exhaust the server's descriptors.
#[derive(Debug, Default)]
pub struct DeskCounts(std::sync::Mutex<std::collections::HashMap<i64, usize>>);

/// One connection's place in [`DeskCounts`], given back when the session ends.
struct DeskSlot {
    counts: Arc<DeskCounts>,
    agent: i64,
}

impl DeskCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<i64, usize>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(self: &Arc<Self>, agent: i64, max: usize) -> Option<DeskSlot> {
        let mut m = self.lock();
        let n = m.entry(agent).or_default();
        if *n >= max.max(1) {
            return None;
        }
        *n += 1;
        Some(DeskSlot {
            counts: self.clone(),
            agent,
        })
    }
}

impl Drop for DeskSlot {
    fn drop(&mut self) {
        let mut m = self.counts.lock();
        if let Some(n) = m.get_mut(&self.agent) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.agent);
            }
        }
    }
}

/// How often a desktop is pinged, and how long it may stay silent (pongs count) before its
/// socket is closed.
const PING_EVERY: Duration = Duration::from_secs(30);
const SILENT_FOR: Duration = Duration::from_secs(120);

#[derive(Deserialize)]
pub(crate) struct WsQuery {
    token: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Auth {
        token: String,
    },
    SetState {
        state: String,
        /// Why the agent pauses ("Lunch"), shown on the wallboard.
        #[serde(default)]
        note: Option<String>,
    },
    Ping,
}

pub async fn upgrade(
    State(s): State<AppState>,
    Query(q): Query<WsQuery>,
    headers: axum::http::HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !super::auth::same_origin(&headers) {
        info!(
            origin = ?headers.get(axum::http::header::ORIGIN),
            "WebSocket from a foreign origin refused"
        );
        return super::error::ApiError::forbidden("WebSocket from a foreign origin")
            .into_response();
    }
    let token = q
        .token
        .or_else(|| super::auth::cookie(&headers, super::auth::SESSION_COOKIE));
    ws.on_upgrade(move |socket| async move {
        let span = info_span!("desktop");
        session(s, token, socket).instrument(span).await
    })
}

fn text(s: &str) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

fn error_frame(message: &str) -> Message {
    text(
        &json!({"type": "error", "error": {"code": "bad_request", "message": message}}).to_string(),
    )
}

async fn session(s: AppState, token: Option<String>, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    // Authenticate: query token, or the first message within 10 s.
    let token = match token {
        Some(t) => Some(t),
        None => match tokio::time::timeout(Duration::from_secs(10), rx.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str::<ClientMessage>(&t) {
                Ok(ClientMessage::Auth { token }) => Some(token),
                _ => None,
            },
            _ => None,
        },
    };
    let principal: Option<(Principal, String)> = match token {
        Some(t) => principal_of(&s.store, &t).await.ok().map(|p| (p, t)),
        None => None,
    };
    let Some((me, token)) = principal else {
        let _ = tx
            .send(text(
                &json!({"type": "error", "error": {"code": "unauthorized", "message": "a valid token is required"}})
                    .to_string(),
            ))
            .await;
        let _ = tx.send(Message::Close(None)).await;
        return;
    };
    let max = s.limits.ws_per_user;
    let Some(_slot) = s.desks.take(me.agent_id, max) else {
        info!(
            agent = me.agent_id,
            max, "desktop refused: the user has as many as allowed"
        );
        metrics::counter!("screenpop_ws_refused_total", "why" => "per_user").increment(1);
        let message = format!("at most {max} live connections per user; close another window");
        let _ = tx
            .send(text(
                &json!({"type": "error", "error": {"code": "too_many_connections", "message": message}})
                    .to_string(),
            ))
            .await;
        let close = axum::extract::ws::CloseFrame {
            code: axum::extract::ws::close_code::POLICY,
            reason: Utf8Bytes::from_static("too many connections"),
        };
        let _ = tx.send(Message::Close(Some(close))).await;
        return;
    };
    info!(
        agent = me.agent_id,
        role = me.role.as_str(),
        "desktop connected"
    );
    metrics::gauge!("screenpop_desktops").increment(1.0);
    s.acd.desktop(me.agent_id, true);
    let viewer = Viewer {
        agent: me.agent_id,
        sees_all: me.role.sees_all(),
    };
    // Subscribe before the snapshot so nothing falls between them.
    let mut events = s.bus.subscribe(viewer);
    let hello = json!({"type": "hello", "agent_id": me.agent_id, "role": me.role}).to_string();
    let mut ok = tx.send(text(&hello)).await.is_ok();
    if ok {
        ok = send_snapshot(&s, viewer, &mut tx).await;
    }
    // The session is checked again every minute: a socket never outlives its token.
    let mut recheck = tokio::time::interval(Duration::from_secs(60));
    recheck.tick().await;
    // A desktop that has gone (a laptop asleep, a NAT mapping lost) says nothing: pinged
    // every 30 s, it is closed after two minutes without a frame, so it does not hold one of
    // its user's places for ever.
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut heard = tokio::time::Instant::now();
    while ok {
        tokio::select! {
            _ = ping.tick() => {
                if heard.elapsed() > SILENT_FOR {
                    info!(agent = me.agent_id, "desktop silent for too long: closed");
                    break;
                }
                ok = tx.send(Message::Ping(Default::default())).await.is_ok();
            }
            _ = recheck.tick() => {
                // A store outage is not an expiry: only a refused token closes the socket.
                let refused = matches!(
                    principal_of(&s.store, &token).await,
                    Err(e) if e.status == axum::http::StatusCode::UNAUTHORIZED
                );
                if refused {
                    let _ = tx
                        .send(text(
                            &json!({"type": "error", "error": {"code": "unauthorized", "message": "the session expired"}})
                                .to_string(),
                        ))
                        .await;
                    break;
                }
            }
            ev = events.recv() => match ev {
                Ok(e) if matches!(e.payload, Payload::AgentDeactivated { agent_id } if agent_id == me.agent_id) => {
                    // The account was deactivated: its desktops stop at once, not at the next
                    // minute's check.
                    let _ = tx
                        .send(text(
                            &json!({"type": "error", "error": {"code": "unauthorized", "message": "the account was deactivated"}})
                                .to_string(),
                        ))
                        .await;
                    break;
                }
                Ok(e) if viewer.may_see(&e) => ok = deliver(&e, &mut tx).await,
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    debug!(missed = n, "desktop fell behind; resynchronizing");
                    ok = send_snapshot(&s, viewer, &mut tx).await;
                }
                Err(RecvError::Closed) => break,
            },
            m = rx.next() => {
                heard = tokio::time::Instant::now();
                match m {
                    Some(Ok(Message::Text(t))) => {
                        let reply = on_client_message(&s, &me, &t);
                        if let Some(r) = reply {
                            ok = tx.send(r).await.is_ok();
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
        }
    }
    metrics::gauge!("screenpop_desktops").decrement(1.0);
    s.acd.desktop(me.agent_id, false);
    info!(agent = me.agent_id, "desktop disconnected");
}

async fn send_snapshot(
    s: &AppState,
    viewer: Viewer,
    tx: &mut futures_util::stream::SplitSink<WebSocket, Message>,
) -> bool {
    let snapshot = s.bus.snapshot(viewer);
    // An agent whose state never changed is offline (the ACD's initial state): say so, so a
    // desktop always knows its own state after connecting.
    let known = snapshot
        .iter()
        .any(|e| matches!(&e.payload, Payload::AgentState(s) if s.agent_id == viewer.agent));
    if !known {
        let own = json!({"type": "agent.state", "agent_id": viewer.agent, "state": "offline"});
        if tx.send(text(&own.to_string())).await.is_err() {
            return false;
        }
    }
    for e in snapshot {
        if tx.send(text(&e.json)).await.is_err() {
            return false;
        }
    }
    // The end of the catch-up: what the desktop shows that the snapshot did not list is over.
    tx.send(text(r#"{"type":"synced"}"#)).await.is_ok()
}

async fn deliver(
    e: &Arc<Event>,
    tx: &mut futures_util::stream::SplitSink<WebSocket, Message>,
) -> bool {
    if tx
        .send(Message::Text(Utf8Bytes::from(&*e.json)))
        .await
        .is_err()
    {
        return false;
    }
    if let (Some(since), Payload::CallOffered(_)) = (e.since, &e.payload) {
        let latency = since.elapsed();
        metrics::histogram!("screenpop_pop_latency_seconds").record(latency.as_secs_f64());
        info!(
            target: "screenpop::pop",
            call = e.call.as_ref().map(|c| c.as_str()).unwrap_or(""),
            agent = e.agent,
            latency_us = latency.as_micros() as u64,
            "screen-pop written"
        );
    }
    true
}

fn on_client_message(s: &AppState, me: &Principal, t: &str) -> Option<Message> {
    match serde_json::from_str::<ClientMessage>(t) {
        Ok(ClientMessage::SetState { state, note }) => match state.as_str() {
            "available" => {
                s.acd.set_available(me.agent_id, true);
                None
            }
            "paused" => {
                let note = note
                    .map(|n| n.trim().chars().take(64).collect::<String>())
                    .filter(|n| !n.is_empty());
                s.acd.pause_with_note(me.agent_id, note);
                None
            }
            _ => Some(error_frame("state: must be \"available\" or \"paused\"")),
        },
        Ok(ClientMessage::Ping) => Some(text(r#"{"type":"pong"}"#)),
        Ok(ClientMessage::Auth { .. }) => None,
        Err(e) => Some(error_frame(&e.to_string())),
    }
}
