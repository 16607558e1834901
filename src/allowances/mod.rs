//! Plan credits per billing period: the monthly allowance and what upgrades add to it.
//! Owns table `allowance_periods` (SQL in [`db`]).
//!
//! The rule (DESIGN.md "Plan changes cannot be gamed"): within one period the plan
//! credits granted never exceed the largest allowance among the plans paid for in that
//! period. Each period keeps a high-water mark, the largest allowance paid for so far.
//! A period opens with its plan's allowance (plan credits reset, no rollover); a paid
//! switch up grants only the pro-rata difference between the new allowance and the
//! mark ([`upgrade_credits`]) and raises the mark; a switch down never grants. Switching
//! Starter → Pro → Starter → Pro grants the Pro difference once, however the switches
//! were made (`/billing`, the customer portal, Stripe's dashboard), because the grant
//! follows the paid proration invoice, not the button.
//!
//! The free plan has no invoices: its months are anchored on the sign-up day and a job
//! resets plan credits once per month ([`reset_free_month`]).

pub mod db;

use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::catalog::Plan;
use crate::ids::{PlanCode, WorkspaceId};
use crate::ledger;
use db::NewPeriod;

/// One billing period's record (a row of `allowance_periods`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Period {
    /// Primary key.
    pub allowance_period_id: i64,
    /// Whose.
    pub workspace_id: WorkspaceId,
    /// `None` for a free-plan month.
    pub stripe_subscription_id: Option<String>,
    /// Start.
    pub period_start: OffsetDateTime,
    /// End.
    pub period_end: OffsetDateTime,
    /// The plan of the high-water mark.
    pub plan_code: PlanCode,
    /// The largest allowance paid for in the period (`None`: unlimited).
    pub high_water_credits: Option<i64>,
    /// Plan credits granted in it.
    pub granted_credits: i64,
}

/// Credits a paid switch up grants: the difference between the new allowance and the
/// period's high-water mark for the rest of the period,
/// `floor((new − mark) × (end − at) / (end − start))`, rounded down so it never grants
/// more than the plan would. Zero for a switch to a smaller or equal allowance, to an
/// unlimited plan (usage is not deducted there), or after an unlimited plan was paid
/// for (`mark` `None`), and zero at or after the period's end.
pub fn upgrade_credits(
    mark: Option<i64>,
    new: Option<i64>,
    period_start: i64,
    period_end: i64,
    at: i64,
) -> i64 {
    let (Some(mark), Some(new)) = (mark, new) else {
        return 0;
    };
    let period = period_end - period_start;
    if new <= mark || period <= 0 {
        return 0;
    }
    let remaining = (period_end - at).clamp(0, period);
    // i128: allowances × seconds can exceed i64 for very large plans.
    i64::try_from(i128::from(new - mark) * i128::from(remaining) / i128::from(period)).unwrap_or(0)
}

/// The high-water mark after paying for `plan` on top of `mark` (`None` = unlimited).
fn raised(mark: Option<i64>, plan_allowance: Option<i64>) -> Option<i64> {
    match (mark, plan_allowance) {
        (Some(m), Some(a)) => Some(m.max(a)),
        _ => None,
    }
}

/// Opens a subscription period when its first or renewal invoice is paid: records the
/// period with `plan`'s allowance as its mark and resets plan credits to the allowance
/// (purchased credits and debt untouched), once per invoice. An invoice delivered after
/// a later period opened changes no credits. One applied after an upgrade of its own
/// period (delivered late) keeps what the upgrade granted: plan credits become the
/// allowance plus those grants minus the plan credits used since the period began,
/// what they would be had the events arrived in order.
pub async fn open_subscription_period(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    subscription_id: &str,
    period: (OffsetDateTime, OffsetDateTime),
    plan: &Plan,
    invoice_id: &str,
) -> anyhow::Result<()> {
    if db::has_later_period(conn, subscription_id, period.0).await? {
        tracing::info!(
            subscription = subscription_id,
            invoice = invoice_id,
            "late invoice of an earlier period: no credits change"
        );
        return Ok(());
    }
    let allowance = plan.monthly_credits;
    db::insert(
        conn,
        &NewPeriod {
            workspace_id,
            stripe_subscription_id: Some(subscription_id),
            period_start: period.0,
            period_end: period.1,
            plan_code: &plan.plan_code,
            high_water_credits: allowance,
            granted_credits: 0,
        },
    )
    .await?;
    let row = db::subscription_period(conn, subscription_id, period.0, db::Lock::ForUpdate)
        .await?
        .ok_or_else(|| anyhow::anyhow!("allowance period vanished"))?;
    // Upgrades of this period granted before its opening invoice was applied.
    let earlier = row.granted_credits;
    let target = if earlier > 0 {
        let used = ledger::db::plan_credits_used_since(conn, workspace_id, period.0).await?;
        (allowance.unwrap_or(0) + earlier - used).max(0)
    } else {
        allowance.unwrap_or(0)
    };
    let reset = ledger::reset_plan_credits(
        conn,
        workspace_id,
        target,
        &format!("{} plan: monthly allowance", plan.name),
        invoice_id,
    )
    .await?;
    if reset.is_some() {
        let mark = raised(row.high_water_credits, allowance);
        // The mark's plan: this one, unless a larger one was paid for already.
        let mark_plan = if mark != allowance {
            &row.plan_code
        } else {
            &plan.plan_code
        };
        db::raise(conn, row.allowance_period_id, mark_plan, mark, 0).await?;
        db::set_granted(
            conn,
            row.allowance_period_id,
            allowance.unwrap_or(0) + earlier,
        )
        .await?;
    }
    Ok(())
}

