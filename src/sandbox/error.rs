//! Errors of the sandbox: internal failures (`SandboxError`), refusals of its control
//! functions (`ControlError`), and the Stripe-shaped API error replies (`ApiError`)
//! that async-stripe turns into `StripeError::Stripe`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// Something inside the sandbox failed; never caused by the caller's input.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A query failed (or the pool is closed).
    #[error("sandbox database query failed")]
    Database(#[from] sqlx::Error),
    /// An object or fixture could not be read or written as JSON.
    #[error("sandbox object is not valid json")]
    Json(#[from] serde_json::Error),
    /// A stored object lacks a field the sandbox relies on.
    #[error("stored sandbox object {0} has an unexpected shape")]
    Corrupt(String),
    /// Something that should not happen did (or an argument out of range).
    #[error("unexpected sandbox failure: {0}")]
    Unexpected(&'static str),
    /// A hosted page's template failed.
    #[error("sandbox page failed to render")]
    Template(#[from] askama::Error),
}

/// A hosted page failed: 500, logged, details never shown.
impl IntoResponse for SandboxError {
    fn into_response(self) -> Response {
        tracing::error!(error = ?self, "sandbox page failed");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the billfold stripe sandbox failed; see the server log",
        )
            .into_response()
    }
}

/// Why a control function of the sandbox (disputes, faults) refused or failed. The
/// control routes answer it as JSON in Stripe's error shape with the status each
/// variant names.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The input is not valid, e.g. a fault path outside `/v1` (400).
    #[error("{0}")]
    Invalid(String),
    /// No payment, dispute or fault has this id (404).
    #[error("{0}")]
    NotFound(String),
    /// The object's state does not allow it, e.g. the payment is already disputed or
    /// fully refunded, or the dispute is already closed (409).
    #[error("{0}")]
    Conflict(String),
    /// The sandbox itself failed (500).
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

impl From<sqlx::Error> for ControlError {
    fn from(error: sqlx::Error) -> Self {
        Self::Sandbox(error.into())
    }
}

/// Stripe's `error.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorType {
    InvalidRequest,
    Idempotency,
    Api,
    Card,
    /// As Stripe's older documentation names the type of a 429 reply.
    RateLimit,
}

impl ErrorType {
    fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request_error",
            Self::Idempotency => "idempotency_error",
            Self::Api => "api_error",
            Self::Card => "card_error",
            Self::RateLimit => "rate_limit_error",
        }
    }
}

/// A reply of the sandbox's `/v1` API in Stripe's error shape
/// `{"error": {"type", "message", "code", "param"}}`.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// The request was refused (4xx); nothing changed.
    Refused {
        status: StatusCode,
        kind: ErrorType,
        code: Option<&'static str>,
        /// A card error's `decline_code`.
        decline_code: Option<&'static str>,
        param: Option<String>,
        message: String,
    },
    /// 500; logged, never shown in detail.
    Internal(SandboxError),
}

impl ApiError {
    /// 400 `invalid_request_error` about one parameter.
    pub(crate) fn invalid(code: Option<&'static str>, param: &str, message: String) -> Self {
        Self::Refused {
            status: StatusCode::BAD_REQUEST,
            kind: ErrorType::InvalidRequest,
            code,
            decline_code: None,
            param: Some(param.to_owned()),
            message,
        }
    }

    /// 400 `parameter_missing`.
    pub(crate) fn missing_param(param: &str) -> Self {
        Self::invalid(
            Some("parameter_missing"),
            param,
            format!("Missing required param: {param}."),
        )
    }

    /// 404 `resource_missing` for an id in the URL, worded as Stripe does.
    pub(crate) fn no_such(object: &str, id: &str) -> Self {
        Self::Refused {
            status: StatusCode::NOT_FOUND,
            kind: ErrorType::InvalidRequest,
            code: Some("resource_missing"),
            decline_code: None,
            param: Some("id".to_owned()),
            message: format!("No such {object}: '{id}'"),
        }
    }

    /// 401 for a missing or wrong secret key.
    pub(crate) fn unauthorized(message: String) -> Self {
        Self::Refused {
            status: StatusCode::UNAUTHORIZED,
            kind: ErrorType::InvalidRequest,
            code: None,
            decline_code: None,
            param: None,
            message,
        }
    }

