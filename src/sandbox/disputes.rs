//! Disputes. Stripe has no API to open one (test cards do it), so the sandbox offers
//! control functions instead: [`open_dispute`] files a `fraudulent` chargeback of a
//! payment's unrefunded amount (`charge.dispute.created`) and [`close_dispute`] decides
//! it (`charge.dispute.closed`, status `won` or `lost`). Served as the control routes
//! `POST /disputes` and `POST /disputes/{id}/close`. Shape: Stripe's `dispute` object
//! (<https://docs.stripe.com/api/disputes/object>).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};

use super::error::{ApiError, ControlError, SandboxError};
use super::objects::{self, EventRequest};
use super::params::{self, Param};
use super::payments::{self, DISPUTE_FIELD};
use super::{SandboxState, db, events};

const OBJECT_TYPE: &str = "dispute";

/// How a dispute ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisputeOutcome {
    /// The merchant keeps the money (`status: won`).
    Won,
    /// The card holder keeps the money (`status: lost`).
    Lost,
}

impl DisputeOutcome {
    /// `won` or `lost`, as the dispute's `status` and the control routes write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Won => "won",
            Self::Lost => "lost",
        }
    }

    /// Reads `won` or `lost`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "won" => Some(Self::Won),
            "lost" => Some(Self::Lost),
            _ => None,
        }
    }
}

/// A dispute of the sandbox, as the control functions return it.
#[derive(Debug, Clone)]
pub struct Dispute {
    /// `dp_...`
    pub id: String,
    /// The disputed charge (`ch_...`).
    pub charge: String,
    /// The payment intent of the charge (`pi_...`).
    pub payment_intent: Option<String>,
    /// Disputed minor units of `currency`: what was not refunded when it opened.
    pub amount: i64,
    /// Lowercase ISO 4217 code.
    pub currency: String,
    /// `needs_response` while open, then `won` or `lost`.
    pub status: String,
    /// The whole object in Stripe's `dispute` shape, as events carry it.
    pub object: Value,
}

impl Dispute {
    fn read(object: Value) -> Result<Self, SandboxError> {
        let text = |field: &str| {
            object[field]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| SandboxError::Corrupt(format!("dispute {field}")))
        };
        Ok(Self {
            id: text("id")?,
            charge: text("charge")?,
            payment_intent: object["payment_intent"].as_str().map(str::to_owned),
            amount: object["amount"]
                .as_i64()
                .ok_or_else(|| SandboxError::Corrupt("dispute amount".to_owned()))?,
            currency: text("currency")?,
            status: text("status")?,
            object: objects::public_view(object, &[]),
        })
    }
}

/// Opens a `fraudulent` chargeback of a payment, as a card holder's bank does:
/// `payment` is a checkout session (`cs_...`, paid in `payment` mode), a payment
/// intent (`pi_...`) or a charge (`ch_...`). The dispute (`needs_response`, amount =
/// what is not refunded yet) marks the charge `disputed` and emits
/// `charge.dispute.created`; the worker of any running process delivers it at once.
///
/// # Errors
///
/// [`ControlError::NotFound`] for an unknown id; [`ControlError::Conflict`] when the
/// session has no payment, or the charge is already disputed or fully refunded.
pub async fn open_dispute(db: &PgPool, payment: &str) -> Result<Dispute, ControlError> {
    let mut tx = db.begin().await?;
    let mut charge = payments::lock_charge_of(&mut tx, payment).await?;
    let charge_id = charge["id"]
        .as_str()
        .ok_or_else(|| SandboxError::Corrupt("charge id".to_owned()))?
        .to_owned();
    if let Some(existing) = charge[DISPUTE_FIELD].as_str() {
        return Err(ControlError::Conflict(format!(
            "charge {charge_id} is already disputed ({existing})"
        )));
    }
    let amount = payments::unrefunded(&charge)?;
    if amount == 0 {
        return Err(ControlError::Conflict(format!(
            "charge {charge_id} is fully refunded; a refunded card payment cannot be disputed"
        )));
    }
    let id = objects::new_id("dp_", 24);
    let dispute = objects::dispute(&id, db::now(&mut tx).await?, &charge, amount)?;
    db::insert_object(&mut tx, &id, OBJECT_TYPE, &dispute).await?;
    charge["disputed"] = json!(true);
    charge[DISPUTE_FIELD] = json!(id);
    db::update_object(&mut tx, &charge_id, &charge).await?;
    events::emit(
        &mut tx,
        "charge.dispute.created",
        &dispute,
        EventRequest::default(),
    )
    .await?;
    tx.commit().await?;
    Ok(Dispute::read(dispute)?)
}

