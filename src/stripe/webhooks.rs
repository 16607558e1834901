//! Stripe webhook verification (`Stripe-Signature`, HMAC-SHA256 over `"{t}.{body}"`,
//! 300 s tolerance: <https://docs.stripe.com/webhooks#verify-events>) with
//! async-stripe's `Webhook::construct_event` at receipt, and, when the inbox applies a
//! stored event, translation of the events billfold handles into its own types.

use secrecy::{ExposeSecret, SecretString};
use stripe_webhook::{EventObject, Webhook, WebhookError};

use super::CheckoutSessionInfo;
use super::billing::InvoiceInfo;
use super::payments::{ChargeInfo, DisputeInfo, InvoicePaymentInfo};

/// Why a delivery was refused (all answered 400; nothing is written).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Missing or malformed `Stripe-Signature` header.
    #[error("missing or malformed stripe-signature header")]
    BadHeader,
    /// No `v1` signature matches the body under our secret.
    #[error("signature does not match")]
    BadSignature,
    /// Signed more than 300 s away from now (a replay).
    #[error("signature timestamp outside the 300 s tolerance")]
    Stale,
    /// Signed correctly but not a Stripe event billfold can read.
    #[error("unreadable event: {0}")]
    BadPayload(String),
}

/// The envelope of a verified delivery: what the inbox stores it by. Its object is
/// read later, by the job that applies it ([`parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEnvelope {
    /// `evt_...`: the key that makes deliveries idempotent.
    pub id: String,
    /// e.g. `checkout.session.completed`.
    pub event_type: String,
    /// Live or test mode.
    pub livemode: bool,
}

/// The event objects billfold applies; everything else is acknowledged and ignored.
#[derive(Debug, Clone)]
pub enum EventPayload {
    /// `checkout.session.completed` or `checkout.session.async_payment_succeeded`.
    CheckoutSessionCompleted(CheckoutSessionInfo),
    /// `checkout.session.expired`, or `checkout.session.async_payment_failed` (a
    /// delayed payment method failed): nothing was paid.
    CheckoutSessionExpired(CheckoutSessionInfo),
    /// `customer.subscription.created|updated|deleted`: the subscription id. The state
    /// is fetched from Stripe, so the order of deliveries does not matter.
    SubscriptionChanged(String),
    /// `invoice.paid` or `invoice.payment_succeeded`.
    InvoicePaid(InvoiceInfo),
    /// `invoice.payment_failed`.
    InvoicePaymentFailed(InvoiceInfo),
    /// `invoice_payment.paid`: which payment paid which invoice.
    InvoicePaymentPaid(InvoicePaymentInfo),
    /// `charge.refunded` (the charge, with its cumulative `amount_refunded`).
    ChargeRefunded(ChargeInfo),
    /// `charge.dispute.created|updated|closed|funds_withdrawn|funds_reinstated`.
    DisputeChanged(DisputeInfo),
    /// Any other event type.
    Other,
}

/// Event types billfold acts on; the others are acknowledged and ignored.
pub const HANDLED_EVENT_TYPES: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "invoice_payment.paid",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
];

/// Verifies `payload` against the `Stripe-Signature` header and returns its envelope.
///
/// A correctly signed event whose object async-stripe cannot read (an endpoint on
/// another API version, or a type billfold never asked for) is not refused here: it is
/// stored, and applying it fails visibly (or is ignored, for an unhandled type).
pub fn verify(
    payload: &str,
    signature_header: &str,
    secret: &SecretString,
) -> Result<EventEnvelope, VerifyError> {
    match Webhook::construct_event(payload, signature_header, secret.expose_secret()) {
        Ok(event) => Ok(EventEnvelope {
            id: event.id.to_string(),
            event_type: event.type_.as_str().to_owned(),
            livemode: event.livemode,
        }),
        // async-stripe checks signature and timestamp before parsing: BadParse means
        // the delivery is genuine.
        Err(WebhookError::BadParse(reason)) => envelope_only(payload, reason),
        Err(WebhookError::BadKey | WebhookError::BadHeader(_)) => Err(VerifyError::BadHeader),
        Err(WebhookError::BadSignature) => Err(VerifyError::BadSignature),
        Err(WebhookError::BadTimestamp(_)) => Err(VerifyError::Stale),
    }
}

/// Reads a stored (already verified) event's object. An event of a handled type that
/// cannot be read is an error (the inbox keeps retrying it and shows it failed); an
/// unreadable event of another type is [`EventPayload::Other`].
pub fn parse(event_type: &str, payload: &str) -> Result<EventPayload, String> {
    let event = match Webhook::insecure(payload) {
        Ok(event) => event,
        Err(e) if HANDLED_EVENT_TYPES.contains(&event_type) => {
            return Err(format!(
                "cannot read a {event_type} event: {e}; is the endpoint on API version 2026-09-30.endive?"
            ));
        }
        Err(_) => return Ok(EventPayload::Other),
    };
    Ok(match event.data.object {
        EventObject::CheckoutSessionCompleted(s)
        | EventObject::CheckoutSessionAsyncPaymentSucceeded(s) => {
            EventPayload::CheckoutSessionCompleted((*s).into())
        }
        EventObject::CheckoutSessionExpired(s)
        | EventObject::CheckoutSessionAsyncPaymentFailed(s) => {
            EventPayload::CheckoutSessionExpired((*s).into())
        }
        EventObject::CustomerSubscriptionCreated(s)
        | EventObject::CustomerSubscriptionUpdated(s)
        | EventObject::CustomerSubscriptionDeleted(s) => {
            EventPayload::SubscriptionChanged(s.id.to_string())
        }
        EventObject::InvoicePaid(i) | EventObject::InvoicePaymentSucceeded(i) => {
            EventPayload::InvoicePaid((*i).into())
        }
        EventObject::InvoicePaymentFailed(i) => EventPayload::InvoicePaymentFailed((*i).into()),
        EventObject::InvoicePaymentPaid(p) => EventPayload::InvoicePaymentPaid((*p).into()),
        EventObject::ChargeRefunded(c) => EventPayload::ChargeRefunded((*c).into()),
        EventObject::ChargeDisputeCreated(d)
        | EventObject::ChargeDisputeUpdated(d)
        | EventObject::ChargeDisputeClosed(d)
        | EventObject::ChargeDisputeFundsWithdrawn(d)
        | EventObject::ChargeDisputeFundsReinstated(d) => EventPayload::DisputeChanged((*d).into()),
        _ => EventPayload::Other,
    })
}

/// The id, type and mode of a genuine event whose object could not be parsed.
fn envelope_only(payload: &str, reason: String) -> Result<EventEnvelope, VerifyError> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        id: String,
        #[serde(rename = "type")]
        event_type: String,
        #[serde(default)]
        livemode: bool,
    }
    let envelope: Envelope = serde_json::from_str(payload)
        .map_err(|e| VerifyError::BadPayload(format!("{reason}; {e}")))?;
    Ok(EventEnvelope {
        id: envelope.id,
        event_type: envelope.event_type,
        livemode: envelope.livemode,
    })
}

/// A `Stripe-Signature` header for `payload` signed at `timestamp` (unix seconds),
/// exactly as Stripe makes it. Used by the sandbox's deliveries and by tests.
pub fn sign(payload: &str, secret: &SecretString, timestamp: i64) -> String {
    Webhook::generate_test_header(payload, secret.expose_secret(), Some(timestamp))
}