/// Records the period a live subscription is in with the plan it is on now, unless
/// recorded already. Called before a mid-period change is mirrored, so the mark of a
/// period that opened before marks existed is the plan paid for before the change.
pub async fn ensure_subscription_period(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    subscription_id: &str,
    period: (OffsetDateTime, OffsetDateTime),
    plan: &Plan,
) -> anyhow::Result<()> {
    db::insert(
        conn,
        &NewPeriod {
            workspace_id,
            stripe_subscription_id: Some(subscription_id),
            period_start: period.0,
            period_end: period.1,
            plan_code: &plan.plan_code,
            high_water_credits: plan.monthly_credits,
            granted_credits: 0,
        },
    )
    .await?;
    Ok(())
}

/// A paid switch up within a period (a paid `subscription_update` invoice): grants
/// [`upgrade_credits`] against the period's mark at `at` (the proration date) and raises
/// the mark to `plan`. Once per invoice. Returns the credits granted.
pub async fn grant_upgrade(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    subscription_id: &str,
    period: (OffsetDateTime, OffsetDateTime),
    plan: &Plan,
    at: i64,
    invoice_id: &str,
) -> anyhow::Result<i64> {
    // A period not recorded yet (it opened before this feature): its mark is unknown,
    // so take the new plan's: nothing is granted, which never over-grants.
    ensure_subscription_period(conn, workspace_id, subscription_id, period, plan).await?;
    let row = db::subscription_period(conn, subscription_id, period.0, db::Lock::ForUpdate)
        .await?
        .ok_or_else(|| anyhow::anyhow!("allowance period vanished"))?;
    let credits = upgrade_credits(
        row.high_water_credits,
        plan.monthly_credits,
        period.0.unix_timestamp(),
        period.1.unix_timestamp(),
        at,
    );
    let mark = raised(row.high_water_credits, plan.monthly_credits);
    if credits > 0 {
        let granted = ledger::grant_plan_credits(
            conn,
            workspace_id,
            credits,
            &format!(
                "Upgrade to {}: pro-rata allowance for the rest of the period",
                plan.name
            ),
            &format!("upgrade:{invoice_id}"),
        )
        .await?;
        if granted.is_none() {
            return Ok(0);
        }
    }
    if mark != row.high_water_credits || credits > 0 {
        let mark_plan = if mark == row.high_water_credits {
            &row.plan_code
        } else {
            &plan.plan_code
        };
        db::raise(conn, row.allowance_period_id, mark_plan, mark, credits).await?;
    }
    Ok(credits)
}

/// What a switch up to `target` would grant now in the subscription's current period
/// (the `/billing` preview), measured against the period's mark like the grant itself;
/// without a recorded period, against `current`'s allowance.
pub async fn preview_upgrade(
    conn: &mut PgConnection,
    subscription_id: &str,
    period: (OffsetDateTime, OffsetDateTime),
    current: &Plan,
    target: &Plan,
    at: i64,
) -> anyhow::Result<i64> {
    let mark = match db::subscription_period(conn, subscription_id, period.0, db::Lock::No).await? {
        Some(row) => row.high_water_credits,
        None => current.monthly_credits,
    };
    Ok(upgrade_credits(
        mark,
        target.monthly_credits,
        period.0.unix_timestamp(),
        period.1.unix_timestamp(),
        at,
    ))
}

/// The first free month of a new workspace (sign-up): records it and grants the free
/// allowance.
pub async fn start_free(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    free: &Plan,
) -> anyhow::Result<()> {
    reset_free_month(conn, workspace_id, free, OffsetDateTime::now_utc()).await?;
    Ok(())
}

