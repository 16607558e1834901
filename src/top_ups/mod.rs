//! Top-ups: one-time credit purchases through Stripe Checkout (payment mode), and what
//! follows them: refunds and disputes ([`reversals`]) and the reconciliation of
//! abandoned sessions. Owns table `top_ups` (SQL in [`db`]), one row per checkout
//! session, written before the customer is redirected so the webhook knows exactly what
//! was bought.
//!
//! Flow: [`start`] creates (or reuses) the workspace's Stripe customer and a Checkout
//! session, records it and returns the hosted page URL. Stripe then sends
//! `checkout.session.completed`; [`apply_completed_session`] grants the credits in the
//! inbox job's transaction, exactly once per session id. Sessions nobody paid are
//! expired by a job ([`reconcile_open`]), which also grants a paid one whose webhook
//! never arrived.

pub mod db;
pub mod reversals;

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use crate::accounts;
use crate::catalog::{self, custom_top_up};
use crate::ids::{TopUpId, UserId, WorkspaceId};
use crate::ledger::{self, LedgerEntryKind};
use crate::money::Money;
use crate::resellers::commissions;
use crate::stripe::{CheckoutSessionInfo, PaymentCheckout, StripeCallError, StripeClient};

/// The job kind that expires abandoned sessions (and grants paid ones whose webhook
/// was lost).
pub const RECONCILE_JOB: &str = "reconcile_top_ups";

/// Stripe expires an unpaid Checkout session after 24 hours; billfold looks at its
/// open top-ups an hour after that.
const ABANDONED_AFTER: time::Duration = time::Duration::hours(25);

/// State of a top-up (Postgres enum `top_up_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "top_up_status", rename_all = "snake_case")]
pub enum TopUpStatus {
    /// Checkout is open: not paid yet.
    Open,
    /// Paid; credits granted.
    Paid,
    /// The session expired unpaid.
    Expired,
}

impl TopUpStatus {
    /// As shown to customers.
    pub fn label(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Paid => "paid",
            Self::Expired => "expired",
        }
    }
}

/// What the customer chose on the top-up page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopUpChoice {
    /// A credit pack by code.
    Pack(String),
    /// A custom amount in whole euros.
    CustomEur(i64),
}

/// Why a top-up could not start.
#[derive(Debug, thiserror::Error)]
pub enum TopUpError {
    /// No active pack with that code.
    #[error("choose one of the credit packs")]
    UnknownPack,
    /// Custom amount outside 5..=1000 EUR.
    #[error(
        "enter a whole amount from {} to {} EUR",
        custom_top_up::MIN_EUR,
        custom_top_up::MAX_EUR
    )]
    AmountOutOfRange,
    /// Stripe did not answer or refused.
    #[error("the payment provider is unavailable, please try again")]
    Stripe(#[from] StripeCallError),
    /// Database failure.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<accounts::CustomerError> for TopUpError {
    fn from(e: accounts::CustomerError) -> Self {
        match e {
            accounts::CustomerError::Stripe(e) => Self::Stripe(e),
            accounts::CustomerError::Unexpected(e) => Self::Unexpected(e),
        }
    }
}

/// What a top-up buys: credits for a price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// Shown on the checkout page.
    pub name: String,
    /// Credits granted when paid.
    pub credits: i64,
    /// What it costs.
    pub price: Money,
    /// Pack code, `None` for a custom amount.
    pub credit_pack_code: Option<String>,
}

/// Prices a choice. Custom amounts: 10 credits per whole EUR, 5..=1000 EUR.
pub async fn quote(conn: &mut PgConnection, choice: &TopUpChoice) -> Result<Quote, TopUpError> {
    match choice {
        TopUpChoice::Pack(code) => {
            let pack = catalog::db::credit_pack(conn, code)
                .await?
                .ok_or(TopUpError::UnknownPack)?;
            Ok(Quote {
                name: pack.name.clone(),
                credits: pack.credits,
                price: pack.price(),
                credit_pack_code: Some(pack.credit_pack_code),
            })
        }
        TopUpChoice::CustomEur(eur) => {
            if !(custom_top_up::MIN_EUR..=custom_top_up::MAX_EUR).contains(eur) {
                return Err(TopUpError::AmountOutOfRange);
            }
            let credits = eur * custom_top_up::CREDITS_PER_EUR;
            Ok(Quote {
                name: format!("{} credits", crate::money::format_credits(credits)),
                credits,
                price: Money::new(eur * 100, custom_top_up::CURRENCY),
                credit_pack_code: None,
            })
        }
    }
}

