//! Detail pages and the actions of each admin resource. Every write goes through a
//! domain function that records its audit event in the same transaction
//! ([`crate::admin`], [`crate::audit`]); forms name only the fields they need, so
//! extra fields (`is_staff`, `workspace_id`, `credits` on a form without them) are
//! ignored (no mass assignment).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use sqlx::Row;

use super::list::Resource;
use super::{SudoRefused, capitalise, resources};
use crate::admin::{self, ActionError, AdjustError, Adjusted, Adjustment, Bucket};
use crate::ids::{CommissionId, PayoutId, PlanCode, UserId, WorkspaceId};
use crate::ledger::LedgerEntry;
use crate::web::AppState;
use crate::web::error::{AppError, Result};
use crate::web::extract::Form;
use crate::web::views::{PageCtx, filters, set_flash};

use super::Staff;

/// The id or code of the record an action names, from the path: at most 300
/// characters without control characters (a NUL would reach PostgreSQL, which cannot
/// store it); anything else is a 404, like an unknown record.
#[derive(Debug, Clone)]
pub struct Key(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Key {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> std::result::Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::NotFound)?;
        if is_key(&raw) {
            Ok(Self(raw))
        } else {
            Err(AppError::NotFound)
        }
    }
}

fn is_key(raw: &str) -> bool {
    !raw.is_empty() && raw.len() <= 300 && !raw.chars().any(char::is_control)
}

/// A workspace's support panel.
#[derive(Debug)]
pub struct WorkspacePanel {
    id: WorkspaceId,
    balance: crate::ledger::Balance,
    entries: Vec<LedgerEntry>,
    suspended_reason: Option<String>,
    suspended: bool,
    plan_override: bool,
    plan_code: String,
    plans: Vec<(String, String)>,
    top_ups: Vec<TopUpRow>,
    stripe_customer: Option<String>,
    dashboard_url: Option<String>,
    reseller: Option<String>,
    nonce: String,
}

/// A paid top-up, refundable from the workspace page.
#[derive(Debug, sqlx::FromRow)]
pub struct TopUpRow {
    stripe_checkout_session_id: String,
    credits: i64,
    amount: String,
    paid_at: Option<time::OffsetDateTime>,
    refunded: String,
}

/// What the detail page shows below the row's fields.
#[derive(Debug)]
pub enum Panel {
    /// Nothing more.
    None,
    /// A workspace.
    Workspace(Box<WorkspacePanel>),
    /// A user: staff flag, suspension, memberships.
    User {
        /// Whose.
        id: String,
        /// Staff.
        is_staff: bool,
        /// Suspended.
        suspended: bool,
        /// Workspace name, id and role.
        memberships: Vec<(String, String, String)>,
    },
    /// A commission.
    Commission {
        /// Its id.
        id: String,
        /// `pending`, `approved` or `paid`.
        status: String,
        /// `commission` or `reversal`.
        kind: String,
    },
    /// A payout.
    Payout {
        /// Its id.
        id: String,
        /// `draft` or `paid`.
        status: String,
    },
    /// A webhook event: its payload and whether it can be replayed or skipped.
    Event {
        /// Its id.
        id: String,
        /// Pretty JSON.
        payload: String,
        /// Not applied yet.
        open: bool,
    },
    /// A job.
    Job {
        /// Its id.
        id: String,
        /// Its status.
        status: String,
    },
    /// A plan's edit form.
    Plan {
        /// Its code.
        code: String,
        /// Name, credits per month, calls per minute, members, API keys (empty:
        /// unlimited).
        fields: [String; 5],
    },
    /// A credit pack's edit form.
    Pack {
        /// Its code.
        code: String,
        /// Name, credits, price (major units), currency.
        fields: [String; 4],
        /// On sale.
        active: bool,
    },
    /// A reseller's terms, users and branding.
    Reseller {
        /// Its id.
        id: String,
        /// Rate (percent), hold days, minimum payout (major units), status.
        terms: [String; 4],
        /// Its users: email and role.
        members: Vec<(String, String)>,
        /// Branding: display name, accent colour, host name.
        branding: [String; 3],
    },
    /// A feature's edit form.
    Feature {
        /// Its code.
        code: String,
        /// Description as entered.
        description: String,
        /// Credits per use as entered.
        credit_cost: String,
    },
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/detail.html")]
struct DetailPage {
    page: PageCtx,
    resources: &'static [&'static Resource],
    r: &'static Resource,
    title: String,
    fields: Vec<(&'static str, String)>,
    panel: Panel,
    sudo: bool,
    error: Option<String>,
}

/// Renders `/admin/{resource}/{id}`, with `error` (status 422) when an action's form
/// was refused.
pub async fn render_detail(
    state: &AppState,
    staff: &Staff,
    r: &'static Resource,
    id: &str,
    error: Option<String>,
) -> Result<Response> {
    if !is_key(id) {
        return Err(AppError::NotFound);
    }
    let cols = r
        .columns
        .iter()
        .map(|c| format!("({})::text", c.expr))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("select {cols} from {} where ({}) = $1", r.from, r.id);
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&state.db)
        .await
        .map_err(anyhow::Error::from)?
        .ok_or(AppError::NotFound)?;
    let mut fields = Vec::with_capacity(r.columns.len());
    for (i, c) in r.columns.iter().enumerate() {
        let v: Option<String> = row.try_get(i).map_err(anyhow::Error::from)?;
        fields.push((c.label, v.unwrap_or_default()));
    }
    let title = fields.first().map(|(_, v)| v.clone()).unwrap_or_default();
    let panel = panel(state, r, id).await?;
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        DetailPage {
            page: staff.page().await,
            resources: resources::ALL,
            r,
            title,
            fields,
            panel,
            sudo: staff.in_sudo(state).await,
            error,
        },
    )
        .into_response())
}

