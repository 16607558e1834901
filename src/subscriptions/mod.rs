//! Subscriptions and invoices mirrored from Stripe. Owns tables `subscriptions` and
//! `invoices`. Webhooks arrive duplicated and out of order (DESIGN.md principle 2), so a
//! subscription event never applies its own payload: the subscription is re-fetched from
//! Stripe under a per-subscription advisory lock, so the last writer always holds the
//! newest state, and a stale `updated` after `deleted` cannot resurrect anything. An
//! invoice never goes back from `paid`, and each allowance grant is keyed by its invoice.

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::ledger;
use crate::stripe::StripeClient;
use crate::stripe::billing::{InvoiceInfo, SubscriptionInfo};

/// Statuses in which the workspace is on the subscription's plan.
const LIVE: &[&str] = &["active", "trialing", "past_due"];

fn ts(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Re-fetches subscription `id` from Stripe and mirrors it inside the caller's
/// transaction; moves the workspace onto the plan (or back to free once it ended).
/// Returns the workspace, or `None` for a subscription of a customer billfold does not
/// know (another integration on the same Stripe account).
pub async fn sync_subscription(
    conn: &mut PgConnection,
    stripe: &StripeClient,
    id: &str,
) -> anyhow::Result<Option<Uuid>> {
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1, 7242))")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let sub = stripe.retrieve_subscription(id).await?;
    apply(conn, &sub).await
}

/// Mirrors a subscription state (as just fetched from Stripe).
pub async fn apply(
    conn: &mut PgConnection,
    sub: &SubscriptionInfo,
) -> anyhow::Result<Option<Uuid>> {
    let by_metadata = sub
        .metadata
        .get("workspace_id")
        .and_then(|v| v.parse::<Uuid>().ok());
    // `for no key update`, not `for update`: a concurrent consume holds the balance
    // row and inserts ledger entries whose foreign key takes `key share` on this row;
    // `for update` would conflict with it and deadlock with our own balance update.
    let workspace_id: Option<Uuid> = sqlx::query_scalar(
        "select workspace_id from workspaces
          where workspace_id = $1 or stripe_customer_id = $2
          order by workspace_id = $1 desc limit 1 for no key update",
    )
    .bind(by_metadata)
    .bind(&sub.customer_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(workspace_id) = workspace_id else {
        tracing::warn!(subscription = %sub.id, "subscription of an unknown customer ignored");
        return Ok(None);
    };
    let plan_code: Option<String> =
        sqlx::query_scalar("select plan_code from plans where stripe_price_id = $1")
            .bind(&sub.price_id)
            .fetch_optional(&mut *conn)
            .await?;
    sqlx::query(
        "insert into subscriptions (stripe_subscription_id, workspace_id, stripe_customer_id, status,
                stripe_item_id, stripe_price_id, plan_code, current_period_start, current_period_end,
                cancel_at_period_end, ended_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         on conflict (stripe_subscription_id) do update set
                status = excluded.status, stripe_item_id = excluded.stripe_item_id,
                stripe_price_id = excluded.stripe_price_id, plan_code = excluded.plan_code,
                current_period_start = excluded.current_period_start,
                current_period_end = excluded.current_period_end,
                cancel_at_period_end = excluded.cancel_at_period_end,
                ended_at = excluded.ended_at, updated_at = now()",
    )
    .bind(&sub.id)
    .bind(workspace_id)
    .bind(&sub.customer_id)
    .bind(&sub.status)
    .bind(&sub.item_id)
    .bind(&sub.price_id)
    .bind(&plan_code)
    .bind(ts(sub.current_period_start))
    .bind(ts(sub.current_period_end))
    .bind(sub.cancel_at_period_end)
    .bind(sub.ended_at.map(ts))
    .execute(&mut *conn)
    .await?;

    // A scheduled downgrade keeps the workspace on the plan it pays for until the
    // period it paid ends; once a new period starts the downgrade has happened.
    let held: Option<String> = sqlx::query_scalar(
        "update subscriptions set
                scheduled_plan_code = case when scheduled_effective_at <= $2 then null else scheduled_plan_code end,
                scheduled_from_plan_code = case when scheduled_effective_at <= $2 then null else scheduled_from_plan_code end,
                scheduled_effective_at = case when scheduled_effective_at <= $2 then null else scheduled_effective_at end
          where stripe_subscription_id = $1
         returning scheduled_from_plan_code",
    )
    .bind(&sub.id)
    .bind(ts(sub.current_period_start))
    .fetch_one(&mut *conn)
    .await?;
    let plan_code = held.or(plan_code);
    if LIVE.contains(&sub.status.as_str()) {
        if let Some(plan) = &plan_code {
            sqlx::query("update workspaces set plan_code = $2 where workspace_id = $1")
                .bind(workspace_id)
                .bind(plan)
                .execute(&mut *conn)
                .await?;
        }
    } else if sub.status == "canceled" {
        end_subscription(conn, workspace_id, &sub.id).await?;
    }
    Ok(Some(workspace_id))
}

/// Back to the free plan once a subscription has ended, unless another live
/// subscription holds the workspace. Plan credits reset to the free allowance, once
/// per subscription; purchased credits are untouched.
async fn end_subscription(
    conn: &mut PgConnection,
    workspace_id: Uuid,
    sub_id: &str,
) -> anyhow::Result<()> {
    let other_live: bool = sqlx::query_scalar(
        "select exists (select 1 from subscriptions where workspace_id = $1
                          and stripe_subscription_id <> $2 and status = any($3))",
    )
    .bind(workspace_id)
    .bind(sub_id)
    .bind(LIVE)
    .fetch_one(&mut *conn)
    .await?;
    if other_live {
        return Ok(());
    }
    sqlx::query("update workspaces set plan_code = 'free' where workspace_id = $1")
        .bind(workspace_id)
        .execute(&mut *conn)
        .await?;
    let free: Option<i64> =
        sqlx::query_scalar("select monthly_credits from plans where plan_code = 'free'")
            .fetch_one(&mut *conn)
            .await?;
    ledger::reset_plan_credits(
        conn,
        workspace_id,
        free.unwrap_or(0),
        &format!("subscription-ended:{sub_id}"),
        "Subscription ended: back to the Free plan allowance",
    )
    .await?;
    Ok(())
}

