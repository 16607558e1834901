//! The reseller dashboard (`/reseller/...`), for users who work for a reseller:
//! headline figures, the revenue chart and referral funnel, referred customers,
//! commissions, payouts with their CSV, the referral link, branding and API keys.
//! Every query is scoped by the reseller [`ResellerUser`] resolved from the session:
//! another reseller's ids answer 404. Owners manage branding and keys; members read.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{FromRequestParts, Multipart, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use time::{Date, OffsetDateTime};

use super::AppState;
use super::error::{AppError, Result};
use super::extract::{AccountMember, Form, Query};
use super::views::{ConfirmForm, ConfirmPage, PageCtx, filters, set_flash};
use crate::charts;
use crate::ids::{PayoutId, ResellerApiKeyId, WorkspaceId};
use crate::money::Money;
use crate::resellers::commissions::CommissionStatus;
use crate::resellers::db::{
    self as rdb, Bucket, CommissionFilter, CommissionRow, Cursor, Customer, Figures, Funnel,
    PayoutRow,
};
use crate::resellers::logo::{self, LogoError};
use crate::resellers::{self, BrandingError, BrandingForm, Reseller, ResellerApiKey, ResellerRole};
use crate::telemetry::spawn_blocking_with_tracing;

/// A signed-in user who works for a reseller, with that reseller. Anyone else signed
/// in gets 403; anonymous visitors are sent to sign in.
#[derive(Debug, Clone)]
pub struct ResellerUser {
    /// The user in their workspace (chrome, CSRF token, flash).
    pub member: AccountMember,
    /// The reseller they work for.
    pub reseller: Reseller,
    /// Their role there.
    pub role: ResellerRole,
}

impl ResellerUser {
    fn page(&self) -> PageCtx {
        self.member.page("reseller")
    }

    async fn page_with_flash(&self) -> PageCtx {
        self.member.page_with_flash("reseller").await
    }

    /// Refuses (403) unless the user is the reseller's owner.
    fn require_owner(&self) -> Result<()> {
        if self.role == ResellerRole::Owner {
            Ok(())
        } else {
            Err(AppError::Forbidden)
        }
    }
}

impl FromRequestParts<AppState> for ResellerUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> std::result::Result<Self, Self::Rejection> {
        let member = AccountMember::from_request_parts(parts, state).await?;
        let mut conn = state
            .db
            .acquire()
            .await
            .map_err(|e| AppError::Internal(e.into()).into_response())?;
        let Some(seat) = resellers::member_of(&mut conn, member.user.user_id)
            .await
            .map_err(|e| AppError::Internal(e).into_response())?
        else {
            return Err(AppError::Forbidden.into_response());
        };
        Ok(Self {
            member,
            reseller: seat.reseller,
            role: seat.role,
        })
    }
}

/// Rows per list page.
const PAGE_SIZE: i64 = 25;

fn parse_cursor(raw: Option<&str>) -> Result<Option<Cursor>> {
    match raw.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(raw) => Cursor::parse(raw)
            .map(Some)
            .ok_or_else(|| AppError::Invalid("This page link is not valid.".into())),
    }
}

/// The chart's time range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum Range {
    /// 30 days, one bar a day.
    #[default]
    #[serde(rename = "30d")]
    Days30,
    /// 90 days, one bar a day.
    #[serde(rename = "90d")]
    Days90,
    /// 12 months, one bar a month.
    #[serde(rename = "12m")]
    Months12,
}

impl Range {
    fn bucket(self) -> (Bucket, i32) {
        match self {
            Range::Days30 => (Bucket::Day, 30),
            Range::Days90 => (Bucket::Day, 90),
            Range::Months12 => (Bucket::Month, 12),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Range::Days30 => "last 30 days",
            Range::Days90 => "last 90 days",
            Range::Months12 => "last 12 months",
        }
    }
}

/// The revenue chart and its table (the overview's and the htmx partial's).
struct RevenueChart {
    range: Range,
    svg: String,
    rows: Vec<ChartRow>,
    currency: String,
}

struct ChartRow {
    label: String,
    revenue: Money,
    commission: Money,
}