async fn panel(state: &AppState, r: &Resource, id: &str) -> Result<Panel> {
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    let conn = &mut *conn;
    Ok(match r.slug {
        "workspaces" => {
            let ws = parse_uuid(id).map(WorkspaceId)?;
            let balance = crate::ledger::db::balance(conn, ws).await?;
            let entries = crate::ledger::db::entries(
                conn,
                ws,
                crate::ledger::db::StatementPage::NewestBefore(None),
                10,
            )
            .await?;
            let (suspended_reason, suspended, plan_override, plan_code, stripe_customer, reseller): (
                Option<String>,
                bool,
                bool,
                String,
                Option<String>,
                Option<String>,
            ) = sqlx::query_as(
                "select w.suspended_reason, w.suspended_at is not null, w.plan_override, w.plan_code,
                        w.stripe_customer_id, r.name || ' (' || r.referral_code || ')'
                   from workspaces w left join resellers r using (reseller_id)
                  where w.workspace_id = $1",
            )
            .bind(ws)
            .fetch_one(&mut *conn)
            .await
            .map_err(anyhow::Error::from)?;
            let plans: Vec<(String, String)> =
                sqlx::query_as("select plan_code, name from plans order by sort_order, plan_code")
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(anyhow::Error::from)?;
            let top_ups = sqlx::query_as::<_, TopUpRow>(
                "select t.stripe_checkout_session_id, t.credits,
                        format_money(t.amount_minor, t.currency) as amount, t.paid_at,
                        format_money(coalesce(f.amount_refunded_minor, 0), t.currency) as refunded
                   from top_ups t
                   left join payment_refunds f
                     on f.stripe_payment_intent_id = t.stripe_payment_intent_id
                  where t.workspace_id = $1 and t.status = 'paid'
                  order by t.paid_at desc nulls last limit 20",
            )
            .bind(ws)
            .fetch_all(&mut *conn)
            .await
            .map_err(anyhow::Error::from)?;
            let dashboard_url = match (&stripe_customer, state.config.stripe_sandbox()) {
                (Some(c), false) => Some(format!("https://dashboard.stripe.com/customers/{c}")),
                _ => None,
            };
            Panel::Workspace(Box::new(WorkspacePanel {
                id: ws,
                balance,
                entries,
                suspended_reason,
                suspended,
                plan_override,
                plan_code,
                plans,
                top_ups,
                stripe_customer,
                dashboard_url,
                reseller,
                nonce: uuid::Uuid::new_v4().to_string(),
            }))
        }
        "users" => {
            let user = parse_uuid(id).map(UserId)?;
            let (is_staff, suspended): (bool, bool) = sqlx::query_as(
                "select is_staff, suspended_at is not null from users where user_id = $1",
            )
            .bind(user)
            .fetch_one(&mut *conn)
            .await
            .map_err(anyhow::Error::from)?;
            let memberships: Vec<(String, String, String)> = sqlx::query_as(
                "select w.name, w.workspace_id::text, m.role::text
                   from memberships m join workspaces w using (workspace_id)
                  where m.user_id = $1 order by m.created_at",
            )
            .bind(user)
            .fetch_all(&mut *conn)
            .await
            .map_err(anyhow::Error::from)?;
            Panel::User {
                id: id.to_owned(),
                is_staff,
                suspended,
                memberships,
            }
        }
        "commissions" => {
            let (status, kind): (String, String) = sqlx::query_as(
                "select status::text, kind::text from commissions where commission_id::text = $1",
            )
            .bind(id)
            .fetch_one(&mut *conn)
            .await
            .map_err(anyhow::Error::from)?;
            Panel::Commission {
                id: id.to_owned(),
                status,
                kind,
            }
        }
        "payouts" => {
            let status: String =
                sqlx::query_scalar("select status::text from payouts where payout_id::text = $1")
                    .bind(id)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(anyhow::Error::from)?;
            Panel::Payout {
                id: id.to_owned(),
                status,
            }
        }
        "webhook-events" => {
            let event = crate::stripe_events::db::find(conn, id)
                .await?
                .ok_or(AppError::NotFound)?;
            Panel::Event {
                id: id.to_owned(),
                payload: serde_json::to_string_pretty(&event.payload).unwrap_or_default(),
                open: event.processed_at.is_none() && event.skipped_at.is_none(),
            }
        }
        "jobs" => {
            let status: String =
                sqlx::query_scalar("select status::text from jobs where job_id::text = $1")
                    .bind(id)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(anyhow::Error::from)?;
            Panel::Job {
                id: id.to_owned(),
                status,
            }
        }
        "plans" => {
            let fields: (String, String, String, String, String) = sqlx::query_as(
                "select name, coalesce(monthly_credits::text, ''), coalesce(rate_limit_per_min::text, ''),
                        coalesce(max_members::text, ''), coalesce(max_api_keys::text, '')
                   from plans where plan_code = $1",
            )
            .bind(id)
            .fetch_one(&mut *conn)
            .await
            .map_err(anyhow::Error::from)?;
            Panel::Plan {
                code: id.to_owned(),
                fields: [fields.0, fields.1, fields.2, fields.3, fields.4],
            }
        }
        "credit-packs" => {
            let (name, credits, price_minor, currency, active): (String, i64, i64, String, bool) =
                sqlx::query_as(
                    "select name, credits, price_minor, currency, active
                       from credit_packs where credit_pack_code = $1",
                )
                .bind(id)
                .fetch_one(&mut *conn)
                .await
                .map_err(anyhow::Error::from)?;
            let shown = crate::money::Money::new(price_minor, &currency).to_string();
            let price = shown
                .trim_start_matches(|c: char| !c.is_ascii_digit())
                .replace(',', "");
            Panel::Pack {
                code: id.to_owned(),
                fields: [name, credits.to_string(), price, currency.to_uppercase()],
                active,
            }
        }
        "resellers" => {
            let reseller = parse_uuid(id)?;
            let (rate, hold, minimum, status, display, accent, host): (
                i32,
                i32,
                i64,
                String,
                Option<String>,
                Option<String>,
                Option<String>,
            ) = sqlx::query_as(
                "select commission_rate_bps, hold_days, minimum_payout_minor, status::text,
                        display_name, accent_color, host_name
                   from resellers where reseller_id = $1",
            )
            .bind(reseller)
            .fetch_one(&mut *conn)
            .await
            .map_err(anyhow::Error::from)?;
            let members: Vec<(String, String)> = sqlx::query_as(
                "select u.email, m.role::text from reseller_members m join users u using (user_id)
                  where m.reseller_id = $1 order by m.role, u.email",
            )
            .bind(reseller)
            .fetch_all(&mut *conn)
            .await
            .map_err(anyhow::Error::from)?;
            let decimal = |minor: i64| format!("{}.{:02}", minor / 100, minor % 100);
            Panel::Reseller {
                id: id.to_owned(),
                terms: [
                    decimal(i64::from(rate)),
                    hold.to_string(),
                    decimal(minimum),
                    status,
                ],
                members,
                branding: [
                    display.unwrap_or_default(),
                    accent.unwrap_or_default(),
                    host.unwrap_or_default(),
                ],
            }
        }
        "features" => {
            let (description, cost): (String, i64) = sqlx::query_as(
                "select description, credit_cost from features where feature_code = $1",
            )
            .bind(id)
            .fetch_one(&mut *conn)
            .await
            .map_err(anyhow::Error::from)?;
            Panel::Feature {
                code: id.to_owned(),
                description,
                credit_cost: cost.to_string(),
            }
        }
        _ => Panel::None,
    })
}