/// Mirrors an invoice and, when it is a paid first or renewal invoice of a
/// subscription, resets plan credits to the plan's allowance (no rollover; purchased
/// credits untouched), once per invoice id. An invoice for a subscription billfold has
/// not seen yet is fetched first.
pub async fn apply_invoice(
    conn: &mut PgConnection,
    stripe: &StripeClient,
    invoice: &InvoiceInfo,
    paid: bool,
) -> anyhow::Result<()> {
    let Some(sub_id) = &invoice.subscription_id else {
        return Ok(());
    };
    let known: Option<Uuid> = sqlx::query_scalar(
        "select workspace_id from subscriptions where stripe_subscription_id = $1",
    )
    .bind(sub_id)
    .fetch_optional(&mut *conn)
    .await?;
    // A paid invoice opens a period (first, renewal, upgrade): mirror the subscription
    // in the same transaction, so plan and allowance move together.
    let workspace_id = match known {
        Some(ws) if !paid => ws,
        _ => match sync_subscription(conn, stripe, sub_id).await? {
            Some(ws) => ws,
            None => return Ok(()),
        },
    };
    let status = if paid {
        "paid".to_owned()
    } else {
        invoice.status.clone().unwrap_or_else(|| "open".into())
    };
    sqlx::query(
        "insert into invoices (stripe_invoice_id, workspace_id, stripe_subscription_id, number, status,
                billing_reason, amount_due, amount_paid, currency, hosted_invoice_url, invoice_pdf,
                period_start, period_end, created_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         on conflict (stripe_invoice_id) do update set
                -- a late payment_failed never makes a paid invoice unpaid
                status = case when invoices.status = 'paid' then 'paid' else excluded.status end,
                amount_paid = greatest(invoices.amount_paid, excluded.amount_paid),
                number = coalesce(excluded.number, invoices.number),
                hosted_invoice_url = coalesce(excluded.hosted_invoice_url, invoices.hosted_invoice_url),
                invoice_pdf = coalesce(excluded.invoice_pdf, invoices.invoice_pdf)",
    )
    .bind(&invoice.id)
    .bind(workspace_id)
    .bind(sub_id)
    .bind(&invoice.number)
    .bind(&status)
    .bind(&invoice.billing_reason)
    .bind(invoice.amount_due)
    .bind(invoice.amount_paid)
    .bind(&invoice.currency)
    .bind(&invoice.hosted_invoice_url)
    .bind(&invoice.invoice_pdf)
    .bind(ts(invoice.period_start))
    .bind(ts(invoice.period_end))
    .bind(ts(invoice.created))
    .execute(&mut *conn)
    .await?;

    if paid && invoice.billing_reason.as_deref() == Some("subscription_update") {
        grant_upgrade(conn, workspace_id, sub_id, &invoice.id).await?;
    }
    let resets = matches!(
        invoice.billing_reason.as_deref(),
        Some("subscription_create" | "subscription_cycle")
    );
    if paid && resets {
        let plan: Option<(String, Option<i64>)> = sqlx::query_as(
            "select p.name, p.monthly_credits from subscriptions s join plans p using (plan_code)
              where s.stripe_subscription_id = $1",
        )
        .bind(sub_id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some((name, allowance)) = plan {
            ledger::reset_plan_credits(
                conn,
                workspace_id,
                allowance.unwrap_or(0),
                &invoice.id,
                &format!("{name} plan: monthly allowance"),
            )
            .await?;
        }
    }
    Ok(())
}

/// Credits an upgrade grants (DESIGN.md "plan changes cannot be gamed"): the
/// difference of the monthly allowances for the rest of the period,
/// `floor((new − old) × remaining / period)`; rounded down so it never grants more
/// than the plan would. Zero for a move to an unlimited plan (usage is not deducted
/// there) or to a smaller allowance.
pub fn upgrade_credits(
    old: Option<i64>,
    new: Option<i64>,
    period_start: i64,
    period_end: i64,
    now: i64,
) -> i64 {
    let (Some(old), Some(new)) = (old, new) else {
        return 0;
    };
    let period = period_end - period_start;
    if new <= old || period <= 0 {
        return 0;
    }
    let remaining = (period_end - now).clamp(0, period);
    // i128: allowances × seconds can exceed i64 for very large plans.
    i64::try_from(i128::from(new - old) * i128::from(remaining) / i128::from(period)).unwrap_or(0)
}

/// Records a confirmed upgrade; its credits are granted when the proration invoice is paid.
pub async fn record_upgrade(
    conn: &mut PgConnection,
    workspace_id: Uuid,
    subscription_id: &str,
    from_plan: &str,
    to_plan: &str,
    credits: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "insert into plan_changes (workspace_id, stripe_subscription_id, from_plan_code, to_plan_code, credits)
         values ($1, $2, $3, $4, $5)",
    )
    .bind(workspace_id)
    .bind(subscription_id)
    .bind(from_plan)
    .bind(to_plan)
    .bind(credits)
    .execute(conn)
    .await?;
    Ok(())
}

