//! Events: `events::emit` records what happened (an `event` object plus a queued
//! webhook delivery and a notification, in the caller's transaction) and
//! `GET /v1/events/{id}` serves it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::Value;
use sqlx::PgConnection;

use super::error::{ApiError, SandboxError};
use super::middleware::RequestId;
use super::objects::{self, EventRequest};
use super::{SandboxState, db};

/// Records an event of `event_type` about `object` (a stored object; it is sent in
/// its public view), queues its delivery and notifies [`db::EVENTS_CHANNEL`], which
/// wakes the webhook worker of every process when the transaction commits. Callers
/// inside the app may also call `state.new_event.notify_one()` after commit.
pub(crate) async fn emit(
    conn: &mut PgConnection,
    event_type: &str,
    object: &Value,
    request: EventRequest,
) -> Result<(), SandboxError> {
    record(conn, event_type, object, None, request).await
}

/// Like [`emit`], for a `*.updated` event about `object`, which was `before`; the
/// event lists the changed fields' old values in `data.previous_attributes`.
pub(crate) async fn emit_updated(
    conn: &mut PgConnection,
    event_type: &str,
    before: &Value,
    object: &Value,
    request: EventRequest,
) -> Result<(), SandboxError> {
    let previous = objects::previous_attributes(
        &objects::public_view(before.clone(), &[]),
        &objects::public_view(object.clone(), &[]),
    );
    record(conn, event_type, object, Some(previous), request).await
}

/// The request an API handler serves, for `event.request`.
pub(crate) fn api_request(request_id: RequestId, headers: &HeaderMap) -> EventRequest {
    EventRequest {
        id: Some(request_id.0),
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
    }
}

async fn record(
    conn: &mut PgConnection,
    event_type: &str,
    object: &Value,
    previous_attributes: Option<Value>,
    request: EventRequest,
) -> Result<(), SandboxError> {
    let id = objects::new_id("evt_", 24);
    let object = objects::public_view(object.clone(), &[]);
    let created = db::now(conn).await?;
    let event = objects::event(
        &id,
        created,
        event_type,
        object,
        previous_attributes,
        request,
    )?;
    db::insert_event(conn, &id, event_type, &event).await?;
    db::notify_new_event(conn).await?;
    tracing::debug!(event_id = %id, event_type, "sandbox event queued");
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