fn parse_uuid(id: &str) -> Result<uuid::Uuid> {
    uuid::Uuid::parse_str(id).map_err(|_| AppError::NotFound)
}

/// Runs a confirmed bulk action; returns the message for the list page.
pub async fn run_bulk(
    state: &AppState,
    staff: &Staff,
    slug: &str,
    action: &str,
    ids: &[String],
) -> Result<String> {
    match (slug, action) {
        ("commissions", "approve") => {
            let ids: Vec<CommissionId> = ids
                .iter()
                .filter_map(|i| uuid::Uuid::parse_str(i).ok().map(CommissionId))
                .collect();
            let mut tx = state.db.begin().await.map_err(anyhow::Error::from)?;
            let now = crate::database::stripe_now(&mut tx, state.config.stripe_sandbox()).await?;
            let moved = admin::approve_commissions(&mut tx, &staff.actor(), &ids, now)
                .await
                .map_err(action_error)?;
            tx.commit().await.map_err(anyhow::Error::from)?;
            Ok(format!(
                "{moved} of {} selected commissions approved (the others were not pending).",
                ids.len()
            ))
        }
        ("webhook-events", "replay") => {
            let mut replayed = 0;
            for id in ids {
                if replay_event(state, staff, id).await? {
                    replayed += 1;
                }
            }
            Ok(format!(
                "{replayed} of {} events queued to run again.",
                ids.len()
            ))
        }
        ("jobs", "retry") => {
            let mut retried = 0;
            for id in ids {
                if let Ok(job_id) = id.parse::<i64>()
                    && retry_job(state, staff, job_id).await?
                {
                    retried += 1;
                }
            }
            Ok(format!(
                "{retried} of {} jobs queued to run now.",
                ids.len()
            ))
        }
        _ => Err(AppError::NotFound),
    }
}

fn action_error(e: ActionError) -> AppError {
    match e {
        ActionError::NotFound => AppError::NotFound,
        ActionError::Unexpected(e) => AppError::Internal(e),
        other => AppError::Invalid(capitalise(&other.to_string())),
    }
}

/// The credit adjustment form. Only these fields are read.
#[derive(Debug, Deserialize)]
pub struct AdjustForm {
    /// `plan` or `purchased`.
    pub bucket: String,
    /// Signed whole credits.
    pub credits: String,
    /// Why (shown on the customer's statement).
    pub reason: String,
    /// The form's one-time token.
    pub nonce: String,
    /// Password, when sudo mode lapsed.
    #[serde(default)]
    pub sudo_password: Option<String>,
}

/// `POST /admin/workspaces/{id}/credits`: adjusts credits through the ledger with a
/// reason (sudo mode; above the threshold, a request for a second staff member).
pub async fn adjust_credits(
    State(state): State<AppState>,
    staff: Staff,
    Key(id): Key,
    Form(form): Form<AdjustForm>,
) -> Result<Response> {
    let ws = parse_uuid(&id).map(WorkspaceId)?;
    let refuse =
        |message: String| render_detail(&state, &staff, &resources::WORKSPACES, &id, Some(message));
    if let Err(SudoRefused(m)) = staff
        .confirm_sudo(&state, form.sudo_password.as_deref())
        .await
    {
        return refuse(m).await;
    }
    let bucket = match form.bucket.as_str() {
        "plan" => Bucket::Plan,
        "purchased" => Bucket::Purchased,
        _ => return refuse("Choose plan or purchased credits.".into()).await,
    };
    let Ok(credits) = form
        .credits
        .trim()
        .replace([',', '_', ' '], "")
        .parse::<i64>()
    else {
        return refuse(capitalise(&AdjustError::InvalidAmount.to_string())).await;
    };
    if uuid::Uuid::parse_str(&form.nonce).is_err() {
        return refuse("This form is out of date; reload the page and try again.".into()).await;
    }
    let mut tx = state.db.begin().await.map_err(anyhow::Error::from)?;
    let outcome = admin::adjust_credits(
        &mut tx,
        &staff.actor(),
        &Adjustment {
            workspace_id: ws,
            bucket,
            credits,
            reason: &form.reason,
            nonce: &form.nonce,
        },
        state.config.admin_approval_above_credits,
    )
    .await;
    let message = match outcome {
        Ok(Adjusted::Applied(entry)) => {
            tx.commit().await.map_err(anyhow::Error::from)?;
            format!(
                "Adjusted by {} credits; the customer sees it on their statement.",
                entry.amount()
            )
        }
        Ok(Adjusted::AlreadyApplied) => {
            "This form was submitted already; nothing changed.".to_owned()
        }
        Ok(Adjusted::AwaitingApproval { .. }) => {
            tx.commit().await.map_err(anyhow::Error::from)?;
            format!(
                "More than {} credits: the adjustment waits for another staff member's approval.",
                crate::money::format_credits(state.config.admin_approval_above_credits)
            )
        }
        Err(AdjustError::NotFound) => return Err(AppError::NotFound),
        Err(AdjustError::Unexpected(e)) => return Err(AppError::Internal(e)),
        Err(e) => {
            drop(tx);
            return refuse(capitalise(&e.to_string())).await;
        }
    };
    set_flash(&staff.member.session, message).await;
    Ok(Redirect::to(&format!("/admin/workspaces/{ws}")).into_response())
}

