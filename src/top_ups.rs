//! Top-ups: one-time credit purchases through Stripe Checkout (payment mode). Owns
//! table `top_ups`, one row per checkout session, written before the customer is
//! redirected so the webhook knows exactly what was bought.
//!
//! Flow: [`start`] creates (or reuses) the workspace's Stripe customer and a Checkout
//! session, records it and returns the hosted page URL. Stripe then sends
//! `checkout.session.completed`; [`apply_completed_session`] grants the credits in the
//! webhook's transaction, exactly once per session id.

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::catalog::{self, custom_top_up};
use crate::ledger::{self, Grant, GrantOutcome, LedgerEntryKind};
use crate::money::Money;
use crate::stripe::{CheckoutSessionInfo, PaymentCheckout, StripeCallError, StripeClient};

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
pub async fn quote(db: &PgPool, choice: &TopUpChoice) -> Result<Quote, TopUpError> {
    match choice {
        TopUpChoice::Pack(code) => {
            let pack = catalog::credit_pack(db, code)
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
    pub workspace_id: Uuid,
    /// Its name (Stripe customer name).
    pub workspace_name: &'a str,
    /// The user clicking "buy" (Stripe customer email on first purchase).
    pub user_id: Uuid,
    /// Their email.
    pub email: &'a str,
    /// billfold's public base URL, no trailing slash.
    pub base_url: &'a str,
    /// A key from the form, so a double submit opens the same session.
    pub form_key: Uuid,
}

/// Returns the workspace's Stripe customer id, creating the customer on first use.
/// Concurrent first uses create one customer: the Stripe call is idempotent per
/// workspace and only the first stored id wins.
pub async fn ensure_customer(
    db: &PgPool,
    stripe: &StripeClient,
    workspace_id: Uuid,
    workspace_name: &str,
    email: &str,
) -> Result<String, TopUpError> {
    let existing: Option<String> =
        sqlx::query_scalar("select stripe_customer_id from workspaces where workspace_id = $1")
            .bind(workspace_id)
            .fetch_one(db)
            .await
            .map_err(anyhow::Error::from)?;
    if let Some(id) = existing {
        return Ok(id);
    }
    let created = stripe
        .create_customer(email, workspace_name, &workspace_id.to_string())
        .await?;
    let stored: String = sqlx::query_scalar(
        "update workspaces set stripe_customer_id = coalesce(stripe_customer_id, $2)
          where workspace_id = $1 returning stripe_customer_id",
    )
    .bind(workspace_id)
    .bind(&created)
    .fetch_one(db)
    .await
    .map_err(anyhow::Error::from)?;
    Ok(stored)
}

/// Creates the Checkout session for a top-up and records it; returns the URL of
/// Stripe's hosted page.
#[tracing::instrument(skip_all, fields(workspace_id = %buyer.workspace_id))]
pub async fn start(
    db: &PgPool,
    stripe: &StripeClient,
    buyer: &Buyer<'_>,
    choice: &TopUpChoice,
) -> Result<String, TopUpError> {
    let quote = quote(db, choice).await?;
    let customer_id = ensure_customer(
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
    sqlx::query(
        "insert into top_ups (workspace_id, stripe_checkout_session_id, credit_pack_code, credits,
                amount_minor, currency, created_by)
         values ($1, $2, $3, $4, $5, $6, $7)
         on conflict (stripe_checkout_session_id) do nothing",
    )
    .bind(buyer.workspace_id)
    .bind(&session.id)
    .bind(&quote.credit_pack_code)
    .bind(quote.credits)
    .bind(quote.price.minor)
    .bind(&quote.price.currency)
    .bind(buyer.user_id)
    .execute(db)
    .await
    .map_err(anyhow::Error::from)?;
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
        /// Credits added to the purchased bucket.
        credits: i64,
    },
    /// Granted by an earlier delivery.
    AlreadyGranted,
    /// Not a paid top-up session (subscription mode, unpaid, unknown): nothing to do.
    NotApplicable,
}

/// Grants the credits of a paid payment-mode session, inside the webhook's
/// transaction, once per session id. The credits come from our `top_ups` row (what
/// was sold), not from the event; a session we have no row for but whose metadata says
/// it is a billfold top-up (the row insert failed after Stripe created the session) is
/// recorded from its metadata.
pub async fn apply_completed_session(
    conn: &mut PgConnection,
    session: &CheckoutSessionInfo,
) -> anyhow::Result<Applied> {
    if session.mode != "payment" || !session.paid {
        return Ok(Applied::NotApplicable);
    }
    let row: Option<(Uuid, i64)> = sqlx::query_as(
        "select workspace_id, credits from top_ups where stripe_checkout_session_id = $1 for update",
    )
    .bind(&session.id)
    .fetch_optional(&mut *conn)
    .await?;
    let (workspace_id, credits) = match row {
        Some(r) => r,
        None => match recover_from_metadata(&mut *conn, session).await? {
            Some(r) => r,
            None => return Ok(Applied::NotApplicable),
        },
    };
    let outcome = ledger::grant(
        &mut *conn,
        &Grant {
            workspace_id,
            kind: LedgerEntryKind::TopUp,
            plan_credits: 0,
            purchased_credits: credits,
            description: format!("Top-up: {} credits", crate::money::format_credits(credits)),
            reference: session.id.clone(),
        },
    )
    .await?;
    sqlx::query(
        "update top_ups set status = 'paid', paid_at = coalesce(paid_at, now())
          where stripe_checkout_session_id = $1",
    )
    .bind(&session.id)
    .execute(&mut *conn)
    .await?;
    Ok(match outcome {
        GrantOutcome::Granted(_) => Applied::Granted { credits },
        GrantOutcome::AlreadyGranted => Applied::AlreadyGranted,
    })
}

async fn recover_from_metadata(
    conn: &mut PgConnection,
    session: &CheckoutSessionInfo,
) -> anyhow::Result<Option<(Uuid, i64)>> {
    let meta = |k: &str| session.metadata.get(k).map(String::as_str);
    if meta("purpose") != Some("top_up") {
        return Ok(None);
    }
    let Some(workspace_id) = meta("workspace_id").and_then(|v| v.parse::<Uuid>().ok()) else {
        tracing::warn!(session = %session.id, "top-up session without a workspace ignored");
        return Ok(None);
    };
    // Credits come from what was paid, priced by our catalog, never from the
    // metadata's own `credits` (anyone able to create sessions could write any number).
    let paid = session.amount_total.unwrap_or(0);
    let currency = session.currency.as_deref().unwrap_or_default();
    let pack: Option<(i64, i64, String)> = match meta("credit_pack") {
        Some(code) => sqlx::query_as(
            "select credits, price_minor, currency from credit_packs where credit_pack_code = $1",
        )
        .bind(code)
        .fetch_optional(&mut *conn)
        .await?,
        None => None,
    };
    let is_pack = pack.is_some();
    let credits = match pack {
        Some((credits, price, pack_currency)) if paid >= price && currency == pack_currency => {
            credits
        }
        None if currency == custom_top_up::CURRENCY && paid > 0 && paid % 100 == 0 => {
            paid / 100 * custom_top_up::CREDITS_PER_EUR
        }
        _ => {
            tracing::warn!(session = %session.id, paid, currency, "top-up session whose payment does not match the catalog ignored");
            return Ok(None);
        }
    };
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "insert into top_ups (workspace_id, stripe_checkout_session_id, credit_pack_code, credits,
                amount_minor, currency)
         select $1, $2, $3, $4, $5, $6
          where exists (select 1 from workspaces where workspace_id = $1)
         on conflict (stripe_checkout_session_id) do nothing
         returning workspace_id",
    )
    .bind(workspace_id)
    .bind(&session.id)
    .bind(meta("credit_pack").filter(|_| is_pack))
    .bind(credits)
    .bind(paid)
    .bind(currency)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(inserted.map(|ws| (ws, credits)))
}

