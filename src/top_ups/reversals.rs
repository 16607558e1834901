//! Refunds and disputes of top-ups (DESIGN.md "Refunds and disputes reverse").
//!
//! The policy: a top-up's credits follow its money. When Stripe reports a refund (full
//! or partial) or a dispute of a top-up's payment, the ledger takes back the refunded
//! or disputed share of its credits, `ceil(credits × withdrawn / paid)` (rounded
//! against the buyer: a cent refunded takes back a whole credit), by a new entry, never
//! an edit. Credits still held are removed from the purchased bucket; what was already
//! spent becomes **debt**, which blocks consumption (402 `credits_in_debt`) until later
//! purchased credits settle it (a top-up pays the debt first). A dispute the business
//! wins restores what it took back (settling debt first, the same way).
//!
//! Stripe reports per payment intent and events arrive in any order: refunds and
//! disputes are recorded per payment intent whatever they belong to ([`super::db`]),
//! and every event recomputes the target from what is recorded, so duplicates change
//! nothing, a refund delivered before its top-up is applied when the top-up is, and a
//! late `dispute.created` cannot undo a `dispute.closed`.

use sqlx::PgConnection;

use super::db;
use crate::ids::TopUpId;
use crate::ledger::{self, LedgerEntryKind};
use crate::money::format_credits;
use crate::stripe::payments::{ChargeInfo, DisputeInfo};

/// What moved the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A refund.
    Refund,
    /// A dispute opened, updated or closed.
    Dispute,
}

/// `charge.refunded`: records the payment's refunded total and moves its top-up's
/// credits, if it is a top-up.
pub async fn apply_refund(
    conn: &mut PgConnection,
    charge: &ChargeInfo,
    event_id: &str,
) -> anyhow::Result<()> {
    let Some(pi) = &charge.payment_intent_id else {
        tracing::info!(charge = %charge.id, "refund of a charge without a payment intent ignored");
        return Ok(());
    };
    db::lock_payment(conn, pi).await?;
    db::record_refund(
        conn,
        pi,
        charge.amount,
        charge.amount_refunded,
        &charge.currency,
    )
    .await?;
    let at = db::event_time(conn, event_id).await?;
    follow_commission(conn, pi, event_id, at).await?;
    match db::paid_by_payment_intent(conn, pi).await? {
        Some(top_up) => {
            settle(conn, top_up, event_id, Some(Cause::Refund)).await?;
        }
        None => tracing::info!(payment_intent = %pi, "refund recorded; no top-up paid by it (yet)"),
    }
    Ok(())
}

/// `charge.dispute.*`: records the dispute's state and moves its top-up's credits.
pub async fn apply_dispute(
    conn: &mut PgConnection,
    dispute: &DisputeInfo,
    event_id: &str,
) -> anyhow::Result<()> {
    let (Some(pi), Some(status)) = (&dispute.payment_intent_id, dispute.status) else {
        tracing::warn!(dispute = %dispute.id, "dispute without a payment intent or with an unknown status ignored");
        return Ok(());
    };
    db::lock_payment(conn, pi).await?;
    db::record_dispute(conn, pi, dispute, status).await?;
    let at = db::event_time(conn, event_id).await?;
    follow_commission(conn, pi, event_id, at).await?;
    match db::paid_by_payment_intent(conn, pi).await? {
        Some(top_up) => {
            settle(conn, top_up, event_id, Some(Cause::Dispute)).await?;
        }
        None => {
            tracing::info!(payment_intent = %pi, "dispute recorded; no top-up paid by it (yet)")
        }
    }
    Ok(())
}

/// Moves the reseller commission earned on payment `pi` (if any) to follow its
/// recorded refunds and disputes, the way [`settle`] moves credits
/// ([`crate::resellers::commissions::follow_withdrawal`]). The caller holds the
/// payment's lock.
pub async fn follow_commission(
    conn: &mut PgConnection,
    pi: &str,
    reference: &str,
    at: time::OffsetDateTime,
) -> anyhow::Result<i64> {
    let (refunded, disputed) = db::withdrawn(conn, pi).await?;
    crate::resellers::commissions::follow_withdrawal(conn, pi, refunded + disputed, reference, at)
        .await
}

