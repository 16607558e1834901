//! The only module that imports async-stripe (an anti-corruption layer): billfold's
//! calls to Stripe's API and the verification of Stripe's webhooks. Everything it
//! returns is a billfold type, so the rest of the crate never sees SDK types.
//!
//! The client's base URL is configurable: real Stripe, `STRIPE_API_BASE`, or the
//! built-in sandbox (`{BASE_URL}/sandbox/`). The code path is the same in every mode.

pub mod billing;
pub mod catalog;
pub mod payments;
pub mod webhooks;

use std::collections::HashMap;

use secrecy::{ExposeSecret, SecretString};
use stripe::{Client, ClientBuilder, RequestStrategy, StripeRequest};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData,
    ExpireCheckoutSession, ProductData, RetrieveCheckoutSession,
};
use stripe_core::customer::CreateCustomer;

/// A failed call to Stripe. Callers show a generic "payment provider unavailable"
/// message; details are logged, never shown (they may contain identifiers).
#[derive(Debug, thiserror::Error)]
pub enum StripeCallError {
    /// Stripe answered with an error status.
    #[error("stripe refused the request (status {status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Stripe's message.
        message: String,
    },
    /// Network, timeout, or a reply billfold could not read.
    #[error("stripe unavailable: {0}")]
    Unavailable(String),
    /// The idempotency key was unusable.
    #[error("invalid idempotency key")]
    IdempotencyKey,
}

impl StripeCallError {
    /// Whether Stripe said the object does not exist (404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Refused { status: 404, .. })
    }
}

impl From<stripe::StripeError> for StripeCallError {
    fn from(e: stripe::StripeError) -> Self {
        match e {
            stripe::StripeError::Stripe(err, status) => Self::Refused {
                status,
                message: format!("{err:?}"),
            },
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// The Stripe API client billfold uses (cheap to clone).
#[derive(Clone)]
pub struct StripeClient {
    client: Client,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient").finish_non_exhaustive()
    }
}

/// What to sell in a payment-mode Checkout session.
#[derive(Debug, Clone)]
pub struct PaymentCheckout {
    /// Line item name shown on the checkout page, e.g. "500 credits".
    pub product_name: String,
    /// Price in minor units.
    pub amount_minor: i64,
    /// ISO 4217, lowercase.
    pub currency: String,
    /// The Stripe customer paying.
    pub customer_id: String,
    /// Our workspace id, echoed back as `client_reference_id`.
    pub client_reference_id: String,
    /// Echoed back on the session (workspace, credits, pack).
    pub metadata: HashMap<String, String>,
    /// Where Checkout returns after payment; may contain `{CHECKOUT_SESSION_ID}`.
    pub success_url: String,
    /// Where Checkout returns when the customer cancels.
    pub cancel_url: String,
    /// Makes a retried creation return the same session (Stripe keeps keys 24 h).
    pub idempotency_key: String,
}

/// A Checkout session as billfold needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSessionInfo {
    /// `cs_...`
    pub id: String,
    /// The hosted page to redirect the customer to.
    pub url: Option<String>,
    /// `payment`, `subscription` or `setup`.
    pub mode: String,
    /// `open`, `complete` or `expired`.
    pub status: Option<String>,
    /// Whether the money has arrived (`payment_status = paid`).
    pub paid: bool,
    /// Total in minor units.
    pub amount_total: Option<i64>,
    /// ISO 4217, lowercase.
    pub currency: Option<String>,
    /// Our workspace id as given at creation.
    pub client_reference_id: Option<String>,
    /// Metadata as given at creation.
    pub metadata: HashMap<String, String>,
    /// The subscription a subscription-mode session created.
    pub subscription_id: Option<String>,
    /// The payment intent of a paid payment-mode session (`pi_...`): what refunds and
    /// disputes name.
    pub payment_intent_id: Option<String>,
    /// Tax in `amount_total`, minor units (`total_details.amount_tax`; 0 without).
    pub amount_tax: i64,
}

impl From<stripe_shared::CheckoutSession> for CheckoutSessionInfo {
    fn from(s: stripe_shared::CheckoutSession) -> Self {
        Self {
            id: s.id.to_string(),
            url: s.url,
            mode: s.mode.as_str().to_owned(),
            status: s.status.map(|st| st.as_str().to_owned()),
            paid: matches!(
                s.payment_status,
                stripe_shared::CheckoutSessionPaymentStatus::Paid
            ),
            amount_total: s.amount_total,
            currency: s.currency.map(|c| c.to_string()),
            client_reference_id: s.client_reference_id,
            metadata: s.metadata.unwrap_or_default(),
            subscription_id: s.subscription.map(|sub| sub.id().to_string()),
            payment_intent_id: s.payment_intent.map(|pi| pi.id().to_string()),
            amount_tax: s.total_details.map_or(0, |t| t.amount_tax),
        }
    }
}

fn idempotent(key: &str) -> Result<RequestStrategy, StripeCallError> {
    let key = stripe::IdempotencyKey::new(key).map_err(|_| StripeCallError::IdempotencyKey)?;
    Ok(RequestStrategy::Idempotent(key))
}

impl StripeClient {
    /// A client for `secret_key`; `base_url` overrides `https://api.stripe.com/`
    /// (must end in `/`: requests go to `{base}v1/...`).
    pub fn new(secret_key: &SecretString, base_url: Option<&str>) -> anyhow::Result<Self> {
        let mut builder = ClientBuilder::new(secret_key.expose_secret());
        if let Some(base) = base_url {
            let base = if base.ends_with('/') {
                base.to_owned()
            } else {
                format!("{base}/")
            };
            builder = builder.url(base);
        }
        let client = builder
            .build()
            .map_err(|e| anyhow::anyhow!("build stripe client: {e}"))?;
        Ok(Self { client })
    }

