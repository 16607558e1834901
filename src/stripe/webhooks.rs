//! Stripe webhook verification (`Stripe-Signature`, HMAC-SHA256 over `"{t}.{body}"`,
//! 300 s tolerance: <https://docs.stripe.com/webhooks#verify-events>) with
//! async-stripe's `Webhook::construct_event`, and translation of the events billfold
//! handles into its own types.

use secrecy::{ExposeSecret, SecretString};
use stripe_webhook::{EventObject, Webhook, WebhookError};

use super::CheckoutSessionInfo;
use super::billing::InvoiceInfo;

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

/// A verified event with what billfold needs of it.
#[derive(Debug, Clone)]
pub struct VerifiedEvent {
    /// `evt_...`: the key that makes deliveries idempotent.
    pub id: String,
    /// e.g. `checkout.session.completed`.
    pub event_type: String,
    /// Live or test mode.
    pub livemode: bool,
    /// The parts of `data.object` billfold acts on.
    pub payload: EventPayload,
}

/// The event objects billfold applies; everything else is acknowledged and ignored.
#[derive(Debug, Clone)]
pub enum EventPayload {
    /// `checkout.session.completed` or `checkout.session.async_payment_succeeded`.
    CheckoutSessionCompleted(CheckoutSessionInfo),
    /// `checkout.session.expired`.
    CheckoutSessionExpired(CheckoutSessionInfo),
    /// `customer.subscription.created|updated|deleted`: the subscription id. The state
    /// is re-fetched from Stripe, so the order of deliveries does not matter.
    SubscriptionChanged(String),
    /// `invoice.paid` or `invoice.payment_succeeded`.
    InvoicePaid(InvoiceInfo),
    /// `invoice.payment_failed`.
    InvoicePaymentFailed(InvoiceInfo),
    /// Any other event type.
    Other,
    /// Genuine (signature verified) but its object could not be read.
    Unreadable(String),
}

/// Event types billfold acts on; the others are acknowledged and ignored.
pub const HANDLED_EVENT_TYPES: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.expired",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
];

/// Verifies `payload` against the `Stripe-Signature` header and parses it.
///
/// A correctly signed event whose object async-stripe cannot read (an endpoint on
/// another API version, or an event type billfold never asked for) is not refused:
/// it comes back as [`EventPayload::Unreadable`], so that unhandled types are still
/// acknowledged and handled ones fail with a 5xx that Stripe retries and alerts on.
pub fn verify(
    payload: &str,
    signature_header: &str,
    secret: &SecretString,
) -> Result<VerifiedEvent, VerifyError> {
    let event = match Webhook::construct_event(payload, signature_header, secret.expose_secret()) {
        Ok(event) => event,
        // async-stripe checks signature and timestamp before parsing: BadParse means
        // the delivery is genuine.
        Err(WebhookError::BadParse(reason)) => return envelope_only(payload, reason),
        Err(WebhookError::BadKey | WebhookError::BadHeader(_)) => {
            return Err(VerifyError::BadHeader);
        }
        Err(WebhookError::BadSignature) => return Err(VerifyError::BadSignature),
        Err(WebhookError::BadTimestamp(_)) => return Err(VerifyError::Stale),
    };
    let payload = match event.data.object {
        EventObject::CheckoutSessionCompleted(s)
        | EventObject::CheckoutSessionAsyncPaymentSucceeded(s) => {
            EventPayload::CheckoutSessionCompleted((*s).into())
        }
        EventObject::CheckoutSessionExpired(s) => EventPayload::CheckoutSessionExpired((*s).into()),
        EventObject::CustomerSubscriptionCreated(s)
        | EventObject::CustomerSubscriptionUpdated(s)
        | EventObject::CustomerSubscriptionDeleted(s) => {
            EventPayload::SubscriptionChanged(s.id.to_string())
        }
        EventObject::InvoicePaid(i) | EventObject::InvoicePaymentSucceeded(i) => {
            EventPayload::InvoicePaid((*i).into())
        }
        EventObject::InvoicePaymentFailed(i) => EventPayload::InvoicePaymentFailed((*i).into()),
        _ => EventPayload::Other,
    };
    Ok(VerifiedEvent {
        id: event.id.to_string(),
        event_type: event.type_.as_str().to_owned(),
        livemode: event.livemode,
        payload,
    })
}

/// The id, type and mode of a genuine event whose object could not be parsed.
fn envelope_only(payload: &str, reason: String) -> Result<VerifiedEvent, VerifyError> {
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
    Ok(VerifiedEvent {
        id: envelope.id,
        event_type: envelope.event_type,
        livemode: envelope.livemode,
        payload: EventPayload::Unreadable(reason),
    })
}

/// A `Stripe-Signature` header for `payload` signed at `timestamp` (unix seconds),
/// exactly as Stripe makes it. Used by the sandbox's deliveries and by tests.
pub fn sign(payload: &str, secret: &SecretString, timestamp: i64) -> String {
    Webhook::generate_test_header(payload, secret.expose_secret(), Some(timestamp))
}
