//! Accounts: argon2id password hashes, bearer tokens (random 256 bits, stored as SHA-256 so
//! the table alone grants nothing), and the extractor that turns a token into a [`Principal`].
//!
//! Machines send the token as `Authorization: Bearer`; the pages get it as an `HttpOnly`,
//! `SameSite=Strict` cookie set at login, so no script (ours or another origin's) can read it.
//! A cookie-authenticated request that changes something must come from the console's own
//! origin: `SameSite` ignores ports, so a page on another port of the same host would otherwise
//! ride on the cookie.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::info;

use super::error::{ApiError, ApiJson};
use super::AppState;
use crate::store::agents::{Agent, Role};
use crate::store::Store;

/// How long a login lasts.
pub(crate) const TOKEN_TTL_MS: i64 = 12 * 3600 * 1000;

/// The shortest password an account may have.
pub(crate) const MIN_PASSWORD_CHARS: usize = 8;

/// An argon2id hash (PHC string) of `password`, which must be at least
/// [`MIN_PASSWORD_CHARS`] long.
pub(crate) fn hash_password(password: &str) -> Result<String, ApiError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::invalid(
            "password",
            format!("at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::invalid("password", e.to_string()))
}

/// [`hash_password`] on the blocking pool: argon2 is deliberately slow.
pub(crate) async fn hash_password_off_thread(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "hashing failed",
            )
        })?
}

/// Checks a password against a stored hash; a malformed hash never verifies.
pub(crate) fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to verify against when the user does not exist, so a wrong username costs the same
/// time as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password").unwrap_or_default())
}

pub(crate) fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Who is calling the API.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub agent_id: i64,
    pub username: String,
    pub role: Role,
}

impl Principal {
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(&format!(
                "this needs the {} role",
                role.as_str()
            )))
        }
    }

    /// Agents may touch only their own records; supervisors and admins everything.
    pub fn may_access_agent(&self, agent: Option<i64>) -> bool {
        self.role.sees_all() || agent == Some(self.agent_id)
    }
}

impl From<&Agent> for Principal {
    fn from(a: &Agent) -> Principal {
        Principal {
            agent_id: a.id,
            username: a.username.clone(),
            role: a.role,
        }
    }
}

/// Resolves a bearer token.
pub(crate) async fn principal_of(store: &Store, token: &str) -> Result<Principal, ApiError> {
    match store.session_agent(&token_digest(token)).await? {
        Some(a) => Ok(Principal::from(&a)),
        None => Err(ApiError::unauthorized()),
    }
}

/// The name of the pages' session cookie.
pub(crate) const SESSION_COOKIE: &str = "screenpop_session";

/// Where a request's token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenSource {
    Bearer,
    Cookie,
}

/// The bearer token, else the session cookie.
pub(crate) fn request_token(headers: &HeaderMap) -> Option<(String, TokenSource)> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    if let Some(t) = bearer {
        return Some((t.to_string(), TokenSource::Bearer));
    }
    cookie(headers, SESSION_COOKIE).map(|t| (t, TokenSource::Cookie))
}

/// One cookie's value from the `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Whether a browser request comes from the page's own origin: no `Origin` header (not a
/// cross-origin browser request), the browser's own word (`Sec-Fetch-Site: same-origin`, which
/// scripts cannot set, and which survives a reverse proxy that rewrites `Host`), or an `Origin`
/// whose host and port are this request's `Host`.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if fetch_site == Some("same-origin") {
        return true;
    }
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    !authority.is_empty() && authority.eq_ignore_ascii_case(host)
}

impl<S> FromRequestParts<S> for Principal
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = AppState::from_ref(state);
        let (token, source) = request_token(&parts.headers).ok_or_else(ApiError::unauthorized)?;
        let unsafe_method = !matches!(
            parts.method,
            axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
        );
        if source == TokenSource::Cookie && unsafe_method && !same_origin(&parts.headers) {
            return Err(ApiError::forbidden(
                "cross-origin request refused: the console's own pages only",
            ));
        }
        principal_of(&app.store, &token).await
    }
}

/// The client's address (from the connection), for the audit log and the login limiter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

