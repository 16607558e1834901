//! The metering API for the operator's product. Authenticated with
//! `Authorization: Bearer <api key>`; every error is JSON
//! `{"error": {"code", "message", ...}}` with the matching status.
//!
//! - `POST /api/v1/usage` `{"feature": "planner.create_plan", "quantity": 1,
//!   "idempotency_key": "..."}` (or an `Idempotency-Key` header) consumes
//!   `feature cost × quantity` credits atomically: 200 `{"charged", "balance"}`;
//!   402 `insufficient_credits`; 401 `invalid_api_key`; 403 `feature_not_in_plan`;
//!   409 `idempotency_conflict`; 422 `invalid_request`/`unknown_feature`.
//! - `GET /api/v1/balance`: 200 `{"balance": {"plan", "purchased", "total"}}`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use crate::api_keys;
use crate::ledger::{
    self, Balance, ConsumeOutcome, Consumption, MAX_IDEMPOTENCY_KEY_LEN, MAX_QUANTITY,
};

/// A JSON error answer.
fn error(status: StatusCode, code: &str, message: impl Into<String>, extra: Value) -> Response {
    let mut body = json!({"code": code, "message": message.into()});
    if let (Some(obj), Value::Object(extra)) = (body.as_object_mut(), extra) {
        obj.extend(extra);
    }
    (status, axum::Json(json!({ "error": body }))).into_response()
}

fn unauthorized() -> Response {
    let mut res = error(
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
        "send a valid API key as `Authorization: Bearer <key>`",
        Value::Null,
    );
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    res
}

fn invalid(message: impl Into<String>) -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        message,
        Value::Null,
    )
}

fn internal(e: anyhow::Error) -> Response {
    tracing::error!(error = ?e, "metering api failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "an internal error occurred; retry with the same idempotency key",
        Value::Null,
    )
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn balance_json(b: Balance) -> Value {
    json!({"plan": b.plan, "purchased": b.purchased, "total": b.total()})
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageRequest {
    feature: String,
    #[serde(default = "one")]
    quantity: i64,
    idempotency_key: Option<String>,
}

fn one() -> i64 {
    1
}

/// `POST /api/v1/usage`.
pub async fn record_usage(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(key) = bearer(&headers) else {
        return unauthorized();
    };
    let req: UsageRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return invalid(format!(
                "body must be JSON {{\"feature\", \"quantity\", \"idempotency_key\"}}: {e}"
            ));
        }
    };
    let feature = req.feature.trim();
    if feature.is_empty() || feature.len() > 100 {
        return invalid("`feature` must be a feature code such as \"planner.create_plan\"");
    }
    if !(1..=MAX_QUANTITY).contains(&req.quantity) {
        return invalid(format!(
            "`quantity` must be an integer from 1 to {MAX_QUANTITY}"
        ));
    }
    let header_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let idempotency_key = match (req.idempotency_key, header_key) {
        (Some(body_key), Some(h)) if body_key != h => {
            return invalid("the `Idempotency-Key` header and `idempotency_key` differ");
        }
        (Some(k), _) | (None, Some(k)) => k,
        // No key: the call is not retry-safe; give it a unique one.
        (None, None) => uuid::Uuid::new_v4().to_string(),
    };
    if idempotency_key.is_empty() || idempotency_key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return invalid(format!(
            "idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"
        ));
    }
    let key_hash = api_keys::hash_key(key);
    let consumption = Consumption {
        key_hash: &key_hash,
        feature,
        quantity: req.quantity,
        idempotency_key: &idempotency_key,
    };
    match ledger::consume(&state.db, &consumption).await {
        Ok(
            ConsumeOutcome::Charged {
                charged, balance, ..
            }
            | ConsumeOutcome::Replayed {
                charged, balance, ..
            },
        ) => (
            StatusCode::OK,
            axum::Json(json!({"charged": charged, "balance": balance_json(balance)})),
        )
            .into_response(),
        Ok(ConsumeOutcome::InsufficientCredits {
            required,
            available,
            ..
        }) => error(
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_credits",
            format!("this call costs {required} credits and {available} are available"),
            json!({"required": required, "available": available, "top_up_url": format!("{}/billing/top-up", state.base_url)}),
        ),
        Ok(ConsumeOutcome::UnknownKey) => unauthorized(),
        Ok(ConsumeOutcome::UnknownFeature) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_feature",
            format!("no feature {feature:?}"),
            Value::Null,
        ),
        Ok(ConsumeOutcome::FeatureNotInPlan) => error(
            StatusCode::FORBIDDEN,
            "feature_not_in_plan",
            format!("the workspace's plan does not include {feature:?}; upgrade to use it"),
            Value::Null,
        ),
        Ok(ConsumeOutcome::IdempotencyConflict) => error(
            StatusCode::CONFLICT,
            "idempotency_conflict",
            "this idempotency key was used with a different feature or quantity",
            Value::Null,
        ),
        Err(e) => internal(e),
    }
}

/// `GET /api/v1/balance`.
pub async fn show_balance(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(key) = bearer(&headers) else {
        return unauthorized();
    };
    let workspace_id = match api_keys::authenticate(&state.db, key).await {
        Ok(Some((workspace_id, _))) => workspace_id,
        Ok(None) => return unauthorized(),
        Err(e) => return internal(e),
    };
    match ledger::balance(&state.db, workspace_id).await {
        Ok(b) => axum::Json(json!({"balance": balance_json(b)})).into_response(),
        Err(e) => internal(e),
    }
}
