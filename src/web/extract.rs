//! Extractors that answer "who is asking" and read input safely.
//!
//! - [`AccountMember`]: a signed-in user in their workspace. Authorization lives here,
//!   in one place: every workspace query downstream is scoped by the workspace id this
//!   extractor resolved from the session, never from the request.
//! - [`ClientAddr`]: the client's address (the peer, or `X-Forwarded-For` behind the
//!   configured number of trusted proxies).
//! - [`Form`] and [`Query`]: axum's, but a body or query string with invalid UTF-8, NUL
//!   or other control characters in a value (newlines and tabs aside), or that does not
//!   fit the expected fields, is refused with 422 and a message, before any handler
//!   runs (a NUL would otherwise reach PostgreSQL, which cannot store it).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use serde::de::DeserializeOwned;
use tower_sessions::Session;

use super::AppState;
use super::auth::AuthSession;
use super::error::AppError;
use super::views::PageCtx;
use crate::accounts::{self, User, WorkspaceMembership};

/// A signed-in user acting in their workspace. Unauthenticated requests are
/// redirected to `/login?next=<path>`.
#[derive(Debug, Clone)]
pub struct AccountMember {
    /// The user.
    pub user: User,
    /// Their workspace, role and plan.
    pub workspace: WorkspaceMembership,
    /// The session's CSRF token, for forms.
    pub csrf_token: String,
    /// The session (flash messages).
    pub session: Session,
    /// Whether billfold runs against the Stripe sandbox (banner).
    pub sandbox: bool,
    /// A staff member viewing this workspace as its customer (read-only, banner).
    pub viewing_as: bool,
}

impl AccountMember {
    /// Page chrome for this user.
    pub fn page(&self, active: &'static str) -> PageCtx {
        PageCtx {
            email: Some(self.user.email.clone()),
            workspace_name: Some(self.workspace.workspace_name.clone()),
            csrf_token: self.csrf_token.clone(),
            active,
            sandbox: self.sandbox,
            flash: None,
            past_due: self.workspace.past_due,
            can_manage: self.workspace.role.can_manage(),
            time_zone: self.workspace.time_zone.clone(),
            branding: self.workspace.branding(),
            reseller: self.workspace.is_reseller,
            staff: self.user.is_staff,
            view_as: self.viewing_as,
        }
    }

    /// Page chrome with the pending flash message (taken out of the session).
    pub async fn page_with_flash(&self, active: &'static str) -> PageCtx {
        let mut page = self.page(active);
        page.flash = super::views::take_flash(&self.session).await;
        page
    }

    /// Refuses (403) unless the user may manage billing and keys (owner or admin).
    pub fn require_manager(&self) -> Result<(), AppError> {
        if self.workspace.role.can_manage() {
            Ok(())
        } else {
            Err(AppError::Forbidden)
        }
    }
}

impl FromRequestParts<AppState> for AccountMember {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let auth = AuthSession::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Some(user) = auth.user else {
            let next = parts
                .uri
                .path_and_query()
                .map_or("/dashboard", |p| p.as_str());
            let target = format!(
                "/login?next={}",
                url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
            );
            return Err(Redirect::to(&target).into_response());
        };
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let csrf_token = super::csrf::token(&session)
            .await
            .map_err(|e| AppError::Internal(e).into_response())?;
        let mut conn = state
            .db
            .acquire()
            .await
            .map_err(|e| AppError::Internal(e.into()).into_response())?;
        let viewed = match super::admin::view_as::viewed_workspace(&session, &user).await {
            Some(ws) => accounts::db::owner_view(&mut conn, ws)
                .await
                .map_err(|e| AppError::Internal(e).into_response())?,
            None => None,
        };
        let viewing_as = viewed.is_some();
        let workspace = match viewed {
            Some(w) => w,
            None => accounts::db::primary_workspace(&mut conn, user.user_id)
                .await
                .map_err(|e| AppError::Internal(e).into_response())?
                .ok_or_else(|| AppError::Forbidden.into_response())?,
        };
        Ok(Self {
            user,
            workspace,
            csrf_token,
            session,
            sandbox: state.config.stripe_sandbox(),
            viewing_as,
        })
    }
}

