//! The Stripe webhook inbox (DESIGN.md "Stripe"). Owns table `stripe_events` (SQL in
//! [`db`]).
//!
//! [`receive`] stores a verified event by id and queues the job that applies it, in
//! the caller's transaction, so the endpoint answers 2xx as soon as that commits: a
//! slow Stripe or a busy database cannot make deliveries time out. A duplicate
//! delivery changes nothing. [`apply`] (the `stripe_event` job) reads the stored
//! event, fetches from Stripe what it needs with no transaction or lock held, then
//! applies the result in one short transaction that also marks the event processed,
//! so each event takes effect exactly once (business keys back this up: a grant per
//! checkout session or invoice, a reversal per refund event). A failed application is
//! retried by the job runner with backoff; the job row keeps attempts, the last error
//! and the next try for the admin pages, which can replay or skip it ([`skip`]).

pub mod db;

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use crate::stripe::StripeClient;
use crate::stripe::billing::SubscriptionInfo;
use crate::stripe::webhooks::{EventEnvelope, EventPayload, parse};
use crate::top_ups::reversals;
use crate::{jobs, subscriptions, top_ups};

/// The job kind that applies a stored event; its key is the event id.
pub const APPLY_JOB: &str = "stripe_event";

/// Attempts before an event's application is left `failed` for an admin (with the
/// runner's backoff doubling from 2 s, about a day of retries).
pub const MAX_ATTEMPTS: i32 = 16;

/// Whether a delivery was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// First delivery: stored, its application queued.
    Stored,
    /// Seen before: acknowledged, nothing changed.
    Duplicate,
}

/// Stores a verified event (`payload` is the body as received) and queues its
/// application, in the caller's transaction.
pub async fn receive(
    conn: &mut PgConnection,
    event: &EventEnvelope,
    payload: &serde_json::Value,
) -> anyhow::Result<Received> {
    if !db::insert(conn, event, payload).await? {
        return Ok(Received::Duplicate);
    }
    jobs::db::enqueue(
        conn,
        APPLY_JOB,
        &event.id,
        &serde_json::Value::Null,
        None,
        MAX_ATTEMPTS,
    )
    .await?;
    Ok(Received::Stored)
}

/// What must be fetched from Stripe before an event can be applied.
enum Fetched {
    Nothing,
    /// A subscription and when its fetch started (database clock); `None` when Stripe
    /// has no such subscription.
    Subscription(Option<SubscriptionInfo>, OffsetDateTime),
}

/// Applies stored event `event_id` (the `stripe_event` job). Idempotent: an event
/// applied or skipped before is left alone.
#[tracing::instrument(skip_all, fields(event_id))]
pub async fn apply(db: &PgPool, stripe: &StripeClient, event_id: &str) -> anyhow::Result<()> {
    let Some(event) = db::find(&mut *db.acquire().await?, event_id).await? else {
        anyhow::bail!("no stored event {event_id}");
    };
    if event.processed_at.is_some() || event.skipped_at.is_some() {
        return Ok(());
    }
    let payload =
        parse(&event.event_type, &event.payload.to_string()).map_err(anyhow::Error::msg)?;

    // Fetch first, outside any transaction (DESIGN.md: no Stripe call under a lock).
    let subscription_id = match &payload {
        EventPayload::CheckoutSessionCompleted(s) if s.mode == "subscription" => {
            s.subscription_id.clone()
        }
        EventPayload::SubscriptionChanged(id) => Some(id.clone()),
        EventPayload::InvoicePaid(i) => i.subscription_id.clone(),
        EventPayload::InvoicePaymentFailed(i) => match &i.subscription_id {
            // A failed payment of a known subscription changes only the invoice.
            Some(id)
                if subscriptions::db::find(&mut *db.acquire().await?, id)
                    .await?
                    .is_some() =>
            {
                None
            }
            other => other.clone(),
        },
        _ => None,
    };
    let fetched = match subscription_id {
        Some(id) => {
            let started = crate::database::now(&mut *db.acquire().await?).await?;
            match stripe.retrieve_subscription(&id).await {
                Ok(sub) => Fetched::Subscription(Some(sub), started),
                Err(e) if e.is_not_found() => Fetched::Subscription(None, started),
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!("fetch subscription {id}")));
                }
            }
        }
        None => Fetched::Nothing,
    };

    let mut tx = db.begin().await?;
    if !db::lock_unapplied(&mut tx, event_id).await? {
        return Ok(());
    }
    if let Fetched::Subscription(Some(sub), started) = &fetched {
        let workspace = subscriptions::apply_fetched(&mut tx, sub, *started).await?;
        tracing::info!(subscription = %sub.id, ?workspace, status = ?sub.status, "subscription mirrored");
    }
    match &payload {
        EventPayload::CheckoutSessionCompleted(session) => {
            let applied = top_ups::apply_completed_session(&mut tx, session, event_id).await?;
            tracing::info!(session = %session.id, ?applied, "checkout session completed");
        }
        EventPayload::CheckoutSessionExpired(session) => {
            top_ups::db::mark_expired(&mut tx, &session.id).await?;
        }
        EventPayload::InvoicePaid(invoice) => {
            subscriptions::apply_invoice(&mut tx, invoice, true).await?;
        }
        EventPayload::InvoicePaymentFailed(invoice) => {
            subscriptions::apply_invoice(&mut tx, invoice, false).await?;
        }
        EventPayload::InvoicePaymentPaid(p) => {
            if let Some(pi) = &p.payment_intent_id {
                crate::resellers::commissions::link_invoice_payment(&mut tx, &p.invoice_id, pi)
                    .await?;
                top_ups::db::lock_payment(&mut tx, pi).await?;
                let at = top_ups::db::event_time(&mut tx, event_id).await?;
                reversals::follow_commission(&mut tx, pi, event_id, at).await?;
            }
        }
        EventPayload::ChargeRefunded(charge) => {
            reversals::apply_refund(&mut tx, charge, event_id).await?;
        }
        EventPayload::DisputeChanged(dispute) => {
            reversals::apply_dispute(&mut tx, dispute, event_id).await?;
        }
        EventPayload::SubscriptionChanged(_) | EventPayload::Other => {}
    }
    db::mark_processed(&mut tx, event_id).await?;
    tx.commit().await?;
    Ok(())
}

/// An admin's "skip": the event is never applied; its job stops. Returns whether it
/// was still unapplied.
pub async fn skip(conn: &mut PgConnection, event_id: &str) -> anyhow::Result<bool> {
    let skipped = db::mark_skipped(conn, event_id).await?;
    if let Some(job) = jobs::db::find(conn, APPLY_JOB, event_id).await? {
        jobs::db::skip(conn, job.job_id).await?;
    }
    Ok(skipped)
}
