//! Reseller reach: the referral link `/r/{code}`, branding by host name, and the
//! branding assets (logo, accent colour stylesheet) customer pages load.
//!
//! The referral cookie `billfold_ref` holds a referral code for
//! [`resellers::REFERRAL_WINDOW_DAYS`] days (first-party, `HttpOnly`, `SameSite=Lax`,
//! `Secure` over https); following another reseller's link replaces it (last click
//! wins). A sign-up inside the window is attributed to that reseller, unless it
//! happens on a reseller's own host name, which wins. Unknown, paused or closed codes
//! land on sign-up with nothing set.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::AppState;
use super::error::{AppError, Result};
use crate::ids::ResellerId;
use crate::resellers::{self, Branding};

/// The referral cookie's name.
pub const COOKIE: &str = "billfold_ref";

/// `GET /r/{code}`: counts the click, remembers the code, lands on sign-up.
pub async fn follow_referral_link(
    State(state): State<AppState>,
    code: std::result::Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response> {
    // A code that is not even text (`/r/%FF`) is no code either.
    let Some(code) = code
        .ok()
        .and_then(|Path(code)| resellers::parse_referral_code(&code))
    else {
        return Ok(Redirect::to("/signup").into_response());
    };
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    let Some(reseller_id) = resellers::active_by_code(&mut conn, &code).await? else {
        return Ok(Redirect::to("/signup").into_response());
    };
    resellers::record_click(&mut conn, reseller_id).await?;
    let secure = if state.config.https() { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={code}; Max-Age={}; Path=/; HttpOnly; SameSite=Lax{secure}",
        resellers::REFERRAL_WINDOW_DAYS * 86_400
    );
    let mut res = Redirect::to("/signup").into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(anyhow::Error::from)?,
    );
    Ok(res)
}

/// The referral code a sign-up carries in its cookie, if any.
pub fn referral_code(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .and_then(|(_, value)| resellers::parse_referral_code(value))
}

/// Clears the referral cookie (after the sign-up it attributed).
pub fn clear_cookie() -> (header::HeaderName, HeaderValue) {
    (
        header::SET_COOKIE,
        HeaderValue::from_static("billfold_ref=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"),
    )
}

/// The branding of the active reseller whose host name this request was sent to (its
/// `Host` header, port aside); `None` for billfold's own host.
#[derive(Debug, Clone, Default)]
pub struct HostBranding(pub Option<Branding>);

impl FromRequestParts<AppState> for HostBranding {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> std::result::Result<Self, Self::Rejection> {
        let Some(host) = parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name))
            .filter(|h| h.contains('.') && h.parse::<std::net::IpAddr>().is_err())
        else {
            return Ok(Self(None));
        };
        let own = url::Url::parse(&state.base_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned));
        if own
            .as_deref()
            .is_some_and(|own| own.eq_ignore_ascii_case(host))
        {
            return Ok(Self(None));
        }
        let mut conn = state
            .db
            .acquire()
            .await
            .map_err(|e| AppError::Internal(e.into()).into_response())?;
        resellers::branding_for_host(&mut conn, host)
            .await
            .map(Self)
            .map_err(|e| AppError::Internal(e).into_response())
    }
}

/// `GET /brand/{reseller}/logo`: the reseller's logo, cached for a year (its URL
/// changes with it). An SVG is served under a CSP that runs nothing
/// ([`resellers::logo`]).
pub async fn serve_logo(
    State(state): State<AppState>,
    Path(reseller_id): Path<String>,
) -> Result<Response> {
    let reseller_id: ResellerId = reseller_id.parse().map_err(|_| AppError::NotFound)?;
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    let Some((content_type, bytes)) = resellers::logo::load(&mut conn, reseller_id).await? else {
        return Err(AppError::NotFound);
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CACHE_CONTROL,
                "public, max-age=31536000, immutable".to_owned(),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; sandbox".to_owned(),
            ),
            (
                header::CONTENT_DISPOSITION,
                "inline; filename=\"logo\"".to_owned(),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// `GET /brand/{reseller}/theme.css`: the reseller's accent colour as the portal's
/// brand colour (a stylesheet, since the CSP allows no inline style).
pub async fn serve_theme(
    State(state): State<AppState>,
    Path(reseller_id): Path<String>,
) -> Result<Response> {
    let reseller_id: ResellerId = reseller_id.parse().map_err(|_| AppError::NotFound)?;
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    let Some(reseller) = resellers::find(&mut conn, reseller_id).await? else {
        return Err(AppError::NotFound);
    };
    // Validated `#rrggbb` (database check), so it is safe to write into CSS.
    let css = match reseller.accent_color {
        Some(c) => format!(":root {{ --brand: {c}; --brand-dark: {c}; }}\n"),
        None => String::new(),
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        css,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_referral_code_is_read_from_its_cookie_only() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; billfold_ref=Acme; billfold.sid=x"),
        );
        assert_eq!(referral_code(&h).as_deref(), Some("acme"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("billfold_ref=../x"),
        );
        assert_eq!(referral_code(&h), None);
    }
}