async fn revenue_chart(
    state: &AppState,
    reseller: &Reseller,
    currency: &str,
    now: OffsetDateTime,
    range: Range,
) -> Result<RevenueChart> {
    let (bucket, count) = range.bucket();
    let points = rdb::series(
        &mut *state.db.acquire().await.map_err(anyhow::Error::from)?,
        reseller.reseller_id,
        currency,
        now,
        bucket,
        count,
    )
    .await?;
    let monthly = bucket == Bucket::Month;
    let rows = points
        .iter()
        .rev()
        .filter(|p| p.revenue != 0 || p.commission != 0)
        .map(|p| ChartRow {
            label: if monthly {
                format!("{} {}", p.day.month(), p.day.year())
            } else {
                p.day.to_string()
            },
            revenue: Money::new(p.revenue, currency),
            commission: Money::new(p.commission, currency),
        })
        .collect();
    let bars: Vec<(Date, i64)> = points.iter().map(|p| (p.day, p.revenue)).collect();
    let overlay: Vec<i64> = points.iter().map(|p| p.commission).collect();
    let title = format!(
        "Revenue of referred customers and your commission per {}, {}",
        if monthly { "month" } else { "day" },
        range.label()
    );
    let cur = currency.to_owned();
    let svg = spawn_blocking_with_tracing(move || {
        charts::money_svg(&bars, &overlay, monthly, &cur, &title, (720, 240))
    })
    .await
    .map_err(anyhow::Error::from)?
    .map_err(anyhow::Error::from)?;
    Ok(RevenueChart {
        range,
        svg,
        rows,
        currency: currency.to_owned(),
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "reseller/overview.html")]
struct OverviewPage {
    page: PageCtx,
    reseller: Reseller,
    figures: Vec<Figures>,
    chart: RevenueChart,
    funnel_30d: Funnel,
    funnel_all: Funnel,
    funnel_svg: String,
    referral_link: String,
    recent: Vec<CommissionRow>,
    draft_payouts: Vec<PayoutRow>,
}

#[derive(Template, WebTemplate)]
#[template(path = "reseller/chart_partial.html")]
struct ChartPartial {
    chart: RevenueChart,
}

/// `?range=30d|90d|12m`.
#[derive(Debug, Deserialize)]
pub struct RangeQuery {
    #[serde(default)]
    range: Range,
}

async fn stripe_now(state: &AppState) -> Result<OffsetDateTime> {
    Ok(crate::database::stripe_now(
        &mut *state.db.acquire().await.map_err(anyhow::Error::from)?,
        state.config.stripe_sandbox(),
    )
    .await?)
}

/// `GET /reseller?range=`: the overview. With htmx (`HX-Request`), only the chart.
pub async fn show_overview(
    State(state): State<AppState>,
    user: ResellerUser,
    headers: HeaderMap,
    Query(q): Query<RangeQuery>,
) -> Result<Response> {
    let id = user.reseller.reseller_id;
    let now = stripe_now(&state).await?;
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    let figures = rdb::figures(&mut conn, id, now).await?;
    let currency = figures
        .first()
        .map_or_else(|| "eur".to_owned(), |f| f.currency.clone());
    drop(conn);
    let chart = revenue_chart(&state, &user.reseller, &currency, now, q.range).await?;
    if headers.contains_key("hx-request") {
        return Ok(ChartPartial { chart }.into_response());
    }
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    let funnel_30d = rdb::funnel(&mut conn, id, Some(now - time::Duration::days(30))).await?;
    let funnel_all = rdb::funnel(&mut conn, id, None).await?;
    let recent = rdb::commissions(&mut conn, id, &CommissionFilter::default(), None, 6)
        .await?
        .items;
    let steps = [
        ("Link followed", funnel_all.clicks),
        ("Signed up", funnel_all.signups),
        ("Paid at least once", funnel_all.paying),
    ];
    let funnel_svg = spawn_blocking_with_tracing(move || {
        charts::funnel_svg(&steps, "Referral funnel, all time", (720, 150))
    })
    .await
    .map_err(anyhow::Error::from)?
    .map_err(anyhow::Error::from)?;
    let draft_payouts = rdb::payouts(&mut conn, id, None, 12)
        .await?
        .items
        .into_iter()
        .filter(|p| !p.is_paid())
        .collect();
    Ok(OverviewPage {
        page: user.page_with_flash().await,
        referral_link: format!("{}/r/{}", state.base_url, user.reseller.referral_code),
        reseller: user.reseller,
        figures,
        chart,
        funnel_30d,
        funnel_all,
        funnel_svg,
        recent,
        draft_payouts,
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "reseller/customers.html")]
struct CustomersPage {
    page: PageCtx,
    customers: Vec<Customer>,
    q: String,
    next_href: Option<String>,
    is_first_page: bool,
}

/// `?q=&after=`.
#[derive(Debug, Deserialize)]
pub struct CustomersQuery {
    #[serde(default)]
    q: String,
    after: Option<String>,
}

fn query_string(pairs: &[(&str, &str)]) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        ser.append_pair(k, v);
    }
    ser.finish()
}