/// A form with a reason (suspend, restore, staff changes, void).
#[derive(Debug, Deserialize)]
pub struct ReasonForm {
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// Password, when sudo mode lapsed.
    #[serde(default)]
    pub sudo_password: Option<String>,
    /// For the plan override: the plan (empty: end the override).
    #[serde(default)]
    pub plan_code: Option<String>,
}

/// Opens the transaction of a sensitive action once sudo mode lets it through; when
/// it does not, the detail page with the message (422) to return instead.
async fn begin_sensitive(
    state: &AppState,
    staff: &Staff,
    r: &'static Resource,
    id: &str,
    password: Option<&str>,
) -> Result<std::result::Result<sqlx::Transaction<'static, sqlx::Postgres>, Response>> {
    if let Err(SudoRefused(m)) = staff.confirm_sudo(state, password).await {
        return Ok(Err(render_detail(state, staff, r, id, Some(m)).await?));
    }
    Ok(Ok(state.db.begin().await.map_err(anyhow::Error::from)?))
}

/// Commits a staff action that succeeded (flash `done`, back to the detail page), or
/// rolls it back and re-renders the detail page with the refusal (422).
async fn finish(
    state: &AppState,
    staff: &Staff,
    r: &'static Resource,
    id: &str,
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    result: std::result::Result<(), ActionError>,
    done: &str,
) -> Result<Response> {
    match result {
        Ok(()) => {
            tx.commit().await.map_err(anyhow::Error::from)?;
            set_flash(&staff.member.session, done).await;
            Ok(Redirect::to(&format!("/admin/{}/{id}", r.slug)).into_response())
        }
        Err(ActionError::NotFound) => Err(AppError::NotFound),
        Err(ActionError::Unexpected(e)) => Err(AppError::Internal(e)),
        Err(e) => {
            drop(tx);
            render_detail(state, staff, r, id, Some(capitalise(&e.to_string()))).await
        }
    }
}

/// Runs one sensitive action: sudo, the domain call in a transaction with its audit
/// event, then [`finish`].
macro_rules! sensitive {
    ($state:expr, $staff:expr, $r:expr, $id:expr, $password:expr, $done:expr, |$tx:ident, $actor:ident| $op:expr) => {{
        let mut $tx = match begin_sensitive(&$state, &$staff, $r, &$id, $password).await? {
            Ok(tx) => tx,
            Err(page) => return Ok(page),
        };
        let $actor = $staff.actor();
        let result: std::result::Result<(), ActionError> = async { $op }.await;
        finish(&$state, &$staff, $r, &$id, $tx, result, $done).await
    }};
}

/// Runs a staff edit (no password asked): the domain call in a transaction with its
/// audit event, then [`finish`].
macro_rules! staff_write {
    ($state:expr, $staff:expr, $r:expr, $id:expr, $done:expr, |$tx:ident, $actor:ident| $op:expr) => {{
        let mut $tx = $state.db.begin().await.map_err(anyhow::Error::from)?;
        let $actor = $staff.actor();
        let result: std::result::Result<(), ActionError> = async { $op }.await;
        finish(&$state, &$staff, $r, &$id, $tx, result, $done).await
    }};
}

/// `POST /admin/workspaces/{id}/suspend`.
pub async fn suspend_workspace(
    State(state): State<AppState>,
    staff: Staff,
    Key(id): Key,
    Form(form): Form<ReasonForm>,
) -> Result<Response> {
    let ws = parse_uuid(&id).map(WorkspaceId)?;
    sensitive!(
        state,
        staff,
        &resources::WORKSPACES,
        id,
        form.sudo_password.as_deref(),
        "Workspace suspended: its API calls now answer 403 workspace_suspended.",
        |tx, actor| admin::suspend_workspace(&mut tx, &actor, ws, &form.reason).await
    )
}

/// `POST /admin/workspaces/{id}/restore`.
pub async fn restore_workspace(
    State(state): State<AppState>,
    staff: Staff,
    Key(id): Key,
    Form(form): Form<ReasonForm>,
) -> Result<Response> {
    let ws = parse_uuid(&id).map(WorkspaceId)?;
    sensitive!(
        state,
        staff,
        &resources::WORKSPACES,
        id,
        form.sudo_password.as_deref(),
        "Workspace restored.",
        |tx, actor| admin::restore_workspace(&mut tx, &actor, ws, &form.reason).await
    )
}

/// `POST /admin/workspaces/{id}/plan`: a complimentary plan, or back to billing.
pub async fn override_plan(
    State(state): State<AppState>,
    staff: Staff,
    Key(id): Key,
    Form(form): Form<ReasonForm>,
) -> Result<Response> {
    let ws = parse_uuid(&id).map(WorkspaceId)?;
    let plan = form
        .plan_code
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(|p| PlanCode(p.to_owned()));
    sensitive!(
        state,
        staff,
        &resources::WORKSPACES,
        id,
        form.sudo_password.as_deref(),
        if plan.is_some() {
            "Complimentary plan set."
        } else {
            "Back on the billed plan."
        },
        |tx, actor| admin::override_plan(&mut tx, &actor, ws, plan.as_ref(), &form.reason).await
    )
}

