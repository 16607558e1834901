//! `POST /webhooks/stripe`: the inbox's door. Raw body + `Stripe-Signature`, verified
//! before anything is read; a bad signature is 400 and writes nothing. A verified
//! event is stored by id and its application queued in one short transaction, and 200
//! is sent once that commits: the event is applied afterwards by a job
//! ([`crate::stripe_events`]), so a slow Stripe or a busy database cannot make
//! deliveries time out (<https://docs.stripe.com/webhooks#acknowledge-events-immediately>).
//! A failure to store answers 5xx so Stripe retries.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::api_error::ApiError;
use crate::stripe::webhooks::{self, VerifyError};
use crate::stripe_events::{self, Received};

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
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_signature",
            "missing Stripe-Signature header",
        )
        .into_response();
    };
    let Ok(payload) = std::str::from_utf8(&body) else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_payload",
            "body is not UTF-8",
        )
        .into_response();
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
            return ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string()).into_response();
        }
    };
    let raw: serde_json::Value = match serde_json::from_str(payload) {
        Ok(v) => v,
        Err(_) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_payload",
                "body is not JSON",
            )
            .into_response();
        }
    };
    match store(&state, &event, &raw).await {
        Ok(Received::Stored) => axum::Json(json!({"received": true})).into_response(),
        Ok(Received::Duplicate) => {
            axum::Json(json!({"received": true, "duplicate": true})).into_response()
        }
        Err(e) => {
            tracing::error!(error = ?e, event_id = %event.id, "stripe event not stored; stripe will retry");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "processing_failed",
                "event not stored; retry later",
            )
            .into_response()
        }
    }
}

async fn store(
    state: &AppState,
    event: &webhooks::EventEnvelope,
    raw: &serde_json::Value,
) -> anyhow::Result<Received> {
    let mut tx = state.db.begin().await?;
    let received = stripe_events::receive(&mut tx, event, raw).await?;
    tx.commit().await?;
    Ok(received)
}
