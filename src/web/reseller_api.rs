//! The reseller API: what the reseller dashboard shows, for the reseller's own
//! systems. Authenticated with `Authorization: Bearer bfr_…` (a reseller API key made
//! on `/reseller/settings`); errors in the metering API's shape
//! `{"error": {"code", "message"}}`: 401 `invalid_api_key`, 404 `not_found` (another
//! reseller's id, or none), 422 `invalid_request` (a filter or cursor that cannot be
//! read), 503 `unavailable`.
//!
//! - `GET /api/v1/reseller/customers?q=&limit=&after=`
//! - `GET /api/v1/reseller/customers/{id}`
//! - `GET /api/v1/reseller/commissions?status=pending|approved|paid&month=YYYY-MM&customer=&limit=&after=`
//! - `GET /api/v1/reseller/payouts?limit=&after=`
//! - `GET /api/v1/reseller/payouts/{id}` (with its lines)
//!
//! Lists answer `{"data": [...], "next_cursor": "…" | null}`, newest first; pass
//! `next_cursor` as `after` for the next page. `limit`: 1 to 100 (default 25). Money is
//! `*_minor` integers in the currency's minor unit next to `currency` (ISO 4217,
//! lowercase); times are RFC 3339 UTC.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::AppState;
use super::api::{bearer, is_pool_timeout};
use super::api_error::ApiError;
use crate::ids::{PayoutId, ResellerId, WorkspaceId};
use crate::resellers::db::{self as rdb, CommissionRow, Cursor, Customer, Page, PayoutRow};
use crate::resellers::{self};

/// Authenticates the reseller key, then runs `f` for its reseller; maps failures to
/// the API's errors.
async fn with_reseller<F, Fut>(state: &AppState, headers: &HeaderMap, f: F) -> Response
where
    F: FnOnce(ResellerId) -> Fut,
    Fut: std::future::Future<Output = Result<Value, Refusal>>,
{
    let Some(key) = bearer(headers) else {
        return ApiError::unauthorized().into_response();
    };
    let reseller = async {
        let mut conn = state.db.acquire().await?;
        resellers::authenticate_api_key(&mut conn, key).await
    }
    .await;
    let outcome = match reseller {
        Ok(Some(id)) => f(id).await,
        Ok(None) => return ApiError::unauthorized().into_response(),
        Err(e) => Err(Refusal::Failed(e)),
    };
    match outcome {
        Ok(body) => axum::Json(body).into_response(),
        Err(Refusal::NotFound) => ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            "no such object for this reseller",
        )
        .into_response(),
        Err(Refusal::Invalid(message)) => ApiError::invalid(message).into_response(),
        Err(Refusal::Failed(e)) if is_pool_timeout(&e) => {
            ApiError::unavailable("billfold is busy; retry", 1).into_response()
        }
        Err(Refusal::Failed(e)) => ApiError::internal(&e).into_response(),
    }
}

enum Refusal {
    NotFound,
    Invalid(String),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Refusal {
    fn from(e: anyhow::Error) -> Self {
        Refusal::Failed(e)
    }
}

impl From<sqlx::Error> for Refusal {
    fn from(e: sqlx::Error) -> Self {
        Refusal::Failed(e.into())
    }
}

/// Query parameters every list takes, plus the filters of each.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<i64>,
    after: Option<String>,
    q: Option<String>,
    status: Option<String>,
    month: Option<String>,
    customer: Option<String>,
}

fn list_query(raw: Option<&str>) -> Result<ListQuery, Refusal> {
    let raw = raw.unwrap_or_default();
    // NUL and other control characters never reach PostgreSQL (as on every page).
    super::extract::check_urlencoded(raw.as_bytes()).map_err(Refusal::Invalid)?;
    let q: ListQuery = serde_urlencoded::from_str(raw)
        .map_err(|e| Refusal::Invalid(format!("the query string could not be read: {e}")))?;
    if q.limit.is_some_and(|l| !(1..=100).contains(&l)) {
        return Err(Refusal::Invalid("limit must be 1 to 100".into()));
    }
    Ok(q)
}

fn cursor(raw: Option<&str>) -> Result<Option<Cursor>, Refusal> {
    match raw.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(raw) => Cursor::parse(raw).map(Some).ok_or_else(|| {
            Refusal::Invalid("after must be a next_cursor from a previous page".into())
        }),
    }
}

fn rfc3339(t: &OffsetDateTime) -> Value {
    t.format(&Rfc3339).map_or(Value::Null, Value::from)
}

fn list<T>(page: Page<T>, item: impl Fn(&T) -> Value) -> Value {
    json!({
        "data": page.items.iter().map(item).collect::<Vec<_>>(),
        "next_cursor": page.next.map(|c| c.encode()),
    })
}

