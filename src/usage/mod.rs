//! Usage insight: what a workspace consumed, read from the hourly roll-ups
//! (`usage_hourly`, kept by a trigger on `usage_events`), so a page's cost does not
//! grow with the number of usage events. Days are cut in a time zone given by name
//! (IANA, as PostgreSQL knows it; whole-hour offsets are exact, half-hour zones are
//! rounded to the hour the roll-up holds).

pub mod db;

use time::Date;

use crate::catalog::Plan;
use crate::ledger::Balance;

/// Today in the time zone `tz` (IANA name; unknown names count as UTC).
pub fn today_in(tz: &str) -> Date {
    let zone = jiff::tz::TimeZone::get(tz).unwrap_or(jiff::tz::TimeZone::UTC);
    let now = time::OffsetDateTime::now_utc();
    let offset = jiff::Timestamp::from_second(now.unix_timestamp())
        .map(|stamp| zone.to_offset(stamp).seconds())
        .unwrap_or(0);
    now.to_offset(time::UtcOffset::from_whole_seconds(offset).unwrap_or(time::UtcOffset::UTC))
        .date()
}

/// Days of usage the run-out prediction averages over.
pub const PACE_DAYS: usize = 7;

/// Share of the monthly allowance used (percent) from which the dashboard suggests an
/// upgrade or a top-up.
pub const SUGGEST_FROM_PERCENT: i64 = 80;

/// What the dashboard shows, read in one round trip ([`db::dashboard_summary`]).
#[derive(Debug, Clone)]
pub struct DashboardSummary {
    /// The workspace's plan.
    pub plan: Plan,
    /// Its credits now.
    pub balance: Balance,
    /// The current allowance period, if the workspace has one.
    pub period: Option<AllowancePeriod>,
    /// Today in the time zone asked for.
    pub today: Date,
    /// Credits consumed per day, oldest first, ending today (one entry per day).
    pub daily: Vec<(Date, i64)>,
}

/// The allowance period in force: plan credits granted in it and when it resets.
#[derive(Debug, Clone, Copy)]
pub struct AllowancePeriod {
    /// Plan credits granted in this period (the allowance plus pro-rata upgrades).
    pub granted_credits: i64,
    /// When the allowance resets (the period's end).
    pub resets_at: time::OffsetDateTime,
}

impl DashboardSummary {
    /// Credits consumed over the days shown.
    pub fn total(&self) -> i64 {
        self.daily.iter().map(|(_, c)| c).sum()
    }

    /// The share of this period's plan credits already used, 0–100; `None` on an
    /// unlimited plan or without a period that granted credits.
    pub fn quota_used_percent(&self) -> Option<i64> {
        self.plan.monthly_credits?;
        let granted = self.period?.granted_credits;
        if granted <= 0 {
            return None;
        }
        let used = (granted - self.balance.plan).clamp(0, granted);
        Some(used * 100 / granted)
    }

    /// Credits per day at the pace of the last [`PACE_DAYS`] days (rounded up); `None`
    /// when nothing was used in them.
    pub fn daily_pace(&self) -> Option<i64> {
        let recent: i64 = self
            .daily
            .iter()
            .rev()
            .take(PACE_DAYS)
            .map(|(_, c)| c)
            .sum();
        (recent > 0).then(|| (recent + PACE_DAYS as i64 - 1) / PACE_DAYS as i64)
    }

    /// The day the credits run out at [`Self::daily_pace`]: the balance (plan plus
    /// purchased, less what is owed) divided by the pace, counted from today. `None` on
    /// an unlimited plan or when nothing was used recently. Plan credits granted at the
    /// next reset are not counted, so a date after the reset means "not before then".
    pub fn runs_out_on(&self) -> Option<Date> {
        self.plan.monthly_credits?;
        let pace = self.daily_pace()?;
        let left = (self.balance.total() - self.balance.debt).max(0);
        let days = left / pace;
        self.today.checked_add(time::Duration::days(days.min(3650)))
    }

