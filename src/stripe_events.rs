//! Stripe webhook events: stored by id and applied in the same transaction
//! (DESIGN.md "Webhooks are at-least-once and unordered"). Owns table `stripe_events`.
//! A duplicate delivery is acknowledged and changes nothing; a failure rolls back the
//! whole transaction, event row included, so Stripe's retry applies it again.

use sqlx::PgPool;

use crate::stripe::StripeClient;
use crate::stripe::webhooks::{EventPayload, HANDLED_EVENT_TYPES, VerifiedEvent};
use crate::{subscriptions, top_ups};

/// What happened to a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    /// First delivery: stored and applied.
    Applied,
    /// Seen before: acknowledged, nothing re-applied.
    Duplicate,
}

/// Stores and applies one verified event in one transaction. `raw` is the body as
/// received (kept for audit and replay).
#[tracing::instrument(skip_all, fields(event_id = %event.id, event_type = %event.event_type))]
pub async fn record_and_apply(
    db: &PgPool,
    stripe: &StripeClient,
    event: &VerifiedEvent,
    raw: &serde_json::Value,
) -> anyhow::Result<Processed> {
    if let EventPayload::Unreadable(reason) = &event.payload
        && HANDLED_EVENT_TYPES.contains(&event.event_type.as_str())
    {
        // Fail loudly (5xx): Stripe retries, and the operator sees failing deliveries.
        anyhow::bail!(
            "cannot read a {} event: {reason}; is the endpoint on API version 2026-09-30.endive?",
            event.event_type
        );
    }
    let mut tx = db.begin().await?;
    let fresh = sqlx::query(
        "insert into stripe_events (stripe_event_id, event_type, livemode, payload)
         values ($1, $2, $3, $4) on conflict (stripe_event_id) do nothing",
    )
    .bind(&event.id)
    .bind(&event.event_type)
    .bind(event.livemode)
    .bind(raw)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !fresh {
        tx.commit().await?;
        return Ok(Processed::Duplicate);
    }
    match &event.payload {
        EventPayload::CheckoutSessionCompleted(session) => {
            let applied = top_ups::apply_completed_session(&mut tx, session).await?;
            tracing::info!(session = %session.id, ?applied, "checkout session completed");
            if let Some(sub_id) = session
                .subscription_id
                .as_deref()
                .filter(|_| session.mode == "subscription")
            {
                subscriptions::sync_subscription(&mut tx, stripe, sub_id).await?;
            }
        }
        EventPayload::CheckoutSessionExpired(session) => {
            top_ups::mark_expired(&mut tx, &session.id).await?
        }
        EventPayload::SubscriptionChanged(id) => {
            let workspace = subscriptions::sync_subscription(&mut tx, stripe, id).await?;
            tracing::info!(subscription = %id, ?workspace, "subscription synced");
        }
        EventPayload::InvoicePaid(invoice) => {
            subscriptions::apply_invoice(&mut tx, stripe, invoice, true).await?
        }
        EventPayload::InvoicePaymentFailed(invoice) => {
            subscriptions::apply_invoice(&mut tx, stripe, invoice, false).await?
        }
        EventPayload::Other | EventPayload::Unreadable(_) => {
            tracing::debug!("event type not handled; acknowledged")
        }
    }
    sqlx::query("update stripe_events set processed_at = now() where stripe_event_id = $1")
        .bind(&event.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Processed::Applied)
}
