//! Payments after the fact: refunds billfold asks Stripe for, and the charge and
//! dispute objects of `charge.refunded` and `charge.dispute.*` events, as billfold's
//! own types.

use stripe::StripeRequest;
use stripe_core::refund::CreateRefund;

use super::{StripeCallError, StripeClient, idempotent};

/// A charge as a refund event reports it (<https://docs.stripe.com/api/charges/object>).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeInfo {
    /// `ch_...`
    pub id: String,
    /// The payment intent it belongs to (`pi_...`).
    pub payment_intent_id: Option<String>,
    /// Charged, minor units.
    pub amount: i64,
    /// Refunded so far (cumulative), minor units.
    pub amount_refunded: i64,
    /// ISO 4217, lowercase.
    pub currency: String,
}

impl From<stripe_shared::Charge> for ChargeInfo {
    fn from(c: stripe_shared::Charge) -> Self {
        Self {
            id: c.id.to_string(),
            payment_intent_id: c.payment_intent.map(|pi| pi.id().to_string()),
            amount: c.amount,
            amount_refunded: c.amount_refunded,
            currency: c.currency.to_string(),
        }
    }
}

/// Where a dispute stands (<https://docs.stripe.com/api/disputes/object#dispute_object-status>;
/// Postgres enum `dispute_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "dispute_status", rename_all = "snake_case")]
pub enum DisputeStatus {
    /// An inquiry: no funds withdrawn yet.
    WarningNeedsResponse,
    /// An inquiry under review.
    WarningUnderReview,
    /// An inquiry closed without becoming a dispute.
    WarningClosed,
    /// A dispute: funds withdrawn, evidence due.
    NeedsResponse,
    /// Evidence submitted, funds withdrawn.
    UnderReview,
    /// The business won: funds returned.
    Won,
    /// The customer won: funds kept by the customer.
    Lost,
    /// Prevented (e.g. by early fraud warning handling): no funds withdrawn.
    Prevented,
}

impl DisputeStatus {
    /// Whether the disputed amount is withdrawn from the business (so its credits are
    /// reversed): an open dispute or a lost one.
    pub fn withdraws_funds(self) -> bool {
        matches!(self, Self::NeedsResponse | Self::UnderReview | Self::Lost)
    }

    /// Whether the dispute is over; a closed dispute never reopens, so a late
    /// `charge.dispute.created` or `updated` cannot undo a `closed`.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Won | Self::Lost | Self::WarningClosed | Self::Prevented
        )
    }

    fn from_stripe(status: &stripe_shared::DisputeStatus) -> Option<Self> {
        use stripe_shared::DisputeStatus as S;
        Some(match status {
            S::WarningNeedsResponse => Self::WarningNeedsResponse,
            S::WarningUnderReview => Self::WarningUnderReview,
            S::WarningClosed => Self::WarningClosed,
            S::NeedsResponse => Self::NeedsResponse,
            S::UnderReview => Self::UnderReview,
            S::Won => Self::Won,
            S::Lost => Self::Lost,
            S::Prevented => Self::Prevented,
            _ => return None,
        })
    }
}

/// A dispute as a `charge.dispute.*` event reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisputeInfo {
    /// `dp_...`
    pub id: String,
    /// The disputed payment intent.
    pub payment_intent_id: Option<String>,
    /// Disputed amount, minor units.
    pub amount: i64,
    /// ISO 4217, lowercase.
    pub currency: String,
    /// Its status; `None` for one this SDK does not know.
    pub status: Option<DisputeStatus>,
}

impl From<stripe_shared::Dispute> for DisputeInfo {
    fn from(d: stripe_shared::Dispute) -> Self {
        Self {
            id: d.id.to_string(),
            payment_intent_id: d.payment_intent.map(|pi| pi.id().to_string()),
            amount: d.amount,
            currency: d.currency.to_string(),
            status: DisputeStatus::from_stripe(&d.status),
        }
    }
}

/// A refund Stripe accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundInfo {
    /// `re_...`
    pub id: String,
    /// Refunded, minor units.
    pub amount: i64,
    /// ISO 4217, lowercase.
    pub currency: String,
    /// `succeeded`, `pending`, ...
    pub status: Option<String>,
}

impl StripeClient {
    /// Refunds a payment intent, all that is left of it (`amount` `None`) or `amount`
    /// minor units (<https://docs.stripe.com/api/refunds/create>). The credits follow
    /// when Stripe reports it (`charge.refunded`). `idempotency_key` makes a retried
    /// request refund once.
    pub async fn create_refund(
        &self,
        payment_intent_id: &str,
        amount: Option<i64>,
        idempotency_key: &str,
    ) -> Result<RefundInfo, StripeCallError> {
        let mut request = CreateRefund::new().payment_intent(payment_intent_id.to_owned());
        if let Some(amount) = amount {
            request = request.amount(amount);
        }
        let refund = request
            .customize()
            .request_strategy(idempotent(idempotency_key)?)
            .send(&self.client)
            .await?;
        Ok(RefundInfo {
            id: refund.id.to_string(),
            amount: refund.amount,
            currency: refund.currency.to_string(),
            status: refund.status,
        })
    }
}

/// An invoice payment (`invoice_payment.paid`,
/// <https://docs.stripe.com/api/invoice-payment/object>): the payment intent that paid
/// an invoice, which refunds and disputes of it name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoicePaymentInfo {
    /// `in_...`
    pub invoice_id: String,
    /// `pi_...`; `None` for a payment of another kind (a payment record).
    pub payment_intent_id: Option<String>,
}

impl From<stripe_shared::InvoicePayment> for InvoicePaymentInfo {
    fn from(p: stripe_shared::InvoicePayment) -> Self {
        Self {
            invoice_id: p
                .invoice
                .id()
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            payment_intent_id: p.payment.payment_intent.map(|pi| pi.id().to_string()),
        }
    }
}