/// The attribution form: a referral code, or empty to detach.
#[derive(Debug, Deserialize)]
pub struct AttributionForm {
    /// The reseller's referral code; empty detaches.
    #[serde(default)]
    pub referral_code: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// `POST /admin/workspaces/{id}/reseller`: attributes to a reseller or detaches.
pub async fn set_reseller(
    State(state): State<AppState>,
    staff: Staff,
    Key(id): Key,
    Form(form): Form<AttributionForm>,
) -> Result<Response> {
    let ws = parse_uuid(&id).map(WorkspaceId)?;
    let code = Some(form.referral_code.as_str()).filter(|c| !c.trim().is_empty());
    staff_write!(
        state,
        staff,
        &resources::WORKSPACES,
        id,
        if code.is_some() {
            "Attributed to the reseller."
        } else {
            "Detached from its reseller."
        },
        |tx, actor| admin::set_reseller(&mut tx, &actor, ws, code, &form.reason).await
    )
}

/// The staff flag form.
#[derive(Debug, Deserialize)]
pub struct StaffForm {
    /// `grant` or `revoke`; for suspension, `suspend` or `restore`.
    pub change: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// Password, when sudo mode lapsed.
    #[serde(default)]
    pub sudo_password: Option<String>,
}

/// `POST /admin/users/{id}/staff`: grants or revokes staff access.
pub async fn set_staff(
    State(state): State<AppState>,
    staff: Staff,
    Key(id): Key,
    Form(form): Form<StaffForm>,
) -> Result<Response> {
    let user = parse_uuid(&id).map(UserId)?;
    let grant = form.change == "grant";
    sensitive!(
        state,
        staff,
        &resources::USERS,
        id,
        form.sudo_password.as_deref(),
        if grant {
            "Staff access granted."
        } else {
            "Staff access removed."
        },
        |tx, actor| admin::set_staff(&mut tx, &actor, user, grant, &form.reason).await
    )
}

/// `POST /admin/users/{id}/suspend`: suspends (ending every session) or restores.
pub async fn suspend_user(
    State(state): State<AppState>,
    staff: Staff,
    Key(id): Key,
    Form(form): Form<StaffForm>,
) -> Result<Response> {
    let user = parse_uuid(&id).map(UserId)?;
    let suspend = form.change == "suspend";
    sensitive!(
        state,
        staff,
        &resources::USERS,
        id,
        form.sudo_password.as_deref(),
        if suspend {
            "User suspended: their sessions have ended."
        } else {
            "User restored."
        },
        |tx, actor| admin::set_user_suspended(&mut tx, &actor, user, suspend, &form.reason).await
    )
}

/// `POST /admin/commissions/{id}/approve`: approves one pending commission early.
pub async fn approve_commission(
    State(state): State<AppState>,
    staff: Staff,
    Key(id): Key,
) -> Result<Response> {
    let message = run_bulk(
        &state,
        &staff,
        "commissions",
        "approve",
        std::slice::from_ref(&id),
    )
    .await?;
    set_flash(&staff.member.session, message).await;
    Ok(Redirect::to(&format!("/admin/commissions/{id}")).into_response())
}

/// `POST /admin/commissions/{id}/void`: voids with a reason (a reversal).
pub async fn void_commission(
    State(state): State<AppState>,
    staff: Staff,
    Key(id): Key,
    Form(form): Form<ReasonForm>,
) -> Result<Response> {
    let commission = parse_uuid(&id).map(CommissionId)?;
    sensitive!(
        state,
        staff,
        &resources::COMMISSIONS,
        id,
        form.sudo_password.as_deref(),
        "Commission voided: a reversal was written.",
        |tx, actor| {
            let now = crate::database::stripe_now(&mut tx, state.config.stripe_sandbox()).await?;
            admin::void_commission(&mut tx, &actor, commission, &form.reason, now)
                .await
                .map(|_| ())
        }
    )
}

/// `POST /admin/payouts/draft`: drafts payouts from approved commissions now (what the
/// payout job does every 5 minutes).
pub async fn draft_payouts(State(state): State<AppState>, staff: Staff) -> Result<Response> {
    let mut tx = state.db.begin().await.map_err(anyhow::Error::from)?;
    let now = crate::database::stripe_now(&mut tx, state.config.stripe_sandbox()).await?;
    let drafted = crate::resellers::commissions::draft_payouts(&mut tx, now).await?;
    for payout in &drafted {
        staff
            .actor()
            .record(
                &mut tx,
                "payout.drafted",
                ("payout", payout.to_string()),
                None,
                None,
                None,
            )
            .await?;
    }
    tx.commit().await.map_err(anyhow::Error::from)?;
    set_flash(
        &staff.member.session,
        match drafted.len() {
            0 => "No payout to draft: no reseller has approved commissions over its minimum (or one was drafted this month).".to_owned(),
            n => format!("{n} payouts drafted."),
        },
    )
    .await;
    Ok(Redirect::to("/admin/payouts").into_response())
}

/// The mark-paid form.
#[derive(Debug, Deserialize)]
pub struct MarkPaidForm {
    /// The bank transfer's reference.
    pub reference: String,
}

/// `POST /admin/payouts/{id}/mark-paid`.
pub async fn mark_payout_paid(
    State(state): State<AppState>,
    staff: Staff,
    Key(id): Key,
    Form(form): Form<MarkPaidForm>,
) -> Result<Response> {
    let payout = parse_uuid(&id).map(PayoutId)?;
    let mut tx = state.db.begin().await.map_err(anyhow::Error::from)?;
    use crate::resellers::commissions::{MarkPaidError, MarkedPaid};
    match crate::resellers::commissions::mark_paid(&mut tx, payout, &form.reference).await {
        Ok(MarkedPaid::Paid) => {
            staff
                .actor()
                .record(
                    &mut tx,
                    "payout.paid",
                    ("payout", id.clone()),
                    Some(serde_json::json!({"status": "draft"})),
                    Some(serde_json::json!({"status": "paid", "reference": form.reference.trim()})),
                    None,
                )
                .await?;
            tx.commit().await.map_err(anyhow::Error::from)?;
            set_flash(
                &staff.member.session,
                "Payout marked paid; its commissions are paid.",
            )
            .await;
        }
        Ok(MarkedPaid::AlreadyPaid { reference }) => {
            set_flash(
                &staff.member.session,
                format!("Already paid (reference {reference})."),
            )
            .await;
        }
        Err(MarkPaidError::NotFound(_)) => return Err(AppError::NotFound),
        Err(MarkPaidError::Unexpected(e)) => return Err(AppError::Internal(e)),
        Err(e) => {
            drop(tx);
            return render_detail(
                &state,
                &staff,
                &resources::PAYOUTS,
                &id,
                Some(capitalise(&e.to_string())),
            )
            .await;
        }
    }
    Ok(Redirect::to(&format!("/admin/payouts/{id}")).into_response())
}

/// `GET /admin/payouts/{id}/csv`: the payout's lines (what the reseller downloads).
pub async fn payout_csv(
    State(state): State<AppState>,
    _staff: Staff,
    Key(id): Key,
) -> Result<Response> {
    let payout = parse_uuid(&id).map(PayoutId)?;
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    let reseller = crate::resellers::db::payout_reseller(&mut conn, payout)
        .await?
        .ok_or(AppError::NotFound)?;
    let row = crate::resellers::db::payout(&mut conn, reseller, payout)
        .await?
        .ok_or(AppError::NotFound)?;
    let lines = crate::resellers::db::payout_lines(&mut conn, reseller, payout).await?;
    let csv = crate::resellers::db::payout_csv(&row, &lines)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"payout-{id}.csv\""),
            ),
        ],
        csv,
    )
        .into_response())
}

