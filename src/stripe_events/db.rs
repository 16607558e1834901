//! SQL of the webhook inbox (table `stripe_events`).

use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::stripe::webhooks::EventEnvelope;

/// Stores a verified event by id; `false` when it was stored before (a duplicate).
pub async fn insert(
    conn: &mut PgConnection,
    event: &EventEnvelope,
    payload: &serde_json::Value,
) -> anyhow::Result<bool> {
    Ok(sqlx::query(
        "insert into stripe_events (stripe_event_id, event_type, livemode, payload)
         values ($1, $2, $3, $4) on conflict (stripe_event_id) do nothing",
    )
    .bind(&event.id)
    .bind(&event.event_type)
    .bind(event.livemode)
    .bind(payload)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// A stored event as the applying job reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    /// `evt_...`
    pub stripe_event_id: String,
    /// Its type.
    pub event_type: String,
    /// The body as delivered.
    pub payload: serde_json::Value,
    /// Set once applied.
    pub processed_at: Option<OffsetDateTime>,
    /// Set when an admin skipped it.
    pub skipped_at: Option<OffsetDateTime>,
}

/// A stored event.
pub async fn find(conn: &mut PgConnection, id: &str) -> anyhow::Result<Option<StoredEvent>> {
    Ok(sqlx::query_as::<_, StoredEvent>(
        "select stripe_event_id, event_type, payload, processed_at, skipped_at
           from stripe_events where stripe_event_id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Locks a stored event for the applying transaction; `false` once it was applied or
/// skipped (another runner got there first).
pub async fn lock_unapplied(conn: &mut PgConnection, id: &str) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar::<_, bool>(
        "select processed_at is null and skipped_at is null
           from stripe_events where stripe_event_id = $1 for update",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?
    .unwrap_or(false))
}

/// Marks an event applied.
pub async fn mark_processed(conn: &mut PgConnection, id: &str) -> anyhow::Result<()> {
    sqlx::query("update stripe_events set processed_at = now() where stripe_event_id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks an event skipped (an admin decided it must not be applied).
pub async fn mark_skipped(conn: &mut PgConnection, id: &str) -> anyhow::Result<bool> {
    Ok(sqlx::query(
        "update stripe_events set skipped_at = now()
          where stripe_event_id = $1 and processed_at is null and skipped_at is null",
    )
    .bind(id)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}