/// Who is buying, and where Checkout should send them back.
#[derive(Debug, Clone)]
pub struct Buyer<'a> {
    /// The workspace receiving the credits.
    pub workspace_id: WorkspaceId,
    /// Its name (Stripe customer name).
    pub workspace_name: &'a str,
    /// The user clicking "buy" (Stripe customer email on first purchase).
    pub user_id: UserId,
    /// Their email.
    pub email: &'a str,
    /// billfold's public base URL, no trailing slash.
    pub base_url: &'a str,
    /// A key from the form, so a double submit opens the same session.
    pub form_key: uuid::Uuid,
}

/// Creates the Checkout session for a top-up and records it; returns the URL of
/// Stripe's hosted page. No connection is held while Stripe is called.
#[tracing::instrument(skip_all, fields(workspace_id = %buyer.workspace_id))]
pub async fn start(
    db: &PgPool,
    stripe: &StripeClient,
    buyer: &Buyer<'_>,
    choice: &TopUpChoice,
) -> Result<String, TopUpError> {
    let quote = quote(
        &mut *db.acquire().await.map_err(anyhow::Error::from)?,
        choice,
    )
    .await?;
    let customer_id = accounts::ensure_stripe_customer(
        db,
        stripe,
        buyer.workspace_id,
        buyer.workspace_name,
        buyer.email,
    )
    .await?;
    let mut metadata = HashMap::from([
        ("workspace_id".to_owned(), buyer.workspace_id.to_string()),
        ("purpose".to_owned(), "top_up".to_owned()),
        ("credits".to_owned(), quote.credits.to_string()),
    ]);
    if let Some(code) = &quote.credit_pack_code {
        metadata.insert("credit_pack".to_owned(), code.clone());
    }
    let choice_key = match choice {
        TopUpChoice::Pack(code) => code.clone(),
        TopUpChoice::CustomEur(eur) => format!("eur{eur}"),
    };
    let request = PaymentCheckout {
        product_name: quote.name.clone(),
        amount_minor: quote.price.minor,
        currency: quote.price.currency.clone(),
        customer_id,
        client_reference_id: buyer.workspace_id.to_string(),
        metadata,
        success_url: format!(
            "{}/billing/top-up/success?session_id={{CHECKOUT_SESSION_ID}}",
            buyer.base_url
        ),
        cancel_url: format!("{}/billing/top-up?canceled=1", buyer.base_url),
        // One page view + one choice = one session: a double submit or a retry opens
        // the same session, another pack from the same (cached) page a new one.
        idempotency_key: format!("top-up-{}-{choice_key}", buyer.form_key),
    };
    let mut attempt = 0;
    let session = loop {
        match stripe.create_payment_checkout(&request).await {
            // 409: the same key is still being processed (a double click); Stripe
            // answers the replay once the first request is done.
            Err(StripeCallError::Refused { status: 409, .. }) if attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
            }
            other => break other?,
        }
    };
    db::insert(
        &mut *db.acquire().await.map_err(anyhow::Error::from)?,
        &db::NewTopUp {
            workspace_id: buyer.workspace_id,
            session_id: &session.id,
            credit_pack_code: quote.credit_pack_code.as_deref(),
            credits: quote.credits,
            price: &quote.price,
            created_by: Some(buyer.user_id),
        },
    )
    .await?;
    session.url.ok_or_else(|| {
        TopUpError::Unexpected(anyhow::anyhow!(
            "checkout session {} has no url",
            session.id
        ))
    })
}

/// What applying a completed session did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Credits granted now.
    Granted {
        /// Credits added (debt settled first).
        credits: i64,
    },
    /// Granted by an earlier delivery.
    AlreadyGranted,
    /// Not a paid top-up session (subscription mode, unpaid, unknown): nothing to do.
    NotApplicable,
}

