//! Webhook delivery: a background worker POSTs queued events to the configured
//! endpoint, signed exactly as Stripe signs (`Stripe-Signature: t=...,v1=...`), and
//! retries failures with exponential backoff. Progress lives in
//! `sandbox_webhook_deliveries`, so a restarted process (or another one) resumes
//! pending deliveries; rows are claimed with `for update skip locked`.
//!
//! The worker wakes when this process queues an event (`Notify`), when any process
//! does (PostgreSQL `LISTEN` on the channel `events::emit` notifies: the CLI's
//! `sandbox advance`, disputes), and otherwise every few seconds, which is all that
//! is left if it cannot listen.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::SandboxConfig;
use super::db::{self, AttemptOutcome, ClaimedDelivery};

/// Deliveries claimed per round.
const BATCH: i64 = 16;
/// How long the endpoint may take to answer (Stripe allows a few seconds more).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// A claimed delivery whose outcome is never recorded (process died) is retried
/// after this long.
const LEASE: Duration = Duration::from_secs(60);
/// Longest sleep between looks at the queue, so deliveries queued or rescheduled
/// by another process are not missed.
const IDLE_POLL: Duration = Duration::from_secs(5);

/// How long to wait before listening again after `LISTEN` failed.
const RELISTEN_DELAY: Duration = Duration::from_secs(30);

/// Delivers due events until `db` is closed; woken early by `new_event`, which a
/// listener task also signals when another process queues an event.
pub(crate) async fn run_worker(db: PgPool, config: Arc<SandboxConfig>, new_event: Arc<Notify>) {
    tokio::spawn(forward_notifications(db.clone(), Arc::clone(&new_event)));
    let http = match reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("Stripe/1.0 (+https://stripe.com/docs/webhooks)")
        .build()
    {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "sandbox webhook worker cannot start its http client");
            return;
        }
    };
    loop {
        let wait = match deliver_due(&db, &config, &http).await {
            Ok(wait) => wait,
            Err(sqlx::Error::PoolClosed) => return,
            Err(error) => {
                tracing::warn!(%error, "sandbox webhook worker could not read its queue");
                IDLE_POLL
            }
        };
        tokio::select! {
            () = new_event.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sends every due delivery; returns how long to sleep before the next is due.
async fn deliver_due(
    db: &PgPool,
    config: &Arc<SandboxConfig>,
    http: &reqwest::Client,
) -> Result<Duration, sqlx::Error> {
    loop {
        let claimed = db::claim_due_deliveries(
            &mut *db.acquire().await?,
            BATCH,
            i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX),
        )
        .await?;
        if claimed.is_empty() {
            break;
        }
        let mut attempts = JoinSet::new();
        for delivery in claimed {
            attempts.spawn(attempt(
                db.clone(),
                Arc::clone(config),
                http.clone(),
                delivery,
            ));
        }
        while let Some(done) = attempts.join_next().await {
            match done {
                // shutting down: the lease lets a later run retry the delivery
                Ok(Err(sqlx::Error::PoolClosed)) => return Err(sqlx::Error::PoolClosed),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "sandbox webhook attempt could not be recorded");
                }
                _ => {}
            }
        }
    }
    let due_in = db::next_delivery_due_in_ms(&mut *db.acquire().await?).await?;
    Ok(due_in.map_or(IDLE_POLL, |ms| {
        Duration::from_millis(u64::try_from(ms).unwrap_or(0)).min(IDLE_POLL)
    }))
}

/// Signals `new_event` for every notification on [`db::EVENTS_CHANNEL`] until `db` is
/// closed. When it cannot listen, the worker still polls (every [`IDLE_POLL`]), and
/// this task tries again after [`RELISTEN_DELAY`].
async fn forward_notifications(db: PgPool, new_event: Arc<Notify>) {
    loop {
        match listen(&db, &new_event).await {
            Err(sqlx::Error::PoolClosed) => return,
            Err(error) => {
                tracing::info!(%error, "sandbox webhook worker cannot listen for events; polling");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RELISTEN_DELAY) => {}
            () = db.close_event() => return,
        }
    }
}

