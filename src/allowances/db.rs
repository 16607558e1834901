//! SQL of allowance periods (table `allowance_periods`).

use sqlx::PgConnection;
use time::OffsetDateTime;

use super::Period;
use crate::ids::{PlanCode, WorkspaceId};
use crate::stripe::billing::SubscriptionStatus;

const COLUMNS: &str = "allowance_period_id, workspace_id, stripe_subscription_id, period_start, \
     period_end, plan_code, high_water_credits, granted_credits";

/// A period to record.
#[derive(Debug, Clone)]
pub struct NewPeriod<'a> {
    /// Whose period.
    pub workspace_id: WorkspaceId,
    /// The subscription it belongs to; `None` for a free-plan month.
    pub stripe_subscription_id: Option<&'a str>,
    /// Start.
    pub period_start: OffsetDateTime,
    /// End.
    pub period_end: OffsetDateTime,
    /// The plan of the high-water mark.
    pub plan_code: &'a PlanCode,
    /// Its allowance (`None`: unlimited).
    pub high_water_credits: Option<i64>,
    /// Plan credits granted so far in it.
    pub granted_credits: i64,
}

/// Records a period unless it exists; returns it when it was created now.
pub async fn insert(conn: &mut PgConnection, p: &NewPeriod<'_>) -> anyhow::Result<Option<Period>> {
    let conflict = if p.stripe_subscription_id.is_some() {
        "(stripe_subscription_id, period_start) where stripe_subscription_id is not null"
    } else {
        "(workspace_id, period_start) where stripe_subscription_id is null"
    };
    let sql = format!(
        "insert into allowance_periods (workspace_id, stripe_subscription_id, period_start,
                period_end, plan_code, high_water_credits, granted_credits)
         values ($1, $2, $3, $4, $5, $6, $7)
         on conflict {conflict} do nothing
         returning {COLUMNS}"
    );
    Ok(sqlx::query_as::<_, Period>(&sql)
        .bind(p.workspace_id)
        .bind(p.stripe_subscription_id)
        .bind(p.period_start)
        .bind(p.period_end)
        .bind(p.plan_code)
        .bind(p.high_water_credits)
        .bind(p.granted_credits)
        .fetch_optional(conn)
        .await?)
}

/// Whether a read locks the row for the rest of the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// `for update`: the caller changes the period.
    ForUpdate,
    /// A plain read (a preview).
    No,
}

/// A subscription's period starting at `period_start`.
pub async fn subscription_period(
    conn: &mut PgConnection,
    subscription_id: &str,
    period_start: OffsetDateTime,
    lock: Lock,
) -> anyhow::Result<Option<Period>> {
    let sql = format!(
        "select {COLUMNS} from allowance_periods
          where stripe_subscription_id = $1 and period_start = $2 {}",
        if lock == Lock::ForUpdate {
            "for update"
        } else {
            ""
        }
    );
    Ok(sqlx::query_as::<_, Period>(&sql)
        .bind(subscription_id)
        .bind(period_start)
        .fetch_optional(conn)
        .await?)
}

/// Whether the subscription has a period starting after `period_start` (an invoice
/// delivered late, after the next period opened).
pub async fn has_later_period(
    conn: &mut PgConnection,
    subscription_id: &str,
    period_start: OffsetDateTime,
) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar(
        "select exists (select 1 from allowance_periods
                         where stripe_subscription_id = $1 and period_start > $2)",
    )
    .bind(subscription_id)
    .bind(period_start)
    .fetch_one(conn)
    .await?)
}

/// Raises a period's high-water mark to `plan_code`'s allowance and adds `granted`.
pub async fn raise(
    conn: &mut PgConnection,
    allowance_period_id: i64,
    plan_code: &PlanCode,
    high_water_credits: Option<i64>,
    granted: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "update allowance_periods
            set plan_code = $2, high_water_credits = $3,
                granted_credits = granted_credits + $4, updated_at = now()
          where allowance_period_id = $1",
    )
    .bind(allowance_period_id)
    .bind(plan_code)
    .bind(high_water_credits)
    .bind(granted)
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets what a period granted (a reset at its start).
pub async fn set_granted(
    conn: &mut PgConnection,
    allowance_period_id: i64,
    granted: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "update allowance_periods set granted_credits = $2, updated_at = now()
          where allowance_period_id = $1",
    )
    .bind(allowance_period_id)
    .bind(granted)
    .execute(conn)
    .await?;
    Ok(())
}

/// The free-plan month containing `at` for a workspace: (start, end), anchored on its
/// sign-up day (SQL functions `free_period_index`, `free_period_bound`).
pub async fn free_period_at(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    at: OffsetDateTime,
) -> anyhow::Result<(OffsetDateTime, OffsetDateTime)> {
    Ok(sqlx::query_as(
        "select free_period_bound(created_at, free_period_index(created_at, $2)),
                free_period_bound(created_at, free_period_index(created_at, $2) + 1)
           from workspaces where workspace_id = $1",
    )
    .bind(workspace_id)
    .bind(at)
    .fetch_one(conn)
    .await?)
}

/// Up to `limit` workspaces on the free plan, without a live subscription, whose
/// current free month has no period recorded yet (the monthly reset is due).
pub async fn free_workspaces_due(
    conn: &mut PgConnection,
    free_plan: &PlanCode,
    limit: i64,
) -> anyhow::Result<Vec<WorkspaceId>> {
    Ok(sqlx::query_scalar(
        "select w.workspace_id from workspaces w
          where w.plan_code = $1
            and not exists (
                select 1 from allowance_periods a
                 where a.workspace_id = w.workspace_id and a.stripe_subscription_id is null
                   and a.period_start = free_period_bound(w.created_at, free_period_index(w.created_at, now())))
            and not exists (
                select 1 from subscriptions s
                 where s.workspace_id = w.workspace_id and s.status = any($3))
          order by w.workspace_id
          limit $2",
    )
    .bind(free_plan)
    .bind(limit)
    .bind(&SubscriptionStatus::LIVE[..])
    .fetch_all(conn)
    .await?)
}
