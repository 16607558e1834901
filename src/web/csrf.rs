//! CSRF protection for session routes (OWASP CSRF Prevention Cheat Sheet,
//! "synchronizer token pattern"): a random per-session token, required on every
//! unsafe method either as the `X-CSRF-Token` header (htmx sends it from
//! `hx-headers` on `<body>`) or as the `csrf_token` form field. SameSite=Lax cookies
//! are the second layer, and an unsafe request whose `Sec-Fetch-Site` says
//! `cross-site`, or whose `Origin` names another host, is refused even with a valid
//! token (OWASP: "verifying origin with standard headers", Fetch Metadata). The token
//! is renewed at sign-in. The metering API (bearer keys) and the Stripe webhook
//! (signatures) are not session routes and are exempt.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
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

/// A new token for the session (at sign-in: a token seen before the session
/// changed hands is worthless afterwards).
pub async fn renew(session: &Session) -> anyhow::Result<String> {
    session.remove::<String>(SESSION_KEY).await?;
    token(session).await
}

/// Whether an unsafe request says it comes from another site: `Sec-Fetch-Site:
/// cross-site`, or an `Origin` (including `null`) whose host is neither the `Host` it
/// was sent to nor `BASE_URL`'s (a reverse proxy may rewrite `Host`).
pub fn is_cross_site(headers: &axum::http::HeaderMap, base_url: &str) -> bool {
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"))
    {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| url::Url::parse(o).ok())
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
        });
    let base_host = url::Url::parse(base_url).ok().and_then(|u| {
        u.host_str().map(|h| match u.port() {
            Some(p) => format!("{h}:{p}"),
            None => h.to_owned(),
        })
    });
    match origin_host {
        Some(o) => {
            let same = |h: Option<&str>| h.is_some_and(|h| o.eq_ignore_ascii_case(h));
            !(same(host) || same(base_host.as_deref()))
        }
        None => true,
    }
}

/// Middleware: refuses (403) an unsafe request whose token is missing or wrong, or
/// that comes from another site.
pub async fn verify_csrf(
    State(state): State<super::AppState>,
    session: Session,
    req: Request,
    next: Next,
) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    match check(&session, &state.base_url, req).await {
        Ok(req) => next.run(req).await,
        Err(refused) => refused,
    }
}

/// Checks an unsafe request: not cross-site, and carrying the session's token in the
/// `X-CSRF-Token` header or the `csrf_token` field of a form body, urlencoded or
/// multipart (the body is read and put back). The request back, or the refusal to answer with.
pub async fn check(session: &Session, base_url: &str, req: Request) -> Result<Request, Response> {
    if is_cross_site(req.headers(), base_url) {
        tracing::warn!("cross-site request refused");
        return Err(AppError::Forbidden.into_response());
    }
    let back = referer_path(req.headers());
    let forbidden = || expired(back.clone());
    let expected = match session.get::<String>(SESSION_KEY).await {
        Ok(Some(t)) => t,
        Ok(None) => return Err(forbidden()),
        Err(e) => return Err(AppError::Internal(e.into()).into_response()),
    };
    if let Some(sent) = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
    {
        return if matches(sent, &expected) {
            Ok(req)
        } else {
            Err(forbidden())
        };
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if content_type.starts_with("multipart/form-data") {
        return check_multipart(req, &content_type, &expected, back).await;
    }
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(forbidden());
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_FORM_BYTES).await else {
        return Err(StatusCode::PAYLOAD_TOO_LARGE.into_response());
    };
    if let Err(message) = super::extract::check_urlencoded(&bytes) {
        return Err(AppError::Invalid(message).into_response());
    }
    let sent = url::form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == FORM_FIELD)
        .map(|(_, v)| v.into_owned());
    match sent {
        Some(sent) if matches(&sent, &expected) => {
            Ok(Request::from_parts(parts, Body::from(bytes)))
        }
        _ => Err(forbidden()),
    }
}

/// A file upload (`multipart/form-data`): the `csrf_token` part must come before any
/// file (the forms put it first), so the check reads only up to it; the body (at most
/// the router's 256 KiB limit) is buffered and put back for the handler.
async fn check_multipart(
    req: Request,
    content_type: &str,
    expected: &str,
    back: Option<String>,
) -> Result<Request, Response> {
    let forbidden = || expired(back.clone());
    let Ok(boundary) = multer::parse_boundary(content_type) else {
        return Err(forbidden());
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_UPLOAD_BYTES).await else {
        return Err(StatusCode::PAYLOAD_TOO_LARGE.into_response());
    };
    let stream = futures_util::stream::once({
        let bytes = bytes.clone();
        async move { Ok::<_, std::convert::Infallible>(bytes) }
    });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut sent = None;
    while let Ok(Some(field)) = multipart.next_field().await {
        if field.name() == Some(FORM_FIELD) {
            sent = field.text().await.ok();
            break;
        }
        if field.file_name().is_some() {
            break;
        }
    }
    match sent {
        Some(sent) if matches(&sent, expected) => Ok(Request::from_parts(parts, Body::from(bytes))),
        _ => Err(forbidden()),
    }
}

/// Largest upload buffered for the check (the router refuses bigger bodies anyway).
const MAX_UPLOAD_BYTES: usize = 256 * 1024;

/// Whether `sent` is the session's token (constant-time).
pub fn matches(sent: &str, expected: &str) -> bool {
    sent.len() == expected.len() && bool::from(sent.as_bytes().ct_eq(expected.as_bytes()))
}

/// The answer to a missing or wrong token: in practice a form left open while the
/// session changed (signed out and in elsewhere, expired), so the page says the form
/// expired and links back to it, to load it afresh (403).
fn expired(back: Option<String>) -> Response {
    tracing::warn!("csrf token missing or wrong");
    AppError::FormExpired { back }.into_response()
}

/// The local path (and query) of the page the form was sent from, from `Referer`;
/// `None` when absent, or when it is not a plain local path once the host is dropped.
fn referer_path(headers: &axum::http::HeaderMap) -> Option<String> {
    let referer = headers.get(header::REFERER)?.to_str().ok()?;
    let url = url::Url::parse(referer).ok()?;
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let safe = super::auth::safe_next(Some(&path));
    (safe == path).then_some(path)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn cross_site_requests_are_recognised() {
        let base = "http://127.0.0.1:8080";
        let cross =
            |pairs: &[(&'static str, &'static str)]| super::is_cross_site(&headers(pairs), base);
        assert!(!cross(&[("host", "billing.example.com")]));
        assert!(!cross(&[
            ("host", "billing.example.com"),
            ("origin", "https://billing.example.com"),
            ("sec-fetch-site", "same-origin"),
        ]));
        assert!(!cross(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080")
        ]));
        assert!(cross(&[
            ("host", "billing.example.com"),
            ("origin", "https://evil.example")
        ]));
        assert!(cross(&[("host", "a"), ("origin", "null")]));
        assert!(cross(&[("sec-fetch-site", "cross-site")]));
        // Behind a proxy that rewrote Host, BASE_URL's origin is accepted.
        assert!(!super::is_cross_site(
            &headers(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "https://billing.example.com")
            ]),
            "https://billing.example.com"
        ));
    }
}
