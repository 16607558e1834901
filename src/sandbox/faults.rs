//! Faults injected into the sandbox's Stripe API for tests (table `sandbox_faults`):
//! a `/v1` request whose method and path match a fault first waits `delay_ms`
//! (holding no database connection), then goes on, or gets the error Stripe sends
//! with the fault's HTTP status (500 `api_error`, 429 `rate_limit_error`, 402
//! `card_error`, ...). A fault applies `count` times, then disappears, or until
//! cleared.
//!
//! Set through [`set_fault`] and [`clear_faults`], or the control routes
//! `GET|POST|DELETE /faults` and `DELETE /faults/{id}`.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::error::{ApiError, ControlError};
use super::{SandboxState, db};

/// The longest delay a fault may add (one minute).
const MAX_DELAY_MS: u32 = 60_000;

/// A fault to inject into the sandbox's Stripe API (`POST /faults` takes it as JSON).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Only requests with this method (`GET`, `POST` or `DELETE`, any case); `None`
    /// matches every method.
    pub method: Option<String>,
    /// A path prefix under the sandbox's mount, in whole segments: `/v1/subscriptions`
    /// matches `/v1/subscriptions` and `/v1/subscriptions/sub_1`, not
    /// `/v1/subscriptions_x`. Must be `/v1` or start with `/v1/`.
    pub path: String,
    /// Milliseconds to wait before answering, 0 to 60,000.
    #[serde(default)]
    pub delay_ms: u32,
    /// The HTTP status (400 to 599) of the error to answer after the delay; `None`
    /// lets the request go on.
    pub status: Option<u16>,
    /// How many matching requests it applies to, then it disappears; `None` until
    /// cleared.
    pub count: Option<u32>,
}

/// A fault in force, as [`set_fault`] and `GET /faults` return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActiveFault {
    /// Its id, for `DELETE /faults/{id}`.
    pub id: i64,
    /// `GET`, `POST` or `DELETE`; `None` matches every method.
    pub method: Option<String>,
    /// The path prefix it matches (see [`Fault::path`]).
    pub path: String,
    /// Milliseconds it waits.
    pub delay_ms: u32,
    /// The HTTP status it answers with; `None` lets the request go on.
    pub status: Option<u16>,
    /// How many more requests it applies to; `None` until cleared.
    pub remaining: Option<u32>,
    /// When it was set, Unix seconds (real time).
    pub created: i64,
}

impl From<db::FaultRow> for ActiveFault {
    fn from(row: db::FaultRow) -> Self {
        Self {
            id: row.fault_id,
            method: row.method,
            path: row.path_prefix,
            delay_ms: u32::try_from(row.delay_ms).unwrap_or(0),
            status: row.status.and_then(|status| u16::try_from(status).ok()),
            remaining: row.remaining.and_then(|n| u32::try_from(n).ok()),
            created: row.created,
        }
    }
}

/// Injects `fault` until it is used up or cleared.
///
/// # Errors
///
/// [`ControlError::Invalid`] when the method is not `GET`, `POST` or `DELETE`, the
/// path is not under `/v1`, the delay is over 60 s, the status is not 400 to 599,
/// `count` is 0, or the fault would neither wait nor fail.
pub async fn set_fault(db: &PgPool, fault: &Fault) -> Result<ActiveFault, ControlError> {
    let method = fault
        .method
        .as_deref()
        .map(|method| {
            let method = method.to_ascii_uppercase();
            match method.as_str() {
                "GET" | "POST" | "DELETE" => Ok(method),
                _ => Err(ControlError::Invalid(format!(
                    "method must be GET, POST or DELETE, not {method}"
                ))),
            }
        })
        .transpose()?;
    let path = fault.path.trim_end_matches('/');
    let path_ok = (path == "/v1" || path.starts_with("/v1/"))
        && !path.contains("//")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_-.".contains(&b));
    if !path_ok {
        return Err(ControlError::Invalid(format!(
            "path must be /v1 or a path under /v1/ such as /v1/subscriptions, not {:?}",
            fault.path
        )));
    }
    if fault.delay_ms > MAX_DELAY_MS {
        return Err(ControlError::Invalid(format!(
            "delay_ms must be from 0 to {MAX_DELAY_MS}"
        )));
    }
    if let Some(status) = fault.status
        && !(400..=599).contains(&status)
    {
        return Err(ControlError::Invalid(format!(
            "status must be an error status from 400 to 599, not {status}"
        )));
    }
    if fault.count == Some(0) {
        return Err(ControlError::Invalid(
            "count must be at least 1 (leave it out for a fault that lasts until cleared)"
                .to_owned(),
        ));
    }
    if fault.delay_ms == 0 && fault.status.is_none() {
        return Err(ControlError::Invalid(
            "a fault needs a delay_ms, a status or both".to_owned(),
        ));
    }
    let row = db::insert_fault(
        &mut *db.acquire().await?,
        &db::NewFault {
            method: method.as_deref(),
            path_prefix: path,
            delay_ms: i32::try_from(fault.delay_ms).unwrap_or(i32::MAX),
            status: fault.status.map(i32::from),
            remaining: fault
                .count
                .map(|count| i32::try_from(count).unwrap_or(i32::MAX)),
        },
    )
    .await?;
    Ok(row.into())
}

