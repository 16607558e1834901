//! The usage page (`/usage`): credits per day and feature for a chosen range, totals
//! per feature and per API key, the history of usage events with filters and pages,
//! and the events of what is shown as CSV (`/usage.csv`).

use askama::Template;
use askama_web::WebTemplate;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use time::Date;

use super::AppState;
use super::error::Result;
use super::extract::{AccountMember, Query};
use super::views::{PageCtx, csv_record, filters};
use crate::api_keys::{self, ApiKey};
use crate::catalog::{self, Feature};
use crate::charts;
use crate::telemetry::spawn_blocking_with_tracing;
use crate::usage::{self, EventFilter, MAX_RANGE_DAYS, UsageEvent, UsageReport};

/// Events per history page.
const PAGE_SIZE: i64 = 50;

/// The ranges offered as one click (days, ending today).
const PRESETS: [i64; 3] = [7, 30, 90];

/// `/usage`'s query: a preset `range` (`7`, `30`, `90` days) or a custom `from`/`to`
/// (`YYYY-MM-DD`, inclusive), and the history's `feature`, `key` filters and `before`
/// cursor. Unknown presets fall back to 30 days.
#[derive(Debug, Default, Deserialize)]
pub struct UsageQuery {
    range: Option<String>,
    from: Option<String>,
    to: Option<String>,
    feature: Option<String>,
    key: Option<String>,
    before: Option<String>,
}

/// The range a query asks for, or why it cannot be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Range {
    from: Date,
    to: Date,
    /// The preset, when the range is one.
    preset: Option<i64>,
}

const DATE_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

fn preset(today: Date, days: i64) -> Range {
    Range {
        from: today - time::Duration::days(days - 1),
        to: today,
        preset: Some(days),
    }
}

/// Reads the range from the query: a custom one when `from` or `to` is given (both
/// must parse, `from` ≤ `to` ≤ today, at most [`MAX_RANGE_DAYS`] days), else the preset.
fn range(q: &UsageQuery, today: Date) -> std::result::Result<Range, String> {
    fn given(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }
    match (given(&q.from), given(&q.to)) {
        (None, None) => {
            let days = q
                .range
                .as_deref()
                .and_then(|r| r.parse::<i64>().ok())
                .filter(|d| PRESETS.contains(d))
                .unwrap_or(30);
            Ok(preset(today, days))
        }
        (from, to) => {
            let parse = |v: Option<&str>, what: &str| {
                let v = v.ok_or_else(|| format!("Choose a {what} date."))?;
                Date::parse(v, DATE_FORMAT)
                    .map_err(|_| format!("The {what} date must be a date such as 2026-12-01."))
            };
            let (from, to) = (parse(from, "start")?, parse(to, "end")?);
            if from > to {
                return Err("The start date must not be after the end date.".into());
            }
            if to > today {
                return Err("The end date must not be after today.".into());
            }
            if (to - from).whole_days() + 1 > MAX_RANGE_DAYS {
                return Err(format!("A range covers at most {MAX_RANGE_DAYS} days."));
            }
            Ok(Range {
                from,
                to,
                preset: None,
            })
        }
    }
}

/// One row of the chart's legend.
struct LegendItem {
    name: String,
    /// Index into `charts::SERIES_COLOURS` (CSS class `series-{n}`).
    colour: usize,
}

#[derive(Template, WebTemplate)]
#[template(path = "dashboard/usage.html")]
struct UsagePage {
    page: PageCtx,
    range: Range,
    presets: [i64; 3],
    error: Option<String>,
    /// The custom range's fields as typed.
    from_value: String,
    to_value: String,
    report: UsageReport,
    chart_svg: String,
    legend: Vec<LegendItem>,
    features: Vec<Feature>,
    keys: Vec<ApiKey>,
    feature: String,
    key: String,
    events: Vec<UsageEvent>,
    older_href: Option<String>,
    is_first_page: bool,
    /// This range and filters as a query string (links keep them).
    query: String,
    csv_href: String,
}

impl UsagePage {
    fn start_label(&self) -> String {
        self.range.from.format(DATE_FORMAT).unwrap_or_default()
    }
    fn end_label(&self) -> String {
        self.range.to.format(DATE_FORMAT).unwrap_or_default()
    }
    fn is_preset(&self, days: &i64) -> bool {
        self.range.preset == Some(*days)
    }
    fn per_day(&self) -> i64 {
        self.report.total_credits / (self.report.days.len() as i64).max(1)
    }
    fn newest_href(&self) -> String {
        format!("/usage?{}#history", self.query)
    }
}

