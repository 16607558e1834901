//! SQL of usage insight: free functions on a connection, reading `usage_hourly`.

use sqlx::PgConnection;
use time::{Date, OffsetDateTime};

use super::{AllowancePeriod, DashboardSummary};
use crate::catalog::Plan;
use crate::ids::{PlanCode, WorkspaceId};
use crate::ledger::Balance;

#[derive(sqlx::FromRow)]
struct SummaryRow {
    #[sqlx(flatten)]
    plan: Plan,
    #[sqlx(flatten)]
    balance: Balance,
    granted_credits: Option<i64>,
    period_end: Option<OffsetDateTime>,
    today: Date,
    daily: Vec<i64>,
}

/// The dashboard's figures in one round trip: the plan, the balance, the allowance
/// period in force and the credits consumed per day over the last `days` days, days cut
/// in `time_zone` (an IANA name PostgreSQL knows). Errors when the workspace or plan is
/// missing, or on an unknown time zone.
pub async fn dashboard_summary(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    plan_code: &PlanCode,
    days: i32,
    time_zone: &str,
) -> anyhow::Result<DashboardSummary> {
    let row: SummaryRow = sqlx::query_as(
        "with today as (select (now() at time zone $4)::date as d)
         select p.plan_code, p.name, p.monthly_price_minor, p.currency, p.monthly_credits,
                p.rate_limit_per_min, p.max_members, p.max_api_keys, p.stripe_price_id,
                b.plan_credits, b.purchased_credits, b.debt,
                ap.granted_credits, ap.period_end, today.d as today,
                array(select coalesce(u.credits, 0)::bigint
                        from generate_series(today.d - ($3 - 1), today.d, interval '1 day') g(day)
                        left join (select (h.hour at time zone $4)::date as day, sum(h.credits) as credits
                                     from usage_hourly h
                                    where h.workspace_id = $1
                                      and h.hour >= ((today.d - ($3 - 1))::timestamp at time zone $4)
                                    group by 1) u on u.day = g.day::date
                       order by g.day) as daily
           from balances b
           cross join today
           join plans p on p.plan_code = $2
           left join lateral (
                select a.granted_credits, a.period_end from allowance_periods a
                 where a.workspace_id = b.workspace_id and a.period_start <= now()
                 order by a.period_start desc limit 1) ap on true
          where b.workspace_id = $1",
    )
    .bind(workspace_id)
    .bind(plan_code)
    .bind(days)
    .bind(time_zone)
    .fetch_one(conn)
    .await?;
    let first = row.today - time::Duration::days(i64::from(days) - 1);
    let daily = row
        .daily
        .into_iter()
        .enumerate()
        .map(|(i, c)| (first + time::Duration::days(i as i64), c))
        .collect();
    let now = OffsetDateTime::now_utc();
    let period = match (row.granted_credits, row.period_end) {
        (Some(granted_credits), Some(resets_at)) if resets_at > now => Some(AllowancePeriod {
            granted_credits,
            resets_at,
        }),
        _ => None,
    };
    Ok(DashboardSummary {
        plan: row.plan,
        balance: row.balance,
        period,
        today: row.today,
        daily,
    })
}
