//! Payment intents and charges: the card payment a paid `payment`-mode checkout
//! session makes ([`record_checkout_payment`]), `GET /v1/payment_intents/{id}` and
//! `GET /v1/charges/{id}` (`expand[]=refunds` lists the charge's refunds), and the
//! lookup disputes and the CLI share: a checkout session, payment intent or charge id
//! to the payment behind it ([`find_payment`]).
//!
//! Shapes: Stripe's `payment_intent` and `charge` objects
//! (<https://docs.stripe.com/api/payment_intents/object>,
//! <https://docs.stripe.com/api/charges/object>), built in `objects`.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use super::error::{ApiError, ControlError, SandboxError};
use super::objects::{self, NewPayment};
use super::params::{self, Param};
use super::{SandboxState, db};

pub(crate) const PAYMENT_INTENT: &str = "payment_intent";
pub(crate) const CHARGE: &str = "charge";
const CHECKOUT_SESSION: &str = "checkout.session";

/// The charge field naming its dispute (`dp_...`), if any; never shown.
pub(crate) const DISPUTE_FIELD: &str = "_sandbox_dispute";

/// Stores the succeeded payment intent and card charge that pay `session` (an open
/// `payment`-mode checkout session, not yet updated) in the caller's transaction;
/// returns the payment intent's id for the session's `payment_intent`. Like Checkout
/// with an endpoint subscribed to billfold's events only, it emits no
/// `payment_intent.*` or `charge.succeeded` events.
pub(crate) async fn record_checkout_payment(
    conn: &mut PgConnection,
    session: &Value,
    email: Option<String>,
) -> Result<String, SandboxError> {
    let payment = NewPayment {
        payment_intent: objects::new_id("pi_", 24),
        charge: objects::new_id("ch_", 24),
        amount: session["amount_total"]
            .as_i64()
            .ok_or_else(|| SandboxError::Corrupt("checkout session amount_total".to_owned()))?,
        currency: session["currency"]
            .as_str()
            .ok_or_else(|| SandboxError::Corrupt("checkout session currency".to_owned()))?
            .to_owned(),
        customer: session["customer"].as_str().map(str::to_owned),
        email,
        payment_method: objects::new_id("pm_", 24),
    };
    let now = db::now(conn).await?;
    let intent = objects::payment_intent(now, &payment)?;
    let charge = objects::charge(now, &payment)?;
    db::insert_object(conn, &payment.payment_intent, PAYMENT_INTENT, &intent).await?;
    db::insert_object(conn, &payment.charge, CHARGE, &charge).await?;
    Ok(payment.payment_intent)
}

/// Stores the succeeded payment intent and charge that pay `invoice` (just paid, with
/// its `amount_paid`) and returns the `invoice_payment` object linking them, for the
/// caller to emit as `invoice_payment.paid` (<https://docs.stripe.com/api/invoice-payment/object>).
/// Its refunds and disputes then work as a top-up's do. `None` for an invoice that paid
/// nothing (no payment was made).
pub(crate) async fn record_invoice_payment(
    conn: &mut PgConnection,
    invoice: &Value,
) -> Result<Option<Value>, SandboxError> {
    let amount = invoice["amount_paid"].as_i64().unwrap_or(0);
    if amount <= 0 {
        return Ok(None);
    }
    let corrupt = |what: &str| SandboxError::Corrupt(format!("invoice {what}"));
    let invoice_id = invoice["id"].as_str().ok_or_else(|| corrupt("id"))?;
    let currency = invoice["currency"]
        .as_str()
        .ok_or_else(|| corrupt("currency"))?;
    let payment = NewPayment {
        payment_intent: objects::new_id("pi_", 24),
        charge: objects::new_id("ch_", 24),
        amount,
        currency: currency.to_owned(),
        customer: invoice["customer"].as_str().map(str::to_owned),
        email: invoice["customer_email"].as_str().map(str::to_owned),
        payment_method: objects::new_id("pm_", 24),
    };
    let now = db::now(conn).await?;
    let intent = objects::payment_intent(now, &payment)?;
    let charge = objects::charge(now, &payment)?;
    db::insert_object(conn, &payment.payment_intent, PAYMENT_INTENT, &intent).await?;
    db::insert_object(conn, &payment.charge, CHARGE, &charge).await?;
    Ok(Some(serde_json::json!({
        "id": objects::new_id("inpay_", 24),
        "object": "invoice_payment",
        "amount_paid": amount,
        "amount_requested": amount,
        "created": now,
        "currency": currency,
        "invoice": invoice_id,
        "is_default": true,
        "livemode": false,
        "payment": {"type": "payment_intent", "payment_intent": payment.payment_intent},
        "status": "paid",
        "status_transitions": {"canceled_at": null, "paid_at": now},
    })))
}

