//! Subscriptions, invoices and billing portal sessions: the Stripe calls behind
//! `/billing`, and the translation of subscription and invoice objects into
//! billfold's own types.

use std::collections::HashMap;

use stripe::StripeRequest;
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::invoice::{
    CreatePreviewInvoice, CreatePreviewInvoiceSubscriptionDetails,
    CreatePreviewInvoiceSubscriptionDetailsItems,
    CreatePreviewInvoiceSubscriptionDetailsProrationBehavior,
};
use stripe_billing::subscription::{
    RetrieveSubscription, UpdateSubscription, UpdateSubscriptionItems,
    UpdateSubscriptionPaymentBehavior, UpdateSubscriptionProrationBehavior,
};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
};

use super::{CheckoutSessionInfo, StripeCallError, StripeClient, idempotent};

/// A subscription-mode Checkout session for one plan price.
#[derive(Debug, Clone)]
pub struct SubscriptionCheckout {
    /// The plan's Stripe price (`price_...`).
    pub price_id: String,
    /// The workspace's Stripe customer.
    pub customer_id: String,
    /// Our workspace id.
    pub client_reference_id: String,
    /// Copied onto the session and the subscription.
    pub metadata: HashMap<String, String>,
    /// Where Checkout returns after payment.
    pub success_url: String,
    /// Where Checkout returns on cancel.
    pub cancel_url: String,
    /// Makes a retried creation return the same session.
    pub idempotency_key: String,
}

/// Stripe's subscription status
/// (<https://docs.stripe.com/api/subscriptions/object#subscription_object-status>;
/// Postgres enum `subscription_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "subscription_status", rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// The first payment has not succeeded yet.
    Incomplete,
    /// The first payment never succeeded (23 h): dead.
    IncompleteExpired,
    /// In a trial.
    Trialing,
    /// Paid and running.
    Active,
    /// A renewal payment failed; Stripe retries.
    PastDue,
    /// Ended.
    Canceled,
    /// Retries exhausted, left open.
    Unpaid,
    /// Paused (trial ended without a payment method).
    Paused,
}

impl SubscriptionStatus {
    /// Whether the workspace is on the subscription's plan: active, trialing, or
    /// past due while Stripe retries the payment.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Active | Self::Trialing | Self::PastDue)
    }

    /// Whether its plan can be changed now (a past-due subscription pays first).
    pub fn can_change_plan(self) -> bool {
        matches!(self, Self::Active | Self::Trialing)
    }

    /// The statuses in which the workspace is on the plan ([`Self::is_live`]).
    pub const LIVE: [Self; 3] = [Self::Active, Self::Trialing, Self::PastDue];

    /// Stripe's name (`past_due`, ...): CSS classes and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Incomplete => "incomplete",
            Self::IncompleteExpired => "incomplete_expired",
            Self::Trialing => "trialing",
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Canceled => "canceled",
            Self::Unpaid => "unpaid",
            Self::Paused => "paused",
        }
    }

    /// As shown to customers.
    pub fn label(self) -> &'static str {
        match self {
            Self::Active => "Active",
            Self::Trialing => "Trialing",
            Self::PastDue => "Past due",
            Self::Canceled => "Canceled",
            Self::Unpaid => "Unpaid",
            Self::Incomplete | Self::IncompleteExpired => "Incomplete",
            Self::Paused => "Paused",
        }
    }

    fn from_stripe(status: &stripe_shared::SubscriptionStatus) -> Self {
        use stripe_shared::SubscriptionStatus as S;
        match status {
            S::Incomplete => Self::Incomplete,
            S::IncompleteExpired => Self::IncompleteExpired,
            S::Trialing => Self::Trialing,
            S::Active => Self::Active,
            S::PastDue => Self::PastDue,
            S::Canceled => Self::Canceled,
            S::Unpaid => Self::Unpaid,
            S::Paused => Self::Paused,
            // A status this SDK does not know: not live, never treated as paid.
            _ => Self::Incomplete,
        }
    }
}

