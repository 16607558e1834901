//! One error type for handlers ([`AppError`]) and the middleware that turns error
//! statuses into friendly pages carrying the request id. Internal details are logged
//! once and never shown (payment-provider messages may contain identifiers).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{AppState, REQUEST_ID};

/// Handler result.
pub type Result<T, E = AppError> = std::result::Result<T, E>;

/// Errors a page handler can end with. Form validation is not here: forms re-render
/// themselves with 422 and their messages.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 404: no such page, or not visible to this user (we do not reveal which).
    #[error("not found")]
    NotFound,
    /// 403: signed in but not allowed (e.g. a member changing billing).
    #[error("forbidden")]
    Forbidden,
    /// 403: a form's CSRF token is missing or stale (the session changed while the
    /// page was open). `back`: the page to load the form afresh from.
    #[error("form expired")]
    FormExpired {
        /// The local path the form was on.
        back: Option<String>,
    },
    /// 503: Stripe is unreachable; the user may retry.
    #[error("payment provider unavailable")]
    ProviderUnavailable,
    /// 503 with `Retry-After`: billfold is too busy right now (password hashing).
    #[error("busy")]
    Busy,
    /// 422: the request could not be read (invalid UTF-8, NUL bytes, a missing or
    /// malformed field); the message says what to fix.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// 500: logged with its cause chain, shown as a generic page.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// Marker placed in a response's extensions so [`render_error_pages`] renders the
/// page for it; carries the message of a 422.
#[derive(Debug, Clone)]
pub struct ErrorPage(Option<String>);

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, detail) = match self {
            AppError::NotFound => (StatusCode::NOT_FOUND, None),
            AppError::Forbidden => (StatusCode::FORBIDDEN, None),
            AppError::FormExpired { back } => {
                let mut res = StatusCode::FORBIDDEN.into_response();
                res.extensions_mut().insert(ErrorPage(Some(
                    "This form expired: the page was open while you signed in or out, or for a long time. Nothing was changed. Load the page again and resend it.".to_owned(),
                )));
                res.extensions_mut().insert(FormExpiredBack(back));
                return res;
            }
            AppError::ProviderUnavailable => (StatusCode::SERVICE_UNAVAILABLE, None),
            AppError::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some("billfold is busy right now. Please try again in a few seconds.".to_owned()),
            ),
            AppError::Invalid(message) => (StatusCode::UNPROCESSABLE_ENTITY, Some(message)),
            AppError::Internal(e) => {
                tracing::error!(error = ?e, "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, None)
            }
        };
        let mut res = status.into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
        }
        res.extensions_mut().insert(ErrorPage(detail));
        res
    }
}

/// Marker of a [`AppError::FormExpired`] page: where "Load the form again" leads.
#[derive(Debug, Clone)]
struct FormExpiredBack(Option<String>);

/// The fallback route: our 404 page.
pub async fn not_found() -> AppError {
    AppError::NotFound
}

#[derive(Template, WebTemplate)]
#[template(path = "errors/error.html")]
struct ErrorView {
    status: u16,
    title: &'static str,
    message: String,
    request_id: String,
    /// The button: where it leads and what it says.
    back: (String, &'static str),
}

/// Replaces the empty body of an [`AppError`] (and of axum's own 404/405/408/413)
/// with an error page showing the request id. Under `/api/` and `/webhooks/` a bare
/// error status becomes the API's JSON error instead.
pub async fn render_error_pages(
    State(_state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let is_api =
        req.uri().path().starts_with("/api/") || req.uri().path().starts_with("/webhooks/");
    let res = next.run(req).await;
    let status = res.status();
    let marked = res.extensions().get::<ErrorPage>().cloned();
    let bare = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_none()
        && (status.is_client_error() || status.is_server_error());
    if is_api {
        let json = res
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/json"));
        if !json && (status.is_client_error() || status.is_server_error()) {
            let mut json = super::api_error::ApiError::for_status(status).into_response();
            for name in [axum::http::header::RETRY_AFTER, axum::http::header::ALLOW] {
                if let Some(v) = res.headers().get(&name) {
                    json.headers_mut().insert(name, v.clone());
                }
            }
            return json;
        }
        return res;
    }
    if marked.is_none()
        && !(bare && matches!(status.as_u16(), 400 | 404 | 405 | 408 | 413 | 415 | 422))
    {
        return res;
    }
    let expired = res.extensions().get::<FormExpiredBack>().cloned();
    let retry_after = res.headers().get(axum::http::header::RETRY_AFTER).cloned();
    let detail = marked.and_then(|m| m.0);
    let (title, message) = match status.as_u16() {
        404 => (
            "Page not found",
            "This page does not exist, or you do not have access to it.",
        ),
        403 => (
            "Not allowed",
            "Your role in this workspace does not allow this. Ask an owner or admin.",
        ),
        405 => (
            "Not allowed",
            "This address does not accept that kind of request.",
        ),
        408 => ("Took too long", "The request timed out. Please try again."),
        413 => ("Too large", "The request was larger than billfold accepts."),
        400 | 415 | 422 => (
            "Could not read the request",
            "The form could not be read. Go back, check what you entered, and try again.",
        ),
        503 => (
            "Payment provider unavailable",
            "We could not reach the payment provider. Nothing was charged; please try again in a moment.",
        ),
        _ => (
            "Something went wrong",
            "An unexpected error occurred. It has been logged; please try again.",
        ),
    };
    let (title, back) = match expired {
        Some(FormExpiredBack(back)) => (
            "This form expired",
            (
                back.unwrap_or_else(|| "/dashboard".to_owned()),
                "Load the form again",
            ),
        ),
        None => (title, ("/dashboard".to_owned(), "Back to the dashboard")),
    };
    let view = ErrorView {
        status: status.as_u16(),
        title,
        message: detail.unwrap_or_else(|| message.to_owned()),
        request_id,
        back,
    };
    let mut page = view.into_response();
    *page.status_mut() = status;
    if let Some(v) = retry_after {
        page.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, v);
    }
    page
}
