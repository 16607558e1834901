//! The guard of the Stripe sandbox's control endpoints (clock, faults, disputes, test
//! cards): they move billing time and money events, so they answer only
//!
//! - a request from loopback (the developer's own machine; behind `TRUSTED_PROXIES`
//!   the forwarded client address counts, not the proxy's, and without it a request
//!   carrying a forwarding header is not taken for a local one), unless an unsafe
//!   request says it comes from another site (a page on the web making the developer's
//!   browser post to `127.0.0.1`), or
//! - a signed-in staff member, whose unsafe requests also carry the session's CSRF
//!   token (the control pages get it as [`crate::sandbox::ControlCsrfToken`]).
//!
//! Anyone else gets 403 and nothing changes.

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;

use super::AppState;
use super::auth::AuthSession;
use super::error::AppError;
use super::extract::ClientAddr;

/// Middleware on the sandbox's control router.
pub async fn guard(
    State(state): State<AppState>,
    auth: AuthSession,
    session: Session,
    req: Request,
    next: Next,
) -> Response {
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let (parts, body) = req.into_parts();
    let client = ClientAddr::resolve(&parts, state.config.trusted_proxies);
    // A request relayed by a proxy is not from this machine, even when the proxy runs
    // here and TRUSTED_PROXIES was not set.
    let relayed = state.config.trusted_proxies == 0
        && ["x-forwarded-for", "forwarded", "x-real-ip"]
            .iter()
            .any(|h| parts.headers.contains_key(*h));
    let req = Request::from_parts(parts, body);
    if client.0.is_loopback() && !relayed {
        if unsafe_method && super::csrf::is_cross_site(req.headers(), &state.base_url) {
            tracing::warn!("cross-site request to the sandbox's controls refused");
            return AppError::Forbidden.into_response();
        }
        return next.run(req).await;
    }
    if !auth.user.as_ref().is_some_and(|u| u.is_staff) {
        tracing::warn!(client = %client.0, "sandbox control refused: not loopback, not staff");
        return AppError::Forbidden.into_response();
    }
    let mut req = if unsafe_method {
        match super::csrf::check(&session, &state.base_url, req).await {
            Ok(req) => req,
            Err(refused) => return refused,
        }
    } else {
        req
    };
    let token = match super::csrf::token(&session).await {
        Ok(t) => t,
        Err(e) => return AppError::Internal(e).into_response(),
    };
    #[cfg(feature = "sandbox")]
    req.extensions_mut()
        .insert(crate::sandbox::ControlCsrfToken(token));
    #[cfg(not(feature = "sandbox"))]
    let _ = (&mut req, token);
    next.run(req).await
}