/// The range and filters as a query string, without the page cursor.
fn query_string(range: &Range, feature: &str, key: &str) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    match range.preset {
        Some(days) => {
            q.append_pair("range", &days.to_string());
        }
        None => {
            q.append_pair("from", &range.from.format(DATE_FORMAT).unwrap_or_default());
            q.append_pair("to", &range.to.format(DATE_FORMAT).unwrap_or_default());
        }
    }
    if !feature.is_empty() {
        q.append_pair("feature", feature);
    }
    if !key.is_empty() {
        q.append_pair("key", key);
    }
    q.finish()
}

/// `GET /usage`: the report for the range asked for. A range that cannot be shown
/// answers 422 with the reason and the last 30 days. Five SQL round trips besides the
/// session's three: report, features, keys, events.
pub async fn show_usage(
    State(state): State<AppState>,
    member: AccountMember,
    Query(q): Query<UsageQuery>,
) -> Result<Response> {
    let tz = member.workspace.time_zone.clone();
    let today = usage::today_in(&tz);
    let (range, error) = match range(&q, today) {
        Ok(r) => (r, None),
        Err(e) => (preset(today, 30), Some(e)),
    };
    let ws = member.workspace.workspace_id;
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    let rows = usage::db::report_rows(&mut conn, ws, range.from, range.to, &tz).await?;
    let features = catalog::db::features(&mut conn).await?;
    let keys = api_keys::db::list(&mut conn, ws).await?;
    let feature = q
        .feature
        .clone()
        .filter(|f| features.iter().any(|x| &x.feature_code == f))
        .unwrap_or_default();
    let key_id = q
        .key
        .as_deref()
        .and_then(|k| k.parse::<uuid::Uuid>().ok())
        .filter(|k| keys.iter().any(|x| &x.api_key_id.0 == k));
    let key = key_id.map(|k| k.to_string()).unwrap_or_default();
    let before = q
        .before
        .as_deref()
        .and_then(|b| b.parse::<uuid::Uuid>().ok());
    let filter = EventFilter {
        from: range.from,
        to: range.to,
        time_zone: &tz,
        feature: (!feature.is_empty()).then_some(feature.as_str()),
        api_key_id: key_id,
    };
    let mut events = usage::db::events(&mut conn, ws, &filter, before, PAGE_SIZE + 1).await?;
    drop(conn);
    let query = query_string(&range, &feature, &key);
    let older_href = if events.len() as i64 > PAGE_SIZE {
        events.truncate(PAGE_SIZE as usize);
        events
            .last()
            .map(|e| format!("/usage?{query}&before={}#history", e.usage_event_id))
    } else {
        None
    };
    let report = UsageReport::new(range.from, range.to, &rows);
    let (series, legend) = chart_series(&report);
    let days = report.days.clone();
    let title = format!(
        "Credits used per day by feature, {} to {}",
        range.from, range.to
    );
    let chart_svg = spawn_blocking_with_tracing(move || {
        charts::stacked_usage_svg(&days, &series, &title, (960, 280))
    })
    .await
    .map_err(anyhow::Error::from)?
    .map_err(anyhow::Error::from)?;
    let page = UsagePage {
        page: member.page("usage"),
        presets: PRESETS,
        from_value: q.from.clone().unwrap_or_default(),
        to_value: q.to.clone().unwrap_or_default(),
        error: error.clone(),
        chart_svg,
        legend,
        features,
        keys,
        feature,
        key,
        events,
        older_href,
        is_first_page: before.is_none(),
        csv_href: format!("/usage.csv?{query}"),
        query,
        report,
        range,
    };
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, page).into_response())
}

/// The chart's series: the seven features with the most credits, then the rest
/// together as "Other features"; and the legend in the same colours.
fn chart_series(report: &UsageReport) -> (Vec<(String, Vec<i64>)>, Vec<LegendItem>) {
    let shown = charts::SERIES_COLOURS.len() - 1;
    let mut series: Vec<(String, Vec<i64>)> = report.series.iter().take(shown).cloned().collect();
    if report.series.len() > shown {
        let mut other = vec![0; report.days.len()];
        for (_, values) in &report.series[shown..] {
            for (slot, v) in other.iter_mut().zip(values) {
                *slot += v;
            }
        }
        series.push(("Other features".to_owned(), other));
    }
    let legend = series
        .iter()
        .enumerate()
        .map(|(colour, (name, _))| LegendItem {
            name: name.clone(),
            colour,
        })
        .collect();
    (series, legend)
}