/// The credits to have taken back of a top-up of `credits` paid `paid`, when `withdrawn`
/// of the payment has left the business: `ceil(credits × min(withdrawn, paid) / paid)`.
pub fn reversal_target(credits: i64, paid: i64, withdrawn: i64) -> i64 {
    crate::money::share_ceil(credits, paid, withdrawn)
}

/// Moves a paid top-up's reversed credits to the target its recorded refunds and
/// disputes give: a reversal (purchased credits, then debt) or a restoration (debt
/// first, then purchased credits), written once per `reference` (the event). Returns
/// the change in reversed credits.
pub async fn settle(
    conn: &mut PgConnection,
    top_up_id: TopUpId,
    reference: &str,
    cause: Option<Cause>,
) -> anyhow::Result<i64> {
    let Some(top_up) = db::lock_paid(conn, top_up_id).await? else {
        return Ok(0);
    };
    let Some(pi) = &top_up.stripe_payment_intent_id else {
        return Ok(0);
    };
    let (refunded, disputed) = db::withdrawn(conn, pi).await?;
    let target = reversal_target(top_up.credits, top_up.amount_minor, refunded + disputed);
    let delta = target - top_up.credits_reversed;
    if delta == 0 {
        return Ok(0);
    }
    let bought = format_credits(top_up.credits);
    let written = if delta > 0 {
        let kind = match cause {
            Some(Cause::Refund) => LedgerEntryKind::Refund,
            Some(Cause::Dispute) => LedgerEntryKind::Dispute,
            None if disputed > 0 => LedgerEntryKind::Dispute,
            None => LedgerEntryKind::Refund,
        };
        let what = if kind == LedgerEntryKind::Dispute {
            "Dispute"
        } else {
            "Refund"
        };
        let balance = ledger::db::lock_balance(conn, top_up.workspace_id).await?;
        let owed = (delta - balance.purchased).max(0);
        let description = if owed > 0 {
            format!(
                "{what} of a {bought}-credit top-up: {} credits taken back, {} of them already spent and now owed",
                format_credits(delta),
                format_credits(owed)
            )
        } else {
            format!(
                "{what} of a {bought}-credit top-up: {} credits taken back",
                format_credits(delta)
            )
        };
        ledger::reverse_purchased(
            conn,
            top_up.workspace_id,
            kind,
            delta,
            &description,
            reference,
        )
        .await?
    } else {
        ledger::grant_purchased(
            conn,
            top_up.workspace_id,
            LedgerEntryKind::DisputeWon,
            -delta,
            &format!(
                "Dispute won on a {bought}-credit top-up: {} credits restored",
                format_credits(-delta)
            ),
            reference,
        )
        .await?
    };
    if written.is_none() {
        return Ok(0);
    }
    db::set_credits_reversed(conn, top_up_id, target).await?;
    tracing::info!(%top_up_id, delta, target, "top-up credits follow its refunds and disputes");
    Ok(delta)
}

#[cfg(test)]
mod tests {
    use super::reversal_target;

    #[test]
    fn the_refunded_share_of_credits_is_rounded_against_the_buyer() {
        assert_eq!(reversal_target(5_000, 4_000, 4_000), 5_000, "full refund");
        assert_eq!(reversal_target(5_000, 4_000, 2_000), 2_500, "half");
        assert_eq!(reversal_target(500, 4_000, 1), 1, "one cent takes a credit");
        assert_eq!(reversal_target(500, 4_000, 0), 0);
        assert_eq!(
            reversal_target(500, 4_000, 9_000),
            500,
            "never more than bought"
        );
        assert_eq!(reversal_target(1_000, 7_000, 3_333), 477, "ceil(476.14)");
    }
}