/// Stripe's invoice status (Postgres enum `invoice_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "invoice_status", rename_all = "snake_case")]
pub enum InvoiceStatus {
    /// Being prepared.
    Draft,
    /// Finalized, awaiting payment.
    Open,
    /// Paid (never goes back).
    Paid,
    /// Written off.
    Uncollectible,
    /// Cancelled.
    Void,
}

impl InvoiceStatus {
    /// As shown to customers.
    pub fn label(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Open => "open",
            Self::Paid => "paid",
            Self::Uncollectible => "uncollectible",
            Self::Void => "void",
        }
    }

    fn from_stripe(status: &stripe_shared::InvoiceStatus) -> Option<Self> {
        use stripe_shared::InvoiceStatus as S;
        Some(match status {
            S::Draft => Self::Draft,
            S::Open => Self::Open,
            S::Paid => Self::Paid,
            S::Uncollectible => Self::Uncollectible,
            S::Void => Self::Void,
            _ => return None,
        })
    }
}

/// A subscription as billfold mirrors it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInfo {
    /// `sub_...`
    pub id: String,
    /// `cus_...`
    pub customer_id: String,
    /// Stripe's status.
    pub status: SubscriptionStatus,
    /// The first item's id (`si_...`), needed to change its price.
    pub item_id: String,
    /// The first item's price.
    pub price_id: String,
    /// Current period, unix seconds.
    pub current_period_start: i64,
    /// Current period end, unix seconds.
    pub current_period_end: i64,
    /// Ends at the period end instead of renewing.
    pub cancel_at_period_end: bool,
    /// When it ended, unix seconds.
    pub ended_at: Option<i64>,
    /// Metadata (billfold writes `workspace_id`).
    pub metadata: HashMap<String, String>,
}

impl TryFrom<stripe_shared::Subscription> for SubscriptionInfo {
    type Error = StripeCallError;

    fn try_from(s: stripe_shared::Subscription) -> Result<Self, Self::Error> {
        let item = s.items.data.into_iter().next().ok_or_else(|| {
            StripeCallError::Unavailable(format!("subscription {} has no items", s.id))
        })?;
        Ok(Self {
            id: s.id.to_string(),
            customer_id: s.customer.id().to_string(),
            status: SubscriptionStatus::from_stripe(&s.status),
            item_id: item.id.to_string(),
            price_id: item.price.id.to_string(),
            current_period_start: item.current_period_start,
            current_period_end: item.current_period_end,
            cancel_at_period_end: s.cancel_at_period_end,
            ended_at: s.ended_at,
            metadata: s.metadata,
        })
    }
}

/// An invoice as billfold keeps it (the list on `/billing`, allowance grants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceInfo {
    /// `in_...`
    pub id: String,
    /// `cus_...`
    pub customer_id: Option<String>,
    /// The subscription it bills, if any.
    pub subscription_id: Option<String>,
    /// Customer-facing number.
    pub number: Option<String>,
    /// Its status (`None`: one this SDK does not know).
    pub status: Option<InvoiceStatus>,
    /// `subscription_create`, `subscription_cycle`, `subscription_update`, ...
    pub billing_reason: Option<String>,
    /// Minor units.
    pub amount_due: i64,
    /// Minor units.
    pub amount_paid: i64,
    /// ISO 4217, lowercase.
    pub currency: String,
    /// Stripe's hosted page.
    pub hosted_invoice_url: Option<String>,
    /// PDF link.
    pub invoice_pdf: Option<String>,
    /// Billing period, unix seconds.
    pub period_start: i64,
    /// Billing period end, unix seconds.
    pub period_end: i64,
    /// Creation, unix seconds.
    pub created: i64,
    /// The period its regular (non-proration) lines bill, unix seconds: the period a
    /// first or renewal invoice opens.
    pub billed_period: Option<(i64, i64)>,
    /// When its proration lines start (unix seconds): the moment a mid-period plan
    /// change took effect.
    pub proration_at: Option<i64>,
    /// The price of its latest charged proration line ("remaining time on …"): the
    /// price a switch paid for by this invoice moved to, whatever the subscription's
    /// price is by the time the invoice is applied.
    pub prorated_price_id: Option<String>,
    /// Tax included in it, minor units (`total − total_excluding_tax`; 0 without tax):
    /// what a commission is not earned on.
    pub tax: i64,
    /// When it was paid (`status_transitions.paid_at`, unix seconds).
    pub paid_at: Option<i64>,
}

