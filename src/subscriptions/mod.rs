//! Subscriptions and invoices mirrored from Stripe, and the plan-change workflow
//! ([`plan_change`]). Owns tables `subscriptions`, `invoices`, `plan_changes` (SQL in
//! [`db`]).
//!
//! Webhooks arrive duplicated and out of order (DESIGN.md principle 2), so a
//! subscription is never applied from an event's payload: it is fetched from Stripe
//! before the applying transaction opens ([`apply_fetched`] takes what was fetched and
//! when the fetch started). A fetch older than the stored one changes nothing, so two
//! workers racing on one subscription converge on the newest state with no lock held
//! across the call, and a stale `updated` after `deleted` cannot resurrect anything. An
//! invoice never goes back from `paid`; plan credits follow paid invoices through
//! [`crate::allowances`], keyed by invoice.

pub mod db;
pub mod plan_change;

use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::catalog;
use crate::ids::{PlanChangeId, PlanCode, WorkspaceId};
use crate::resellers::commissions;
use crate::stripe::billing::{InvoiceInfo, SubscriptionInfo};
pub use crate::stripe::billing::{InvoiceStatus, SubscriptionStatus};
use crate::{accounts, allowances};

/// A mirrored subscription (a row of `subscriptions`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Subscription {
    /// `sub_...`
    pub stripe_subscription_id: String,
    /// Whose.
    pub workspace_id: WorkspaceId,
    /// `cus_...`
    pub stripe_customer_id: String,
    /// The item whose price a plan change replaces.
    pub stripe_item_id: String,
    /// The item's price.
    pub stripe_price_id: String,
    /// Stripe's status.
    pub status: SubscriptionStatus,
    /// The plan of the price, if billfold knows it.
    pub plan_code: Option<PlanCode>,
    /// Start of the paid period.
    pub current_period_start: OffsetDateTime,
    /// End of the paid period.
    pub current_period_end: OffsetDateTime,
    /// Ends at period end instead of renewing.
    pub cancel_at_period_end: bool,
    /// A downgrade that takes effect at `current_period_end`.
    pub scheduled_plan_code: Option<PlanCode>,
    /// The plan kept until a scheduled downgrade takes effect.
    pub scheduled_from_plan_code: Option<PlanCode>,
    /// When the stored state was fetched from Stripe (the fetch's start).
    pub fetched_at: OffsetDateTime,
}

impl Subscription {
    /// Whether the workspace is on this subscription's plan (active, trialing, past_due).
    pub fn is_live(&self) -> bool {
        self.status.is_live()
    }

    /// Status as shown to customers.
    pub fn status_label(&self) -> &'static str {
        self.status.label()
    }

    /// The current period (start, end).
    pub fn period(&self) -> (OffsetDateTime, OffsetDateTime) {
        (self.current_period_start, self.current_period_end)
    }
}

/// An invoice row for `/billing`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Invoice {
    /// Customer-facing number.
    pub number: Option<String>,
    /// When Stripe created it.
    pub created_at: OffsetDateTime,
    /// Minor units.
    pub amount_due: i64,
    /// ISO 4217.
    pub currency: String,
    /// Stripe's status.
    pub status: InvoiceStatus,
    /// Stripe's hosted page.
    pub hosted_invoice_url: Option<String>,
    /// PDF.
    pub invoice_pdf: Option<String>,
}

impl Invoice {
    /// The amount as money.
    pub fn amount(&self) -> crate::money::Money {
        crate::money::Money::new(self.amount_due, &self.currency)
    }
}

/// An upgrade asked for on `/billing` (a row of `plan_changes`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlanChangeIntent {
    /// Primary key.
    pub plan_change_id: PlanChangeId,
    /// The plan before.
    pub from_plan_code: PlanCode,
    /// The plan asked for.
    pub to_plan_code: PlanCode,
    /// The proration date the preview was priced at.
    pub proration_date: OffsetDateTime,
}

