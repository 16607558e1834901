//! The sandbox clock: `advance` moves sandbox time forward and runs, in time order,
//! every subscription lifecycle step that falls due (renewals, failed payments,
//! cancellations at period end). Served as `POST /clock/advance` and the page
//! `GET /clock`, and called by `billfold sandbox advance --days N`.

use askama::Template;
use askama_web::WebTemplate;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};
use sqlx::PgPool;
use time::OffsetDateTime;

use super::error::SandboxError;
use super::params::{self, Param};
use super::{ControlCsrfToken, MOUNT_PATH, SandboxConfig, SandboxState, billing, db};

/// The most a single advance may move the clock (ten years).
const MAX_DAYS: i64 = 3650;

/// Moves the sandbox clock `days` forward and runs what falls due, one step per
/// transaction, earliest first; returns the new sandbox time (Unix seconds). The
/// events it emits are delivered by the webhook worker of the running app (at once
/// when called through the route, within seconds otherwise).
pub async fn advance(db: &PgPool, config: &SandboxConfig, days: i64) -> Result<i64, SandboxError> {
    if !(0..=MAX_DAYS).contains(&days) {
        return Err(SandboxError::Unexpected("days must be between 0 and 3650"));
    }
    let target = db::now(&mut *db.acquire().await?).await? + days * 86_400;
    loop {
        let mut tx = db.begin().await?;
        let Some(subscription) = db::lock_next_due_subscription(&mut tx, target).await? else {
            db::set_now(&mut tx, target).await?;
            tx.commit().await?;
            return Ok(target);
        };
        let due = billing::item(&subscription)["current_period_end"]
            .as_i64()
            .ok_or_else(|| SandboxError::Corrupt("subscription period".to_owned()))?;
        db::set_now(&mut tx, due).await?;
        billing::end_period(&mut tx, &config.public_base_url, subscription).await?;
        tx.commit().await?;
    }
}

/// `POST /clock/advance` with `days` as a form field or JSON. A form (the clock page)
/// is redirected back to the page; JSON gets `{"now": <unix seconds>}`.
pub(crate) async fn advance_clock(
    State(state): State<SandboxState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SandboxError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let days = if is_json {
        serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|body| body["days"].as_i64())
    } else {
        let form = params::parse(&body);
        Param::root(&form).get("days").integer().ok().flatten()
    };
    let Some(days) = days.filter(|days| (0..=MAX_DAYS).contains(days)) else {
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            "days must be a whole number from 0 to 3650",
        )
            .into_response());
    };
    let now = advance(&state.db, &state.config, days).await?;
    state.new_event.notify_one();
    if is_json {
        Ok(Json(json!({ "now": now })).into_response())
    } else {
        Ok(Redirect::to(&format!("{MOUNT_PATH}/clock")).into_response())
    }
}

/// The clock page.
#[derive(Template, WebTemplate)]
#[template(path = "sandbox/clock.html")]
struct ClockPage {
    now: String,
    offset_days: i64,
    advance_action: String,
    /// The app's CSRF token for a staff member's session, sent back with the form.
    csrf_token: Option<String>,
}

/// A Unix time as "2026-11-22 10:00 UTC".
pub(crate) fn format_time(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|at| {
            at.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_default()
}

pub(crate) async fn clock_page(
    State(state): State<SandboxState>,
    csrf: Option<Extension<ControlCsrfToken>>,
) -> Result<Response, SandboxError> {
    let mut conn = state.db.acquire().await?;
    let now = db::now(&mut conn).await?;
    let offset = db::clock_offset(&mut conn).await?;
    Ok(ClockPage {
        now: format_time(now),
        // Rounded: `advance` reads the clock in one transaction and sets it in the
        // next, so a second may pass in between and the offset fall a second short.
        offset_days: (offset + 43_200) / 86_400,
        advance_action: format!("{MOUNT_PATH}/clock/advance"),
        csrf_token: csrf.map(|Extension(ControlCsrfToken(token))| token),
    }
    .into_response())
}