/// `GET /usage.csv`: the usage events of the range and filters shown, newest first, as
/// CSV (columns: created_at RFC 3339, feature, feature_name, quality, quantity,
/// credits, api_key, idempotency_key), streamed in pages of 1,000. Cells a spreadsheet
/// would run as formulas are neutralised (OWASP CSV Injection). A range that cannot be
/// shown answers 422.
pub async fn download_usage(
    State(state): State<AppState>,
    member: AccountMember,
    Query(q): Query<UsageQuery>,
) -> Result<Response> {
    let tz = member.workspace.time_zone.clone();
    let range = range(&q, usage::today_in(&tz)).map_err(super::error::AppError::Invalid)?;
    let feature = q.feature.filter(|f| !f.is_empty());
    let key = q.key.as_deref().and_then(|k| k.parse::<uuid::Uuid>().ok());
    let ws = member.workspace.workspace_id;
    let db = state.db.clone();
    let header_row = csv_record(&[
        "created_at",
        "feature",
        "feature_name",
        "quality",
        "quantity",
        "credits",
        "api_key",
        "idempotency_key",
    ]);
    let rows =
        futures_util::stream::unfold((db, None::<uuid::Uuid>, false), move |(db, after, done)| {
            let feature = feature.clone();
            let tz = tz.clone();
            async move {
                if done {
                    return None;
                }
                let filter = EventFilter {
                    from: range.from,
                    to: range.to,
                    time_zone: &tz,
                    feature: feature.as_deref(),
                    api_key_id: key,
                };
                let page = async {
                    let mut conn = db.acquire().await?;
                    usage::db::events(&mut conn, ws, &filter, after, 1000).await
                }
                .await;
                match page {
                    Ok(events) if events.is_empty() => None,
                    Ok(events) => {
                        let last = events.last().map(|e| e.usage_event_id);
                        let done = events.len() < 1000;
                        let chunk: String = events.iter().map(csv_event).collect();
                        Some((Ok::<_, std::io::Error>(chunk), (db, last, done)))
                    }
                    Err(e) => {
                        tracing::error!(error = ?e, "usage csv export failed");
                        Some((
                            Err(std::io::Error::other("usage csv export failed")),
                            (db, after, true),
                        ))
                    }
                }
            }
        });
    let body = futures_util::StreamExt::chain(
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(header_row) }),
        rows,
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"billfold-usage-{}-{}.csv\"",
                    range.from.format(DATE_FORMAT).unwrap_or_default(),
                    range.to.format(DATE_FORMAT).unwrap_or_default()
                ),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

fn csv_event(e: &UsageEvent) -> String {
    csv_record(&[
        &e.created_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        &e.feature_code,
        &e.feature_name,
        &e.quality,
        &e.quantity.to_string(),
        &e.credits_charged.to_string(),
        e.key_name.as_deref().unwrap_or(""),
        &e.idempotency_key,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn q(from: &str, to: &str) -> UsageQuery {
        UsageQuery {
            from: Some(from.into()),
            to: Some(to.into()),
            ..Default::default()
        }
    }

    #[test]
    fn ranges_are_presets_or_checked_custom_dates() {
        let today = date!(2026 - 12 - 08);
        let seven = UsageQuery {
            range: Some("7".into()),
            ..Default::default()
        };
        assert_eq!(range(&seven, today).unwrap().from, date!(2026 - 12 - 02));
        let odd = UsageQuery {
            range: Some("8".into()),
            ..Default::default()
        };
        assert_eq!(range(&odd, today).unwrap().preset, Some(30));
        assert_eq!(
            range(&q("2026-11-01", "2026-11-30"), today).unwrap(),
            Range {
                from: date!(2026 - 11 - 01),
                to: date!(2026 - 11 - 30),
                preset: None
            }
        );
        assert!(range(&q("2026-11-30", "2026-11-01"), today).is_err());
        assert!(range(&q("2026-11-01", "2026-12-09"), today).is_err());
        assert!(range(&q("2024-01-01", "2026-12-01"), today).is_err());
        assert!(range(&q("yesterday", "2026-12-01"), today).is_err());
        assert!(range(&q("", "2026-12-01"), today).is_err());
    }
}
