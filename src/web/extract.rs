//! Extractors that answer "who is asking": [`AccountMember`] for signed-in pages.
//! Authorization lives here, in one place: every workspace query downstream is scoped
//! by the workspace id this extractor resolved from the session, never from the request.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
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
        let workspace = accounts::primary_workspace(&state.db, user.user_id)
            .await
            .map_err(|e| AppError::Internal(e).into_response())?
            .ok_or_else(|| AppError::Forbidden.into_response())?;
        Ok(Self {
            user,
            workspace,
            csrf_token,
            session,
            sandbox: state.config.stripe_sandbox(),
        })
    }
}
