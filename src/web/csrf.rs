//! CSRF protection for session routes (OWASP CSRF Prevention Cheat Sheet,
//! "synchronizer token pattern"): a random per-session token, required on every
//! unsafe method either as the `X-CSRF-Token` header (htmx sends it from
//! `hx-headers` on `<body>`) or as the `csrf_token` form field. SameSite=Lax cookies
//! are the second layer. The metering API (bearer keys) and the Stripe webhook
//! (signatures) are not session routes and are exempt.

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use subtle::ConstantTimeEq;
use tower_sessions::Session;

use super::error::AppError;

/// Session key of the token.
const SESSION_KEY: &str = "csrf.token";
/// Form field carrying the token.
pub const FORM_FIELD: &str = "csrf_token";
/// Largest form body buffered for the check.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The session's token, created on first use (32 random bytes, hex).
pub async fn token(session: &Session) -> anyhow::Result<String> {
    if let Some(t) = session.get::<String>(SESSION_KEY).await? {
        return Ok(t);
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let t = hex::encode(bytes);
    session.insert(SESSION_KEY, &t).await?;
    Ok(t)
}

/// Middleware: refuses (403) an unsafe request whose token is missing or wrong.
pub async fn verify_csrf(session: Session, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let expected = match session.get::<String>(SESSION_KEY).await {
        Ok(Some(t)) => t,
        Ok(None) => return forbidden(),
        Err(e) => return AppError::Internal(e.into()).into_response(),
    };
    if let Some(sent) = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
    {
        return if matches(sent, &expected) {
            next.run(req).await
        } else {
            forbidden()
        };
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return forbidden();
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_FORM_BYTES).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let sent = url::form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == FORM_FIELD)
        .map(|(_, v)| v.into_owned());
    match sent {
        Some(sent) if matches(&sent, &expected) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        _ => forbidden(),
    }
}

fn matches(sent: &str, expected: &str) -> bool {
    sent.len() == expected.len() && bool::from(sent.as_bytes().ct_eq(expected.as_bytes()))
}

fn forbidden() -> Response {
    tracing::warn!("csrf token missing or wrong");
    AppError::Forbidden.into_response()
}