impl From<stripe_shared::Invoice> for InvoiceInfo {
    fn from(i: stripe_shared::Invoice) -> Self {
        let mut billed_period: Option<(i64, i64)> = None;
        let mut proration_at: Option<i64> = None;
        let mut prorated: Option<(i64, String)> = None;
        for line in &i.lines.data {
            let proration = line.parent.as_ref().is_some_and(|p| {
                p.subscription_item_details
                    .as_ref()
                    .is_some_and(|d| d.proration)
                    || p.invoice_item_details.as_ref().is_some_and(|d| d.proration)
            });
            let (start, end) = (line.period.start, line.period.end);
            if proration {
                proration_at = Some(proration_at.map_or(start, |at| at.min(start)));
                let price = line
                    .pricing
                    .as_ref()
                    .and_then(|p| p.price_details.as_ref())
                    .map(|d| d.price.id().to_string());
                if let Some(price) = price
                    && line.amount > 0
                    && prorated.as_ref().is_none_or(|(at, _)| start >= *at)
                {
                    prorated = Some((start, price));
                }
            } else if billed_period.is_none_or(|(_, e)| end > e) {
                billed_period = Some((start, end));
            }
        }
        Self {
            id: i.id.map(|id| id.to_string()).unwrap_or_default(),
            customer_id: i.customer.map(|c| c.id().to_string()),
            subscription_id: i
                .parent
                .and_then(|p| p.subscription_details)
                .map(|d| d.subscription.id().to_string()),
            number: i.number,
            status: i.status.as_ref().and_then(InvoiceStatus::from_stripe),
            billing_reason: i.billing_reason.map(|r| r.as_str().to_owned()),
            amount_due: i.amount_due,
            amount_paid: i.amount_paid,
            tax: i
                .total_excluding_tax
                .map_or(0, |excluding| (i.total - excluding).max(0)),
            paid_at: i.status_transitions.paid_at,
            currency: i.currency.to_string(),
            hosted_invoice_url: i.hosted_invoice_url,
            invoice_pdf: i.invoice_pdf,
            period_start: i.period_start,
            period_end: i.period_end,
            created: i.created,
            billed_period,
            proration_at,
            prorated_price_id: prorated.map(|(_, price)| price),
        }
    }
}

/// Stripe's preview of what a plan change charges now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoicePreview {
    /// (description, amount in minor units) per line, prorations included.
    pub lines: Vec<(String, i64)>,
    /// Charged now, minor units.
    pub amount_due: i64,
    /// ISO 4217, lowercase.
    pub currency: String,
}

impl StripeClient {
    /// Previews moving subscription item `item_id` to `price_id` now with proration
    /// invoiced immediately (`proration_behavior = always_invoice`), at `proration_date`
    /// so the confirmed change charges exactly what was shown.
    pub async fn preview_price_change(
        &self,
        customer_id: &str,
        subscription_id: &str,
        item_id: &str,
        price_id: &str,
        proration_date: i64,
    ) -> Result<InvoicePreview, StripeCallError> {
        let mut item = CreatePreviewInvoiceSubscriptionDetailsItems::new();
        item.id = Some(item_id.to_owned());
        item.price = Some(price_id.to_owned());
        let mut details = CreatePreviewInvoiceSubscriptionDetails::new();
        details.items = Some(vec![item]);
        details.proration_behavior =
            Some(CreatePreviewInvoiceSubscriptionDetailsProrationBehavior::AlwaysInvoice);
        details.proration_date = Some(proration_date);
        let invoice = CreatePreviewInvoice::new()
            .customer(customer_id.to_owned())
            .subscription(subscription_id.to_owned())
            .subscription_details(details)
            .send(&self.client)
            .await?;
        Ok(InvoicePreview {
            lines: invoice
                .lines
                .data
                .into_iter()
                .map(|l| (l.description.unwrap_or_default(), l.amount))
                .collect(),
            amount_due: invoice.amount_due,
            currency: invoice.currency.to_string(),
        })
    }

