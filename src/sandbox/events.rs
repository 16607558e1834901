//! Events: `events::emit` records what happened (an `event` object plus a queued
//! webhook delivery, in the caller's transaction) and `GET /v1/events/{id}` serves it.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::Value;
use sqlx::PgConnection;

use super::error::{ApiError, SandboxError};
use super::objects::{self, EventRequest};
use super::{SandboxState, db};

/// Records an event of `event_type` about `object` (a stored object; it is sent in
/// its public view) and queues its delivery. Call `state.new_event.notify_one()`
/// after the transaction commits so the webhook worker sends it at once.
pub(crate) async fn emit(
    conn: &mut PgConnection,
    event_type: &str,
    object: &Value,
    request: EventRequest,
) -> Result<(), SandboxError> {
    let id = objects::new_id("evt_", 24);
    let object = objects::public_view(object.clone(), &[]);
    let event = objects::event(&id, db::now(conn).await?, event_type, object, request)?;
    db::insert_event(conn, &id, event_type, &event).await?;
    tracing::info!(event_id = %id, event_type, "sandbox event queued");
    Ok(())
}

pub(crate) async fn retrieve_event(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut conn = state.db.acquire().await?;
    db::find_event(&mut conn, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::no_such("event", &id))
}
