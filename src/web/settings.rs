//! Settings: API keys (create, shown once; list with last use; revoke) and the
//! workspace's own settings (its time zone).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::AppState;
use super::error::{AppError, Result};
use super::extract::{AccountMember, Form};
use super::views::{ConfirmForm, ConfirmPage, PageCtx, filters, set_flash};
use crate::accounts;
use crate::api_keys::{self, ApiKey, ApiKeyError};
use crate::ids::ApiKeyId;

#[derive(Template, WebTemplate)]
#[template(path = "settings/api_keys.html")]
struct ApiKeysPage {
    page: PageCtx,
    keys: Vec<ApiKey>,
    created: Option<String>,
    created_name: String,
    name: String,
    error: Option<String>,
    can_manage: bool,
    base_url: String,
    /// A fresh one-time key for the create form.
    form_key: uuid::Uuid,
}

async fn render(state: &AppState, member: &AccountMember) -> Result<ApiKeysPage> {
    Ok(ApiKeysPage {
        page: member.page_with_flash("api-keys").await,
        keys: api_keys::db::list(
            &mut *state.db.acquire().await.map_err(anyhow::Error::from)?,
            member.workspace.workspace_id,
        )
        .await?,
        created: None,
        created_name: String::new(),
        name: String::new(),
        error: None,
        can_manage: member.workspace.role.can_manage(),
        base_url: state.base_url.to_string(),
        form_key: uuid::Uuid::new_v4(),
    })
}

/// `GET /settings/api-keys`.
pub async fn list_api_keys(
    State(state): State<AppState>,
    member: AccountMember,
) -> Result<Response> {
    Ok(render(&state, &member).await?.into_response())
}

#[derive(Debug, Deserialize)]
pub struct CreateKeyForm {
    name: String,
    /// The form's one-time key (a reload posts it again: one key is created).
    form_key: Option<uuid::Uuid>,
}

/// `POST /settings/api-keys`: creates a key and answers with the page showing it
/// once. Unlike other forms this does not redirect: the plaintext key must never be
/// stored, not even in the session for one redirect. The form's one-time `form_key`
/// makes a reload (or a double click) harmless: the second post creates nothing and
/// redirects to the list, saying the key exists.
pub async fn create_api_key(
    State(state): State<AppState>,
    member: AccountMember,
    Form(form): Form<CreateKeyForm>,
) -> Result<Response> {
    member.require_manager()?;
    let created = async {
        let mut tx = state.db.begin().await.map_err(anyhow::Error::from)?;
        let created = api_keys::create(
            &mut tx,
            member.workspace.workspace_id,
            Some(member.user.user_id),
            &form.name,
            form.form_key,
        )
        .await?;
        tx.commit().await.map_err(anyhow::Error::from)?;
        Ok::<_, ApiKeyError>(created)
    }
    .await;
    match created {
        Ok(created) => {
            let mut page = render(&state, &member).await?;
            page.created = Some(created.plaintext);
            page.created_name = created.key.name;
            Ok((StatusCode::CREATED, [("cache-control", "no-store")], page).into_response())
        }
        Err(ApiKeyError::Unexpected(e)) => Err(AppError::Internal(e)),
        Err(ApiKeyError::AlreadyCreated) => {
            set_flash(
                &member.session,
                "This form already created that key; its secret was shown once. Create another key if you need one.",
            )
            .await;
            Ok(Redirect::to("/settings/api-keys").into_response())
        }
        Err(e) => {
            let mut page = render(&state, &member).await?;
            page.name = form.name.chars().filter(|c| !c.is_control()).collect();
            page.error = Some(match e {
                ApiKeyError::LimitReached(_) => format!("{e}, or upgrade your plan for more."),
                _ => e.to_string(),
            });
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
    }
}

/// `POST /settings/api-keys/{id}/revoke`: asks for confirmation, then (with
/// `confirm=yes`) revokes a key of this workspace; another workspace's key (or an
/// unknown id) is a 404.
pub async fn revoke_api_key(
    State(state): State<AppState>,
    member: AccountMember,
    Path(api_key_id): Path<String>,
    Form(form): Form<ConfirmForm>,
) -> Result<Response> {
    member.require_manager()?;
    let api_key_id: ApiKeyId = api_key_id.parse().map_err(|_| AppError::NotFound)?;
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    if !form.confirmed() {
        let key = api_keys::db::list(&mut conn, member.workspace.workspace_id)
            .await?
            .into_iter()
            .find(|k| k.api_key_id == api_key_id && k.revoked_at.is_none())
            .ok_or(AppError::NotFound)?;
        return Ok(ConfirmPage {
            page: member.page("api-keys"),
            title: format!("Revoke the key “{}”?", key.name),
            lines: vec![
                format!(
                    "Calls made with {}… will be refused with 401 from now on. A revoked key cannot be restored; your product needs a new key to go on.",
                    key.key_prefix.trim_end_matches('…')
                ),
                "Usage already recorded with it stays on your statement.".to_owned(),
            ],
            action: format!("/settings/api-keys/{api_key_id}/revoke"),
            button: "Revoke key".to_owned(),
            back: "/settings/api-keys".to_owned(),
            back_label: "Keep the key".to_owned(),
        }
        .into_response());
    }
    if !api_keys::db::revoke(&mut conn, member.workspace.workspace_id, api_key_id).await? {
        return Err(AppError::NotFound);
    }
    set_flash(
        &member.session,
        "API key revoked. Calls with it now get 401.",
    )
    .await;
    Ok(Redirect::to("/settings/api-keys").into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "settings/workspace.html")]
struct WorkspaceSettingsPage {
    page: PageCtx,
    time_zones: Vec<String>,
    time_zone: String,
    error: Option<String>,
    can_manage: bool,
}

async fn workspace_settings(
    state: &AppState,
    member: &AccountMember,
    time_zone: String,
    error: Option<String>,
) -> Result<WorkspaceSettingsPage> {
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    Ok(WorkspaceSettingsPage {
        page: member.page_with_flash("settings").await,
        time_zones: accounts::db::time_zones(&mut conn).await?,
        time_zone,
        error,
        can_manage: member.workspace.role.can_manage(),
    })
}

/// `GET /settings`: the workspace's settings (its time zone).
pub async fn show_workspace_settings(
    State(state): State<AppState>,
    member: AccountMember,
) -> Result<Response> {
    let tz = member.workspace.time_zone.clone();
    Ok(workspace_settings(&state, &member, tz, None)
        .await?
        .into_response())
}

/// The settings form.
#[derive(Debug, Deserialize)]
pub struct WorkspaceSettingsForm {
    time_zone: String,
}

/// `POST /settings` (owner or admin): sets the time zone the workspace's pages show
/// dates and cut days in. An unknown zone re-renders the form with 422 and changes
/// nothing.
pub async fn update_workspace_settings(
    State(state): State<AppState>,
    member: AccountMember,
    Form(form): Form<WorkspaceSettingsForm>,
) -> Result<Response> {
    member.require_manager()?;
    let time_zone = form.time_zone.trim();
    let saved = {
        let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
        accounts::db::set_time_zone(&mut conn, member.workspace.workspace_id, time_zone).await?
    };
    if !saved {
        let page = workspace_settings(
            &state,
            &member,
            member.workspace.time_zone.clone(),
            Some("Choose a time zone from the list, such as Europe/Berlin or UTC.".to_owned()),
        )
        .await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    set_flash(
        &member.session,
        format!("Dates and days now show in {time_zone}."),
    )
    .await;
    Ok(Redirect::to("/settings").into_response())
}
