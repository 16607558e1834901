//! SQL of subscriptions, invoices and plan changes: free functions on a connection;
//! the caller owns the transaction.

use sqlx::PgConnection;
use time::OffsetDateTime;

use super::{Invoice, PlanChangeIntent, Subscription};
use crate::ids::{PlanChangeId, PlanCode, WorkspaceId};
use crate::stripe::billing::{InvoiceInfo, InvoiceStatus, SubscriptionInfo, SubscriptionStatus};

const SUBSCRIPTION_COLUMNS: &str = "stripe_subscription_id, workspace_id, stripe_customer_id, \
     stripe_item_id, stripe_price_id, status, plan_code, current_period_start, current_period_end, \
     cancel_at_period_end, scheduled_plan_code, scheduled_from_plan_code, fetched_at";

/// A subscription, locked for the transaction.
pub async fn lock(conn: &mut PgConnection, id: &str) -> anyhow::Result<Option<Subscription>> {
    let sql = format!(
        "select {SUBSCRIPTION_COLUMNS} from subscriptions where stripe_subscription_id = $1 for update"
    );
    Ok(sqlx::query_as::<_, Subscription>(&sql)
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// A subscription by id.
pub async fn find(conn: &mut PgConnection, id: &str) -> anyhow::Result<Option<Subscription>> {
    let sql = format!(
        "select {SUBSCRIPTION_COLUMNS} from subscriptions where stripe_subscription_id = $1"
    );
    Ok(sqlx::query_as::<_, Subscription>(&sql)
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// The workspace's current subscription: a live one first, else the newest.
pub async fn current(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
) -> anyhow::Result<Option<Subscription>> {
    let sql = format!(
        "select {SUBSCRIPTION_COLUMNS} from subscriptions where workspace_id = $1
          order by (status = any($2)) desc, current_period_start desc limit 1"
    );
    Ok(sqlx::query_as::<_, Subscription>(&sql)
        .bind(workspace_id)
        .bind(&SubscriptionStatus::LIVE[..])
        .fetch_optional(conn)
        .await?)
}

/// Whether the workspace has a live subscription other than `except`.
pub async fn other_live(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    except: &str,
) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar(
        "select exists (select 1 from subscriptions where workspace_id = $1
                          and stripe_subscription_id <> $2 and status = any($3))",
    )
    .bind(workspace_id)
    .bind(except)
    .bind(&SubscriptionStatus::LIVE[..])
    .fetch_one(conn)
    .await?)
}

/// Stores a subscription as fetched at `fetched_at`, unless what is stored was fetched
/// later (then nothing changes). Returns whether it was stored.
pub async fn upsert_fetched(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    sub: &SubscriptionInfo,
    plan_code: Option<&PlanCode>,
    fetched_at: OffsetDateTime,
) -> anyhow::Result<bool> {
    let ts =
        |secs: i64| OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    Ok(sqlx::query(
        "insert into subscriptions (stripe_subscription_id, workspace_id, stripe_customer_id, status,
                stripe_item_id, stripe_price_id, plan_code, current_period_start, current_period_end,
                cancel_at_period_end, ended_at, fetched_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         on conflict (stripe_subscription_id) do update set
                status = excluded.status, stripe_item_id = excluded.stripe_item_id,
                stripe_price_id = excluded.stripe_price_id, plan_code = excluded.plan_code,
                current_period_start = excluded.current_period_start,
                current_period_end = excluded.current_period_end,
                cancel_at_period_end = excluded.cancel_at_period_end,
                ended_at = excluded.ended_at, fetched_at = excluded.fetched_at, updated_at = now()
          where subscriptions.fetched_at < excluded.fetched_at",
    )
    .bind(&sub.id)
    .bind(workspace_id)
    .bind(&sub.customer_id)
    .bind(sub.status)
    .bind(&sub.item_id)
    .bind(&sub.price_id)
    .bind(plan_code)
    .bind(ts(sub.current_period_start))
    .bind(ts(sub.current_period_end))
    .bind(sub.cancel_at_period_end)
    .bind(sub.ended_at.map(ts))
    .bind(fetched_at)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Forgets a scheduled downgrade whose date has come (`period_start` is the
/// subscription's current period start); returns the plan still held until then, if
/// the downgrade is still ahead.
pub async fn settle_scheduled_downgrade(
    conn: &mut PgConnection,
    id: &str,
    period_start: OffsetDateTime,
) -> anyhow::Result<Option<PlanCode>> {
    Ok(sqlx::query_scalar(
        "update subscriptions set
                scheduled_plan_code = case when scheduled_effective_at <= $2 then null else scheduled_plan_code end,
                scheduled_from_plan_code = case when scheduled_effective_at <= $2 then null else scheduled_from_plan_code end,
                scheduled_effective_at = case when scheduled_effective_at <= $2 then null else scheduled_effective_at end
          where stripe_subscription_id = $1
         returning scheduled_from_plan_code",
    )
    .bind(id)
    .bind(period_start)
    .fetch_one(conn)
    .await?)
}

/// Records a downgrade scheduled for the end of the current period.
pub async fn schedule_downgrade(
    conn: &mut PgConnection,
    id: &str,
    from_plan: &PlanCode,
    to_plan: &PlanCode,
    effective_at: OffsetDateTime,
) -> anyhow::Result<()> {
    sqlx::query(
        "update subscriptions set scheduled_plan_code = $2, scheduled_from_plan_code = $3, scheduled_effective_at = $4
          where stripe_subscription_id = $1",
    )
    .bind(id)
    .bind(to_plan)
    .bind(from_plan)
    .bind(effective_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets a scheduled downgrade.
pub async fn clear_scheduled_downgrade(conn: &mut PgConnection, id: &str) -> anyhow::Result<()> {
    sqlx::query(
        "update subscriptions set scheduled_plan_code = null, scheduled_from_plan_code = null,
                scheduled_effective_at = null
          where stripe_subscription_id = $1",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Mirrors an invoice. A paid invoice stays paid whatever arrives later, and the
/// amount paid only grows.
pub async fn upsert_invoice(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    invoice: &InvoiceInfo,
    status: InvoiceStatus,
) -> anyhow::Result<()> {
    let ts =
        |secs: i64| OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    sqlx::query(
        "insert into invoices (stripe_invoice_id, workspace_id, stripe_subscription_id, number, status,
                billing_reason, amount_due, amount_paid, currency, hosted_invoice_url, invoice_pdf,
                period_start, period_end, created_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         on conflict (stripe_invoice_id) do update set
                status = case when invoices.status = 'paid' then invoices.status else excluded.status end,
                amount_paid = greatest(invoices.amount_paid, excluded.amount_paid),
                number = coalesce(excluded.number, invoices.number),
                hosted_invoice_url = coalesce(excluded.hosted_invoice_url, invoices.hosted_invoice_url),
                invoice_pdf = coalesce(excluded.invoice_pdf, invoices.invoice_pdf)",
    )
    .bind(&invoice.id)
    .bind(workspace_id)
    .bind(&invoice.subscription_id)
    .bind(&invoice.number)
    .bind(status)
    .bind(&invoice.billing_reason)
    .bind(invoice.amount_due)
    .bind(invoice.amount_paid)
    .bind(&invoice.currency)
    .bind(&invoice.hosted_invoice_url)
    .bind(&invoice.invoice_pdf)
    .bind(ts(invoice.period_start))
    .bind(ts(invoice.period_end))
    .bind(ts(invoice.created))
    .execute(conn)
    .await?;
    Ok(())
}

/// The workspace's invoices, newest first (at most 100).
pub async fn invoices(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
) -> anyhow::Result<Vec<Invoice>> {
    Ok(sqlx::query_as::<_, Invoice>(
        "select number, created_at, amount_due, currency, status, hosted_invoice_url, invoice_pdf
           from invoices where workspace_id = $1 order by created_at desc, stripe_invoice_id desc limit 100",
    )
    .bind(workspace_id)
    .fetch_all(conn)
    .await?)
}

/// Records an upgrade asked for on `/billing`, before Stripe is called.
pub async fn insert_plan_change(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    subscription_id: &str,
    from_plan: &PlanCode,
    to_plan: &PlanCode,
    credits: i64,
    proration_date: OffsetDateTime,
) -> anyhow::Result<PlanChangeId> {
    Ok(sqlx::query_scalar(
        "insert into plan_changes (workspace_id, stripe_subscription_id, from_plan_code, to_plan_code,
                credits, proration_date, status)
         values ($1, $2, $3, $4, $5, $6, 'requested')
         returning plan_change_id",
    )
    .bind(workspace_id)
    .bind(subscription_id)
    .bind(from_plan)
    .bind(to_plan)
    .bind(credits)
    .bind(proration_date)
    .fetch_one(conn)
    .await?)
}

/// Records Stripe's answer to an upgrade: confirmed or failed.
pub async fn set_plan_change_status(
    conn: &mut PgConnection,
    id: PlanChangeId,
    confirmed: bool,
) -> anyhow::Result<()> {
    sqlx::query(
        "update plan_changes set status = case when $2 then 'confirmed'::plan_change_status
                                              else 'failed'::plan_change_status end,
                updated_at = now()
          where plan_change_id = $1 and status = 'requested'",
    )
    .bind(id)
    .bind(confirmed)
    .execute(conn)
    .await?;
    Ok(())
}

/// Claims the oldest upgrade to `to_plan` of this subscription that no invoice paid yet
/// (requested or confirmed: Stripe may bill it before the request returned), for the
/// paid proration `invoice_id`. Its proration date is what the customer was shown.
pub async fn claim_plan_change(
    conn: &mut PgConnection,
    subscription_id: &str,
    to_plan: &PlanCode,
    invoice_id: &str,
) -> anyhow::Result<Option<PlanChangeIntent>> {
    if let Some(claimed) = sqlx::query_as::<_, PlanChangeIntent>(
        "select plan_change_id, from_plan_code, to_plan_code, proration_date from plan_changes
          where stripe_invoice_id = $1",
    )
    .bind(invoice_id)
    .fetch_optional(&mut *conn)
    .await?
    {
        return Ok(Some(claimed));
    }
    Ok(sqlx::query_as::<_, PlanChangeIntent>(
        "update plan_changes set stripe_invoice_id = $3, updated_at = now()
          where plan_change_id = (
                select plan_change_id from plan_changes
                 where stripe_subscription_id = $1 and to_plan_code = $2
                   and stripe_invoice_id is null and status in ('requested', 'confirmed')
                 order by created_at limit 1 for update)
         returning plan_change_id, from_plan_code, to_plan_code, proration_date",
    )
    .bind(subscription_id)
    .bind(to_plan)
    .bind(invoice_id)
    .fetch_optional(conn)
    .await?)
}
