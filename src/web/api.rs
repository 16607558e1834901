//! The metering API for the operator's product. Authenticated with
//! `Authorization: Bearer <api key>`; every error, on every path under `/api/`, is JSON
//! `{"error": {"code", "message", ...}}` with the matching status ([`ApiError`]).
//!
//! - `POST /api/v1/usage` `{"feature": "planner.create_plan", "quantity": 1,
//!   "idempotency_key": "..."}` (or an `Idempotency-Key` header) consumes
//!   `feature cost × quantity` credits atomically: 200 `{"charged", "balance",
//!   "idempotency_key"}`; 402 `insufficient_credits` or `credits_in_debt`; 429
//!   `rate_limited`; 401 `invalid_api_key`; 403 `feature_not_in_plan`; 409
//!   `idempotency_conflict`; 422 `invalid_request`/`unknown_feature`; 503 `unavailable`
//!   or `timeout` (retry with the same idempotency key: it answers the first outcome).
//!   Responses of a plan with a rate limit carry `RateLimit-Limit`,
//!   `RateLimit-Remaining` and `RateLimit-Reset` (seconds), as the IETF draft
//!   "RateLimit header fields for HTTP" describes; a 429 also `Retry-After`.
//! - `GET /api/v1/balance`: 200 `{"balance": {"plan", "purchased", "total", "debt"}}`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::api_error::ApiError;
use crate::api_keys;
use crate::ledger::{
    self, Balance, ConsumeOutcome, Consumption, MAX_IDEMPOTENCY_KEY_LEN, MAX_QUANTITY, Quality,
    RateLimitState,
};

pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A workspace's credits in the API's answers (credits, all ≥ 0).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BalanceBody {
    /// Plan credits left this period.
    pub plan: i64,
    /// Purchased credits left (never expire).
    pub purchased: i64,
    /// `plan + purchased`.
    pub total: i64,
    /// Credits owed after a refund or dispute; while above zero, calls are refused.
    pub debt: i64,
}

impl From<Balance> for BalanceBody {
    fn from(b: Balance) -> Self {
        BalanceBody {
            plan: b.plan,
            purchased: b.purchased,
            total: b.total(),
            debt: b.debt,
        }
    }
}

/// A metering call: what the product used, charged `credit cost × quantity ×
/// quality multiplier` credits.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageRequest {
    /// A feature code of the catalog, `group.operation` (`graph.query`).
    #[schema(example = "graph.query", max_length = 100)]
    feature: String,
    /// Uses in this call, 1 to 1,000,000 (default 1).
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 1_000_000, default = 1)]
    quantity: i64,
    /// The retry key: the same key with the same body answers the first outcome and
    /// charges nothing (also accepted as the `Idempotency-Key` header). 1 to 255
    /// characters, no control characters.
    #[schema(min_length = 1, max_length = 255)]
    idempotency_key: Option<String>,
    /// `standard` (default) or `pro` (twice the feature's cost).
    #[serde(default)]
    quality: Quality,
}

/// A charged (or replayed) call.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Charged {
    /// Credits the call cost.
    pub charged: i64,
    /// The quality it was served at.
    pub quality: Quality,
    /// The balance after it.
    pub balance: BalanceBody,
    /// Its idempotency key (generated when the call had none).
    pub idempotency_key: String,
}

/// `GET /api/v1/balance`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BalanceResponse {
    /// The key's workspace's credits.
    pub balance: BalanceBody,
}

/// Every error: `{"error": {"code", "message", ...}}`; some codes add fields
/// (`required`, `available`, `top_up_url`, `debt`, `retry_after_ms`,
/// `idempotency_key`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorResponse {
    /// The error.
    pub error: ErrorDetail,
}

/// An error's code and message.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable (`insufficient_credits`).
    pub code: String,
    /// For people.
    pub message: String,
}

/// The metering API's OpenAPI 3.1 document, served at `GET /api/v1/openapi.json`.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "billfold metering API",
        description = "Report usage, consuming credits atomically; read the balance. Authenticate with a workspace API key as a bearer token."
    ),
    paths(record_usage, show_balance),
    components(schemas(UsageRequest, Charged, BalanceResponse, BalanceBody, ErrorResponse, ErrorDetail, Quality)),
    modifiers(&BearerKey),
    security(("api_key" = []))
)]
pub struct MeteringApi;

/// The bearer API key security scheme.
struct BearerKey;

impl utoipa::Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A workspace API key (`bf_…`), created under API keys.",
                    ))
                    .build(),
            ),
        );
    }
}

/// `GET /api/v1/openapi.json`: [`MeteringApi`].
pub async fn openapi_document() -> Response {
    axum::Json(<MeteringApi as utoipa::OpenApi>::openapi()).into_response()
}

fn one() -> i64 {
    1
}