async fn replay_event(state: &AppState, staff: &Staff, id: &str) -> Result<bool> {
    let mut tx = state.db.begin().await.map_err(anyhow::Error::from)?;
    let Some(job) = crate::jobs::db::find(&mut tx, crate::stripe_events::APPLY_JOB, id).await?
    else {
        return Ok(false);
    };
    let requeued = crate::jobs::db::retry_now(&mut tx, job.job_id).await?;
    if requeued {
        staff
            .actor()
            .record(
                &mut tx,
                "webhook_event.replayed",
                ("stripe_event", id.to_owned()),
                None,
                None,
                None,
            )
            .await?;
    }
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok(requeued)
}

/// `POST /admin/webhook-events/{id}/replay`: runs the event's job again now.
pub async fn replay_webhook_event(
    State(state): State<AppState>,
    staff: Staff,
    Key(id): Key,
) -> Result<Response> {
    let message = if replay_event(&state, &staff, &id).await? {
        "Queued to run again now."
    } else {
        "Nothing to replay: the event is running or has no job."
    };
    set_flash(&staff.member.session, message).await;
    Ok(Redirect::to(&format!("/admin/webhook-events/{id}")).into_response())
}

/// `POST /admin/webhook-events/{id}/skip`: never applies the event (reason required).
pub async fn skip_webhook_event(
    State(state): State<AppState>,
    staff: Staff,
    Key(id): Key,
    Form(form): Form<ReasonForm>,
) -> Result<Response> {
    let event = id.clone();
    sensitive!(
        state,
        staff,
        &resources::WEBHOOK_EVENTS,
        id,
        form.sudo_password.as_deref(),
        "Event skipped: it will not be applied.",
        |tx, actor| {
            let reason = form.reason.trim();
            if !(3..=1_000).contains(&reason.chars().count()) {
                return Err(ActionError::InvalidReason);
            }
            if !crate::stripe_events::skip(&mut tx, &event).await? {
                return Err(ActionError::Unchanged(
                    "the event was applied or skipped already",
                ));
            }
            actor
                .record(
                    &mut tx,
                    "webhook_event.skipped",
                    ("stripe_event", event.clone()),
                    None,
                    None,
                    Some(reason),
                )
                .await?;
            Ok(())
        }
    )
}

async fn retry_job(state: &AppState, staff: &Staff, job_id: i64) -> Result<bool> {
    let mut tx = state.db.begin().await.map_err(anyhow::Error::from)?;
    let requeued = crate::jobs::db::retry_now(&mut tx, job_id).await?;
    if requeued {
        staff
            .actor()
            .record(
                &mut tx,
                "job.retried",
                ("job", job_id.to_string()),
                None,
                None,
                None,
            )
            .await?;
    }
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok(requeued)
}

/// `POST /admin/jobs/{id}/retry`.
pub async fn retry_job_now(
    State(state): State<AppState>,
    staff: Staff,
    Path(job_id): Path<i64>,
) -> Result<Response> {
    let message = if retry_job(&state, &staff, job_id).await? {
        "Queued to run now."
    } else {
        "The job is running; nothing changed."
    };
    set_flash(&staff.member.session, message).await;
    Ok(Redirect::to(&format!("/admin/jobs/{job_id}")).into_response())
}

/// The refund form on a workspace page.
#[derive(Debug, Deserialize)]
pub struct RefundForm {
    /// The top-up's checkout session.
    pub session: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// Password, when sudo mode lapsed.
    #[serde(default)]
    pub sudo_password: Option<String>,
}

/// `POST /admin/workspaces/{id}/refund`: refunds what is left of a top-up through
/// the core's refund path (Stripe refund; the credits are reversed when Stripe reports
/// it). Stripe is called with no transaction open; the request is audited after.
pub async fn refund_top_up(
    State(state): State<AppState>,
    staff: Staff,
    Key(id): Key,
    Form(form): Form<RefundForm>,
) -> Result<Response> {
    let ws = parse_uuid(&id).map(WorkspaceId)?;
    let refuse = |m: String| render_detail(&state, &staff, &resources::WORKSPACES, &id, Some(m));
    if let Err(SudoRefused(m)) = staff
        .confirm_sudo(&state, form.sudo_password.as_deref())
        .await
    {
        return refuse(m).await;
    }
    let reason = form.reason.trim();
    if !(3..=1_000).contains(&reason.chars().count()) {
        return refuse(capitalise(&ActionError::InvalidReason.to_string())).await;
    }
    let owned: Option<i32> = sqlx::query_scalar(
        "select 1 from top_ups where stripe_checkout_session_id = $1 and workspace_id = $2",
    )
    .bind(&form.session)
    .bind(ws)
    .fetch_optional(&state.db)
    .await
    .map_err(anyhow::Error::from)?;
    if owned.is_none() {
        return Err(AppError::NotFound);
    }
    let key = format!("billfold-admin-refund-{}", form.session);
    match crate::top_ups::refund(&state.db, &state.stripe, &form.session, None, &key).await {
        Ok((payment_intent, refund)) => {
            let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
            staff
                .actor()
                .record(
                    &mut conn,
                    "top_up.refund_requested",
                    ("workspace", ws.to_string()),
                    None,
                    Some(serde_json::json!({
                        "checkout_session": form.session,
                        "payment_intent": payment_intent,
                        "refund": refund.id,
                    })),
                    Some(reason),
                )
                .await?;
            set_flash(
                &staff.member.session,
                "Refund asked of Stripe: the credits are taken back when Stripe confirms it.",
            )
            .await;
            Ok(Redirect::to(&format!("/admin/workspaces/{ws}")).into_response())
        }
        Err(crate::top_ups::RefundError::Stripe(e)) => {
            tracing::warn!(error = %e, "admin refund: Stripe did not answer");
            refuse("Stripe did not answer; nothing was refunded. Try again in a moment.".into())
                .await
        }
        Err(crate::top_ups::RefundError::Unexpected(e)) => Err(AppError::Internal(e)),
        Err(e) => refuse(capitalise(&e.to_string())).await,
    }
}