/// `GET /reseller/customers?q=&after=`: referred customers, newest first.
pub async fn list_customers(
    State(state): State<AppState>,
    user: ResellerUser,
    Query(q): Query<CustomersQuery>,
) -> Result<Response> {
    let after = parse_cursor(q.after.as_deref())?;
    let search: String = q.q.trim().chars().take(100).collect();
    let page = rdb::customers(
        &mut *state.db.acquire().await.map_err(anyhow::Error::from)?,
        user.reseller.reseller_id,
        &search,
        after,
        PAGE_SIZE,
    )
    .await?;
    let next_href = page.next.map(|c| {
        format!(
            "/reseller/customers?{}",
            query_string(&[("q", &search), ("after", &c.encode())])
        )
    });
    Ok(CustomersPage {
        page: user.page(),
        customers: page.items,
        q: search,
        next_href,
        is_first_page: after.is_none(),
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "reseller/customer.html")]
struct CustomerPage {
    page: PageCtx,
    customer: Customer,
    commissions: Vec<CommissionRow>,
}

/// `GET /reseller/customers/{workspace_id}`: one referred customer and its
/// commissions; another reseller's (or no) customer is a 404.
pub async fn show_customer(
    State(state): State<AppState>,
    user: ResellerUser,
    Path(workspace_id): Path<String>,
) -> Result<Response> {
    let workspace_id: WorkspaceId = workspace_id.parse().map_err(|_| AppError::NotFound)?;
    let id = user.reseller.reseller_id;
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    let customer = rdb::customer(&mut conn, id, workspace_id)
        .await?
        .ok_or(AppError::NotFound)?;
    let filter = CommissionFilter {
        workspace_id: Some(workspace_id),
        ..CommissionFilter::default()
    };
    let commissions = rdb::commissions(&mut conn, id, &filter, None, 100)
        .await?
        .items;
    Ok(CustomerPage {
        page: user.page(),
        customer,
        commissions,
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "reseller/commissions.html")]
struct CommissionsPage {
    page: PageCtx,
    commissions: Vec<CommissionRow>,
    status: String,
    month: String,
    next_href: Option<String>,
    is_first_page: bool,
}

/// `?status=&month=YYYY-MM&after=`.
#[derive(Debug, Deserialize)]
pub struct CommissionsQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    month: String,
    after: Option<String>,
}

/// Reads the commission filters of a page or API query; a value that is not one of
/// them is a 422 with what to send.
pub fn parse_commission_filter(
    status: &str,
    month: &str,
) -> std::result::Result<CommissionFilter, String> {
    let status = match status {
        "" => None,
        "pending" => Some(CommissionStatus::Pending),
        "approved" => Some(CommissionStatus::Approved),
        "paid" => Some(CommissionStatus::Paid),
        _ => return Err("status must be pending, approved or paid".into()),
    };
    let month = match month {
        "" => None,
        m => Some(parse_month(m).ok_or("month must look like 2026-11")?),
    };
    Ok(CommissionFilter {
        status,
        month,
        ..CommissionFilter::default()
    })
}

/// `2026-11` → 1 Nov 2026.
fn parse_month(raw: &str) -> Option<Date> {
    let (y, m) = raw.split_once('-')?;
    let month = time::Month::try_from(m.parse::<u8>().ok()?).ok()?;
    Date::from_calendar_date(y.parse().ok()?, month, 1).ok()
}

/// `GET /reseller/commissions?status=&month=&after=`.
pub async fn list_commissions(
    State(state): State<AppState>,
    user: ResellerUser,
    Query(q): Query<CommissionsQuery>,
) -> Result<Response> {
    let filter = parse_commission_filter(&q.status, &q.month).map_err(AppError::Invalid)?;
    let after = parse_cursor(q.after.as_deref())?;
    let page = rdb::commissions(
        &mut *state.db.acquire().await.map_err(anyhow::Error::from)?,
        user.reseller.reseller_id,
        &filter,
        after,
        PAGE_SIZE,
    )
    .await?;
    let next_href = page.next.map(|c| {
        format!(
            "/reseller/commissions?{}",
            query_string(&[
                ("status", &q.status),
                ("month", &q.month),
                ("after", &c.encode())
            ])
        )
    });
    Ok(CommissionsPage {
        page: user.page(),
        commissions: page.items,
        status: q.status,
        month: q.month,
        next_href,
        is_first_page: after.is_none(),
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "reseller/payouts.html")]
struct PayoutsPage {
    page: PageCtx,
    payouts: Vec<PayoutRow>,
    next_href: Option<String>,
    is_first_page: bool,
}

/// `?after=`.
#[derive(Debug, Deserialize)]
pub struct AfterQuery {
    after: Option<String>,
}

/// `GET /reseller/payouts?after=`.
pub async fn list_payouts(
    State(state): State<AppState>,
    user: ResellerUser,
    Query(q): Query<AfterQuery>,
) -> Result<Response> {
    let after = parse_cursor(q.after.as_deref())?;
    let page = rdb::payouts(
        &mut *state.db.acquire().await.map_err(anyhow::Error::from)?,
        user.reseller.reseller_id,
        after,
        PAGE_SIZE,
    )
    .await?;
    Ok(PayoutsPage {
        page: user.page(),
        payouts: page.items,
        next_href: page
            .next
            .map(|c| format!("/reseller/payouts?after={}", c.encode())),
        is_first_page: after.is_none(),
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "reseller/payout.html")]
struct PayoutPage {
    page: PageCtx,
    payout: PayoutRow,
    lines: Vec<CommissionRow>,
}

async fn payout_of(
    state: &AppState,
    user: &ResellerUser,
    payout_id: &str,
) -> Result<(PayoutRow, Vec<CommissionRow>)> {
    let payout_id: PayoutId = payout_id.parse().map_err(|_| AppError::NotFound)?;
    let id = user.reseller.reseller_id;
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    let payout = rdb::payout(&mut conn, id, payout_id)
        .await?
        .ok_or(AppError::NotFound)?;
    let lines = rdb::payout_lines(&mut conn, id, payout_id).await?;
    Ok((payout, lines))
}

/// `GET /reseller/payouts/{payout_id}`: a payout and its lines.
pub async fn show_payout(
    State(state): State<AppState>,
    user: ResellerUser,
    Path(payout_id): Path<String>,
) -> Result<Response> {
    let (payout, lines) = payout_of(&state, &user, &payout_id).await?;
    Ok(PayoutPage {
        page: user.page(),
        payout,
        lines,
    }
    .into_response())
}

/// `GET /reseller/payouts/{payout_id}/csv`: the payout as CSV for the accountant
/// ([`rdb::payout_csv`]).
pub async fn download_payout(
    State(state): State<AppState>,
    user: ResellerUser,
    Path(payout_id): Path<String>,
) -> Result<Response> {
    let (payout, lines) = payout_of(&state, &user, &payout_id).await?;
    let csv = rdb::payout_csv(&payout, &lines)?;
    let date = payout.created_at.date();
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"payout-{date}-{}.csv\"",
                    payout.currency
                ),
            ),
        ],
        csv,
    )
        .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "reseller/settings.html")]