fn ts(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Mirrors a subscription as fetched from Stripe by a fetch that started at
/// `fetched_at` (database clock), inside the caller's transaction, and moves the
/// workspace onto its plan (or back to free once it ended). A fetch older than the
/// stored one is ignored. Returns the workspace, or `None` for a subscription of a
/// customer billfold does not know (another integration on the same Stripe account).
pub async fn apply_fetched(
    conn: &mut PgConnection,
    sub: &SubscriptionInfo,
    fetched_at: OffsetDateTime,
) -> anyhow::Result<Option<WorkspaceId>> {
    let by_metadata = sub
        .metadata
        .get("workspace_id")
        .and_then(|v| v.parse::<WorkspaceId>().ok());
    // Lock order: workspace row (no key update), subscription row, allowance period,
    // balance row.
    let Some(workspace_id) =
        accounts::db::lock_workspace_of_customer(conn, by_metadata, &sub.customer_id).await?
    else {
        tracing::info!(subscription = %sub.id, "subscription of an unknown customer ignored");
        return Ok(None);
    };
    let stored = db::lock(conn, &sub.id).await?;
    if stored.as_ref().is_some_and(|s| s.fetched_at >= fetched_at) {
        return Ok(Some(workspace_id));
    }
    let plan = catalog::db::plan_by_price(conn, &sub.price_id).await?;
    // Before a mid-period change is mirrored, make sure the period records the plan
    // paid for until now: the mark a switch up is measured against.
    if let Some(stored) = stored.as_ref().filter(|s| {
        s.is_live() && s.current_period_start.unix_timestamp() == sub.current_period_start
    }) && let Some(code) = stored
        .scheduled_from_plan_code
        .as_ref()
        .or(stored.plan_code.as_ref())
        && let Some(paid) = catalog::db::plan(conn, code).await?
    {
        allowances::ensure_subscription_period(conn, workspace_id, &sub.id, stored.period(), &paid)
            .await?;
    }
    let plan_code = plan.as_ref().map(|p| &p.plan_code);
    db::upsert_fetched(conn, workspace_id, sub, plan_code, fetched_at).await?;

    // A scheduled downgrade keeps the workspace on the plan it pays for until the
    // period it paid ends; once a new period starts the downgrade has happened.
    let held = db::settle_scheduled_downgrade(conn, &sub.id, ts(sub.current_period_start)).await?;
    if sub.status.is_live() {
        if let Some(code) = held.as_ref().or(plan_code) {
            accounts::db::set_workspace_plan(conn, workspace_id, code).await?;
        }
    } else if sub.status == SubscriptionStatus::Canceled {
        end_subscription(conn, workspace_id, &sub.id).await?;
    }
    Ok(Some(workspace_id))
}

/// Back to the free plan once a subscription has ended, unless another live
/// subscription holds the workspace ([`allowances::back_to_free`] says what happens to
/// plan credits; purchased credits and debt are untouched).
async fn end_subscription(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    sub_id: &str,
) -> anyhow::Result<()> {
    if db::other_live(conn, workspace_id, sub_id).await? {
        return Ok(());
    }
    let free = catalog::db::plan(conn, &PlanCode::free())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the catalog has no free plan"))?;
    accounts::db::set_workspace_plan(conn, workspace_id, &free.plan_code).await?;
    allowances::back_to_free(conn, workspace_id, &free, sub_id).await
}

/// Mirrors an invoice of a subscription already mirrored in this transaction and, when
/// it is paid, applies what it pays for: a first or renewal invoice opens the period
/// with the plan's allowance; a proration invoice (a switch up) grants the pro-rata
/// difference to the period's mark. Each at most once per invoice.
pub async fn apply_invoice(
    conn: &mut PgConnection,
    invoice: &InvoiceInfo,
    paid: bool,
) -> anyhow::Result<()> {
    let Some(sub_id) = &invoice.subscription_id else {
        return Ok(());
    };
    let Some(sub) = db::find(conn, sub_id).await? else {
        tracing::info!(invoice = %invoice.id, "invoice of a subscription billfold does not know ignored");
        return Ok(());
    };
    let status = if paid {
        InvoiceStatus::Paid
    } else {
        invoice.status.unwrap_or(InvoiceStatus::Open)
    };
    db::upsert_invoice(conn, sub.workspace_id, invoice, status).await?;
    if !paid {
        return Ok(());
    }
    let paid_at = invoice.paid_at.unwrap_or(invoice.created);
    commissions::record_payment(
        conn,
        &commissions::Payment {
            source: commissions::Source::Invoice,
            source_id: &invoice.id,
            payment_intent_id: None,
            workspace_id: sub.workspace_id,
            amount_paid: invoice.amount_paid,
            tax: invoice.tax,
            currency: &invoice.currency,
            paid_at: ts(paid_at),
        },
    )
    .await?;
    // A refund recorded before the commission existed (events arrive in any order).
    if let Some(pi) = commissions::payment_intent_of(conn, &invoice.id).await? {
        crate::top_ups::db::lock_payment(conn, &pi).await?;
        let reference = format!("{}:paid", invoice.id);
        crate::top_ups::reversals::follow_commission(conn, &pi, &reference, ts(paid_at)).await?;
    }
    // A switch's invoice pays for the price on its proration line: the subscription may
    // have moved on (another switch, a scheduled downgrade) before it is applied.
    let plan = match (&invoice.prorated_price_id, &sub.plan_code) {
        (Some(price), _) if invoice.billing_reason.as_deref() == Some("subscription_update") => {
            catalog::db::plan_by_price(conn, price).await?
        }
        (_, Some(code)) => catalog::db::plan(conn, code).await?,
        _ => None,
    };
    let Some(plan) = plan else {
        tracing::info!(invoice = %invoice.id, "paid invoice for a price billfold does not sell");
        return Ok(());
    };
    match invoice.billing_reason.as_deref() {
        Some("subscription_create" | "subscription_cycle") => {
            let period = invoice
                .billed_period
                .map_or_else(|| sub.period(), |(s, e)| (ts(s), ts(e)));
            allowances::open_subscription_period(
                conn,
                sub.workspace_id,
                sub_id,
                period,
                &plan,
                &invoice.id,
            )
            .await
        }
        Some("subscription_update") => {
            let at = match db::claim_plan_change(conn, sub_id, &plan.plan_code, &invoice.id).await?
            {
                Some(intent) => intent.proration_date.unix_timestamp(),
                None => invoice.proration_at.unwrap_or(invoice.created),
            };
            let granted = allowances::grant_upgrade(
                conn,
                sub.workspace_id,
                sub_id,
                sub.period(),
                &plan,
                at,
                &invoice.id,
            )
            .await?;
            tracing::info!(invoice = %invoice.id, granted, "proration invoice paid");
            Ok(())
        }
        _ => Ok(()),
    }
}