/// Decides an open dispute: `dispute` is its id (`dp_...`) or the id of the disputed
/// payment (`cs_...`, `pi_...` or `ch_...`). Sets `status` to `won` or `lost` and emits
/// `charge.dispute.closed`.
///
/// # Errors
///
/// [`ControlError::NotFound`] when there is no such dispute or the payment has none;
/// [`ControlError::Conflict`] when it is already closed.
pub async fn close_dispute(
    db: &PgPool,
    dispute: &str,
    outcome: DisputeOutcome,
) -> Result<Dispute, ControlError> {
    let mut tx = db.begin().await?;
    let mut object = lock_dispute(&mut tx, dispute).await?;
    let status = object["status"].as_str().unwrap_or_default();
    if matches!(status, "won" | "lost" | "warning_closed") {
        return Err(ControlError::Conflict(format!(
            "dispute {} is already closed ({status})",
            object["id"].as_str().unwrap_or_default()
        )));
    }
    object["status"] = json!(outcome.as_str());
    let id = object["id"]
        .as_str()
        .ok_or_else(|| SandboxError::Corrupt("dispute id".to_owned()))?
        .to_owned();
    db::update_object(&mut tx, &id, &object).await?;
    events::emit(
        &mut tx,
        "charge.dispute.closed",
        &object,
        EventRequest::default(),
    )
    .await?;
    tx.commit().await?;
    Ok(Dispute::read(object)?)
}

/// The dispute `id` names (a dispute, or a payment with one), locked.
async fn lock_dispute(conn: &mut PgConnection, id: &str) -> Result<Value, ControlError> {
    let dispute_id = if id.starts_with("dp_") {
        id.to_owned()
    } else {
        let charge = payments::lock_charge_of(conn, id).await?;
        charge[DISPUTE_FIELD]
            .as_str()
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "charge {} has no dispute",
                    charge["id"].as_str().unwrap_or_default()
                ))
            })?
            .to_owned()
    };
    db::lock_object(conn, OBJECT_TYPE, &dispute_id)
        .await?
        .ok_or_else(|| ControlError::NotFound(format!("no dispute has id {dispute_id}")))
}

/// A control request's fields: a JSON object, or a form (whose other fields, such as
/// the app's `csrf_token`, are ignored).
fn read_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !is_json {
        return Ok(params::parse(body));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(ControlError::Invalid("the body must be a JSON object".to_owned()).into()),
    }
}

/// `POST /disputes` with `payment` (a `cs_`, `pi_` or `ch_` id), as a form or JSON:
/// 200 with the dispute in Stripe's shape.
pub(crate) async fn open_dispute_route(
    State(state): State<SandboxState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = read_body(&headers, &body)?;
    let payment = Param::root(&body).get("payment");
    let payment = payment.string().ok().flatten().ok_or_else(|| {
        ControlError::Invalid("payment (a cs_, pi_ or ch_ id) is required".to_owned())
    })?;
    let dispute = open_dispute(&state.db, payment).await?;
    state.new_event.notify_one();
    Ok(Json(dispute.object))
}

/// `POST /disputes/{id}/close` with `outcome=won|lost` (form or JSON); `id` is the
/// dispute's or the payment's. 200 with the dispute.
pub(crate) async fn close_dispute_route(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = read_body(&headers, &body)?;
    let outcome = Param::root(&body)
        .get("outcome")
        .string()
        .ok()
        .flatten()
        .and_then(DisputeOutcome::parse)
        .ok_or_else(|| ControlError::Invalid("outcome must be won or lost".to_owned()))?;
    let dispute = close_dispute(&state.db, &id, outcome).await?;
    state.new_event.notify_one();
    Ok(Json(dispute.object))
}
