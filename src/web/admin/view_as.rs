//! "View as customer": a staff member opens a workspace's portal as its owner sees it,
//! read-only, under a banner. While it lasts, [`read_only`] refuses every unsafe
//! request except ending it and signing out, so nothing can be written in the
//! customer's name. Starting and ending it are audited (`workspace.view_as_started`,
//! `workspace.view_as_ended`).

use axum::extract::{Path, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use tower_sessions::Session;

use super::Staff;
use crate::accounts::User;
use crate::ids::WorkspaceId;
use crate::web::AppState;
use crate::web::auth::AuthSession;
use crate::web::error::{AppError, Result};
use crate::web::views::set_flash;

/// Session key: the workspace a staff member is viewing.
const VIEW_AS: &str = "admin.view_as";

/// Where ending the view is posted (allowed while viewing).
pub const END_PATH: &str = "/admin/view-as/end";

/// The workspace `user` is viewing as its customer, if they are staff and started a
/// view.
pub async fn viewed_workspace(session: &Session, user: &User) -> Option<WorkspaceId> {
    if !user.is_staff {
        return None;
    }
    session.get::<WorkspaceId>(VIEW_AS).await.ok().flatten()
}

/// Middleware: while a staff member views a workspace, every request other than GET,
/// HEAD and OPTIONS is refused (403), except ending the view and signing out.
pub async fn read_only(auth: AuthSession, session: Session, req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if safe || matches!(req.uri().path(), END_PATH | "/logout") {
        return next.run(req).await;
    }
    if let Some(user) = &auth.user
        && viewed_workspace(&session, user).await.is_some()
    {
        tracing::info!(path = %req.uri().path(), "write refused while viewing as a customer");
        return AppError::Forbidden.into_response();
    }
    next.run(req).await
}

/// `POST /admin/workspaces/{id}/view-as`: starts viewing the workspace as its owner.
pub async fn start(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<Response> {
    let ws = uuid::Uuid::parse_str(&id)
        .map(WorkspaceId)
        .map_err(|_| AppError::NotFound)?;
    let mut tx = state.db.begin().await.map_err(anyhow::Error::from)?;
    if crate::accounts::db::owner_view(&mut tx, ws)
        .await?
        .is_none()
    {
        return Err(AppError::NotFound);
    }
    staff
        .actor()
        .record(
            &mut tx,
            "workspace.view_as_started",
            ("workspace", ws.to_string()),
            None,
            None,
            None,
        )
        .await?;
    staff
        .member
        .session
        .insert(VIEW_AS, ws)
        .await
        .map_err(|e| AppError::Internal(e.into()))?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok(Redirect::to("/dashboard").into_response())
}

/// `POST /admin/view-as/end`: back to the back office, on the workspace's page.
pub async fn end(State(state): State<AppState>, staff: Staff) -> Result<Response> {
    let ws: Option<WorkspaceId> = staff
        .member
        .session
        .remove(VIEW_AS)
        .await
        .map_err(|e| AppError::Internal(e.into()))?;
    let Some(ws) = ws else {
        return Ok(Redirect::to("/admin").into_response());
    };
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    staff
        .actor()
        .record(
            &mut conn,
            "workspace.view_as_ended",
            ("workspace", ws.to_string()),
            None,
            None,
            None,
        )
        .await?;
    set_flash(&staff.member.session, "Customer view ended.").await;
    Ok(Redirect::to(&format!("/admin/workspaces/{ws}")).into_response())
}
