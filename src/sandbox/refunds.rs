//! Refunds: `POST /v1/refunds` (of a `charge` or a `payment_intent`, all of what is
//! left or a partial `amount`) and `GET /v1/refunds/{id}`, as Stripe serves them
//! (<https://docs.stripe.com/api/refunds/create>). A refund succeeds at once, raises
//! the charge's cumulative `amount_refunded` (`refunded` once nothing is left) and
//! emits `refund.created` and `charge.refunded`. The charge row is locked for the
//! whole operation, so concurrent refunds never exceed the charge.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde_json::{Value, json};

use super::error::{ApiError, ErrorType, SandboxError};
use super::middleware::RequestId;
use super::objects::{self, NewRefund, RefundReason};
use super::params::{self, Param};
use super::payments::{self, CHARGE, DISPUTE_FIELD, PAYMENT_INTENT};
use super::{SandboxState, db, events};
use crate::money::Money;

const OBJECT_TYPE: &str = "refund";

/// How many refunds a charge's expandable `refunds` list shows (Stripe's default
/// page size).
const LISTED_REFUNDS: usize = 10;

/// What `POST /v1/refunds` refunds.
enum Target<'a> {
    Charge(&'a str),
    PaymentIntent(&'a str),
}

pub(crate) async fn create_refund(
    State(state): State<SandboxState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let form = params::parse(&body);
    let form = Param::root(&form);
    form.reject_unknown(
        &[
            "charge",
            "payment_intent",
            "amount",
            "reason",
            "metadata",
            "expand",
        ],
        &[
            "currency",
            "customer",
            "instructions_email",
            "origin",
            "refund_application_fee",
            "reverse_transfer",
        ],
    )?;
    form.reject_expand()?;
    let target = match (
        form.get("charge").string()?,
        form.get("payment_intent").string()?,
    ) {
        (Some(charge), None) => Target::Charge(charge),
        (None, Some(intent)) => Target::PaymentIntent(intent),
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                Some("parameters_exclusive"),
                "payment_intent",
                "You may only specify one of these parameters: charge, payment_intent.".to_owned(),
            ));
        }
        (None, None) => {
            return Err(ApiError::refused(
                StatusCode::BAD_REQUEST,
                ErrorType::InvalidRequest,
                Some("parameter_missing"),
                "One of the following params should be provided for this request: charge or \
                 payment_intent."
                    .to_owned(),
            ));
        }
    };
    let amount_param = form.get("amount");
    let amount = amount_param.integer()?;
    if amount.is_some_and(|amount| amount < 1) {
        return Err(ApiError::invalid(
            Some("parameter_invalid_integer"),
            amount_param.name(),
            "This value must be greater than or equal to 1.".to_owned(),
        ));
    }
    let reason_param = form.get("reason");
    let reason = reason_param
        .string()?
        .map(|text| {
            RefundReason::parse(text).ok_or_else(|| {
                ApiError::invalid(
                    None,
                    reason_param.name(),
                    format!(
                        "Invalid reason: must be one of duplicate, fraudulent, or \
                         requested_by_customer, not {text}"
                    ),
                )
            })
        })
        .transpose()?;
    let metadata = form.get("metadata").metadata()?;

    let mut tx = state.db.begin().await?;
    let charge_id = match target {
        Target::Charge(id) => id.to_owned(),
        Target::PaymentIntent(id) => {
            let intent = db::find_object(&mut tx, PAYMENT_INTENT, id)
                .await?
                .ok_or_else(|| ApiError::no_such_param("payment_intent", "payment_intent", id))?;
            intent["latest_charge"]
                .as_str()
                .ok_or_else(|| {
                    ApiError::invalid(
                        Some("charge_not_refundable"),
                        "payment_intent",
                        format!(
                            "This PaymentIntent ({id}) does not have a successful charge to \
                             refund."
                        ),
                    )
                })?
                .to_owned()
        }
    };
    let param = match target {
        Target::Charge(_) => "charge",
        Target::PaymentIntent(_) => "payment_intent",
    };
    let mut charge = db::lock_object(&mut tx, CHARGE, &charge_id)
        .await?
        .ok_or_else(|| ApiError::no_such_param("charge", param, &charge_id))?;
    refuse_if_charged_back(&mut tx, &charge, param).await?;
    let left = payments::unrefunded(&charge)?;
    if left == 0 {
        return Err(ApiError::invalid(
            Some("charge_already_refunded"),
            param,
            format!("Charge {charge_id} has already been refunded."),
        ));
    }
    let amount = amount.unwrap_or(left);
    if amount > left {
        let currency = charge["currency"].as_str().unwrap_or_default();
        return Err(ApiError::invalid(
            Some("amount_too_large"),
            amount_param.name(),
            format!(
                "Refund amount ({}) is greater than unrefunded amount on charge ({})",
                Money::new(amount, currency),
                Money::new(left, currency)
            ),
        ));
    }

    let id = objects::new_id("re_", 24);
    let now = db::now(&mut tx).await?;
    let refund = objects::refund(
        &id,
        now,
        &charge,
        NewRefund {
            amount,
            reason,
            metadata,
        },
    )?;
    db::insert_object(&mut tx, &id, OBJECT_TYPE, &refund).await?;
    record_on_charge(&mut charge, &refund, amount)?;
    db::update_object(&mut tx, &charge_id, &charge).await?;
    let request = events::api_request(request_id, &headers);
    events::emit(&mut tx, "refund.created", &refund, request.clone()).await?;
    events::emit(&mut tx, "charge.refunded", &charge, request).await?;
    tx.commit().await?;
    state.new_event.notify_one();
    Ok(Json(objects::public_view(refund, &[])))
}