struct SettingsPage {
    page: PageCtx,
    reseller: Reseller,
    is_owner: bool,
    form: BrandingForm,
    branding_error: Option<String>,
    logo_error: Option<String>,
    keys: Vec<ResellerApiKey>,
    key_name: String,
    key_error: Option<String>,
    created_key: Option<String>,
    base_url: String,
}

impl SettingsPage {
    fn preview_name(&self) -> &str {
        let name = self.form.display_name.trim();
        if name.is_empty() {
            &self.reseller.name
        } else {
            name
        }
    }
}

async fn settings_page(state: &AppState, user: &ResellerUser) -> Result<SettingsPage> {
    let keys = resellers::api_keys(
        &mut *state.db.acquire().await.map_err(anyhow::Error::from)?,
        user.reseller.reseller_id,
    )
    .await?;
    let r = &user.reseller;
    Ok(SettingsPage {
        page: user.page_with_flash().await,
        form: BrandingForm {
            display_name: r.display_name.clone().unwrap_or_default(),
            accent_color: r.accent_color.clone().unwrap_or_default(),
            host_name: r.host_name.clone().unwrap_or_default(),
        },
        reseller: user.reseller.clone(),
        is_owner: user.role == ResellerRole::Owner,
        branding_error: None,
        logo_error: None,
        keys,
        key_name: String::new(),
        key_error: None,
        created_key: None,
        base_url: state.base_url.to_string(),
    })
}