/// A feature code as the catalog writes them: `group.operation`, lowercase letters
/// and underscores, at most 100 characters.
fn is_feature_code(s: &str) -> bool {
    s.len() <= 100
        && s.split_once('.').is_some_and(|(group, op)| {
            let ok =
                |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            ok(group) && ok(op)
        })
}

/// An idempotency key: 1 to 255 characters, none of them control characters.
fn check_idempotency_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(ApiError::invalid(format!(
            "the idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "the idempotency key must not contain control characters (such as NUL)",
        ));
    }
    Ok(())
}

/// The request's idempotency key: the body's or the header's (equal if both), or a new
/// one (the call is then not retry-safe; the answer says which key it got).
fn idempotency_key(body_key: Option<String>, headers: &HeaderMap) -> Result<String, ApiError> {
    let header_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::invalid("the Idempotency-Key header must be visible ASCII"))?
                .to_owned(),
        ),
    };
    let key = match (body_key, header_key) {
        (Some(body), Some(h)) if body != h => {
            return Err(ApiError::invalid(
                "the `Idempotency-Key` header and `idempotency_key` differ",
            ));
        }
        (Some(k), _) | (None, Some(k)) => k,
        (None, None) => uuid::Uuid::new_v4().to_string(),
    };
    check_idempotency_key(&key)?;
    Ok(key)
}

/// `RateLimit-*` headers of a call's rate-limit state.
fn rate_headers(rate: Option<RateLimitState>) -> Vec<(HeaderName, HeaderValue)> {
    let Some(rate) = rate else {
        return Vec::new();
    };
    let secs = |ms: i64| ((ms.max(0) + 999) / 1000).to_string();
    [
        ("ratelimit-limit", rate.limit.to_string()),
        ("ratelimit-remaining", rate.remaining.max(0).to_string()),
        ("ratelimit-reset", secs(rate.reset_ms)),
    ]
    .into_iter()
    .filter_map(|(name, value)| {
        Some((
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).ok()?,
        ))
    })
    .collect()
}

fn with_headers(mut res: Response, headers: Vec<(HeaderName, HeaderValue)>) -> Response {
    for (name, value) in headers {
        res.headers_mut().insert(name, value);
    }
    res
}

/// `POST /api/v1/usage`.
#[utoipa::path(
    post,
    path = "/api/v1/usage",
    request_body = UsageRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "The retry key, instead of the body's `idempotency_key` (equal if both)")),
    responses(
        (status = 200, description = "Charged, or the first answer again for a retried key", body = Charged),
        (status = 401, description = "`invalid_api_key`: missing, unknown or revoked key", body = ErrorResponse),
        (status = 402, description = "`insufficient_credits` or `credits_in_debt`: nothing charged", body = ErrorResponse),
        (status = 403, description = "`feature_not_in_plan` or `workspace_suspended`", body = ErrorResponse),
        (status = 409, description = "`idempotency_conflict`: the key was used with another body", body = ErrorResponse),
        (status = 413, description = "`payload_too_large`", body = ErrorResponse),
        (status = 422, description = "`invalid_request` or `unknown_feature`", body = ErrorResponse),
        (status = 429, description = "`rate_limited`: over the plan's calls per minute (`Retry-After`)", body = ErrorResponse),
        (status = 503, description = "`timeout` or `unavailable`: retry with the same idempotency key", body = ErrorResponse),
    )
)]
pub async fn record_usage(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match consume(&state, &headers, &body).await {
        Ok(res) | Err(res) => res,
    }
}