/// Opens the free month containing `at`: records it and resets plan credits to the
/// free allowance, unless the month is recorded already. Returns whether it reset.
/// The caller checks the workspace is on the free plan (and holds its row).
pub async fn reset_free_month(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    free: &Plan,
    at: OffsetDateTime,
) -> anyhow::Result<bool> {
    let (start, end) = db::free_period_at(conn, workspace_id, at).await?;
    let allowance = free.monthly_credits.unwrap_or(0);
    let created = db::insert(
        conn,
        &NewPeriod {
            workspace_id,
            stripe_subscription_id: None,
            period_start: start,
            period_end: end,
            plan_code: &free.plan_code,
            high_water_credits: free.monthly_credits,
            granted_credits: allowance,
        },
    )
    .await?;
    if created.is_none() {
        return Ok(false);
    }
    ledger::reset_plan_credits(
        conn,
        workspace_id,
        allowance,
        &format!("{} plan: monthly allowance", free.name),
        &format!("free:{}", start.unix_timestamp()),
    )
    .await?;
    Ok(true)
}

/// The job kind that opens free months whose day has come.
pub const FREE_RESET_JOB: &str = "free_allowance";

/// Opens the free month of every free workspace whose month rolled over (the monthly
/// allowance), in batches, each workspace in its own short transaction holding its
/// row, so a subscription starting at the same moment is seen. Returns how many were
/// reset.
pub async fn run_free_resets(db: &sqlx::PgPool) -> anyhow::Result<usize> {
    let free_code = PlanCode::free();
    let mut reset = 0;
    loop {
        let due = db::free_workspaces_due(&mut *db.acquire().await?, &free_code, 200).await?;
        if due.is_empty() {
            return Ok(reset);
        }
        let mut progressed = false;
        for workspace_id in due {
            let mut tx = db.begin().await?;
            let plan = crate::accounts::db::lock_workspace_plan(&mut tx, workspace_id).await?;
            if plan != free_code {
                continue;
            }
            let Some(free) = crate::catalog::db::plan(&mut tx, &free_code).await? else {
                anyhow::bail!("the catalog has no free plan");
            };
            if reset_free_month(&mut tx, workspace_id, &free, OffsetDateTime::now_utc()).await? {
                reset += 1;
                progressed = true;
            }
            tx.commit().await?;
        }
        if !progressed {
            return Ok(reset);
        }
    }
}

/// Back on the free plan after a subscription ended: a free month not granted yet
/// starts with the free allowance; in a month that already had it, plan credits are
/// only lowered to the free allowance (never a second free allowance in one month).
/// Purchased credits and debt are untouched.
pub async fn back_to_free(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    free: &Plan,
    subscription_id: &str,
) -> anyhow::Result<()> {
    if !reset_free_month(conn, workspace_id, free, OffsetDateTime::now_utc()).await? {
        ledger::cap_plan_credits(
            conn,
            workspace_id,
            free.monthly_credits.unwrap_or(0),
            "Subscription ended: back to the Free plan allowance",
            &format!("subscription-ended:{subscription_id}"),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::upgrade_credits;

    #[test]
    fn upgrades_grant_the_pro_rata_difference_to_the_mark_rounded_down() {
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
            "a switch down grants nothing"
        );
        assert_eq!(
            upgrade_credits(Some(2_000), Some(2_000), 0, 100, 50),
            0,
            "back up to the mark grants nothing"
        );
        assert_eq!(
            upgrade_credits(Some(2_000), None, 0, 100, 50),
            0,
            "unlimited plans are not counted"
        );
        assert_eq!(
            upgrade_credits(None, Some(50_000), 0, 100, 50),
            0,
            "after unlimited, nothing more"
        );
    }

    #[test]
    fn switching_back_and_forth_never_grants_more_than_the_largest_allowance() {
        // Starter 500 → Pro 2,000 → Starter → Pro → Starter → Pro, each switch paid at
        // a different moment of a 30-day period.
        let (start, end) = (0, 30 * 86_400);
        let mut mark = Some(500);
        let mut granted = 500;
        for (plan, at) in [
            (2_000, 86_400),
            (500, 2 * 86_400),
            (2_000, 3 * 86_400),
            (500, 4 * 86_400),
            (2_000, 5 * 86_400),
        ] {
            granted += upgrade_credits(mark, Some(plan), start, end, at);
            mark = super::raised(mark, Some(plan));
        }
        assert!(granted <= 2_000, "granted {granted}");
        assert_eq!(granted, 500 + 1_450);
    }
}
