//! The dashboard (plan, balance, usage chart, recent ledger entries) and the credit
//! statement (paginated, with running balance, CSV download).

use askama::Template;
use askama_web::WebTemplate;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use futures_util::StreamExt;
use serde::Deserialize;

use super::AppState;
use super::error::Result;
use super::extract::{AccountMember, Query};
use super::views::{PageCtx, csv_record, filters};
use crate::charts;
use crate::ledger::db::StatementPage as Page;
use crate::ledger::{self, Balance, LedgerEntry};
use crate::telemetry::spawn_blocking_with_tracing;
use crate::usage::{self, DashboardSummary};

/// `GET /`: the dashboard for the signed-in (else the login page).
pub async fn root() -> Redirect {
    Redirect::to("/dashboard")
}

/// One day of the usage table (the chart's text alternative).
struct UsageDay {
    label: String,
    credits: i64,
}

#[derive(Template, WebTemplate)]
#[template(path = "dashboard/dashboard.html")]
struct DashboardPage {
    page: PageCtx,
    live: LiveFigures,
    chart_svg: String,
    usage_days: Vec<UsageDay>,
    entries: Vec<LedgerEntry>,
    /// The workspace shows its owner's email to the reseller it came through.
    shares_email: bool,
    /// The user may change that (owner or admin).
    can_manage: bool,
}

/// The dashboard's figures that refresh themselves: plan, balance, quota, prediction
/// and the 30-day total (`templates/dashboard/_live.html`).
struct LiveFigures {
    summary: DashboardSummary,
    /// The workspace's time zone (dates and days).
    time_zone: String,
    /// The user may buy credits or change the plan (owner or admin).
    can_manage: bool,
}

/// `GET /dashboard/live`'s answer: the live figures alone, for htmx to swap in.
#[derive(Template, WebTemplate)]
#[template(path = "dashboard/live.html")]
struct LivePanel {
    live: LiveFigures,
}

/// Days shown on the usage chart.
const CHART_DAYS: i32 = 30;

async fn summary(state: &AppState, member: &AccountMember) -> Result<DashboardSummary> {
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    Ok(usage::db::dashboard_summary(
        &mut conn,
        member.workspace.workspace_id,
        &member.workspace.plan_code,
        CHART_DAYS,
        &member.workspace.time_zone,
    )
    .await?)
}

/// `GET /dashboard`: five SQL round trips in all (session, user, membership, the
/// summary, the recent entries).
pub async fn show_dashboard(
    State(state): State<AppState>,
    member: AccountMember,
) -> Result<Response> {
    let ws = member.workspace.workspace_id;
    let summary = summary(&state, &member).await?;
    let entries = {
        let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
        ledger::db::entries(&mut conn, ws, Page::NewestBefore(None), 8).await?
    };
    let usage_days = summary
        .daily
        .iter()
        .rev()
        .filter(|(_, c)| *c > 0)
        .map(|(d, c)| UsageDay {
            label: d.to_string(),
            credits: *c,
        })
        .collect();
    let days = summary.daily.clone();
    let chart_svg = spawn_blocking_with_tracing(move || {
        charts::usage_svg(&days, "Credits used per day, last 30 days", (720, 240))
    })
    .await
    .map_err(anyhow::Error::from)?
    .map_err(anyhow::Error::from)?;
    let can_manage = member.workspace.role.can_manage();
    Ok(DashboardPage {
        page: member.page_with_flash("dashboard").await,
        live: LiveFigures {
            summary,
            time_zone: member.workspace.time_zone.clone(),
            can_manage,
        },
        chart_svg,
        usage_days,
        entries,
        shares_email: member.workspace.shares_email,
        can_manage,
    }
    .into_response())
}

/// `GET /dashboard/live`: the dashboard's live figures alone, for htmx to swap in
/// every few seconds; `no-store` like every session page.
pub async fn show_live_panel(
    State(state): State<AppState>,
    member: AccountMember,
) -> Result<Response> {
    Ok(LivePanel {
        live: LiveFigures {
            summary: summary(&state, &member).await?,
            time_zone: member.workspace.time_zone.clone(),
            can_manage: member.workspace.role.can_manage(),
        },
    }
    .into_response())
}