    /// Moves the subscription's item to `price_id` without proration: nothing is
    /// charged or credited now and the next renewal bills the new price (a downgrade at
    /// period end, or undoing one).
    pub async fn change_price_at_renewal(
        &self,
        subscription_id: &str,
        item_id: &str,
        price_id: &str,
    ) -> Result<SubscriptionInfo, StripeCallError> {
        let mut item = UpdateSubscriptionItems::new();
        item.id = Some(item_id.to_owned());
        item.price = Some(price_id.to_owned());
        UpdateSubscription::new(subscription_id)
            .items(vec![item])
            .proration_behavior(UpdateSubscriptionProrationBehavior::None)
            .send(&self.client)
            .await?
            .try_into()
    }

    /// Moves the subscription's item to `price_id` now, invoicing the proration at once
    /// (Stripe: "upgrade immediately with proration"), only if that invoice is paid
    /// (`payment_behavior=pending_if_incomplete`, Stripe "pending updates"): after a
    /// declined charge the returned subscription still has its old price.
    pub async fn change_price(
        &self,
        subscription_id: &str,
        item_id: &str,
        price_id: &str,
        proration_date: i64,
    ) -> Result<SubscriptionInfo, StripeCallError> {
        let mut item = UpdateSubscriptionItems::new();
        item.id = Some(item_id.to_owned());
        item.price = Some(price_id.to_owned());
        UpdateSubscription::new(subscription_id)
            .items(vec![item])
            .proration_behavior(UpdateSubscriptionProrationBehavior::AlwaysInvoice)
            .proration_date(proration_date)
            .payment_behavior(UpdateSubscriptionPaymentBehavior::PendingIfIncomplete)
            .send(&self.client)
            .await?
            .try_into()
    }

    /// Creates a subscription-mode Checkout session (free → paid plan).
    #[tracing::instrument(skip_all)]
    pub async fn create_subscription_checkout(
        &self,
        req: &SubscriptionCheckout,
    ) -> Result<CheckoutSessionInfo, StripeCallError> {
        let mut item = CreateCheckoutSessionLineItems::new();
        item.price = Some(req.price_id.clone());
        item.quantity = Some(1);
        let mut subscription_data = CreateCheckoutSessionSubscriptionData::new();
        subscription_data.metadata = Some(req.metadata.clone());
        let session = CreateCheckoutSession::new()
            .mode(stripe_shared::CheckoutSessionMode::Subscription)
            .customer(req.customer_id.clone())
            .client_reference_id(req.client_reference_id.clone())
            .metadata(req.metadata.clone())
            .subscription_data(subscription_data)
            .line_items(vec![item])
            .success_url(req.success_url.clone())
            .cancel_url(req.cancel_url.clone())
            .customize()
            .request_strategy(idempotent(&req.idempotency_key)?)
            .send(&self.client)
            .await?;
        Ok(session.into())
    }

    /// Fetches a subscription: the source of truth when events arrive out of order.
    pub async fn retrieve_subscription(
        &self,
        id: &str,
    ) -> Result<SubscriptionInfo, StripeCallError> {
        RetrieveSubscription::new(id)
            .send(&self.client)
            .await?
            .try_into()
    }

    /// Sets or clears `cancel_at_period_end` (cancel at period end / resume).
    pub async fn set_cancel_at_period_end(
        &self,
        id: &str,
        cancel: bool,
    ) -> Result<SubscriptionInfo, StripeCallError> {
        UpdateSubscription::new(id)
            .cancel_at_period_end(cancel)
            .send(&self.client)
            .await?
            .try_into()
    }

    /// Creates a billing portal session for a customer; returns its URL.
    pub async fn create_portal_session(
        &self,
        customer_id: &str,
        return_url: &str,
    ) -> Result<String, StripeCallError> {
        let session = CreateBillingPortalSession::new()
            .customer(customer_id.to_owned())
            .return_url(return_url.to_owned())
            .send(&self.client)
            .await?;
        Ok(session.url)
    }
}