impl ClientAddr {
    pub fn text(&self) -> Option<String> {
        self.0.map(|ip| ip.to_string())
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LoginResponse {
    pub token: String,
    pub role: Role,
    pub agent_id: i64,
}

/// Exchanges a username and password for a bearer token.
#[utoipa::path(post, path = "/api/login", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, description = "wrong credentials")))]
pub async fn login(
    State(s): State<AppState>,
    addr: ClientAddr,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let username = req.username.trim().to_string();
    // Bounded before anything is stored, logged or hashed.
    if username.len() > 128 {
        return Err(ApiError::invalid("username", "at most 128 bytes"));
    }
    if req.password.len() > 1024 {
        return Err(ApiError::invalid("password", "at most 1024 bytes"));
    }
    let now = std::time::Instant::now();
    // A source blocked for guessing (10 failures within a minute by default, then twice as
    // long on each repeat) is refused before anything else.
    let blocked = addr
        .0
        .and_then(|ip| s.http_guard.lock().blocked_for(now, ip));
    let attempt = match blocked.map_or_else(|| s.logins.begin(now, addr.0, &username), Err) {
        Ok(a) => a,
        Err(wait) => {
            info!(username = %username, source = ?addr.0, "login refused: too many failures");
            let secs = wait.as_secs().max(1);
            let mut r = ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many failed logins; try again in {secs} s"),
            )
            .into_response();
            if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return Ok(r);
        }
    };
    let agent = s.store.agent_by_username(&username).await?;
    let password = req.password.clone();
    let hash = agent
        .as_ref()
        .map(|a| a.password_hash.clone())
        .unwrap_or_else(|| decoy_hash().to_string());
    // argon2 is deliberately slow: keep it off the async workers, a few at a time.
    let permit = s.logins.checks.acquire().await;
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    drop(permit);
    let exists = agent.is_some();
    let Some(agent) = agent.filter(|a| ok && a.active) else {
        let _ = s
            .store
            .audit_from(
                &username,
                "login.failed",
                &format!("username:{username}"),
                None,
                addr.text().as_deref(),
            )
            .await;
        info!(username = %req.username, source = ?addr.0, "login refused");
        if let Some(ip) = addr.0 {
            metrics::counter!("screenpop_auth_failures_total", "scope" => "http").increment(1);
            // Only real accounts are tracked by name (the guard keeps nothing for made-up ones).
            let user = exists.then_some(username.as_str());
            let blocked = s.http_guard.lock().failed(now, ip, user);
            if let Some(b) = blocked {
                crate::guard::report("http", &b);
            }
        }
        return Err(ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong username or password",
        ));
    };
    // Expired sessions go when someone logs in; no sweeper task needed.
    let _ = s.store.purge_sessions().await;
    let token = hex::encode(rand::random::<[u8; 32]>());
    s.store
        .create_session(&token_digest(&token), agent.id, TOKEN_TTL_MS)
        .await?;
    s.logins.succeeded(&attempt);
    if let Some(ip) = addr.0 {
        s.http_guard.lock().succeeded(ip, &username);
    }
    let _ = s
        .store
        .audit_from(
            &agent.username,
            "login",
            &format!("agent:{}", agent.id),
            None,
            addr.text().as_deref(),
        )
        .await;
    let cookie = session_cookie(&token, TOKEN_TTL_MS / 1000, is_https(&headers));
    Ok((
        [(header::SET_COOKIE, cookie)],
        Json(LoginResponse {
            token,
            role: agent.role,
            agent_id: agent.id,
        }),
    )
        .into_response())
}

/// Behind a TLS-terminating proxy the cookie gets `Secure`.
fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` value for the pages' session (`max_age` 0 deletes it).
fn session_cookie(token: &str, max_age: i64, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Ends the session the request carries (cookie or bearer) and clears the cookie.
#[utoipa::path(post, path = "/api/logout", responses((status = 204, description = "logged out")))]
pub async fn logout(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some((token, source)) = request_token(&headers) {
        if source == TokenSource::Cookie && !same_origin(&headers) {
            return Err(ApiError::forbidden("cross-origin request refused"));
        }
        s.store.delete_session(&token_digest(&token)).await?;
    }
    Ok((
        axum::http::StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            session_cookie("", 0, is_https(&headers)),
        )],
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_themselves() {
        let h = hash_password("s3cret-pw").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("s3cret-pw", &h));
        assert!(!verify_password("s3cret-pW", &h));
        assert!(!verify_password("s3cret-pw", "not a hash"));
    }
}