    /// At least [`SUGGEST_FROM_PERCENT`] of the allowance is used.
    pub fn allowance_nearly_used(&self) -> bool {
        self.quota_used_percent()
            .is_some_and(|p| p >= SUGGEST_FROM_PERCENT)
    }

    /// The predicted run-out day is on or after the allowance's reset.
    pub fn lasts_past_reset(&self) -> bool {
        match (self.runs_out_on(), self.period) {
            (Some(day), Some(p)) => day >= p.resets_at.date(),
            _ => false,
        }
    }

    /// Whether the dashboard should suggest an upgrade or a top-up: at least
    /// [`SUGGEST_FROM_PERCENT`] of the allowance is used, or the credits run out before
    /// the allowance resets.
    pub fn suggest_more_credits(&self) -> bool {
        self.allowance_nearly_used() || (self.runs_out_on().is_some() && !self.lasts_past_reset())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    fn summary(balance: i64, granted: i64, daily: &[i64]) -> DashboardSummary {
        let today = date!(2026 - 12 - 08);
        DashboardSummary {
            plan: Plan {
                plan_code: "starter".into(),
                name: "Starter".into(),
                monthly_price_minor: 2900,
                currency: "eur".into(),
                monthly_credits: Some(granted),
                rate_limit_per_min: Some(60),
                max_members: Some(3),
                max_api_keys: Some(3),
                stripe_price_id: None,
            },
            balance: Balance {
                plan: balance,
                purchased: 0,
                debt: 0,
            },
            period: Some(AllowancePeriod {
                granted_credits: granted,
                resets_at: datetime!(2026-12-20 0:00 UTC),
            }),
            today,
            daily: daily
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    (
                        today - time::Duration::days((daily.len() - 1 - i) as i64),
                        *c,
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn quota_and_run_out_follow_the_pace_of_the_last_week() {
        // 1,000 granted, 200 left: 80 % used; 70 a day over the last week: 2 days left.
        let s = summary(200, 1000, &[0, 0, 0, 70, 70, 70, 70, 70, 70, 70]);
        assert_eq!(s.quota_used_percent(), Some(80));
        assert_eq!(s.daily_pace(), Some(70));
        assert_eq!(s.runs_out_on(), Some(date!(2026 - 12 - 10)));
        assert!(s.suggest_more_credits());
    }

    #[test]
    fn no_usage_means_no_prediction_and_no_suggestion() {
        let s = summary(900, 1000, &[0; 30]);
        assert_eq!(s.quota_used_percent(), Some(10));
        assert_eq!(s.runs_out_on(), None);
        assert!(!s.suggest_more_credits());
    }

    #[test]
    fn a_slow_pace_lasting_past_the_reset_suggests_nothing() {
        // 1 credit a day (rounded up from 3 in a week), 500 left: lasts past the 20th.
        let s = summary(500, 1000, &[0, 0, 0, 0, 1, 1, 1]);
        assert_eq!(s.daily_pace(), Some(1));
        assert!(s.runs_out_on().unwrap() > date!(2026 - 12 - 20));
        assert!(!s.suggest_more_credits());
    }

    #[test]
    fn gcra_counts_calls_available_as_the_metering_function_does() {
        let now = 1_000_000_000_000;
        // 60 a minute: one every second. A fresh limiter has the whole burst.
        assert_eq!(calls_available(60, None, now), 60);
        // 10 calls just made: the arrival time is 10 s ahead.
        assert_eq!(calls_available(60, Some(now + 10_000_000), now), 50);
        // Past arrival times are the present.
        assert_eq!(calls_available(60, Some(now - 5_000_000), now), 60);
        // Exhausted.
        assert_eq!(calls_available(60, Some(now + 60_000_000), now), 0);
    }

    #[test]
    fn unlimited_plans_have_no_quota() {
        let mut s = summary(0, 1000, &[5; 10]);
        s.plan.monthly_credits = None;
        assert_eq!(s.quota_used_percent(), None);
        assert_eq!(s.runs_out_on(), None);
    }
}

/// Days a usage report may span at most (a custom range longer than this is refused).
pub const MAX_RANGE_DAYS: i64 = 366;

/// One row of the hourly roll-ups summed per day, feature and API key in a range
/// ([`db::report_rows`]).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReportRow {
    /// The day, in the report's time zone.
    pub day: Date,
    /// Feature code (`graph.query`).
    pub feature_code: String,
    /// The feature's name (`Graph query`).
    pub feature_name: String,
    /// The key the calls came through; `None` for usage not recorded through a key.
    pub api_key_id: Option<uuid::Uuid>,
    /// The key's name, if any.
    pub key_name: Option<String>,
    /// The key's first characters, if any.
    pub key_prefix: Option<String>,
    /// Metering calls.
    pub events: i64,
    /// Credits charged.
    pub credits: i64,
}

/// Usage of one feature (or one key) over a report's range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageTotal {
    /// Feature code, or the key's id (empty for usage not through a key).
    pub code: String,
    /// Feature name, or the key's name and prefix.
    pub name: String,
    /// Metering calls.
    pub events: i64,
    /// Credits charged.
    pub credits: i64,
    /// Its share of the report's credits, in whole percent.
    pub share: i64,
}

impl UsageTotal {
    /// Share of `total` credits, in whole percent (0 when `total` is 0).
    pub fn percent_of(&self, total: i64) -> i64 {
        if total <= 0 {
            0
        } else {
            (self.credits * 100 + total / 2) / total
        }
    }
}

/// What a usage report shows for a range of days: credits per day and feature (the
/// stacked chart), and totals per feature and per API key, most credits first.
#[derive(Debug, Clone)]
pub struct UsageReport {
    /// Every day of the range, oldest first.
    pub days: Vec<Date>,
    /// Per feature (most credits first): its name and credits per day (same length as
    /// `days`).
    pub series: Vec<(String, Vec<i64>)>,
    /// Totals per feature, most credits first.
    pub by_feature: Vec<UsageTotal>,
    /// Totals per API key, most credits first.
    pub by_key: Vec<UsageTotal>,
    /// Credits over the range.
    pub total_credits: i64,
    /// Calls over the range.
    pub total_events: i64,
}

impl UsageReport {
    /// Builds the report for the days `from..=to` from roll-up rows (rows outside the
    /// range are ignored).
    pub fn new(from: Date, to: Date, rows: &[ReportRow]) -> UsageReport {
        let mut days = Vec::new();
        let mut d = from;
        while d <= to {
            days.push(d);
            match d.next_day() {
                Some(next) => d = next,
                None => break,
            }
        }
        let index = |day: Date| (day - from).whole_days();
        let mut by_feature: Vec<UsageTotal> = Vec::new();
        let mut by_key: Vec<UsageTotal> = Vec::new();
        let mut series: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
        let add = |totals: &mut Vec<UsageTotal>, code: &str, name: &str, r: &ReportRow| match totals
            .iter_mut()
            .find(|t| t.code == code)
        {
            Some(t) => {
                t.events += r.events;
                t.credits += r.credits;
            }
            None => totals.push(UsageTotal {
                code: code.to_owned(),
                name: name.to_owned(),
                events: r.events,
                credits: r.credits,
                share: 0,
            }),
        };
        for r in rows.iter().filter(|r| r.day >= from && r.day <= to) {
            add(&mut by_feature, &r.feature_code, &r.feature_name, r);
            let (key_code, key_name) = match (&r.api_key_id, &r.key_name, &r.key_prefix) {
                (Some(id), Some(name), Some(prefix)) => {
                    (id.to_string(), format!("{name} ({prefix})"))
                }
                (Some(id), _, _) => (id.to_string(), "A deleted key".to_owned()),
                (None, _, _) => (String::new(), "Not through a key".to_owned()),
            };
            add(&mut by_key, &key_code, &key_name, r);
            let per_day = series
                .entry(r.feature_name.clone())
                .or_insert_with(|| vec![0; days.len()]);
            if let Some(slot) = usize::try_from(index(r.day))
                .ok()
                .and_then(|i| per_day.get_mut(i))
            {
                *slot += r.credits;
            }
        }
        let most_first = |a: &UsageTotal, b: &UsageTotal| {
            b.credits.cmp(&a.credits).then_with(|| a.name.cmp(&b.name))
        };
        by_feature.sort_by(most_first);
        by_key.sort_by(most_first);
        let total: i64 = by_feature.iter().map(|t| t.credits).sum();
        for t in by_feature.iter_mut().chain(by_key.iter_mut()) {
            t.share = t.percent_of(total);
        }
        let series = by_feature
            .iter()
            .filter_map(|t| series.remove(&t.name).map(|v| (t.name.clone(), v)))
            .collect();
        UsageReport {
            days,
            series,
            total_credits: by_feature.iter().map(|t| t.credits).sum(),
            total_events: by_feature.iter().map(|t| t.events).sum(),
            by_feature,
            by_key,
        }
    }
}

/// One usage event as the usage page's history lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UsageEvent {
    /// Its id (the history's page cursor).
    pub usage_event_id: uuid::Uuid,
    /// When it was recorded.
    pub created_at: time::OffsetDateTime,
    /// Feature code.
    pub feature_code: String,
    /// Feature name.
    pub feature_name: String,
    /// `standard` or `pro`.
    pub quality: String,
    /// Uses in the call.
    pub quantity: i64,
    /// Credits charged.
    pub credits_charged: i64,
    /// The key's name, if it came through one.
    pub key_name: Option<String>,
    /// The caller's idempotency key.
    pub idempotency_key: String,
}

/// Which events the history lists: a range of days (in `time_zone`) and optionally one
/// feature and one API key.
#[derive(Debug, Clone)]
pub struct EventFilter<'a> {
    /// First day, inclusive.
    pub from: Date,
    /// Last day, inclusive.
    pub to: Date,
    /// IANA time zone the days are cut in.
    pub time_zone: &'a str,
    /// Only this feature code.
    pub feature: Option<&'a str>,
    /// Only this API key.
    pub api_key_id: Option<uuid::Uuid>,
}