async fn consume(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Response, Response> {
    let key = bearer(headers).ok_or_else(|| ApiError::unauthorized().into_response())?;
    let req: UsageRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(format!(
            "body must be JSON {{\"feature\", \"quantity\", \"idempotency_key\", \"quality\"}}: {e}"
        ))
        .into_response()
    })?;
    let feature = req.feature.trim();
    if !is_feature_code(feature) {
        return Err(ApiError::invalid(
            "`feature` must be a feature code such as \"planner.create_plan\"",
        )
        .into_response());
    }
    if !(1..=MAX_QUANTITY).contains(&req.quantity) {
        return Err(ApiError::invalid(format!(
            "`quantity` must be an integer from 1 to {MAX_QUANTITY}"
        ))
        .into_response());
    }
    let idempotency_key =
        idempotency_key(req.idempotency_key, headers).map_err(IntoResponse::into_response)?;
    let key_hash = api_keys::hash_key(key);
    let consumption = Consumption {
        key_hash: &key_hash,
        feature,
        quantity: req.quantity,
        idempotency_key: &idempotency_key,
        quality: req.quality,
    };
    let retry_same_key = |e: ApiError| {
        e.with("idempotency_key", idempotency_key.clone())
            .into_response()
    };
    let outcome = tokio::time::timeout(state.config.metering_timeout, async {
        let mut conn = state.db.acquire().await?;
        ledger::db::consume(&mut conn, &consumption).await
    })
    .await;
    let outcome = match outcome {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) if is_pool_timeout(&e) => {
            return Err(retry_same_key(ApiError::unavailable(
                "billfold is busy; retry with the same idempotency key",
                1,
            )));
        }
        Ok(Err(e)) => return Err(retry_same_key(ApiError::internal(&e))),
        Err(_) => {
            tracing::warn!("metering call timed out");
            return Err(retry_same_key(
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "timeout",
                    "the call took too long and may or may not have been charged; retry with the same idempotency key to learn its outcome",
                )
                .header(header::RETRY_AFTER, "1"),
            ));
        }
    };
    let rate = rate_headers(outcome.rate());
    let top_up_url = format!("{}/billing/top-up", state.base_url);
    let res = match outcome {
        ConsumeOutcome::Charged { charged, balance, .. } | ConsumeOutcome::Replayed { charged, balance, .. } => (
            StatusCode::OK,
            axum::Json(Charged {
                charged,
                quality: req.quality,
                balance: balance.into(),
                idempotency_key,
            }),
        )
            .into_response(),
        ConsumeOutcome::InsufficientCredits { required, available, .. } => ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_credits",
            format!("this call costs {required} credits and {available} are available"),
        )
        .with("required", required)
        .with("available", available)
        .with("top_up_url", top_up_url)
        .into_response(),
        ConsumeOutcome::InDebt { debt, .. } => ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "credits_in_debt",
            format!(
                "this workspace owes {debt} credits after a refund or dispute; a top-up settles the debt before credits can be used"
            ),
        )
        .with("debt", debt)
        .with("top_up_url", top_up_url)
        .into_response(),
        ConsumeOutcome::RateLimited { rate, retry_after_ms, .. } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "the plan allows {} calls per minute; retry after {} ms",
                rate.limit, retry_after_ms
            ),
        )
        .with("retry_after_ms", retry_after_ms)
        .header(header::RETRY_AFTER, &((retry_after_ms.max(0) + 999) / 1000).to_string())
        .into_response(),
        ConsumeOutcome::UnknownKey => ApiError::unauthorized().into_response(),
        ConsumeOutcome::WorkspaceSuspended { .. } => ApiError::suspended().into_response(),
        ConsumeOutcome::UnknownFeature { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_feature",
            format!("no feature {feature:?}"),
        )
        .into_response(),
        ConsumeOutcome::FeatureNotInPlan { .. } => ApiError::new(
            StatusCode::FORBIDDEN,
            "feature_not_in_plan",
            format!("the workspace's plan does not include {feature:?}; upgrade to use it"),
        )
        .into_response(),
        ConsumeOutcome::IdempotencyConflict => ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_conflict",
            "this idempotency key was used with a different feature or quantity",
        )
        .into_response(),
    };
    Ok(with_headers(res, rate))
}

pub(super) fn is_pool_timeout(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<sqlx::Error>(),
        Some(sqlx::Error::PoolTimedOut)
    )
}

/// `GET /api/v1/balance`.
#[utoipa::path(
    get,
    path = "/api/v1/balance",
    responses(
        (status = 200, description = "The workspace's credits", body = BalanceResponse),
        (status = 401, description = "`invalid_api_key`", body = ErrorResponse),
        (status = 403, description = "`workspace_suspended`", body = ErrorResponse),
        (status = 503, description = "`unavailable`", body = ErrorResponse),
    )
)]
pub async fn show_balance(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(key) = bearer(&headers) else {
        return ApiError::unauthorized().into_response();
    };
    let result = async {
        let mut conn = state.db.acquire().await?;
        match api_keys::db::authenticate_with_status(&mut conn, key).await? {
            Some((ws, false)) => Ok(Some(Ok(ledger::db::balance(&mut conn, ws).await?))),
            Some((_, true)) => Ok(Some(Err(ApiError::suspended()))),
            None => Ok(None),
        }
    }
    .await;
    match result {
        Ok(Some(Ok(b))) => axum::Json(BalanceResponse { balance: b.into() }).into_response(),
        Ok(Some(Err(refused))) => refused.into_response(),
        Ok(None) => ApiError::unauthorized().into_response(),
        Err(e) if is_pool_timeout(&e) => {
            ApiError::unavailable("billfold is busy; retry", 1).into_response()
        }
        Err(e) => ApiError::internal(&e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn feature_codes_are_group_dot_operation() {
        assert!(super::is_feature_code("planner.create_plan"));
        for bad in [
            "planner",
            ".x",
            "x.",
            "Planner.x",
            "a.b.c",
            "a\u{0}.b",
            "a.b ",
            "ä.b",
        ] {
            assert!(!super::is_feature_code(bad), "{bad:?}");
        }
    }
}