/// `GET /reseller/settings`: branding (with a preview) and API keys.
pub async fn show_settings(State(state): State<AppState>, user: ResellerUser) -> Result<Response> {
    Ok(settings_page(&state, &user).await?.into_response())
}

/// The branding form's fields.
#[derive(Debug, Deserialize)]
pub struct BrandingFields {
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    accent_color: String,
    #[serde(default)]
    host_name: String,
}

/// `POST /reseller/settings`: saves the branding (owner only); invalid values
/// re-render the form with the message (422) and change nothing.
pub async fn save_branding(
    State(state): State<AppState>,
    user: ResellerUser,
    Form(fields): Form<BrandingFields>,
) -> Result<Response> {
    user.require_owner()?;
    let form = BrandingForm {
        display_name: fields.display_name,
        accent_color: fields.accent_color,
        host_name: fields.host_name,
    };
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    match resellers::update_branding(&mut conn, user.reseller.reseller_id, &form).await {
        Ok(()) => {
            set_flash(&user.member.session, "Branding saved.").await;
            Ok(Redirect::to("/reseller/settings").into_response())
        }
        Err(BrandingError::Unexpected(e)) => Err(AppError::Internal(e)),
        Err(e) => {
            let mut page = settings_page(&state, &user).await?;
            let clean = |s: &str| s.chars().filter(|c| !c.is_control()).collect::<String>();
            page.form = BrandingForm {
                display_name: clean(&form.display_name),
                accent_color: clean(&form.accent_color),
                host_name: clean(&form.host_name),
            };
            page.branding_error = Some(e.to_string());
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
    }
}

/// `POST /reseller/settings/logo` (multipart, field `logo`): validates and stores the
/// logo (owner only); a refused file re-renders with the reason (422).
pub async fn upload_logo(
    State(state): State<AppState>,
    user: ResellerUser,
    mut multipart: Multipart,
) -> Result<Response> {
    user.require_owner()?;
    let mut bytes = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| AppError::Invalid(format!("The upload could not be read: {e}.")))?
    {
        if field.name() == Some("logo") {
            bytes =
                Some(field.bytes().await.map_err(|e| {
                    AppError::Invalid(format!("The upload could not be read: {e}."))
                })?);
        }
    }
    let validated = match bytes.filter(|b| !b.is_empty()) {
        None => Err(LogoError::UnsupportedType),
        Some(bytes) => logo::validate(bytes.to_vec()),
    };
    let logo = match validated {
        Ok(logo) => logo,
        Err(e) => {
            let mut page = settings_page(&state, &user).await?;
            page.logo_error = Some(e.to_string());
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
        }
    };
    logo::store(
        &mut *state.db.acquire().await.map_err(anyhow::Error::from)?,
        user.reseller.reseller_id,
        &logo,
    )
    .await?;
    set_flash(&user.member.session, "Logo saved.").await;
    Ok(Redirect::to("/reseller/settings").into_response())
}

/// `POST /reseller/settings/logo/remove` (owner only).
pub async fn remove_logo(State(state): State<AppState>, user: ResellerUser) -> Result<Response> {
    user.require_owner()?;
    logo::remove(
        &mut *state.db.acquire().await.map_err(anyhow::Error::from)?,
        user.reseller.reseller_id,
    )
    .await?;
    set_flash(&user.member.session, "Logo removed.").await;
    Ok(Redirect::to("/reseller/settings").into_response())
}

/// The key form's field.
#[derive(Debug, Deserialize)]
pub struct KeyFields {
    name: String,
}