/// Marks an expired session's top-up as expired (nothing to grant).
pub async fn mark_expired(conn: &mut PgConnection, session_id: &str) -> anyhow::Result<()> {
    sqlx::query("update top_ups set status = 'expired' where stripe_checkout_session_id = $1 and status = 'open'")
        .bind(session_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A top-up as the success page shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TopUp {
    /// The checkout session.
    pub stripe_checkout_session_id: String,
    /// Credits bought.
    pub credits: i64,
    /// Price in minor units.
    pub amount_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// `open`, `paid` or `expired`.
    pub status: String,
    /// When the webhook granted the credits.
    pub paid_at: Option<OffsetDateTime>,
}

impl TopUp {
    /// The price paid.
    pub fn price(&self) -> Money {
        Money::new(self.amount_minor, &self.currency)
    }
}

/// A workspace's top-up by checkout session id (scoped: another workspace's session
/// is `None`).
pub async fn find(
    db: &PgPool,
    workspace_id: Uuid,
    session_id: &str,
) -> anyhow::Result<Option<TopUp>> {
    Ok(sqlx::query_as::<_, TopUp>(
        "select stripe_checkout_session_id, credits, amount_minor, currency, status::text as status, paid_at
           from top_ups where workspace_id = $1 and stripe_checkout_session_id = $2",
    )
    .bind(workspace_id)
    .bind(session_id)
    .fetch_optional(db)
    .await?)
}