    /// Creates a Stripe customer for a workspace; returns its id (`cus_...`).
    #[tracing::instrument(skip_all, fields(workspace_id))]
    pub async fn create_customer(
        &self,
        email: &str,
        workspace_name: &str,
        workspace_id: &str,
    ) -> Result<String, StripeCallError> {
        tracing::Span::current().record("workspace_id", workspace_id);
        let metadata = HashMap::from([("workspace_id".to_owned(), workspace_id.to_owned())]);
        let customer = CreateCustomer::new()
            .email(email)
            .name(workspace_name)
            .metadata(metadata)
            .customize()
            .request_strategy(idempotent(&format!("customer-{workspace_id}"))?)
            .send(&self.client)
            .await?;
        Ok(customer.id.to_string())
    }

    /// Creates a payment-mode Checkout session (a one-time purchase).
    #[tracing::instrument(skip_all)]
    pub async fn create_payment_checkout(
        &self,
        req: &PaymentCheckout,
    ) -> Result<CheckoutSessionInfo, StripeCallError> {
        let currency = req
            .currency
            .parse::<stripe_types::Currency>()
            .map_err(|_| {
                StripeCallError::Unavailable(format!("unsupported currency {}", req.currency))
            })?;
        let mut price_data = CreateCheckoutSessionLineItemsPriceData::new(currency);
        price_data.unit_amount = Some(req.amount_minor);
        price_data.product_data = Some(ProductData::new(req.product_name.clone()));
        let mut item = CreateCheckoutSessionLineItems::new();
        item.price_data = Some(price_data);
        item.quantity = Some(1);
        let session = CreateCheckoutSession::new()
            .mode(stripe_shared::CheckoutSessionMode::Payment)
            .customer(req.customer_id.clone())
            .client_reference_id(req.client_reference_id.clone())
            .metadata(req.metadata.clone())
            .line_items(vec![item])
            .success_url(req.success_url.clone())
            .cancel_url(req.cancel_url.clone())
            .customize()
            .request_strategy(idempotent(&req.idempotency_key)?)
            .send(&self.client)
            .await?;
        Ok(session.into())
    }

    /// Fetches a Checkout session (webhook reconciliation).
    pub async fn retrieve_checkout_session(
        &self,
        id: &str,
    ) -> Result<CheckoutSessionInfo, StripeCallError> {
        Ok(RetrieveCheckoutSession::new(id)
            .send(&self.client)
            .await?
            .into())
    }

    /// Expires an open Checkout session so it can no longer be paid
    /// (<https://docs.stripe.com/api/checkout/sessions/expire>); Stripe then sends
    /// `checkout.session.expired`.
    pub async fn expire_checkout_session(
        &self,
        id: &str,
    ) -> Result<CheckoutSessionInfo, StripeCallError> {
        Ok(ExpireCheckoutSession::new(id)
            .send(&self.client)
            .await?
            .into())
    }
}
