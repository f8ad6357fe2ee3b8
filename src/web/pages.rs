//! The pages people use: `/` (to the login or the user's desk), `/login`, `/agent` (the agent
//! desktop) and `/supervisor` (supervisors and admins), and their assets under `/assets/`.
//!
//! Everything is built into the binary (`src/web/assets/`, plain ES modules, no build step), so
//! an installed `screenpop` serves its console on an office network with no outside access.
//! `SCREENPOP_ASSETS_DIR` serves the files from a folder instead, for working on the pages
//! without rebuilding. Who may open a page is decided here, from the session cookie, not by the
//! page's script: an agent asking for `/supervisor` gets 403.

use std::borrow::Cow;
use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::auth::{principal_of, request_token, Principal};
use super::AppState;
use crate::store::agents::Role;

#[derive(rust_embed::Embed)]
#[folder = "src/web/assets/"]
struct Assets;

/// The security headers every HTTP response carries: a CSP without inline script or style,
/// no framing, no MIME sniffing, no referrer leaking call or customer ids.
pub(crate) async fn security_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
             media-src 'self' blob:; connect-src 'self'; font-src 'self'; object-src 'none'; \
             base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=()",
        ),
    ] {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    }
    resp
}

/// One asset's bytes and validator, from the binary or from `SCREENPOP_ASSETS_DIR`.
fn asset(path: &str) -> Option<(Cow<'static, [u8]>, String)> {
    if path.split('/').any(|seg| seg == ".." || seg.is_empty()) {
        return None;
    }
    if let Some(dir) = std::env::var_os("SCREENPOP_ASSETS_DIR") {
        let bytes = std::fs::read(PathBuf::from(dir).join(path)).ok()?;
        let tag = format!("\"dev-{:x}-{}\"", fnv(&bytes), bytes.len());
        return Some((Cow::Owned(bytes), tag));
    }
    let f = Assets::get(path)?;
    let tag = format!("\"{}\"", hex::encode(&f.metadata.sha256_hash()[..12]));
    Some((f.data, tag))
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x100000001b3)
    })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Serves one file with its validator; `cache` is the `Cache-Control` it gets.
fn serve(path: &str, headers: &HeaderMap, cache: &'static str) -> Response {
    let Some((bytes, etag)) = asset(path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let common = [
        (header::ETAG, etag),
        (header::CACHE_CONTROL, cache.to_string()),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(header::CONTENT_TYPE, content_type(path))],
        bytes.into_owned(),
    )
        .into_response()
}

/// `/assets/{path}`: revalidated every few minutes, so an upgrade reaches open desks soon.
pub async fn assets(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers, "public, max-age=300")
}

pub(crate) async fn favicon(headers: HeaderMap) -> Response {
    serve("icons/favicon.svg", &headers, "public, max-age=86400")
}

/// The user behind the request's session cookie (or bearer token), if it is still valid.
async fn who(s: &AppState, headers: &HeaderMap) -> Option<Principal> {
    let (token, _) = request_token(headers)?;
    principal_of(&s.store, &token).await.ok()
}

fn to_login(next: &str, expired: bool) -> Response {
    let mut url = format!("/login?next={next}");
    if expired {
        url.push_str("&expired=1");
    }
    Redirect::to(&url).into_response()
}

fn home_of(p: &Principal) -> &'static str {
    if p.role.sees_all() {
        "/supervisor"
    } else {
        "/agent"
    }
}

/// `/`: the user's desk when logged in, else the login page.
pub async fn root(State(s): State<AppState>, headers: HeaderMap) -> Response {
    match who(&s, &headers).await {
        Some(p) => Redirect::to(home_of(&p)).into_response(),
        None => Redirect::to("/login").into_response(),
    }
}

pub async fn login(headers: HeaderMap) -> Response {
    serve("login.html", &headers, "no-cache")
}

/// A cookie that no longer opens a session means it expired (or was revoked).
fn had_cookie(headers: &HeaderMap) -> bool {
    request_token(headers).is_some()
}

pub async fn agent(State(s): State<AppState>, headers: HeaderMap) -> Response {
    match who(&s, &headers).await {
        Some(_) => serve("agent.html", &headers, "no-cache"),
        None => to_login("/agent", had_cookie(&headers)),
    }
}

pub async fn supervisor(State(s): State<AppState>, headers: HeaderMap) -> Response {
    match who(&s, &headers).await {
        Some(p) if p.role >= Role::Supervisor => serve("supervisor.html", &headers, "no-cache"),
        Some(_) => {
            let mut r = serve("forbidden.html", &headers, "no-cache");
            *r.status_mut() = StatusCode::FORBIDDEN;
            r
        }
        None => to_login("/supervisor", had_cookie(&headers)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_and_its_scripts_are_in_the_binary() {
        for page in [
            "login.html",
            "agent.html",
            "supervisor.html",
            "forbidden.html",
        ] {
            let (html, _) = asset(page).unwrap_or_else(|| panic!("{page} embedded"));
            let html = String::from_utf8_lossy(&html);
            assert!(!html.contains("<script>"), "{page}: no inline script (CSP)");
            assert!(!html.contains(" style=\""), "{page}: no inline style (CSP)");
            assert!(
                !html.contains("http://") && !html.contains("https://"),
                "{page}: nothing from outside"
            );
            for src in html
                .split("src=\"")
                .skip(1)
                .chain(html.split("href=\"").skip(1))
            {
                let url = &src[..src.find('"').unwrap_or(0)];
                if let Some(p) = url.strip_prefix("/assets/") {
                    assert!(asset(p).is_some(), "{page} refers to missing {url}");
                }
            }
        }
        assert!(asset("../Cargo.toml").is_none());
        assert!(asset("js//x").is_none());
    }
}