/// A workspace against its plan's limits ("Your limits"), read in one round trip
/// ([`db::limits`]).
#[derive(Debug, Clone)]
pub struct WorkspaceLimits {
    /// The workspace's plan: its caps.
    pub plan: Plan,
    /// Members now.
    pub members: i64,
    /// Active (unrevoked) API keys now.
    pub api_keys: i64,
    /// Metering calls that may be made right now under the rate limit (`None` without
    /// a limit): the plan's burst less what the last minute used.
    pub calls_available: Option<i64>,
    /// The allowance period in force, if any.
    pub period: Option<AllowancePeriod>,
    /// Plan credits left.
    pub plan_credits: i64,
}

impl WorkspaceLimits {
    /// Calls used of the rate limit's burst (the last minute's, as GCRA counts them).
    pub fn calls_used(&self) -> Option<i64> {
        let limit = i64::from(self.plan.rate_limit_per_min?);
        Some(limit - self.calls_available.unwrap_or(limit).clamp(0, limit))
    }

    /// Plan credits used this period.
    pub fn allowance_used(&self) -> Option<i64> {
        let granted = self.period?.granted_credits;
        Some((granted - self.plan_credits).clamp(0, granted))
    }

    /// `used` of `cap` in whole percent for a meter (0 without a cap or when it is 0).
    pub fn percent(used: i64, cap: Option<i64>) -> i64 {
        match cap {
            Some(cap) if cap > 0 => (used * 100 / cap).clamp(0, 100),
            _ => 0,
        }
    }
}

/// Calls available now under GCRA (the metering function's rate limit): with `limit`
/// calls a minute, a theoretical arrival time `tat_us` and the time `now_us`, both in
/// microseconds since the epoch.
pub fn calls_available(limit: i32, tat_us: Option<i64>, now_us: i64) -> i64 {
    let limit = i64::from(limit.max(1));
    let period = 60_000_000 / limit;
    let tau = period * (limit - 1);
    let tat = tat_us.unwrap_or(now_us).max(now_us);
    ((tau + period - (tat - now_us)) / period).clamp(0, limit)
}