/// `POST /reseller/api-keys` (owner only): creates a reseller API key and shows it
/// once (201, not a redirect: the key is never stored, not even for one redirect).
pub async fn create_api_key(
    State(state): State<AppState>,
    user: ResellerUser,
    Form(fields): Form<KeyFields>,
) -> Result<Response> {
    user.require_owner()?;
    let created = async {
        let mut tx = state.db.begin().await.map_err(anyhow::Error::from)?;
        let created = resellers::create_api_key(
            &mut tx,
            user.reseller.reseller_id,
            user.member.user.user_id,
            &fields.name,
        )
        .await?;
        tx.commit().await.map_err(anyhow::Error::from)?;
        Ok::<_, crate::api_keys::ApiKeyError>(created)
    }
    .await;
    let mut page = settings_page(&state, &user).await?;
    match created {
        Ok((_, plaintext)) => {
            page.created_key = Some(plaintext);
            Ok((StatusCode::CREATED, page).into_response())
        }
        Err(crate::api_keys::ApiKeyError::Unexpected(e)) => Err(AppError::Internal(e)),
        Err(e) => {
            page.key_name = fields.name.chars().filter(|c| !c.is_control()).collect();
            page.key_error = Some(e.to_string());
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
    }
}

/// `POST /reseller/api-keys/{id}/revoke` (owner only); another reseller's key is a
/// 404.
pub async fn revoke_api_key(
    State(state): State<AppState>,
    user: ResellerUser,
    Path(key_id): Path<String>,
    Form(form): Form<ConfirmForm>,
) -> Result<Response> {
    user.require_owner()?;
    let key_id: ResellerApiKeyId = key_id.parse().map_err(|_| AppError::NotFound)?;
    if !form.confirmed() {
        let key = resellers::api_keys(
            &mut *state.db.acquire().await.map_err(anyhow::Error::from)?,
            user.reseller.reseller_id,
        )
        .await?
        .into_iter()
        .find(|k| k.api_key_id == key_id && k.revoked_at.is_none())
        .ok_or(AppError::NotFound)?;
        return Ok(ConfirmPage {
            page: user.page(),
            title: format!("Revoke the key “{}”?", key.name),
            lines: vec![format!(
                "Calls to the reseller API with {}… will be refused with 401 from now on. A revoked key cannot be restored.",
                key.key_prefix.trim_end_matches('…')
            )],
            action: format!("/reseller/api-keys/{key_id}/revoke"),
            button: "Revoke key".to_owned(),
            back: "/reseller/settings".to_owned(),
            back_label: "Keep the key".to_owned(),
        }
        .into_response());
    }
    if !resellers::revoke_api_key(
        &mut *state.db.acquire().await.map_err(anyhow::Error::from)?,
        user.reseller.reseller_id,
        key_id,
    )
    .await?
    {
        return Err(AppError::NotFound);
    }
    set_flash(
        &user.member.session,
        "API key revoked. Calls with it now get 401.",
    )
    .await;
    Ok(Redirect::to("/reseller/settings").into_response())
}

/// The sharing form's field (a checkbox: present = share).
#[derive(Debug, Deserialize)]
pub struct SharingFields {
    share: Option<String>,
}

/// `POST /settings/reseller-sharing` (customer side, owner or admin): whether the
/// workspace shows its owner's email to the reseller it came through.
pub async fn set_email_sharing(
    State(state): State<AppState>,
    member: AccountMember,
    Form(fields): Form<SharingFields>,
) -> Result<Response> {
    member.require_manager()?;
    let share = fields.share.is_some();
    resellers::set_share_email(
        &mut *state.db.acquire().await.map_err(anyhow::Error::from)?,
        member.workspace.workspace_id,
        share,
    )
    .await?;
    set_flash(
        &member.session,
        if share {
            "Your reseller can now see your email address."
        } else {
            "Your reseller now sees your email address masked."
        },
    )
    .await;
    Ok(Redirect::to("/dashboard").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked() {
        assert!(parse_commission_filter("", "").is_ok());
        let f = parse_commission_filter("approved", "2026-11").unwrap();
        assert_eq!(f.status, Some(CommissionStatus::Approved));
        assert_eq!(
            f.month,
            Date::from_calendar_date(2026, time::Month::November, 1).ok()
        );
        assert!(parse_commission_filter("void", "").is_err());
        assert!(parse_commission_filter("", "2026-13").is_err());
        assert!(parse_commission_filter("", "november").is_err());
    }
}