/// The client's address: the peer's, or with `TRUSTED_PROXIES=N` the N-th address from
/// the right of `X-Forwarded-For` (each trusted proxy appends the address it saw). A
/// header with fewer addresses than proxies yields its leftmost address; a malformed
/// one yields the peer. Without connection info (a router driven in-process) it is
/// `0.0.0.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    /// Resolves the client address of a request.
    pub fn resolve(parts: &Parts, trusted_proxies: usize) -> Self {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        if trusted_proxies == 0 {
            return Self(peer);
        }
        let chain: Option<Vec<IpAddr>> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().ok())
            .collect::<Option<Vec<&str>>>()
            .and_then(|values| {
                values
                    .iter()
                    .flat_map(|v| v.split(','))
                    .map(|a| a.trim().parse::<IpAddr>().ok())
                    .collect()
            });
        match chain {
            Some(chain) if !chain.is_empty() => {
                let index = chain.len().saturating_sub(trusted_proxies);
                Self(chain[index.min(chain.len() - 1)])
            }
            _ => Self(peer),
        }
    }
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self::resolve(parts, state.config.trusted_proxies))
    }
}

/// Checks every name and value of an `application/x-www-form-urlencoded` string:
/// valid UTF-8 after percent-decoding, no control characters except tab and newline.
pub fn check_urlencoded(raw: &[u8]) -> Result<(), String> {
    for pair in raw.split(|b| *b == b'&') {
        for part in pair.splitn(2, |b| *b == b'=') {
            let plus_as_space: Vec<u8> = part
                .iter()
                .map(|b| if *b == b'+' { b' ' } else { *b })
                .collect();
            let decoded: Vec<u8> = percent_encoding::percent_decode(&plus_as_space).collect();
            let text = std::str::from_utf8(&decoded)
                .map_err(|_| "The form contains characters that are not valid UTF-8.".to_owned())?;
            if text
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
            {
                return Err(
                    "The form contains a control character (such as NUL); remove it and try again."
                        .to_owned(),
                );
            }
        }
    }
    Ok(())
}

/// A form body, checked by [`check_urlencoded`] and deserialized; anything unreadable
/// is a 422 page with the reason.
#[derive(Debug, Clone)]
pub struct Form<T>(pub T);

impl<T, S> FromRequest<S> for Form<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                AppError::Invalid(format!("The form could not be read: {}.", e.body_text()))
            })?;
        check_urlencoded(&bytes).map_err(AppError::Invalid)?;
        serde_urlencoded::from_bytes(&bytes)
            .map(Form)
            .map_err(|e| AppError::Invalid(format!("The form is incomplete or malformed: {e}.")))
    }
}

/// A query string, checked like [`Form`].
#[derive(Debug, Clone)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let raw = parts.uri.query().unwrap_or_default();
        check_urlencoded(raw.as_bytes()).map_err(AppError::Invalid)?;
        serde_urlencoded::from_str(raw)
            .map(Query)
            .map_err(|e| AppError::Invalid(format!("The address has a malformed query: {e}.")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_bytes_and_invalid_utf8_in_forms_are_refused() {
        assert!(check_urlencoded(b"email=a%40b.c&password=x+y").is_ok());
        assert!(check_urlencoded(b"name=line%0Abreak").is_ok());
        assert!(check_urlencoded(b"email=a%00b").is_err());
        assert!(check_urlencoded(b"email=%FF%FE").is_err());
        assert!(check_urlencoded(b"a%00=1").is_err());
        assert!(check_urlencoded(b"x=%1B[31m").is_err());
    }

    fn parts(xff: Option<&str>) -> Parts {
        let mut req = axum::http::Request::builder().uri("/");
        if let Some(v) = xff {
            req = req.header("x-forwarded-for", v);
        }
        let (mut parts, ()) = req.body(()).unwrap().into_parts();
        parts
            .extensions
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 4000))));
        parts
    }

    #[test]
    fn forwarded_for_is_trusted_only_behind_configured_proxies() {
        let spoofed = parts(Some("203.0.113.9, 198.51.100.7"));
        assert_eq!(ClientAddr::resolve(&spoofed, 0).0.to_string(), "127.0.0.1");
        assert_eq!(
            ClientAddr::resolve(&spoofed, 1).0.to_string(),
            "198.51.100.7"
        );
        assert_eq!(
            ClientAddr::resolve(&spoofed, 2).0.to_string(),
            "203.0.113.9"
        );
        assert_eq!(
            ClientAddr::resolve(&spoofed, 5).0.to_string(),
            "203.0.113.9"
        );
        assert_eq!(
            ClientAddr::resolve(&parts(Some("junk")), 1).0.to_string(),
            "127.0.0.1"
        );
        assert_eq!(
            ClientAddr::resolve(&parts(None), 1).0.to_string(),
            "127.0.0.1"
        );
    }
}