/// Every fault in force, oldest first.
///
/// # Errors
///
/// [`ControlError::Sandbox`] when the database fails.
pub async fn list_faults(db: &PgPool) -> Result<Vec<ActiveFault>, ControlError> {
    let rows = db::list_faults(&mut *db.acquire().await?).await?;
    Ok(rows.into_iter().map(ActiveFault::from).collect())
}

/// Clears every fault; returns how many there were.
///
/// # Errors
///
/// [`ControlError::Sandbox`] when the database fails.
pub async fn clear_faults(db: &PgPool) -> Result<u64, ControlError> {
    Ok(db::delete_faults(&mut *db.acquire().await?).await?)
}

/// Clears one fault.
///
/// # Errors
///
/// [`ControlError::NotFound`] when no fault has this id.
pub async fn clear_fault(db: &PgPool, id: i64) -> Result<(), ControlError> {
    if db::delete_fault(&mut *db.acquire().await?, id).await? {
        Ok(())
    } else {
        Err(ControlError::NotFound(format!("no fault has id {id}")))
    }
}

/// The middleware of the `/v1` API (nested at `/v1`, so the request's path lacks
/// that prefix): applies the matching fault, if any. The fault is taken in a short
/// statement whose connection goes back to the pool before the delay.
pub(crate) async fn inject_faults(
    State(state): State<SandboxState>,
    request: Request,
    next: Next,
) -> Response {
    let path = format!("/v1{}", request.uri().path());
    let taken = match state.db.acquire().await {
        Ok(mut conn) => db::take_fault(&mut conn, request.method().as_str(), &path).await,
        Err(error) => Err(error),
    };
    let hit = match taken {
        Ok(hit) => hit,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let Some(hit) = hit else {
        return next.run(request).await;
    };
    let delay = u64::try_from(hit.delay_ms).unwrap_or(0);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    match hit
        .status
        .and_then(|status| u16::try_from(status).ok())
        .and_then(|status| StatusCode::from_u16(status).ok())
    {
        Some(status) => ApiError::injected(status).into_response(),
        None => next.run(request).await,
    }
}

/// `GET /faults`: a JSON array of [`ActiveFault`]s.
pub(crate) async fn list_faults_route(
    State(state): State<SandboxState>,
) -> Result<Json<Vec<ActiveFault>>, ApiError> {
    Ok(Json(list_faults(&state.db).await?))
}

/// `POST /faults` with a JSON [`Fault`]: 201 with the [`ActiveFault`].
pub(crate) async fn set_fault_route(
    State(state): State<SandboxState>,
    body: Bytes,
) -> Result<(StatusCode, Json<ActiveFault>), ApiError> {
    let fault: Fault = serde_json::from_slice(&body)
        .map_err(|error| ControlError::Invalid(format!("not a fault: {error}")))?;
    Ok((
        StatusCode::CREATED,
        Json(set_fault(&state.db, &fault).await?),
    ))
}

/// `DELETE /faults`: clears every fault; 204.
pub(crate) async fn clear_faults_route(
    State(state): State<SandboxState>,
) -> Result<StatusCode, ApiError> {
    clear_faults(&state.db).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /faults/{id}`: 204, or 404 when there is no such fault.
pub(crate) async fn clear_fault_route(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = id
        .parse::<i64>()
        .map_err(|_| ControlError::NotFound(format!("no fault has id {id}")))?;
    clear_fault(&state.db, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
