//! `POST /webhooks/stripe`: raw body + `Stripe-Signature`, verified before anything is
//! read; a bad signature is 400 and writes nothing. The event is stored and applied in
//! one transaction and 200 is sent only after commit; a failure answers 500 so Stripe
//! retries (https://docs.stripe.com/webhooks#retries).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::stripe::webhooks::{self, VerifyError};
use crate::stripe_events::{self, Processed};

fn reply(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// Receives one Stripe event delivery.
pub async fn receive_stripe_event(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(signature) = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return reply(
            StatusCode::BAD_REQUEST,
            "missing_signature",
            "missing Stripe-Signature header",
        );
    };
    let Ok(payload) = std::str::from_utf8(&body) else {
        return reply(
            StatusCode::BAD_REQUEST,
            "invalid_payload",
            "body is not UTF-8",
        );
    };
    let event = match webhooks::verify(payload, signature, &state.webhook_secret) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "stripe webhook refused");
            let code = match e {
                VerifyError::BadHeader | VerifyError::BadSignature => "invalid_signature",
                VerifyError::Stale => "stale_signature",
                VerifyError::BadPayload(_) => "invalid_payload",
            };
            return reply(StatusCode::BAD_REQUEST, code, &e.to_string());
        }
    };
    let raw: serde_json::Value = match serde_json::from_str(payload) {
        Ok(v) => v,
        Err(_) => {
            return reply(
                StatusCode::BAD_REQUEST,
                "invalid_payload",
                "body is not JSON",
            );
        }
    };
    match stripe_events::record_and_apply(&state.db, &state.stripe, &event, &raw).await {
        Ok(Processed::Applied) => axum::Json(json!({"received": true})).into_response(),
        Ok(Processed::Duplicate) => {
            axum::Json(json!({"received": true, "duplicate": true})).into_response()
        }
        Err(e) => {
            tracing::error!(error = ?e, event_id = %event.id, "stripe event failed; stripe will retry");
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "processing_failed",
                "event not applied; retry later",
            )
        }
    }
}