    /// Any other refusal with its own status, type and code.
    pub(crate) fn refused(
        status: StatusCode,
        kind: ErrorType,
        code: Option<&'static str>,
        message: String,
    ) -> Self {
        Self::Refused {
            status,
            kind,
            code,
            decline_code: None,
            param: None,
            message,
        }
    }

    /// 404 `resource_missing` for an id given in parameter `param` (e.g. a refund's
    /// `charge`), worded as Stripe does.
    pub(crate) fn no_such_param(object: &str, param: &str, id: &str) -> Self {
        Self::Refused {
            status: StatusCode::NOT_FOUND,
            kind: ErrorType::InvalidRequest,
            code: Some("resource_missing"),
            decline_code: None,
            param: Some(param.to_owned()),
            message: format!("No such {object}: '{id}'"),
        }
    }

    /// The reply of a fault injected with HTTP status `status` (4xx or 5xx): the
    /// error type and code Stripe answers with that status (402 a declined card,
    /// 409 a lock timeout, 429 a rate limit, 5xx an `api_error`).
    pub(crate) fn injected(status: StatusCode) -> Self {
        let (kind, code, decline_code, message) = match status.as_u16() {
            402 => (
                ErrorType::Card,
                Some("card_declined"),
                Some("generic_decline"),
                "Your card was declined.",
            ),
            404 => (
                ErrorType::InvalidRequest,
                Some("resource_missing"),
                None,
                "No such object (a fault injected by the billfold Stripe sandbox).",
            ),
            409 => (
                ErrorType::InvalidRequest,
                Some("lock_timeout"),
                None,
                "This object cannot be accessed right now because another API request or \
                 Stripe process is currently accessing it. If you see this error \
                 intermittently, retry the request. (A fault injected by the billfold Stripe \
                 sandbox.)",
            ),
            429 => (
                ErrorType::RateLimit,
                Some("rate_limit"),
                None,
                "Request rate limit exceeded. Learn more about rate limits here \
                 https://stripe.com/docs/rate-limits. (A fault injected by the billfold \
                 Stripe sandbox.)",
            ),
            500..=599 => (
                ErrorType::Api,
                None,
                None,
                "Something went wrong on Stripe's end. (A fault injected by the billfold \
                 Stripe sandbox.)",
            ),
            _ => (
                ErrorType::InvalidRequest,
                None,
                None,
                "The request was refused (a fault injected by the billfold Stripe sandbox).",
            ),
        };
        Self::Refused {
            status,
            kind,
            code,
            decline_code,
            param: None,
            message: message.to_owned(),
        }
    }
}

impl From<SandboxError> for ApiError {
    fn from(error: SandboxError) -> Self {
        Self::Internal(error)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(error.into())
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(error: serde_json::Error) -> Self {
        Self::Internal(error.into())
    }
}

impl From<ControlError> for ApiError {
    fn from(error: ControlError) -> Self {
        let (status, message) = match error {
            ControlError::Invalid(message) => (StatusCode::BAD_REQUEST, message),
            ControlError::NotFound(message) => (StatusCode::NOT_FOUND, message),
            ControlError::Conflict(message) => (StatusCode::CONFLICT, message),
            ControlError::Sandbox(error) => return Self::Internal(error),
        };
        Self::refused(status, ErrorType::InvalidRequest, None, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, code, decline_code, param, message) = match self {
            Self::Refused {
                status,
                kind,
                code,
                decline_code,
                param,
                message,
            } => (status, kind, code, decline_code, param, message),
            Self::Internal(error) => {
                tracing::error!(error = ?error, "sandbox api request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorType::Api,
                    None,
                    None,
                    None,
                    "An unexpected error occurred in the billfold Stripe sandbox.".to_owned(),
                )
            }
        };
        let mut body = Map::new();
        body.insert("type".into(), json!(kind.as_str()));
        body.insert("message".into(), json!(message));
        if let Some(code) = code {
            body.insert("code".into(), json!(code));
            body.insert(
                "doc_url".into(),
                json!(format!(
                    "https://stripe.com/docs/error-codes/{}",
                    code.replace('_', "-")
                )),
            );
        }
        if let Some(decline_code) = decline_code {
            body.insert("decline_code".into(), json!(decline_code));
        }
        if let Some(param) = param {
            body.insert("param".into(), json!(param));
        }
        (status, Json(json!({ "error": Value::Object(body) }))).into_response()
    }
}
