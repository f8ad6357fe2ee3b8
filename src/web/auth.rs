//! Accounts: argon2id password hashes, bearer tokens (random 256 bits, stored as SHA-256 so
//! the table alone grants nothing), and the extractor that turns a token into a [`Principal`].

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::request::Parts;
use axum::Json;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::info;

use super::error::{ApiError, ApiJson};
use super::AppState;
use crate::store::agents::{Agent, Role};
use crate::store::Store;

/// How long a login lasts.
pub const TOKEN_TTL_MS: i64 = 12 * 3600 * 1000;

/// The shortest password an account may have.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// An argon2id hash (PHC string) of `password`, which must be at least
/// [`MIN_PASSWORD_CHARS`] long.
pub fn hash_password(password: &str) -> Result<String, ApiError> {
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
pub async fn hash_password_off_thread(password: String) -> Result<String, ApiError> {
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
pub fn verify_password(password: &str, hash: &str) -> bool {
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

pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Who is calling the API.
#[derive(Debug, Clone)]
pub struct Principal {
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
pub async fn principal_of(store: &Store, token: &str) -> Result<Principal, ApiError> {
    match store.session_agent(&token_digest(token)).await? {
        Some(a) => Ok(Principal::from(&a)),
        None => Err(ApiError::unauthorized()),
    }
}

impl<S> FromRequestParts<S> for Principal
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = AppState::from_ref(state);
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(ApiError::unauthorized)?;
        principal_of(&app.store, token).await
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoginResponse {
    pub token: String,
    pub role: Role,
    pub agent_id: i64,
}

/// Exchanges a username and password for a bearer token.
#[utoipa::path(post, path = "/api/login", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, description = "wrong credentials")))]
pub async fn login(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let agent = s.store.agent_by_username(req.username.trim()).await?;
    let password = req.password.clone();
    let hash = agent
        .as_ref()
        .map(|a| a.password_hash.clone())
        .unwrap_or_else(|| decoy_hash().to_string());
    // argon2 is deliberately slow: keep it off the async workers.
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let Some(agent) = agent.filter(|_| ok) else {
        info!(username = %req.username, "login refused");
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
    let _ = s
        .store
        .audit(
            &agent.username,
            "login",
            &format!("agent:{}", agent.id),
            None,
        )
        .await;
    Ok(Json(LoginResponse {
        token,
        role: agent.role,
        agent_id: agent.id,
    }))
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