/// Listens on [`db::EVENTS_CHANNEL`] (on one of `db`'s connections, given back when
/// the pool closes) and signals `new_event` for each notification. Returns only
/// with an error; `PoolClosed` at shutdown.
async fn listen(db: &PgPool, new_event: &Notify) -> Result<std::convert::Infallible, sqlx::Error> {
    let mut listener = PgListener::connect_with(db).await?;
    listener.listen(db::EVENTS_CHANNEL).await?;
    // an event queued before LISTEN took effect sent its notification to no one
    new_event.notify_one();
    loop {
        listener.recv().await?;
        new_event.notify_one();
    }
}

/// One POST of an event, and its outcome recorded.
async fn attempt(
    db: PgPool,
    config: Arc<SandboxConfig>,
    http: reqwest::Client,
    delivery: ClaimedDelivery,
) -> Result<(), sqlx::Error> {
    // The signature carries real wall-clock time even when the sandbox clock is moved:
    // the endpoint checks it against its own clock (300 s tolerance).
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let signature = stripe_webhook::Webhook::generate_test_header(
        &delivery.payload,
        config.webhook_secret.expose_secret(),
        Some(i64::try_from(now).unwrap_or(i64::MAX)),
    );
    let sent = http
        .post(&config.webhook_url)
        .header("content-type", "application/json; charset=utf-8")
        .header("stripe-signature", signature)
        .body(delivery.payload)
        .send()
        .await;
    let failed = |status: Option<u16>, error: String| AttemptOutcome::Failed {
        status,
        error,
        retry_in_ms: retry_delay(&config, delivery.attempt_count)
            .map(|delay| i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
    };
    let outcome = match sent {
        Ok(response) if response.status().is_success() => AttemptOutcome::Succeeded {
            status: response.status().as_u16(),
        },
        Ok(response) => {
            let status = response.status();
            failed(Some(status.as_u16()), format!("endpoint answered {status}"))
        }
        Err(error) => failed(None, format!("could not reach the endpoint: {error}")),
    };
    match &outcome {
        AttemptOutcome::Succeeded { .. } => tracing::debug!(
            delivery_id = delivery.delivery_id,
            attempt = delivery.attempt_count,
            "sandbox webhook delivered"
        ),
        AttemptOutcome::Failed { .. } => tracing::info!(
            delivery_id = delivery.delivery_id,
            attempt = delivery.attempt_count,
            outcome = ?outcome,
            "sandbox webhook attempt failed; it is retried"
        ),
    }
    db::record_attempt(&mut *db.acquire().await?, delivery.delivery_id, &outcome).await
}

/// The wait after failed attempt number `attempts` (1-based): base × 2^(attempts-1);
/// `None` once `max_attempts` are used up.
fn retry_delay(config: &SandboxConfig, attempts: i32) -> Option<Duration> {
    let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
    if attempts >= config.max_attempts {
        return None;
    }
    let factor = 2_u32
        .checked_pow(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX);
    Some(config.retry_base_delay.saturating_mul(factor))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn config(max_attempts: u32) -> SandboxConfig {
        SandboxConfig {
            public_base_url: "http://127.0.0.1".into(),
            webhook_url: "http://127.0.0.1/webhooks/stripe".into(),
            webhook_secret: "whsec_test".into(),
            retry_base_delay: Duration::from_secs(2),
            max_attempts,
        }
    }

    #[test]
    fn retry_delay_doubles_until_attempts_run_out() {
        let config = config(4);
        let delays: Vec<_> = (1..=4).map(|n| retry_delay(&config, n)).collect();
        assert_eq!(
            delays,
            [
                Some(Duration::from_secs(2)),
                Some(Duration::from_secs(4)),
                Some(Duration::from_secs(8)),
                None
            ]
        );
    }
}