/// The feature edit form.
#[derive(Debug, Deserialize)]
pub struct FeatureForm {
    /// Shown to customers.
    pub description: String,
    /// Credits per use, a whole number ≥ 1.
    pub credit_cost: String,
}

/// `POST /admin/features/{code}/edit`: description and credit cost (audited; invalid
/// input re-renders the form with a message, 422).
pub async fn edit_feature(
    State(state): State<AppState>,
    staff: Staff,
    Key(code): Key,
    Form(form): Form<FeatureForm>,
) -> Result<Response> {
    staff_write!(
        state,
        staff,
        &resources::FEATURES,
        code,
        "Feature saved; new calls are charged the new cost.",
        |tx, actor| {
            let cost = whole(&form.credit_cost, "credits per use")?
                .ok_or_else(|| ActionError::Invalid("enter the credits per use".into()))?;
            admin::update_feature(&mut tx, &actor, &code, &form.description, cost).await
        }
    )
}

/// A whole number from a form field: `None` when empty, a message naming `what`
/// when it is not a whole number.
fn whole<T: std::str::FromStr>(
    raw: &str,
    what: &str,
) -> std::result::Result<Option<T>, ActionError> {
    let raw = raw.trim().replace([',', '_'], "");
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse()
        .map(Some)
        .map_err(|_| ActionError::Invalid(format!("{what} must be a whole number")))
}

/// The plan edit form (empty limits: unlimited).
#[derive(Debug, Deserialize)]
pub struct PlanForm {
    /// Display name.
    pub name: String,
    /// Credits per period.
    #[serde(default)]
    pub monthly_credits: String,
    /// Calls per minute.
    #[serde(default)]
    pub rate_limit_per_min: String,
    /// Members.
    #[serde(default)]
    pub max_members: String,
    /// API keys.
    #[serde(default)]
    pub max_api_keys: String,
}

/// `POST /admin/plans/{code}/edit`.
pub async fn edit_plan(
    State(state): State<AppState>,
    staff: Staff,
    Key(code): Key,
    Form(form): Form<PlanForm>,
) -> Result<Response> {
    staff_write!(
        state,
        staff,
        &resources::PLANS,
        code,
        "Plan saved; allowances change from each workspace's next period.",
        |tx, actor| {
            let edit = admin::PlanEdit {
                name: form.name.clone(),
                monthly_credits: whole(&form.monthly_credits, "credits per month")?,
                rate_limit_per_min: whole(&form.rate_limit_per_min, "calls per minute")?,
                max_members: whole(&form.max_members, "members")?,
                max_api_keys: whole(&form.max_api_keys, "API keys")?,
            };
            admin::update_plan(&mut tx, &actor, &code, &edit).await
        }
    )
}

/// The credit pack edit form.
#[derive(Debug, Deserialize)]
pub struct PackForm {
    /// Display name.
    pub name: String,
    /// Credits granted.
    pub credits: String,
    /// Price in the pack's currency, e.g. `40.00`.
    pub price: String,
    /// Present when on sale.
    #[serde(default)]
    pub active: Option<String>,
}

/// `POST /admin/credit-packs/{code}/edit`.
pub async fn edit_credit_pack(
    State(state): State<AppState>,
    staff: Staff,
    Key(code): Key,
    Form(form): Form<PackForm>,
) -> Result<Response> {
    staff_write!(
        state,
        staff,
        &resources::CREDIT_PACKS,
        code,
        "Credit pack saved. Use “Sync to Stripe” on Plans to put a new price on sale.",
        |tx, actor| {
            let currency: Option<String> =
                sqlx::query_scalar("select currency from credit_packs where credit_pack_code = $1")
                    .bind(&code)
                    .fetch_optional(&mut *tx)
                    .await?;
            let currency = currency.ok_or(ActionError::NotFound)?;
            let decimals = if crate::money::Money::new(1, &currency)
                .to_string()
                .contains('.')
            {
                2
            } else {
                0
            };
            let price_minor =
                crate::money::parse_decimal(&form.price, decimals).ok_or_else(|| {
                    ActionError::Invalid(format!(
                        "enter the price in {} with at most {decimals} decimals",
                        currency.to_uppercase()
                    ))
                })?;
            let edit = admin::PackEdit {
                name: form.name.clone(),
                credits: whole(&form.credits, "credits")?.unwrap_or(0),
                price_minor,
                active: form.active.is_some(),
            };
            admin::update_credit_pack(&mut tx, &actor, &code, &edit).await
        }
    )
}

/// The reseller terms form.
#[derive(Debug, Deserialize)]
pub struct TermsForm {
    /// Percent, up to 2 decimals.
    pub rate: String,
    /// Days.
    pub hold_days: String,
    /// Major units (EUR), up to 2 decimals.
    pub minimum_payout: String,
    /// `active`, `paused` or `closed`.
    pub status: crate::resellers::ResellerStatus,
}

/// `POST /admin/resellers/{id}/terms`.
pub async fn edit_reseller_terms(
    State(state): State<AppState>,
    staff: Staff,
    Key(id): Key,
    Form(form): Form<TermsForm>,
) -> Result<Response> {
    let reseller = parse_uuid(&id).map(crate::ids::ResellerId)?;
    staff_write!(
        state,
        staff,
        &resources::RESELLERS,
        id,
        "Terms saved; a new rate applies to payments from now on.",
        |tx, actor| {
            let terms = admin::ResellerTerms {
                commission_rate_bps: percent_bps(&form.rate)?,
                hold_days: whole(&form.hold_days, "the hold")?.unwrap_or(-1),
                minimum_payout_minor: crate::money::parse_decimal(&form.minimum_payout, 2)
                    .ok_or_else(|| {
                        ActionError::Invalid("enter the minimum payout such as 50.00".into())
                    })?,
                status: form.status,
            };
            admin::update_reseller_terms(&mut tx, &actor, reseller, &terms).await
        }
    )
}