/// `GET /v1/payment_intents/{id}`.
pub(crate) async fn retrieve_payment_intent(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let query = params::parse(query.unwrap_or_default().as_bytes());
    Param::root(&query).reject_expand()?;
    let mut conn = state.db.acquire().await?;
    db::find_object(&mut conn, PAYMENT_INTENT, &id)
        .await?
        .map(|intent| Json(objects::public_view(intent, &[])))
        .ok_or_else(|| ApiError::no_such("payment_intent", &id))
}

/// `GET /v1/charges/{id}`; `expand[]=refunds` includes the charge's refunds.
pub(crate) async fn retrieve_charge(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let query = params::parse(query.unwrap_or_default().as_bytes());
    let expand = Param::root(&query).get("expand");
    let fields = expand.string_list()?.unwrap_or_default();
    if let Some(other) = fields.iter().find(|field| *field != "refunds") {
        return Err(ApiError::invalid(
            None,
            expand.name(),
            format!("The billfold Stripe sandbox cannot expand {other} here."),
        ));
    }
    let expand: Vec<&str> = fields.iter().map(String::as_str).collect();
    let mut conn = state.db.acquire().await?;
    db::find_object(&mut conn, CHARGE, &id)
        .await?
        .map(|charge| Json(objects::public_view(charge, &expand)))
        .ok_or_else(|| ApiError::no_such("charge", &id))
}

/// The ids of a card payment of the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// The payment intent (`pi_...`).
    pub payment_intent: String,
    /// Its charge (`ch_...`).
    pub charge: String,
}

/// The payment a checkout session (`cs_...`, paid in `payment` mode), payment
/// intent (`pi_...`) or charge (`ch_...`) id names: e.g. to refund, through the API,
/// the payment of a checkout session.
///
/// # Errors
///
/// [`ControlError::NotFound`] for an unknown id; [`ControlError::Conflict`] for a
/// checkout session that is unpaid or in `subscription` mode (paid through its
/// invoice).
pub async fn find_payment(db: &PgPool, id: &str) -> Result<Payment, ControlError> {
    let mut conn = db.acquire().await?;
    let charge_id = charge_id_of(&mut conn, id).await?;
    let charge = db::find_object(&mut conn, CHARGE, &charge_id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let payment_intent = charge["payment_intent"]
        .as_str()
        .ok_or_else(|| SandboxError::Corrupt("charge payment_intent".to_owned()))?;
    Ok(Payment {
        payment_intent: payment_intent.to_owned(),
        charge: charge_id,
    })
}

fn not_found(payment: &str) -> ControlError {
    ControlError::NotFound(format!(
        "no checkout session, payment intent or charge has id {payment}"
    ))
}

/// The id of the charge behind `payment`: a charge id (`ch_...`), a payment intent
/// id (`pi_...`, its latest charge) or a checkout session id (`cs_...`, the payment
/// intent that paid it).
async fn charge_id_of(conn: &mut PgConnection, payment: &str) -> Result<String, ControlError> {
    if payment.starts_with("ch_") {
        return Ok(payment.to_owned());
    }
    let intent_id = if payment.starts_with("cs_") {
        let session = db::find_object(conn, CHECKOUT_SESSION, payment)
            .await?
            .ok_or_else(|| not_found(payment))?;
        session["payment_intent"]
            .as_str()
            .ok_or_else(|| {
                ControlError::Conflict(format!(
                    "checkout session {payment} has no payment intent: it is unpaid, or a \
                     subscription session (paid through its invoice)"
                ))
            })?
            .to_owned()
    } else {
        payment.to_owned()
    };
    let intent = db::find_object(conn, PAYMENT_INTENT, &intent_id)
        .await?
        .ok_or_else(|| not_found(payment))?;
    Ok(intent["latest_charge"]
        .as_str()
        .ok_or_else(|| ControlError::Conflict(format!("payment intent {intent_id} has no charge")))?
        .to_owned())
}

/// The charge behind `payment` (see [`charge_id_of`]), locked until the transaction
/// ends.
pub(crate) async fn lock_charge_of(
    conn: &mut PgConnection,
    payment: &str,
) -> Result<Value, ControlError> {
    let charge_id = charge_id_of(conn, payment).await?;
    db::lock_object(conn, CHARGE, &charge_id)
        .await?
        .ok_or_else(|| not_found(payment))
}

/// The minor units of `charge` not refunded yet.
pub(crate) fn unrefunded(charge: &Value) -> Result<i64, SandboxError> {
    let amount = charge["amount"].as_i64();
    let refunded = charge["amount_refunded"].as_i64();
    match (amount, refunded) {
        (Some(amount), Some(refunded)) => Ok(amount - refunded),
        _ => Err(SandboxError::Corrupt("charge amounts".to_owned())),
    }
}
