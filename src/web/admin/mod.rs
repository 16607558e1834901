//! The back office (`/admin`, issue 8): the overview, one generic list per resource
//! ([`list`], [`resources`]), detail pages with each resource's actions
//! ([`actions`]), and the pending four-eyes adjustments.
//!
//! Authorization is one extractor, [`Staff`]: anonymous visitors are sent to sign in,
//! signed-in users who are not staff get 403, on every `/admin` route. Sensitive
//! actions (credit adjustments and their approval, refunds, staff changes, plan
//! overrides, suspensions) also need the staff member's password within the last 15
//! minutes ([`Staff::confirm_sudo`], GitHub's "sudo mode").

pub mod actions;
pub mod list;
pub mod resources;
pub mod view_as;

use std::net::IpAddr;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::AppState;
use super::error::{AppError, Result};
use super::extract::{AccountMember, ClientAddr, Form, Query};
use super::views::{PageCtx, filters, set_flash};
use crate::admin::{self, Actor, AdjustmentRequest, overview::Overview};
use list::{Kind, ListQuery, Page, Resource};

/// A signed-in staff member. Anyone else signed in gets 403; anonymous visitors are
/// sent to sign in.
#[derive(Debug, Clone)]
pub struct Staff {
    /// The user (chrome, CSRF token, flash, session).
    pub member: AccountMember,
    /// The request's `x-request-id`.
    pub request_id: Option<String>,
    /// The client's address.
    pub client: IpAddr,
}

/// Session key: when the staff member last confirmed their password (unix seconds).
const SUDO_AT: &str = "admin.sudo_at";

impl Staff {
    /// The staff member as the audit log records them.
    pub fn actor(&self) -> Actor<'_> {
        Actor {
            user_id: self.member.user.user_id,
            email: &self.member.user.email,
            request_id: self.request_id.as_deref(),
            client_address: Some(self.client),
        }
    }

    /// Page chrome with the admin nav active and the pending flash.
    pub async fn page(&self) -> PageCtx {
        let mut page = self.member.page_with_flash("admin").await;
        page.staff = true;
        page
    }

    /// Whether the password was confirmed within the sudo window.
    pub async fn in_sudo(&self, state: &AppState) -> bool {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let window = i64::try_from(state.config.sudo_window.as_secs()).unwrap_or(i64::MAX);
        matches!(
            self.member.session.get::<i64>(SUDO_AT).await,
            Ok(Some(at)) if now - at < window && at <= now
        )
    }

    /// Lets a sensitive action through when the password was confirmed within the sudo
    /// window, or when `password` (from the action's form) is right now, which starts a
    /// new window (audited as `auth.sudo`). Otherwise a message for the form (422).
    pub async fn confirm_sudo(
        &self,
        state: &AppState,
        password: Option<&str>,
    ) -> std::result::Result<(), SudoRefused> {
        if self.in_sudo(state).await {
            return Ok(());
        }
        let Some(password) = password.filter(|p| !p.is_empty()) else {
            return Err(SudoRefused(
                "Confirm your password to do this (asked again every 15 minutes).".into(),
            ));
        };
        // A password guess here is a sign-in guess: the same per-account-and-address
        // limit applies, so a stolen session cannot try passwords without end.
        if let Err(refused) =
            state
                .limits
                .check_login_account(&self.member.user.email, self.client, true)
        {
            return Err(SudoRefused(format!(
                "Too many password attempts; try again in {} seconds.",
                refused.retry_after()
            )));
        }
        let ok = state
            .hasher
            .verify(password, Some(&self.member.user.password_hash))
            .await
            .map_err(|e| SudoRefused(format!("Could not check the password: {e}")))?;
        if !ok {
            self.record_sudo(state, "auth.sudo_failed").await?;
            return Err(SudoRefused("That password is not right.".into()));
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.member
            .session
            .insert(SUDO_AT, now)
            .await
            .map_err(|e| SudoRefused(format!("Could not start sudo mode: {e}")))?;
        self.record_sudo(state, "auth.sudo").await
    }

    /// Audits a password confirmation (`auth.sudo`) or a wrong one (`auth.sudo_failed`).
    async fn record_sudo(
        &self,
        state: &AppState,
        action: &str,
    ) -> std::result::Result<(), SudoRefused> {
        let recorded = async {
            let mut conn = state.db.acquire().await?;
            self.actor()
                .record(
                    &mut conn,
                    action,
                    ("user", self.member.user.user_id.to_string()),
                    None,
                    None,
                    None,
                )
                .await
        }
        .await;
        recorded.map_err(|e| SudoRefused(format!("Could not record it: {e}")))
    }
}

/// Why a sensitive action was not let through: shown on the form, status 422.
#[derive(Debug, Clone)]
pub struct SudoRefused(pub String);

