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
    /// 503: Stripe is unreachable; the user may retry.
    #[error("payment provider unavailable")]
    ProviderUnavailable,
    /// 500: logged with its cause chain, shown as a generic page.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// Marker placed in a response's extensions so [`render_error_pages`] renders the
/// page for it.
#[derive(Debug, Clone, Copy)]
pub struct ErrorPage;

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match &self {
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::Forbidden => StatusCode::FORBIDDEN,
            AppError::ProviderUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(e) => {
                tracing::error!(error = ?e, "request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let mut res = status.into_response();
        res.extensions_mut().insert(ErrorPage);
        res
    }
}

/// The fallback route: our 404 page.
pub async fn not_found() -> AppError {
    AppError::NotFound
}

#[derive(Template, WebTemplate)]
#[template(path = "errors/error.html")]
struct ErrorView {
    status: u16,
    title: &'static str,
    message: &'static str,
    request_id: String,
}

/// Replaces the empty body of an [`AppError`] (and of axum's own 404/405/408/413)
/// with an error page showing the request id. JSON API answers are left alone.
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
    let marked = res.extensions().get::<ErrorPage>().is_some();
    let bare = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_none()
        && matches!(status.as_u16(), 404 | 405 | 408 | 413);
    if is_api || !(marked || bare) {
        return res;
    }
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
        503 => (
            "Payment provider unavailable",
            "We could not reach the payment provider. Nothing was charged; please try again in a moment.",
        ),
        _ => (
            "Something went wrong",
            "An unexpected error occurred. It has been logged; please try again.",
        ),
    };
    let view = ErrorView {
        status: status.as_u16(),
        title,
        message,
        request_id,
    };
    let mut page = view.into_response();
    *page.status_mut() = status;
    page
}