/// Grants the credits of a paid payment-mode session, inside the caller's
/// transaction, once per session id; purchased credits settle any debt first. The
/// credits come from our `top_ups` row (what was sold), not from the event; a session
/// we have no row for but whose metadata says it is a billfold top-up (the row insert
/// failed after Stripe created the session) is priced from what was paid. Refunds or
/// disputes of its payment recorded before it arrived are applied right after.
pub async fn apply_completed_session(
    conn: &mut PgConnection,
    session: &CheckoutSessionInfo,
    event_id: &str,
) -> anyhow::Result<Applied> {
    if session.mode != "payment" || !session.paid {
        return Ok(Applied::NotApplicable);
    }
    // Lock order: the payment (see `db::lock_payment`), the top-up row, the balance.
    if let Some(pi) = &session.payment_intent_id {
        db::lock_payment(conn, pi).await?;
    }
    let top_up = match db::lock_by_session(conn, &session.id).await? {
        Some(t) => t,
        None => match recover_from_metadata(conn, session).await? {
            Some(t) => t,
            None => return Ok(Applied::NotApplicable),
        },
    };
    let granted = ledger::grant_purchased(
        conn,
        top_up.workspace_id,
        LedgerEntryKind::TopUp,
        top_up.credits,
        &format!(
            "Top-up: {} credits",
            crate::money::format_credits(top_up.credits)
        ),
        &session.id,
    )
    .await?;
    db::mark_paid(conn, top_up.top_up_id, session.payment_intent_id.as_deref()).await?;
    let paid_at = db::event_time(conn, event_id).await?;
    commissions::record_payment(
        conn,
        &commissions::Payment {
            source: commissions::Source::TopUp,
            source_id: &session.id,
            payment_intent_id: session.payment_intent_id.as_deref(),
            workspace_id: top_up.workspace_id,
            amount_paid: top_up.amount_minor,
            tax: session.amount_tax,
            currency: &top_up.currency,
            paid_at,
        },
    )
    .await?;
    if let Some(pi) = &session.payment_intent_id {
        reversals::settle(conn, top_up.top_up_id, event_id, None).await?;
        reversals::follow_commission(conn, pi, event_id, paid_at).await?;
    }
    Ok(match granted {
        Some(_) => Applied::Granted {
            credits: top_up.credits,
        },
        None => Applied::AlreadyGranted,
    })
}

async fn recover_from_metadata(
    conn: &mut PgConnection,
    session: &CheckoutSessionInfo,
) -> anyhow::Result<Option<db::LockedTopUp>> {
    let meta = |k: &str| session.metadata.get(k).map(String::as_str);
    if meta("purpose") != Some("top_up") {
        return Ok(None);
    }
    let Some(workspace_id) = meta("workspace_id").and_then(|v| v.parse::<WorkspaceId>().ok())
    else {
        tracing::warn!(session = %session.id, "top-up session without a workspace ignored");
        return Ok(None);
    };
    // Credits come from what was paid, priced by our catalog, never from the
    // metadata's own `credits` (anyone able to create sessions could write any number).
    let paid = session.amount_total.unwrap_or(0);
    let currency = session.currency.as_deref().unwrap_or_default();
    let pack = match meta("credit_pack") {
        Some(code) => catalog::db::any_credit_pack(conn, code).await?,
        None => None,
    };
    let is_pack = pack.is_some();
    let credits = match pack {
        Some(p) if paid >= p.price_minor && currency == p.currency => p.credits,
        None if currency == custom_top_up::CURRENCY && paid > 0 && paid % 100 == 0 => {
            paid / 100 * custom_top_up::CREDITS_PER_EUR
        }
        _ => {
            tracing::warn!(session = %session.id, paid, currency, "top-up session whose payment does not match the catalog ignored");
            return Ok(None);
        }
    };
    db::insert(
        conn,
        &db::NewTopUp {
            workspace_id,
            session_id: &session.id,
            credit_pack_code: meta("credit_pack").filter(|_| is_pack),
            credits,
            price: &Money::new(paid, currency),
            created_by: None,
        },
    )
    .await?;
    db::lock_by_session(conn, &session.id).await
}

