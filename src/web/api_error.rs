//! The one JSON error of billfold's machine endpoints (the metering API and the Stripe
//! webhook): `{"error": {"code", "message", ...}}` with the matching status and, where
//! it helps the client, headers (`Retry-After`, `WWW-Authenticate`, `RateLimit-*`).

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// A JSON error answer (boxed: it travels in `Result`s on every API path).
#[derive(Debug, Clone)]
pub struct ApiError(Box<Inner>);

#[derive(Debug, Clone)]
struct Inner {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Map<String, Value>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// `status` with machine-readable `code` and a sentence for humans.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self(Box::new(Inner {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
            headers: Vec::new(),
        }))
    }

    /// 422 `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    /// 403 `workspace_suspended`: staff suspended the key's workspace.
    pub fn suspended() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "workspace_suspended",
            "this workspace is suspended; contact support",
        )
    }

    /// 401 `invalid_api_key`: missing, unknown or revoked key.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "send a valid API key as `Authorization: Bearer <key>`",
        )
        .header(header::WWW_AUTHENTICATE, "Bearer")
    }

    /// 503 `unavailable` with `Retry-After` (seconds): try again shortly.
    pub fn unavailable(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            .header(header::RETRY_AFTER, &retry_after_secs.to_string())
    }

    /// 500 `internal_error`; the cause is logged, never shown.
    pub fn internal(e: &anyhow::Error) -> Self {
        tracing::error!(error = ?e, "api request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an internal error occurred; retry with the same idempotency key",
        )
    }

    /// The JSON answer for a bare error status axum or a layer produced (404, 405,
    /// 408, 413, ...).
    pub fn for_status(status: StatusCode) -> Self {
        let (code, message) = match status.as_u16() {
            404 => ("not_found", "no such endpoint"),
            405 => (
                "method_not_allowed",
                "this endpoint does not accept that method",
            ),
            408 => (
                "timeout",
                "the request took too long; retry with the same idempotency key to learn its outcome",
            ),
            413 => ("payload_too_large", "the request body is too large"),
            415 => ("unsupported_media_type", "send JSON"),
            400 | 422 => ("invalid_request", "the request could not be read"),
            429 => ("rate_limited", "too many requests"),
            503 => ("unavailable", "try again shortly"),
            _ => ("internal_error", "an internal error occurred"),
        };
        Self::new(status, code, message)
    }

    /// Adds a field to the error object.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.extra.insert(key.to_owned(), value.into());
        self
    }

    /// Adds a response header (ignored if the value is not a valid header value).
    pub fn header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.0.headers.push((name, v));
        }
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let this = *self.0;
        let mut body = Map::new();
        body.insert("code".into(), json!(this.code));
        body.insert("message".into(), json!(this.message));
        body.extend(this.extra);
        let mut res = (this.status, axum::Json(json!({ "error": body }))).into_response();
        for (name, value) in this.headers {
            res.headers_mut().insert(name, value);
        }
        res
    }
}