/// Stripe refuses to refund a charge whose chargeback is open or lost
/// (`is_charge_refundable: false`); once the dispute is won it may be refunded.
async fn refuse_if_charged_back(
    conn: &mut sqlx::PgConnection,
    charge: &Value,
    param: &str,
) -> Result<(), ApiError> {
    let Some(dispute_id) = charge[DISPUTE_FIELD].as_str() else {
        return Ok(());
    };
    let dispute = db::find_object(conn, "dispute", dispute_id)
        .await?
        .ok_or_else(|| SandboxError::Corrupt(format!("dispute {dispute_id} of a charge")))?;
    if dispute["status"] == "won" {
        return Ok(());
    }
    Err(ApiError::invalid(
        Some("charge_disputed"),
        param,
        format!(
            "Charge {} has been charged back; cannot issue a refund.",
            charge["id"].as_str().unwrap_or_default()
        ),
    ))
}

/// Adds `amount` to the charge's cumulative `amount_refunded`, marks it `refunded`
/// when nothing is left, and lists the refund first in its `refunds`.
fn record_on_charge(charge: &mut Value, refund: &Value, amount: i64) -> Result<(), SandboxError> {
    let refunded = charge["amount_refunded"]
        .as_i64()
        .and_then(|refunded| refunded.checked_add(amount))
        .ok_or_else(|| SandboxError::Corrupt("charge amount_refunded".to_owned()))?;
    charge["amount_refunded"] = json!(refunded);
    charge["refunded"] = json!(Some(refunded) == charge["amount"].as_i64());
    let list = &mut charge["refunds"];
    let Some(data) = list["data"].as_array_mut() else {
        return Err(SandboxError::Corrupt("charge refunds".to_owned()));
    };
    data.insert(0, objects::public_view(refund.clone(), &[]));
    let has_more = data.len() > LISTED_REFUNDS;
    data.truncate(LISTED_REFUNDS);
    if has_more {
        list["has_more"] = json!(true);
    }
    Ok(())
}

/// `GET /v1/refunds/{id}`.
pub(crate) async fn retrieve_refund(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut conn = state.db.acquire().await?;
    db::find_object(&mut conn, OBJECT_TYPE, &id)
        .await?
        .map(|refund| Json(objects::public_view(refund, &[])))
        .ok_or_else(|| ApiError::no_such("refund", &id))
}