/// A top-up as the success page shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TopUp {
    /// Primary key.
    pub top_up_id: TopUpId,
    /// The checkout session.
    pub stripe_checkout_session_id: String,
    /// Credits bought.
    pub credits: i64,
    /// Price in minor units.
    pub amount_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// Where it stands.
    pub status: TopUpStatus,
    /// When the webhook granted the credits.
    pub paid_at: Option<OffsetDateTime>,
    /// Credits taken back by refunds and disputes.
    pub credits_reversed: i64,
}

impl TopUp {
    /// The price paid.
    pub fn price(&self) -> Money {
        Money::new(self.amount_minor, &self.currency)
    }
}

/// Looks at open top-ups older than a day: a session Stripe reports paid is granted
/// (its webhook was lost), an expired one is marked expired, an open one is expired at
/// Stripe (then marked). Each Stripe call is made with no connection held; each result
/// is applied in its own short transaction. Returns how many it settled.
pub async fn reconcile_open(db: &PgPool, stripe: &StripeClient) -> anyhow::Result<usize> {
    let cutoff = OffsetDateTime::now_utc() - ABANDONED_AFTER;
    let sessions = db::open_before(&mut *db.acquire().await?, cutoff, 100).await?;
    let mut settled = 0;
    for session_id in sessions {
        let session = match stripe.retrieve_checkout_session(&session_id).await {
            Ok(s) => s,
            Err(e) if e.is_not_found() => {
                db::mark_expired(&mut *db.acquire().await?, &session_id).await?;
                settled += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let session = if session.status.as_deref() == Some("open") {
            stripe.expire_checkout_session(&session_id).await?
        } else {
            session
        };
        let mut tx = db.begin().await?;
        if session.paid {
            apply_completed_session(&mut tx, &session, &format!("reconcile:{session_id}")).await?;
        } else if session.status.as_deref() == Some("expired") {
            db::mark_expired(&mut tx, &session_id).await?;
        } else {
            // Complete but not paid yet (a delayed payment method): its
            // `async_payment_succeeded` or `_failed` event settles it. Looked at
            // again after every other open top-up.
            db::touch(&mut tx, &session_id).await?;
            tx.commit().await?;
            continue;
        }
        tx.commit().await?;
        settled += 1;
    }
    Ok(settled)
}

/// Why a refund could not be asked for.
#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    /// No paid top-up with that checkout session or payment intent.
    #[error("no paid top-up has that checkout session or payment intent")]
    NotFound,
    /// More than what is left to refund, not positive, or nothing is left.
    #[error("{}", if *left > 0 { format!("refund from 1 to {left} minor units") } else { "the payment is refunded in full already".to_owned() })]
    InvalidAmount {
        /// What is left to refund, minor units.
        left: i64,
    },
    /// Stripe refused or did not answer.
    #[error(transparent)]
    Stripe(#[from] StripeCallError),
    /// Database failure.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Asks Stripe to refund a paid top-up (by checkout session or payment intent id):
/// all that is left (`amount` `None`) or `amount` minor units. The credits are reversed
/// when Stripe reports the refund (`charge.refunded`), by the same path as a refund
/// made in Stripe's dashboard. `idempotency_key` makes a retried request refund once.
/// Returns the payment intent refunded and the Stripe refund.
pub async fn refund(
    db: &PgPool,
    stripe: &StripeClient,
    session_or_payment: &str,
    amount: Option<i64>,
    idempotency_key: &str,
) -> Result<(String, crate::stripe::payments::RefundInfo), RefundError> {
    let (payment_intent, paid, refunded) = db::payment_of(
        &mut *db.acquire().await.map_err(anyhow::Error::from)?,
        session_or_payment,
    )
    .await?
    .ok_or(RefundError::NotFound)?;
    let left = paid - refunded;
    if let Some(a) = amount
        && !(1..=left).contains(&a)
    {
        return Err(RefundError::InvalidAmount { left });
    }
    if left <= 0 {
        return Err(RefundError::InvalidAmount { left: 0 });
    }
    let refund = stripe
        .create_refund(&payment_intent, amount, idempotency_key)
        .await?;
    Ok((payment_intent, refund))
}