/// Grants the oldest pending upgrade of this subscription, keyed by the paid invoice.
async fn grant_upgrade(
    conn: &mut PgConnection,
    workspace_id: Uuid,
    sub_id: &str,
    invoice_id: &str,
) -> anyhow::Result<()> {
    let pending: Option<(Uuid, i64, String)> = sqlx::query_as(
        "select c.plan_change_id, c.credits, p.name from plan_changes c join plans p on p.plan_code = c.to_plan_code
          where c.stripe_subscription_id = $1 and c.stripe_invoice_id is null
          order by c.created_at limit 1 for update of c",
    )
    .bind(sub_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((change_id, credits, plan_name)) = pending else {
        return Ok(());
    };
    let claimed = sqlx::query(
        "update plan_changes set stripe_invoice_id = $2 where plan_change_id = $1
           and not exists (select 1 from plan_changes where stripe_invoice_id = $2)",
    )
    .bind(change_id)
    .bind(invoice_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if claimed == 1 && credits > 0 {
        ledger::grant(
            conn,
            &ledger::Grant {
                workspace_id,
                kind: ledger::LedgerEntryKind::PlanAllowance,
                plan_credits: credits,
                purchased_credits: 0,
                description: format!(
                    "Upgrade to {plan_name}: pro-rata allowance for the rest of the period"
                ),
                reference: format!("upgrade:{invoice_id}"),
            },
        )
        .await?;
    }
    Ok(())
}

/// Why a downgrade to a plan is refused: what the workspace uses beyond it.
pub async fn downgrade_blockers(
    db: &sqlx::PgPool,
    workspace_id: Uuid,
    target_plan: &str,
) -> anyhow::Result<Vec<String>> {
    let (max_members, max_keys, name): (Option<i32>, Option<i32>, String) =
        sqlx::query_as("select max_members, max_api_keys, name from plans where plan_code = $1")
            .bind(target_plan)
            .fetch_one(db)
            .await?;
    let members: i64 =
        sqlx::query_scalar("select count(*) from memberships where workspace_id = $1")
            .bind(workspace_id)
            .fetch_one(db)
            .await?;
    let keys: i64 = sqlx::query_scalar(
        "select count(*) from api_keys where workspace_id = $1 and revoked_at is null",
    )
    .bind(workspace_id)
    .fetch_one(db)
    .await?;
    let features: Vec<String> = sqlx::query_scalar(
        "select distinct u.feature_code from usage_events u join features f using (feature_code)
          where u.workspace_id = $1 and u.created_at > now() - interval '30 days'
            and not exists (select 1 from plan_entitlements e
                             where e.plan_code = $2 and e.feature_group = f.feature_group)
          order by 1",
    )
    .bind(workspace_id)
    .bind(target_plan)
    .fetch_all(db)
    .await?;
    let mut reasons = Vec::new();
    if let Some(max) = max_members.filter(|m| members > i64::from(*m)) {
        reasons.push(format!(
            "{name} allows {max} members; this workspace has {members}. Remove members first."
        ));
    }
    if let Some(max) = max_keys.filter(|m| keys > i64::from(*m)) {
        reasons.push(format!(
            "{name} allows {max} active API keys; this workspace has {keys}. Revoke keys first."
        ));
    }
    if !features.is_empty() {
        reasons.push(format!(
            "{name} does not include features used in the last 30 days: {}.",
            features.join(", ")
        ));
    }
    Ok(reasons)
}

/// Records a downgrade scheduled for the end of the current period.
pub async fn schedule_downgrade(
    conn: &mut PgConnection,
    subscription_id: &str,
    from_plan: &str,
    to_plan: &str,
    effective_at: OffsetDateTime,
) -> anyhow::Result<()> {
    sqlx::query(
        "update subscriptions set scheduled_plan_code = $2, scheduled_from_plan_code = $3, scheduled_effective_at = $4
          where stripe_subscription_id = $1",
    )
    .bind(subscription_id)
    .bind(to_plan)
    .bind(from_plan)
    .bind(effective_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets a scheduled downgrade (after Stripe's price was put back).
pub async fn clear_scheduled_downgrade(
    conn: &mut PgConnection,
    subscription_id: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "update subscriptions set scheduled_plan_code = null, scheduled_from_plan_code = null,
                scheduled_effective_at = null
          where stripe_subscription_id = $1",
    )
    .bind(subscription_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// The workspace's current (latest) subscription, for `/billing`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Subscription {
    /// `sub_...`
    pub stripe_subscription_id: String,
    /// `cus_...`
    pub stripe_customer_id: String,
    /// The item whose price a plan change replaces.
    pub stripe_item_id: String,
    /// Start of the paid period.
    pub current_period_start: OffsetDateTime,
    /// Stripe's status.
    pub status: String,
    /// The plan, if billfold knows the price.
    pub plan_code: Option<String>,
    /// End of the paid period.
    pub current_period_end: OffsetDateTime,
    /// Ends at period end instead of renewing.
    pub cancel_at_period_end: bool,
    /// A downgrade that takes effect at `current_period_end`.
    pub scheduled_plan_code: Option<String>,
}

impl Subscription {
    /// Whether the workspace is on this subscription's plan (active, trialing, past_due).
    pub fn is_live(&self) -> bool {
        LIVE.contains(&self.status.as_str())
    }

    /// Status as shown to customers.
    pub fn status_label(&self) -> &str {
        match self.status.as_str() {
            "active" => "Active",
            "trialing" => "Trialing",
            "past_due" => "Past due",
            "canceled" => "Canceled",
            "unpaid" => "Unpaid",
            "incomplete" | "incomplete_expired" => "Incomplete",
            other => other,
        }
    }
}

/// The workspace's newest subscription, if any.
pub async fn current(
    db: &sqlx::PgPool,
    workspace_id: Uuid,
) -> anyhow::Result<Option<Subscription>> {
    Ok(sqlx::query_as::<_, Subscription>(
        "select stripe_subscription_id, stripe_customer_id, stripe_item_id, current_period_start, status,
                plan_code, current_period_end, cancel_at_period_end, scheduled_plan_code
           from subscriptions where workspace_id = $1
          order by (status = any($2)) desc, current_period_start desc limit 1",
    )
    .bind(workspace_id)
    .bind(LIVE)
    .fetch_optional(db)
    .await?)
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
    /// `paid`, `open`, ...
    pub status: String,
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

/// The workspace's invoices, newest first.
pub async fn invoices(db: &sqlx::PgPool, workspace_id: Uuid) -> anyhow::Result<Vec<Invoice>> {
    Ok(sqlx::query_as::<_, Invoice>(
        "select number, created_at, amount_due, currency, status, hosted_invoice_url, invoice_pdf
           from invoices where workspace_id = $1 order by created_at desc, stripe_invoice_id desc limit 100",
    )
    .bind(workspace_id)
    .fetch_all(db)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::upgrade_credits;

    #[test]
    fn upgrades_grant_the_pro_rata_difference_rounded_down() {
        // Pro (2,000) → Business (10,000) half way through: 4,000.
        assert_eq!(
            upgrade_credits(Some(2_000), Some(10_000), 0, 100, 50),
            4_000
        );
        // A third left: floor(8,000 / 3) = 2,666.
        assert_eq!(
            upgrade_credits(Some(2_000), Some(10_000), 0, 300, 200),
            2_666
        );
        assert_eq!(
            upgrade_credits(Some(2_000), Some(10_000), 0, 100, 0),
            8_000,
            "at the start: the whole difference"
        );
        assert_eq!(
            upgrade_credits(Some(2_000), Some(10_000), 0, 100, 100),
            0,
            "at the end: nothing"
        );
        assert_eq!(
            upgrade_credits(Some(2_000), Some(10_000), 0, 100, 150),
            0,
            "after the end: nothing"
        );
        assert_eq!(
            upgrade_credits(Some(10_000), Some(2_000), 0, 100, 50),
            0,
            "a downgrade grants nothing"
        );
        assert_eq!(
            upgrade_credits(Some(2_000), None, 0, 100, 50),
            0,
            "unlimited plans are not counted"
        );
    }
}