/// Statement page size.
const PAGE_SIZE: i64 = 50;

#[derive(Debug, Deserialize)]
pub struct StatementQuery {
    /// Show entries older than this ledger entry id (keyset pagination).
    before: Option<i64>,
}

#[derive(Template, WebTemplate)]
#[template(path = "dashboard/statement.html")]
struct StatementPage {
    page: PageCtx,
    balance: Balance,
    entries: Vec<LedgerEntry>,
    total_entries: i64,
    /// The next (older) page's address, if there are older entries.
    older_href: Option<String>,
    is_first_page: bool,
}

/// `GET /credits?before=<id>`: the full statement, newest first, 50 per page.
pub async fn show_statement(
    State(state): State<AppState>,
    member: AccountMember,
    Query(q): Query<StatementQuery>,
) -> Result<Response> {
    let ws = member.workspace.workspace_id;
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    let mut entries =
        ledger::db::entries(&mut conn, ws, Page::NewestBefore(q.before), PAGE_SIZE + 1).await?;
    let older = if entries.len() as i64 > PAGE_SIZE {
        entries.truncate(PAGE_SIZE as usize);
        entries.last().map(|e| e.ledger_entry_id)
    } else {
        None
    };
    Ok(StatementPage {
        page: member.page("credits"),
        balance: ledger::db::balance(&mut conn, ws).await?,
        entries,
        total_entries: ledger::db::count_entries(&mut conn, ws).await?,
        older_href: older.map(|id| format!("/credits?before={id}")),
        is_first_page: q.before.is_none(),
    }
    .into_response())
}

/// `GET /credits.csv`: the whole statement, oldest first, streamed as CSV
/// (columns: id, created_at RFC 3339, kind, description, plan_delta,
/// purchased_delta, debt_delta, amount, plan_balance, purchased_balance, debt, balance;
/// amount and balance are net of debt).
pub async fn download_statement(
    State(state): State<AppState>,
    member: AccountMember,
) -> Result<Response> {
    let ws = member.workspace.workspace_id;
    let header_row = csv_record(&[
        "ledger_entry_id",
        "created_at",
        "kind",
        "description",
        "plan_delta",
        "purchased_delta",
        "debt_delta",
        "amount",
        "plan_balance",
        "purchased_balance",
        "debt",
        "balance",
    ]);
    let db = state.db.clone();
    let rows = async_stream(db, ws);
    let body =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(header_row) }).chain(rows);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"billfold-credits.csv\"".to_owned(),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

fn async_stream(
    db: sqlx::PgPool,
    ws: crate::ids::WorkspaceId,
) -> impl futures_util::Stream<Item = Result<String, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold(
        (db, None::<i64>, false),
        move |(db, after, done)| async move {
            if done {
                return None;
            }
            // Pages of 1,000 oldest-first via keyset, so the pool connection is not held
            // for the whole download.
            let page: Result<Vec<LedgerEntry>, anyhow::Error> = async {
                let mut conn = db.acquire().await?;
                ledger::db::entries(&mut conn, ws, Page::OldestAfter(after), 1000).await
            }
            .await;
            match page {
                Ok(entries) if entries.is_empty() => None,
                Ok(entries) => {
                    let last = entries.last().map(|e| e.ledger_entry_id);
                    let done = entries.len() < 1000;
                    let chunk: String = entries.iter().map(csv_entry).collect();
                    Some((Ok(chunk), (db, last, done)))
                }
                Err(e) => {
                    tracing::error!(error = ?e, "csv export failed");
                    Some((
                        Err(std::io::Error::other("csv export failed")),
                        (db, after, true),
                    ))
                }
            }
        },
    )
}

fn csv_entry(e: &LedgerEntry) -> String {
    let created = e
        .created_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    csv_record(&[
        &e.ledger_entry_id.to_string(),
        &created,
        e.kind.label(),
        &e.description,
        &e.plan_delta.to_string(),
        &e.purchased_delta.to_string(),
        &e.debt_delta.to_string(),
        &e.amount().to_string(),
        &e.plan_balance_after.to_string(),
        &e.purchased_balance_after.to_string(),
        &e.debt_after.to_string(),
        &e.balance_after().to_string(),
    ])
}
