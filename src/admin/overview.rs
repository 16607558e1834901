//! The business overview on `/admin`: figures read from PostgreSQL only (no Stripe
//! call), each from an indexed or small relation so the page stays fast with 100,000
//! workspaces (`script/bench` measures it).
//!
//! Money is per currency (i64 minor units + ISO 4217 code): figures in different
//! currencies are never added together.

use sqlx::PgConnection;
use time::{Date, OffsetDateTime};

use crate::money::Money;

/// What the overview shows.
#[derive(Debug, Clone, Default)]
pub struct Overview {
    /// Monthly recurring revenue of live subscriptions (active, trialing, past due),
    /// one figure per currency, at each plan's monthly price.
    pub mrr: Vec<Money>,
    /// Live subscriptions per plan name, most first.
    pub subscriptions_by_plan: Vec<(String, i64)>,
    /// Subscriptions started since the first of this month (UTC).
    pub new_this_month: i64,
    /// Subscriptions ended since the first of this month.
    pub churned_this_month: i64,
    /// Workspaces, and those that ever had a subscription (free → paid conversion).
    pub workspaces: i64,
    /// Of [`Overview::workspaces`], those that ever subscribed.
    pub converted: i64,
    /// Credits consumed per day over the last 30 days (oldest first, every day
    /// present).
    pub credits_by_day: Vec<(Date, i64)>,
    /// Top-up revenue paid in the last 30 days, per currency.
    pub top_up_revenue_30d: Vec<Money>,
    /// Commissions earned and not yet paid out (pending + approved, net of reversals),
    /// per currency.
    pub open_commissions: Vec<Money>,
    /// Stripe events received and not yet applied or skipped.
    pub inbox_unapplied: i64,
    /// Jobs waiting to run (queued, due or not) and jobs that gave up.
    pub jobs_queued: i64,
    /// Jobs that failed for good.
    pub jobs_failed: i64,
    /// Credit adjustments waiting for a second staff member.
    pub pending_adjustments: i64,
}

impl Overview {
    /// Free → paid conversion in percent, one decimal (`None` without workspaces).
    pub fn conversion_percent(&self) -> Option<String> {
        (self.workspaces > 0).then(|| {
            format!(
                "{:.1} %",
                self.converted as f64 * 100.0 / self.workspaces as f64
            )
        })
    }

    /// Credits consumed over the 30 days.
    pub fn credits_30d(&self) -> i64 {
        self.credits_by_day.iter().map(|(_, n)| n).sum()
    }
}

fn monies(rows: Vec<(String, i64)>) -> Vec<Money> {
    rows.into_iter()
        .map(|(currency, minor)| Money::new(minor, &currency))
        .collect()
}

/// Reads every figure at `now` (the sandbox clock in sandbox mode).
pub async fn load(conn: &mut PgConnection, now: OffsetDateTime) -> anyhow::Result<Overview> {
    const LIVE: &str = "('active', 'trialing', 'past_due')";
    let month_start = now.replace_day(1)?.replace_time(time::Time::MIDNIGHT);
    let mrr: Vec<(String, i64)> = sqlx::query_as(&format!(
        "select p.currency, sum(p.monthly_price_minor)::bigint
           from subscriptions s join plans p using (plan_code)
          where s.status in {LIVE}
          group by p.currency order by p.currency"
    ))
    .fetch_all(&mut *conn)
    .await?;
    let subscriptions_by_plan: Vec<(String, i64)> = sqlx::query_as(&format!(
        "select p.name, count(*)
           from subscriptions s join plans p using (plan_code)
          where s.status in {LIVE}
          group by p.name, p.sort_order order by count(*) desc, p.sort_order"
    ))
    .fetch_all(&mut *conn)
    .await?;
    let (new_this_month, churned_this_month): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where created_at >= $1),
                count(*) filter (where ended_at >= $1)
           from subscriptions",
    )
    .bind(month_start)
    .fetch_one(&mut *conn)
    .await?;
    let (workspaces, converted): (i64, i64) = sqlx::query_as(
        "select (select count(*) from workspaces),
                (select count(distinct workspace_id) from subscriptions)",
    )
    .fetch_one(&mut *conn)
    .await?;
    let today = now.date();
    let from = today - time::Duration::days(29);
    let credits_by_day: Vec<(Date, i64)> = sqlx::query_as(
        "select d::date, coalesce(sum(h.credits), 0)::bigint
           from generate_series($1::date, $2::date, interval '1 day') d
           left join usage_hourly h
             on h.hour >= d and h.hour < d + interval '1 day'
          group by d order by d",
    )
    .bind(from)
    .bind(today)
    .fetch_all(&mut *conn)
    .await?;
    let top_up_revenue_30d: Vec<(String, i64)> = sqlx::query_as(
        "select currency, sum(amount_minor)::bigint from top_ups
          where status = 'paid' and paid_at >= $1 group by currency order by currency",
    )
    .bind(now - time::Duration::days(30))
    .fetch_all(&mut *conn)
    .await?;
    let open_commissions: Vec<(String, i64)> = sqlx::query_as(
        "select currency, sum(amount_minor)::bigint from commissions
          where status in ('pending', 'approved') group by currency order by currency",
    )
    .fetch_all(&mut *conn)
    .await?;
    let (inbox_unapplied, jobs_queued, jobs_failed, pending_adjustments): (i64, i64, i64, i64) =
        sqlx::query_as(
            "select (select count(*) from stripe_events
                      where processed_at is null and skipped_at is null),
                    (select count(*) from jobs where status in ('queued', 'running')),
                    (select count(*) from jobs where status = 'failed'),
                    (select count(*) from credit_adjustment_requests where status = 'pending')",
        )
        .fetch_one(&mut *conn)
        .await?;
    Ok(Overview {
        mrr: monies(mrr),
        subscriptions_by_plan,
        new_this_month,
        churned_this_month,
        workspaces,
        converted,
        credits_by_day,
        top_up_revenue_30d: monies(top_up_revenue_30d),
        open_commissions: monies(open_commissions),
        inbox_unapplied,
        jobs_queued,
        jobs_failed,
        pending_adjustments,
    })
}