impl FromRequestParts<AppState> for Staff {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> std::result::Result<Self, Self::Rejection> {
        let member = AccountMember::from_request_parts(parts, state).await?;
        if !member.user.is_staff {
            return Err(AppError::Forbidden.into_response());
        }
        let request_id = parts
            .headers
            .get(super::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let client = ClientAddr::resolve(parts, state.config.trusted_proxies).0;
        Ok(Self {
            member,
            request_id,
            client,
        })
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/overview.html")]
struct OverviewPage {
    page: PageCtx,
    resources: &'static [&'static Resource],
    o: Overview,
    credits_chart: Option<String>,
    plans_chart: Option<String>,
    pending: Vec<AdjustmentRequest>,
}

/// `GET /admin`: the business overview (Postgres only, no Stripe call).
pub async fn show_overview(State(state): State<AppState>, staff: Staff) -> Result<Response> {
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    let now = crate::database::stripe_now(&mut conn, state.config.stripe_sandbox()).await?;
    let o = admin::overview::load(&mut conn, now).await?;
    let pending = admin::pending_adjustments(&mut conn).await?;
    drop(conn);
    let credits_chart =
        crate::charts::usage_svg(&o.credits_by_day, "Credits consumed per day", (720, 220)).ok();
    let steps: Vec<(&str, i64)> = o
        .subscriptions_by_plan
        .iter()
        .map(|(name, n)| (name.as_str(), *n))
        .collect();
    let plans_chart = (!steps.is_empty())
        .then(|| {
            crate::charts::funnel_svg(
                &steps,
                "Live subscriptions by plan",
                (720, 40 + 40 * steps.len() as u32),
            )
            .ok()
        })
        .flatten();
    Ok(OverviewPage {
        page: staff.page().await,
        resources: resources::ALL,
        o,
        credits_chart,
        plans_chart,
        pending,
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/list.html")]
struct ListPage {
    page: PageCtx,
    resources: &'static [&'static Resource],
    r: &'static Resource,
    query: ListQuery,
    result: Page,
    next_href: Option<String>,
    first_href: String,
    csv_href: String,
    extra: Option<&'static str>,
}

impl ListPage {
    fn sort_href(&self, i: &usize) -> String {
        self.query.sort_href(self.r, *i)
    }

    fn aria_sort(&self, i: &usize) -> &'static str {
        match (self.query.sort == *i, self.query.desc) {
            (false, _) => "none",
            (true, true) => "descending",
            (true, false) => "ascending",
        }
    }

    fn filter_value(&self, i: &usize) -> &str {
        self.query.filters.get(*i).map_or("", String::as_str)
    }

    fn is_num(&self, i: &usize) -> bool {
        self.r.columns[*i].kind == Kind::Num
    }

    fn is_badge(&self, i: &usize) -> bool {
        self.r.columns[*i].kind == Kind::Badge
    }
}

fn resource(slug: &str) -> Result<&'static Resource> {
    resources::by_slug(slug).ok_or(AppError::NotFound)
}

/// `GET /admin/{resource}`: the list, searched, filtered, sorted and paged.
pub async fn show_list(
    State(state): State<AppState>,
    staff: Staff,
    Path(slug): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response> {
    let r = resource(&slug)?;
    let query = ListQuery::parse(r, &pairs);
    let result = list::fetch_page(&state.db, r, &query).await?;
    let base = format!("/admin/{}", r.slug);
    let first_href = query.href(r, &base);
    let next_href = result.next.as_ref().map(|cursor| {
        format!(
            "{first_href}&after={}",
            url::form_urlencoded::byte_serialize(cursor.as_bytes()).collect::<String>()
        )
    });
    let csv_href = query.href(r, &format!("{base}/export.csv"));
    let extra = match r.slug {
        "payouts" => Some("payouts"),
        _ => None,
    };
    Ok(ListPage {
        page: staff.page().await,
        resources: resources::ALL,
        r,
        query,
        result,
        next_href,
        first_href,
        csv_href,
        extra,
    }
    .into_response())
}

/// `GET /admin/{resource}/export.csv`: the filtered list as CSV, streamed.
pub async fn export_csv(
    State(state): State<AppState>,
    _staff: Staff,
    Path(slug): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response> {
    let r = resource(&slug)?;
    let query = ListQuery::parse(r, &pairs);
    Ok(list::csv_response(state.db.clone(), r, query))
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/confirm.html")]
struct ConfirmPage {
    page: PageCtx,
    resources: &'static [&'static Resource],
    r: &'static Resource,
    action: &'static str,
    label: &'static str,
    ids: Vec<String>,
}

/// `POST /admin/{resource}/bulk`: with the selected `id`s and an `action`, a
/// confirmation page; with `confirm=yes` as well, runs the action on them (at most
/// [`list::MAX_BULK`]).
pub async fn bulk(
    State(state): State<AppState>,
    staff: Staff,
    Path(slug): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response> {
    let r = resource(&slug)?;
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let Some(&(action, label)) = get("action").and_then(|a| r.bulk.iter().find(|(n, _)| *n == a))
    else {
        return Err(AppError::Invalid(
            "Choose an action for the selected rows.".into(),
        ));
    };
    let mut ids: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "id")
        .map(|(_, v)| v.clone())
        .collect();
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Err(AppError::Invalid("Select at least one row first.".into()));
    }
    if ids.len() > list::MAX_BULK {
        return Err(AppError::Invalid(format!(
            "Select at most {} rows at a time.",
            list::MAX_BULK
        )));
    }
    if get("confirm") != Some("yes") {
        return Ok(ConfirmPage {
            page: staff.page().await,
            resources: resources::ALL,
            r,
            action,
            label,
            ids,
        }
        .into_response());
    }
    let message = actions::run_bulk(&state, &staff, r.slug, action, &ids).await?;
    set_flash(&staff.member.session, message).await;
    Ok(Redirect::to(&format!("/admin/{}", r.slug)).into_response())
}

/// `GET /admin/{resource}/{id}`: the detail page with the resource's actions.
pub async fn show_detail(
    State(state): State<AppState>,
    staff: Staff,
    Path((slug, id)): Path<(String, String)>,
) -> Result<Response> {
    let r = resource(&slug)?;
    actions::render_detail(&state, &staff, r, &id, None).await
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/adjustments.html")]
struct AdjustmentsPage {
    page: PageCtx,
    resources: &'static [&'static Resource],
    pending: Vec<AdjustmentRequest>,
    me: crate::ids::UserId,
    sudo: bool,
    error: Option<String>,
}

/// `GET /admin/adjustments`: credit adjustments waiting for a second staff member.
pub async fn show_adjustments(State(state): State<AppState>, staff: Staff) -> Result<Response> {
    adjustments_page(&state, &staff, None).await
}

async fn adjustments_page(
    state: &AppState,
    staff: &Staff,
    error: Option<String>,
) -> Result<Response> {
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    let pending = admin::pending_adjustments(&mut conn).await?;
    drop(conn);
    let status = if error.is_some() {
        axum::http::StatusCode::UNPROCESSABLE_ENTITY
    } else {
        axum::http::StatusCode::OK
    };
    Ok((
        status,
        AdjustmentsPage {
            page: staff.page().await,
            resources: resources::ALL,
            pending,
            me: staff.member.user.user_id,
            sudo: staff.in_sudo(state).await,
            error,
        },
    )
        .into_response())
}

/// The four-eyes decision form.
#[derive(Debug, Deserialize)]
pub struct DecisionForm {
    /// `approve` or `reject`.
    pub decision: String,
    /// The password, when sudo mode has lapsed.
    #[serde(default)]
    pub sudo_password: Option<String>,
}

/// `POST /admin/adjustments/{id}`: approves or rejects a pending adjustment (another
/// staff member than the one who asked; sudo mode).
pub async fn decide_adjustment(
    State(state): State<AppState>,
    staff: Staff,
    Path(request_id): Path<i64>,
    Form(form): Form<DecisionForm>,
) -> Result<Response> {
    if let Err(SudoRefused(message)) = staff
        .confirm_sudo(&state, form.sudo_password.as_deref())
        .await
    {
        return adjustments_page(&state, &staff, Some(message)).await;
    }
    let approve = match form.decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => return Err(AppError::Invalid("Choose approve or reject.".into())),
    };
    let mut tx = state.db.begin().await.map_err(anyhow::Error::from)?;
    match admin::decide_adjustment(&mut tx, &staff.actor(), request_id, approve).await {
        Ok(_) => {
            tx.commit().await.map_err(anyhow::Error::from)?;
            set_flash(
                &staff.member.session,
                if approve {
                    "Adjustment approved: the credits are on the workspace's statement."
                } else {
                    "Adjustment rejected."
                },
            )
            .await;
            Ok(Redirect::to("/admin/adjustments").into_response())
        }
        Err(admin::DecideError::Adjust(admin::AdjustError::Unexpected(e))) => {
            Err(AppError::Internal(e))
        }
        Err(e) => {
            drop(tx);
            adjustments_page(&state, &staff, Some(capitalise(&e.to_string()))).await
        }
    }
}

/// `Sentence case.` for a domain error's message.
pub fn capitalise(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => format!(
            "{}{}.",
            first.to_uppercase(),
            chars.as_str().trim_end_matches('.')
        ),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_read_as_sentences() {
        assert_eq!(super::capitalise("no such workspace"), "No such workspace.");
        assert_eq!(super::capitalise("done."), "Done.");
    }
}