fn customer_json(c: &Customer) -> Value {
    json!({
        "id": c.workspace_id,
        "name": c.name,
        "plan": c.plan_name,
        "status": c.status_label().to_lowercase().replace(' ', "_"),
        "mrr_minor": c.mrr_minor,
        "currency": c.currency,
        "credits_bought": c.credits_bought,
        "joined_at": rfc3339(&c.joined_at),
        "attributed_via": c.attributed_via,
        "email": c.email,
        "email_shared": c.email_shared,
    })
}

fn commission_json(c: &CommissionRow) -> Value {
    json!({
        "id": c.commission_id,
        "kind": c.kind,
        "customer_id": c.workspace_id,
        "customer_name": c.workspace_name,
        "source": c.source,
        "source_id": c.source_id,
        "payment_net_minor": c.base_minor,
        "rate_bps": c.rate_bps,
        "amount_minor": c.amount_minor,
        "currency": c.currency,
        "status": c.status,
        "earned_at": rfc3339(&c.earned_at),
        "approve_after": rfc3339(&c.approve_after),
        "payout_id": c.payout_id,
        "paid_at": c.paid_at.as_ref().map(rfc3339),
    })
}

fn payout_json(p: &PayoutRow) -> Value {
    json!({
        "id": p.payout_id,
        "amount_minor": p.amount_minor,
        "currency": p.currency,
        "status": p.status,
        "reference": p.reference,
        "lines": p.lines,
        "created_at": rfc3339(&p.created_at),
        "paid_at": p.paid_at.as_ref().map(rfc3339),
    })
}

/// `GET /api/v1/reseller/customers`.
pub async fn list_customers(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let db = state.db.clone();
    with_reseller(&state, &headers, |reseller| async move {
        let q = list_query(uri.query())?;
        let after = cursor(q.after.as_deref())?;
        let search: String = q.q.unwrap_or_default().chars().take(100).collect();
        let mut conn = db.acquire().await?;
        let page =
            rdb::customers(&mut conn, reseller, &search, after, q.limit.unwrap_or(25)).await?;
        Ok(list(page, customer_json))
    })
    .await
}

/// `GET /api/v1/reseller/customers/{id}`.
pub async fn show_customer(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let db = state.db.clone();
    with_reseller(&state, &headers, |reseller| async move {
        let id: WorkspaceId = id.parse().map_err(|_| Refusal::NotFound)?;
        let mut conn = db.acquire().await?;
        let customer = rdb::customer(&mut conn, reseller, id)
            .await?
            .ok_or(Refusal::NotFound)?;
        Ok(json!({"data": customer_json(&customer)}))
    })
    .await
}

/// `GET /api/v1/reseller/commissions`.
pub async fn list_commissions(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let db = state.db.clone();
    with_reseller(&state, &headers, |reseller| async move {
        let q = list_query(uri.query())?;
        let after = cursor(q.after.as_deref())?;
        let mut filter = super::reseller::parse_commission_filter(
            q.status.as_deref().unwrap_or_default(),
            q.month.as_deref().unwrap_or_default(),
        )
        .map_err(Refusal::Invalid)?;
        if let Some(customer) = q.customer.as_deref().filter(|c| !c.is_empty()) {
            filter.workspace_id = Some(
                customer
                    .parse()
                    .map_err(|_| Refusal::Invalid("customer must be a customer id".into()))?,
            );
        }
        let mut conn = db.acquire().await?;
        let page =
            rdb::commissions(&mut conn, reseller, &filter, after, q.limit.unwrap_or(25)).await?;
        Ok(list(page, commission_json))
    })
    .await
}

/// `GET /api/v1/reseller/payouts`.
pub async fn list_payouts(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let db = state.db.clone();
    with_reseller(&state, &headers, |reseller| async move {
        let q = list_query(uri.query())?;
        let after = cursor(q.after.as_deref())?;
        let mut conn = db.acquire().await?;
        let page = rdb::payouts(&mut conn, reseller, after, q.limit.unwrap_or(25)).await?;
        Ok(list(page, payout_json))
    })
    .await
}

/// `GET /api/v1/reseller/payouts/{id}`: the payout and its lines.
pub async fn show_payout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let db = state.db.clone();
    with_reseller(&state, &headers, |reseller| async move {
        let id: PayoutId = id.parse().map_err(|_| Refusal::NotFound)?;
        let mut conn = db.acquire().await?;
        let payout = rdb::payout(&mut conn, reseller, id)
            .await?
            .ok_or(Refusal::NotFound)?;
        let lines = rdb::payout_lines(&mut conn, reseller, id).await?;
        let mut body = payout_json(&payout);
        body["commissions"] = lines.iter().map(commission_json).collect();
        Ok(json!({"data": body}))
    })
    .await
}
