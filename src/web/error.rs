//! API errors: always JSON `{"error": {"code", "message", "field"}}` with the status that fits,
//! and a request body that does not parse names the field that broke it.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::warn;

use crate::store::StoreError;

#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// A request field that is missing or wrong (422).
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
            message: format!("{field}: {message}"),
            field: Some(field.to_string()),
        }
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
    }

    /// Something on our side failed; the message names the part, not the details.
    pub fn internal(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{what} failed"),
        )
    }

    pub fn forbidden(why: &str) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", why)
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = json!({ "code": self.code, "message": self.message });
        if let Some(f) = self.field {
            err["field"] = json!(f);
        }
        (self.status, Json(json!({ "error": err }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Invalid { field, why } => ApiError::invalid(field, why),
            StoreError::NotFound(what) => ApiError::not_found(what),
            other => {
                warn!(error = %other, "store error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the store failed; see the server log",
                )
            }
        }
    }
}

/// A JSON body whose errors come back in our error shape, naming the field.
pub(crate) struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(r) => Err(rejection(r)),
        }
    }
}

fn rejection(r: JsonRejection) -> ApiError {
    let text = r.body_text();
    let status = r.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // Over `[limits] http_body_bytes`: said as such, not as a syntax error.
        let mut e = ApiError::new(
            status,
            "too_large",
            "the request body is larger than allowed",
        );
        e.field = Some("body".into());
        return e;
    }
    let field = field_of(&text);
    let mut e = ApiError::new(
        if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            status
        } else {
            StatusCode::BAD_REQUEST
        },
        "bad_request",
        text,
    );
    e.field = field;
    e
}

/// The field named in a serde error: the path before `: ` (serde_path_to_error, as axum
/// reports it), or the name in "missing field `x`" / "unknown field `x`".
fn field_of(text: &str) -> Option<String> {
    let detail = text
        .split_once("target type: ")
        .map(|(_, d)| d)
        .unwrap_or(text);
    if let Some(start) = detail.find("field `") {
        let rest = &detail[start + 7..];
        if let Some(end) = rest.find('`') {
            let name = &rest[..end];
            let prefix = detail.split_once(": ").map(|(p, _)| p).unwrap_or(".");
            let bare = prefix == "." || prefix.is_empty() || prefix.contains(' ');
            // An unknown field's path already ends with its own name.
            return Some(if bare {
                name.to_string()
            } else if prefix == name || prefix.ends_with(&format!(".{name}")) {
                prefix.to_string()
            } else {
                format!("{prefix}.{name}")
            });
        }
    }
    detail
        .split_once(": ")
        .map(|(p, _)| p.to_string())
        .filter(|p| p != "." && !p.contains(' '))
}

#[cfg(test)]
mod tests {
    use super::field_of;

    #[test]
    fn names_the_field() {
        assert_eq!(
            field_of("Failed to deserialize the JSON body into the target type: phone: unknown field `phone`, expected one of `name` at line 1 column 8"),
            Some("phone".into())
        );
        assert_eq!(
            field_of("Failed to deserialize the JSON body into the target type: phones[0]: missing field `number` at line 1 column 20"),
            Some("phones[0].number".into())
        );
        assert_eq!(
            field_of("Failed to deserialize the JSON body into the target type: missing field `name` at line 1 column 2"),
            Some("name".into())
        );
        assert_eq!(
            field_of("Failed to deserialize the JSON body into the target type: phones[0].number: invalid type: integer `5`, expected a string at line 1 column 30"),
            Some("phones[0].number".into())
        );
        assert_eq!(
            field_of("Failed to deserialize the JSON body into the target type: tier: unknown variant `gold`, expected one of `vip`, `key`, `regular`"),
            Some("tier".into())
        );
    }
}
