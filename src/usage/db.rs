//! SQL of usage insight: free functions on a connection, reading `usage_hourly`.

use sqlx::PgConnection;
use time::{Date, OffsetDateTime};

use super::{AllowancePeriod, DashboardSummary};
use crate::catalog::Plan;
use crate::ids::{PlanCode, WorkspaceId};
use crate::ledger::Balance;

/// Joins `ap` (`granted_credits`, `period_end`): the workspace's latest allowance
/// period that has started, for a query over `balances b`.
const LATEST_PERIOD: &str = "left join lateral (
                select a.granted_credits, a.period_end from allowance_periods a
                 where a.workspace_id = b.workspace_id and a.period_start <= now()
                 order by a.period_start desc limit 1) ap on true";

/// The allowance period from [`LATEST_PERIOD`]'s columns, if it has not ended.
fn period_in_force(
    granted_credits: Option<i64>,
    period_end: Option<OffsetDateTime>,
) -> Option<AllowancePeriod> {
    match (granted_credits, period_end) {
        (Some(granted_credits), Some(resets_at)) if resets_at > OffsetDateTime::now_utc() => {
            Some(AllowancePeriod {
                granted_credits,
                resets_at,
            })
        }
        _ => None,
    }
}

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
    let sql = format!(
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
           {LATEST_PERIOD}
          where b.workspace_id = $1"
    );
    let row: SummaryRow = sqlx::query_as(&sql)
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
    let period = period_in_force(row.granted_credits, row.period_end);
    Ok(DashboardSummary {
        plan: row.plan,
        balance: row.balance,
        period,
        today: row.today,
        daily,
    })
}

/// The roll-ups of the days `from..=to` (cut in `time_zone`) summed per day, feature
/// and API key, with the features' and keys' names: everything a usage report needs,
/// in one round trip, read from at most 24 rows per day, feature and key.
pub async fn report_rows(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    from: Date,
    to: Date,
    time_zone: &str,
) -> anyhow::Result<Vec<super::ReportRow>> {
    Ok(sqlx::query_as(
        "select (h.hour at time zone $4)::date as day, h.feature_code, f.description as feature_name,
                h.api_key_id, k.name as key_name, k.key_prefix,
                sum(h.events)::bigint as events, sum(h.credits)::bigint as credits
           from usage_hourly h
           join features f using (feature_code)
           left join api_keys k on k.api_key_id = h.api_key_id
          where h.workspace_id = $1
            and h.hour >= ($2::date::timestamp at time zone $4)
            and h.hour < (($3::date + 1)::timestamp at time zone $4)
          group by 1, 2, 3, 4, 5, 6
          order by 1, 2",
    )
    .bind(workspace_id)
    .bind(from)
    .bind(to)
    .bind(time_zone)
    .fetch_all(conn)
    .await?)
}

/// Usage events matching `filter`, newest first, older than the event `before` (keyset
/// on time and id; an unknown `before` starts from the newest), at most `limit`.
pub async fn events(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    filter: &super::EventFilter<'_>,
    before: Option<uuid::Uuid>,
    limit: i64,
) -> anyhow::Result<Vec<super::UsageEvent>> {
    Ok(sqlx::query_as(
        "select u.usage_event_id, u.created_at, u.feature_code, f.description as feature_name,
                u.quality, u.quantity, u.credits_charged, k.name as key_name, u.idempotency_key
           from usage_events u
           join features f using (feature_code)
           left join api_keys k on k.api_key_id = u.api_key_id
          where u.workspace_id = $1
            and u.created_at >= ($2::date::timestamp at time zone $4)
            and u.created_at < (($3::date + 1)::timestamp at time zone $4)
            and ($5::text is null or u.feature_code = $5)
            and ($6::uuid is null or u.api_key_id = $6)
            and ($7::uuid is null or (u.created_at, u.usage_event_id) <
                 coalesce((select (p.created_at, p.usage_event_id) from usage_events p
                            where p.usage_event_id = $7 and p.workspace_id = $1),
                          ('infinity'::timestamptz, null::uuid)))
          order by u.created_at desc, u.usage_event_id desc
          limit $8",
    )
    .bind(workspace_id)
    .bind(filter.from)
    .bind(filter.to)
    .bind(filter.time_zone)
    .bind(filter.feature)
    .bind(filter.api_key_id)
    .bind(before)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// The workspace against its plan's caps, in one round trip: members, active API keys,
/// the rate limiter's state, the allowance period in force and plan credits left.
pub async fn limits(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    plan_code: &PlanCode,
) -> anyhow::Result<super::WorkspaceLimits> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        plan: Plan,
        members: i64,
        api_keys: i64,
        tat_us: Option<i64>,
        now_us: i64,
        granted_credits: Option<i64>,
        period_end: Option<OffsetDateTime>,
        plan_credits: i64,
    }
    let sql = format!(
        "select p.plan_code, p.name, p.monthly_price_minor, p.currency, p.monthly_credits,
                p.rate_limit_per_min, p.max_members, p.max_api_keys, p.stripe_price_id,
                (select count(*) from memberships m where m.workspace_id = b.workspace_id) as members,
                (select count(*) from api_keys k
                  where k.workspace_id = b.workspace_id and k.revoked_at is null) as api_keys,
                (select r.tat_us from rate_limit_states r where r.workspace_id = b.workspace_id) as tat_us,
                (extract(epoch from clock_timestamp()) * 1000000)::bigint as now_us,
                ap.granted_credits, ap.period_end, b.plan_credits
           from balances b
           join plans p on p.plan_code = $2
           {LATEST_PERIOD}
          where b.workspace_id = $1"
    );
    let row: Row = sqlx::query_as(&sql)
        .bind(workspace_id)
        .bind(plan_code)
        .fetch_one(conn)
        .await?;
    let period = period_in_force(row.granted_credits, row.period_end);
    Ok(super::WorkspaceLimits {
        calls_available: row
            .plan
            .rate_limit_per_min
            .map(|limit| super::calls_available(limit, row.tat_us, row.now_us)),
        plan: row.plan,
        members: row.members,
        api_keys: row.api_keys,
        period,
        plan_credits: row.plan_credits,
    })
}

/// Features the workspace used since `since`, with their names and the end of the hour
/// of their last use, from the roll-ups (so at most an hour later than the last event:
/// a downgrade check may wait up to an hour longer, never less).
pub async fn features_used_since(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    since: OffsetDateTime,
) -> anyhow::Result<Vec<crate::subscriptions::plan_change::FeatureUse>> {
    Ok(sqlx::query_as(
        "select h.feature_code, f.description as name,
                max(h.hour) + interval '1 hour' as last_used_before
           from usage_hourly h join features f using (feature_code)
          where h.workspace_id = $1 and h.hour + interval '1 hour' > $2
          group by 1, 2 order by 1",
    )
    .bind(workspace_id)
    .bind(since)
    .fetch_all(conn)
    .await?)
}