fn percent_bps(raw: &str) -> std::result::Result<i32, ActionError> {
    crate::money::parse_decimal(raw, 2)
        .and_then(|bps| i32::try_from(bps).ok())
        .ok_or_else(|| ActionError::Invalid("enter the rate in percent, such as 20 or 12.5".into()))
}

/// The add-member form.
#[derive(Debug, Deserialize)]
pub struct MemberForm {
    /// An existing user's email.
    pub email: String,
    /// `owner` or `member`.
    pub role: crate::resellers::ResellerRole,
}

/// `POST /admin/resellers/{id}/members`.
pub async fn add_reseller_member(
    State(state): State<AppState>,
    staff: Staff,
    Key(id): Key,
    Form(form): Form<MemberForm>,
) -> Result<Response> {
    let reseller = parse_uuid(&id).map(crate::ids::ResellerId)?;
    staff_write!(
        state,
        staff,
        &resources::RESELLERS,
        id,
        "User added: they see the reseller dashboard at their next page.",
        |tx, actor| admin::add_reseller_member(&mut tx, &actor, reseller, &form.email, form.role)
            .await
    )
}

/// The branding form a staff member submits for a reseller.
#[derive(Debug, Deserialize)]
pub struct BrandingFields {
    /// Display name (empty: the reseller's name).
    #[serde(default)]
    pub display_name: String,
    /// `#rrggbb`, or empty.
    #[serde(default)]
    pub accent_color: String,
    /// A host name, or empty.
    #[serde(default)]
    pub host_name: String,
}

/// `POST /admin/resellers/{id}/branding`.
pub async fn edit_reseller_branding(
    State(state): State<AppState>,
    staff: Staff,
    Key(id): Key,
    Form(form): Form<BrandingFields>,
) -> Result<Response> {
    let reseller = parse_uuid(&id).map(crate::ids::ResellerId)?;
    let branding = crate::resellers::BrandingForm {
        display_name: form.display_name,
        accent_color: form.accent_color,
        host_name: form.host_name,
    };
    staff_write!(
        state,
        staff,
        &resources::RESELLERS,
        id,
        "Branding saved: its customers see it at their next page.",
        |tx, actor| admin::update_reseller_branding(&mut tx, &actor, reseller, &branding).await
    )
}

/// The new-reseller form, as entered.
#[derive(Debug, Default, Deserialize)]
pub struct NewResellerForm {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Referral code.
    #[serde(default)]
    pub referral_code: String,
    /// Percent.
    #[serde(default)]
    pub rate: String,
    /// Days.
    #[serde(default)]
    pub hold_days: String,
    /// An existing user to make its owner (optional).
    #[serde(default)]
    pub owner_email: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/reseller_new.html")]
struct NewResellerPage {
    page: PageCtx,
    resources: &'static [&'static Resource],
    form: NewResellerForm,
    error: Option<String>,
}

/// `GET /admin/resellers/new`.
pub async fn new_reseller_form(staff: Staff) -> Result<Response> {
    Ok(NewResellerPage {
        page: staff.page().await,
        resources: resources::ALL,
        form: NewResellerForm {
            rate: "20".into(),
            hold_days: "30".into(),
            ..NewResellerForm::default()
        },
        error: None,
    }
    .into_response())
}

/// `POST /admin/resellers/new`: creates it (and its owner's seat), or re-renders the
/// form with the message (422).
pub async fn create_reseller(
    State(state): State<AppState>,
    staff: Staff,
    Form(form): Form<NewResellerForm>,
) -> Result<Response> {
    let mut tx = state.db.begin().await.map_err(anyhow::Error::from)?;
    let created = async {
        let rate = percent_bps(&form.rate)?;
        let hold = whole(&form.hold_days, "the hold")?.unwrap_or(30);
        admin::create_reseller(
            &mut tx,
            &staff.actor(),
            &form.name,
            &form.referral_code,
            rate,
            hold,
            Some(form.owner_email.as_str()),
        )
        .await
    }
    .await;
    match created {
        Ok(id) => {
            tx.commit().await.map_err(anyhow::Error::from)?;
            set_flash(&staff.member.session, "Reseller created.").await;
            Ok(Redirect::to(&format!("/admin/resellers/{id}")).into_response())
        }
        Err(ActionError::Unexpected(e)) => Err(AppError::Internal(e)),
        Err(e) => {
            drop(tx);
            Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                NewResellerPage {
                    page: staff.page().await,
                    resources: resources::ALL,
                    error: Some(capitalise(&e.to_string())),
                    form,
                },
            )
                .into_response())
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/sync.html")]
struct SyncPage {
    page: PageCtx,
    resources: &'static [&'static Resource],
    lines: Vec<String>,
    error: Option<String>,
}

/// `POST /admin/plans/sync`: "Sync to Stripe" (what `billfold stripe sync` does) and
/// what it changed. Stripe is called with no transaction open.
pub async fn sync_catalog(State(state): State<AppState>, staff: Staff) -> Result<Response> {
    let (lines, error) = match crate::catalog::sync::sync(&state.db, &state.stripe).await {
        Ok(lines) => (lines.iter().map(ToString::to_string).collect(), None),
        Err(e) => {
            tracing::warn!(error = %e, "catalog sync from the back office failed");
            (Vec::new(), Some(format!("Stripe sync failed: {e}")))
        }
    };
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    staff
        .actor()
        .record(
            &mut conn,
            "catalog.synced",
            ("catalog", "stripe".to_owned()),
            None,
            Some(serde_json::json!({"lines": lines, "error": error})),
            None,
        )
        .await?;
    Ok(SyncPage {
        page: staff.page().await,
        resources: resources::ALL,
        lines,
        error,
    }
    .into_response())
}
