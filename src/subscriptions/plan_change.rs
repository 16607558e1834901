//! The plan-change workflow behind `/billing`: which change each plan offers
//! ([`plan_options`], the one eligibility rule the page renders), subscribing through
//! Checkout, upgrading after Stripe's preview invoice, downgrading at period end (and
//! taking it back), cancelling at period end and resuming, and the customer portal.
//!
//! Each step that calls Stripe follows one shape: read what is needed in a short
//! transaction, record the intent, call Stripe with no transaction, lock or connection
//! held, then apply Stripe's answer in a short transaction. A failed call leaves the
//! intent marked failed (or undone) and nothing else: no plan, credit or schedule
//! changes until Stripe has said yes. These functions therefore take the pool, not a
//! connection.

use std::collections::HashMap;

use sqlx::PgPool;
use time::OffsetDateTime;

use super::{Subscription, apply_fetched, db};
use crate::catalog::{self, Plan};
use crate::ids::{PlanCode, WorkspaceId};
use crate::money::Money;
use crate::stripe::billing::SubscriptionCheckout;
use crate::stripe::{StripeCallError, StripeClient};
use crate::{accounts, allowances, api_keys};

/// Why a plan change could not be made. Each variant is something the customer can be
/// told; `Provider` and `Unexpected` are logged.
#[derive(Debug, thiserror::Error)]
pub enum PlanChangeError {
    /// No such plan.
    #[error("there is no such plan")]
    UnknownPlan,
    /// The change asked for is not what this plan offers now (e.g. a downgrade to a
    /// dearer plan, or a subscribe while subscribed).
    #[error("{0}")]
    NotOffered(String),
    /// The plan has no Stripe price: the operator has not run `billfold stripe sync`.
    #[error("the {0} plan is not on sale yet; please try again later")]
    NotOnSale(String),
    /// A downgrade the workspace uses too much for.
    #[error("this downgrade is not possible yet")]
    Blocked(Vec<Blocker>),
    /// The card was declined: Stripe keeps the switch as a pending update that is
    /// applied only once its invoice is paid; until then nothing changed.
    #[error("the card was declined")]
    PaymentDeclined,
    /// Stripe did not answer or refused; nothing changed.
    #[error("the payment provider is unavailable")]
    Provider(#[from] StripeCallError),
    /// Database failure.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<accounts::CustomerError> for PlanChangeError {
    fn from(e: accounts::CustomerError) -> Self {
        match e {
            accounts::CustomerError::Stripe(e) => Self::Provider(e),
            accounts::CustomerError::Unexpected(e) => Self::Unexpected(e),
        }
    }
}

/// Something a workspace uses beyond what a cheaper plan allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    /// More members than the plan allows.
    Members {
        /// The plan's name.
        plan: String,
        /// Allowed.
        allowed: i32,
        /// The workspace has.
        has: i64,
    },
    /// More active API keys than the plan allows.
    ApiKeys {
        /// The plan's name.
        plan: String,
        /// Allowed.
        allowed: i32,
        /// The workspace has.
        has: i64,
    },
    /// Features used in the last 30 days that the plan lacks.
    Features {
        /// The plan's name.
        plan: String,
        /// Feature names ("Start a trace").
        features: Vec<String>,
        /// When the downgrade becomes possible if none of them is used again: 30 days
        /// after the last use of any of them.
        possible_from: OffsetDateTime,
    },
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Members { plan, allowed, has } => write!(
                f,
                "{plan} allows {allowed} members; this workspace has {has}. Remove members first."
            ),
            Self::ApiKeys { plan, allowed, has } => write!(
                f,
                "{plan} allows {allowed} active API keys; this workspace has {has}. Revoke keys first."
            ),
            Self::Features {
                plan,
                features,
                possible_from,
            } => {
                let day = time::macros::format_description!(
                    "[day padding:none] [month repr:short] [year]"
                );
                write!(
                    f,
                    "{plan} does not include {}, which this workspace used in the last 30 days. Without further use, the downgrade becomes possible on {}.",
                    join_names(features),
                    possible_from.format(&day).unwrap_or_default()
                )
            }
        }
    }
}

/// What a plan's card offers the workspace right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanOption {
    /// The workspace is on it.
    Current,
    /// No live subscription: subscribe through Checkout.
    Subscribe,
    /// Dearer than the current plan: upgrade now with proration.
    Upgrade,
    /// Cheaper paid plan: downgrade at period end, unless blocked.
    Downgrade(Vec<Blocker>),
    /// The downgrade already scheduled for the period's end.
    Scheduled,
    /// The free plan while subscribed: reached by cancelling at period end.
    CancelToReach,
    /// Not available now, with the reason (past due, cancelling, not on sale).
    Unavailable(String),
}

/// "A, B and C".
fn join_names(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// A feature used recently: its code, name and (an upper bound of) its last use.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FeatureUse {
    /// Feature code.
    pub feature_code: String,
    /// Feature name.
    pub name: String,
    /// The end of the hour of its last use (the roll-ups count by hour).
    pub last_used_before: OffsetDateTime,
}

/// How long a feature counts as used after its last use (DESIGN.md: a downgrade is
/// refused while the workspace used, in the last 30 days, a feature the plan lacks).
pub const FEATURE_USE_WINDOW: time::Duration = time::Duration::days(30);

/// What the workspace uses, for downgrade checks.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Members.
    pub members: i64,
    /// Active API keys.
    pub api_keys: i64,
    /// Features used in the last 30 days.
    pub features: Vec<FeatureUse>,
}

/// Reads the workspace's usage for downgrade checks.
pub async fn usage(db: &PgPool, workspace_id: WorkspaceId) -> anyhow::Result<Usage> {
    let mut conn = db.acquire().await?;
    let since = OffsetDateTime::now_utc() - time::Duration::days(30);
    Ok(Usage {
        members: accounts::db::member_count(&mut conn, workspace_id).await?,
        api_keys: api_keys::db::active_count(&mut conn, workspace_id).await?,
        features: crate::usage::db::features_used_since(&mut conn, workspace_id, since).await?,
    })
}

/// What `target` lacks for this workspace's usage (`entitled`: the target's feature
/// groups).
pub fn blockers(target: &Plan, entitled: &[String], usage: &Usage) -> Vec<Blocker> {
    let mut out = Vec::new();
    if let Some(allowed) = target.max_members.filter(|m| usage.members > i64::from(*m)) {
        out.push(Blocker::Members {
            plan: target.name.clone(),
            allowed,
            has: usage.members,
        });
    }
    if let Some(allowed) = target
        .max_api_keys
        .filter(|m| usage.api_keys > i64::from(*m))
    {
        out.push(Blocker::ApiKeys {
            plan: target.name.clone(),
            allowed,
            has: usage.api_keys,
        });
    }
    let missing: Vec<&FeatureUse> = usage
        .features
        .iter()
        .filter(|f| {
            let group = f.feature_code.split('.').next().unwrap_or_default();
            !entitled.iter().any(|e| e == group)
        })
        .collect();
    if let Some(last) = missing.iter().map(|f| f.last_used_before).max() {
        out.push(Blocker::Features {
            plan: target.name.clone(),
            features: missing.iter().map(|f| f.name.clone()).collect(),
            possible_from: last + FEATURE_USE_WINDOW,
        });
    }
    out
}

/// The eligibility rule, once: what `target` offers a workspace on `current` with
/// subscription `sub` (its live one, if any) and this usage.
pub fn decide(
    current: &Plan,
    target: &Plan,
    sub: Option<&Subscription>,
    entitled: &[String],
    usage: &Usage,
) -> PlanOption {
    if target.plan_code == current.plan_code {
        return PlanOption::Current;
    }
    let Some(sub) = sub.filter(|s| s.is_live()) else {
        return if !target.is_paid() {
            PlanOption::Current
        } else if target.stripe_price_id.is_none() {
            PlanOption::Unavailable("Not on sale yet".into())
        } else {
            PlanOption::Subscribe
        };
    };
    if sub.scheduled_plan_code.as_ref() == Some(&target.plan_code) {
        return PlanOption::Scheduled;
    }
    if !target.is_paid() {
        return PlanOption::CancelToReach;
    }
    if !sub.status.can_change_plan() {
        return PlanOption::Unavailable("Pay the open invoice first".into());
    }
    if sub.cancel_at_period_end {
        return PlanOption::Unavailable("Resume the subscription first".into());
    }
    // Stripe already bills the scheduled plan's price: a switch now would be prorated
    // from that price while the workspace still holds the dearer one.
    if sub.scheduled_plan_code.is_some() {
        return PlanOption::Unavailable("Take back the scheduled downgrade first".into());
    }
    if target.stripe_price_id.is_none() {
        return PlanOption::Unavailable("Not on sale yet".into());
    }
    if target.monthly_price_minor > current.monthly_price_minor {
        PlanOption::Upgrade
    } else {
        PlanOption::Downgrade(blockers(target, entitled, usage))
    }
}

/// Every plan with what it offers this workspace, cheapest first.
pub async fn plan_options(
    db: &PgPool,
    workspace_id: WorkspaceId,
    current: &Plan,
    sub: Option<&Subscription>,
) -> anyhow::Result<Vec<(Plan, PlanOption)>> {
    let usage = usage(db, workspace_id).await?;
    let mut conn = db.acquire().await?;
    let plans = catalog::db::plans(&mut conn).await?;
    let mut out = Vec::with_capacity(plans.len());
    for plan in plans {
        let entitled = catalog::db::entitlements(&mut conn, &plan.plan_code).await?;
        let option = decide(current, &plan, sub, &entitled, &usage);
        out.push((plan, option));
    }
    Ok(out)
}

/// The workspace's plan, its live subscription and `target`, with what `target` offers.
async fn offer(
    db: &PgPool,
    workspace_id: WorkspaceId,
    target: &PlanCode,
) -> Result<(Plan, Plan, Option<Subscription>, PlanOption), PlanChangeError> {
    let usage = usage(db, workspace_id).await?;
    let mut conn = db.acquire().await.map_err(anyhow::Error::from)?;
    let code = accounts::db::workspace_plan(&mut conn, workspace_id).await?;
    let current = catalog::db::plan(&mut conn, &code)
        .await?
        .ok_or(PlanChangeError::UnknownPlan)?;
    let target = catalog::db::plan(&mut conn, target)
        .await?
        .ok_or(PlanChangeError::UnknownPlan)?;
    let sub = db::current(&mut conn, workspace_id).await?;
    let entitled = catalog::db::entitlements(&mut conn, &target.plan_code).await?;
    let option = decide(&current, &target, sub.as_ref(), &entitled, &usage);
    Ok((current, target, sub.filter(Subscription::is_live), option))
}

fn not_offered(option: &PlanOption, target: &Plan) -> PlanChangeError {
    match option {
        PlanOption::Unavailable(reason) if reason.starts_with("Not on sale") => {
            PlanChangeError::NotOnSale(target.name.clone())
        }
        PlanOption::Unavailable(reason) => PlanChangeError::NotOffered(format!("{reason}.")),
        PlanOption::Current => {
            PlanChangeError::NotOffered(format!("You are on {} already.", target.name))
        }
        PlanOption::Subscribe => PlanChangeError::NotOffered("Subscribe to a plan first.".into()),
        PlanOption::Upgrade => {
            PlanChangeError::NotOffered(format!("{} is an upgrade.", target.name))
        }
        PlanOption::Downgrade(_) => {
            PlanChangeError::NotOffered(format!("{} is a downgrade.", target.name))
        }
        PlanOption::Scheduled => PlanChangeError::NotOffered(format!(
            "The move to {} is scheduled already.",
            target.name
        )),
        PlanOption::CancelToReach => {
            PlanChangeError::NotOffered("To return to the Free plan, cancel at period end.".into())
        }
    }
}

/// Who is subscribing, and where Checkout returns.
#[derive(Debug, Clone)]
pub struct Subscriber<'a> {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// Its name (the Stripe customer's).
    pub workspace_name: &'a str,
    /// The user's email (the Stripe customer's on first use).
    pub email: &'a str,
    /// billfold's public base URL, no trailing slash.
    pub base_url: &'a str,
    /// A key from the form: a double submit opens the same session.
    pub form_key: uuid::Uuid,
}

/// Starts a subscription (free → paid) through Checkout in subscription mode; returns
/// the hosted page's URL. The plan moves when the first invoice is paid.
pub async fn start_subscription(
    db: &PgPool,
    stripe: &StripeClient,
    who: &Subscriber<'_>,
    plan_code: &PlanCode,
) -> Result<String, PlanChangeError> {
    let (_, target, _, option) = offer(db, who.workspace_id, plan_code).await?;
    if option != PlanOption::Subscribe {
        return Err(not_offered(&option, &target));
    }
    let Some(price_id) = target.stripe_price_id.clone() else {
        return Err(PlanChangeError::NotOnSale(target.name));
    };
    let customer_id = accounts::ensure_stripe_customer(
        db,
        stripe,
        who.workspace_id,
        who.workspace_name,
        who.email,
    )
    .await?;
    let metadata = HashMap::from([
        ("workspace_id".to_owned(), who.workspace_id.to_string()),
        ("plan_code".to_owned(), target.plan_code.to_string()),
    ]);
    let session = stripe
        .create_subscription_checkout(&SubscriptionCheckout {
            price_id,
            customer_id,
            client_reference_id: who.workspace_id.to_string(),
            metadata,
            success_url: format!(
                "{}/billing/subscribed?plan={}",
                who.base_url, target.plan_code
            ),
            cancel_url: format!("{}/billing", who.base_url),
            idempotency_key: format!("subscribe-{}-{}", who.form_key, target.plan_code),
        })
        .await?;
    session
        .url
        .ok_or_else(|| anyhow::anyhow!("checkout session without url").into())
}

/// What an upgrade does, shown before it is confirmed.
#[derive(Debug, Clone)]
pub struct UpgradePreview {
    /// The plan now.
    pub current: Plan,
    /// The plan after.
    pub target: Plan,
    /// Stripe's preview lines: (description, amount).
    pub lines: Vec<(String, Money)>,
    /// Charged now.
    pub due_now: Money,
    /// The period's end (next renewal at the new price).
    pub renews_on: OffsetDateTime,
    /// Plan credits the paid upgrade grants (against the period's high-water mark).
    pub credits: i64,
    /// Unix seconds the preview was priced at; confirming charges at the same moment.
    pub proration_date: i64,
}

/// Stripe's preview invoice of upgrading to `plan_code` now, and the credits it would
/// grant. Changes nothing.
pub async fn preview_upgrade(
    db: &PgPool,
    stripe: &StripeClient,
    workspace_id: WorkspaceId,
    plan_code: &PlanCode,
) -> Result<UpgradePreview, PlanChangeError> {
    let (current, target, sub, option) = offer(db, workspace_id, plan_code).await?;
    let (PlanOption::Upgrade, Some(sub), Some(price_id)) =
        (&option, sub, target.stripe_price_id.clone())
    else {
        return Err(not_offered(&option, &target));
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let preview = stripe
        .preview_price_change(
            &sub.stripe_customer_id,
            &sub.stripe_subscription_id,
            &sub.stripe_item_id,
            &price_id,
            now,
        )
        .await?;
    let credits = allowances::preview_upgrade(
        &mut *db.acquire().await.map_err(anyhow::Error::from)?,
        &sub.stripe_subscription_id,
        sub.period(),
        &current,
        &target,
        now,
    )
    .await?;
    let money = |minor| Money::new(minor, &preview.currency);
    Ok(UpgradePreview {
        lines: preview
            .lines
            .iter()
            .map(|(d, a)| (d.clone(), money(*a)))
            .collect(),
        due_now: money(preview.amount_due),
        renews_on: sub.current_period_end,
        credits,
        proration_date: now,
        current,
        target,
    })
}

/// A confirmed upgrade.
#[derive(Debug, Clone)]
pub struct Upgraded {
    /// The new plan.
    pub target: Plan,
    /// Credits granted when its proration invoice is paid.
    pub credits: i64,
}

/// Upgrades now, invoicing the proration at once at the previewed `proration_date`
/// (a preview older than an hour is priced again now), so the charge is what was
/// shown. The intent is recorded first; Stripe's answer is applied after; the
/// pro-rata credits follow the paid proration invoice.
pub async fn confirm_upgrade(
    db: &PgPool,
    stripe: &StripeClient,
    workspace_id: WorkspaceId,
    plan_code: &PlanCode,
    proration_date: i64,
) -> Result<Upgraded, PlanChangeError> {
    let (current, target, sub, option) = offer(db, workspace_id, plan_code).await?;
    let (PlanOption::Upgrade, Some(sub), Some(price_id)) =
        (&option, sub, target.stripe_price_id.clone())
    else {
        return Err(not_offered(&option, &target));
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let proration_date = if (now - 3600..=now).contains(&proration_date) {
        proration_date
    } else {
        now
    };
    let at =
        OffsetDateTime::from_unix_timestamp(proration_date).unwrap_or(OffsetDateTime::now_utc());
    let (intent, credits) = {
        let mut tx = db.begin().await.map_err(anyhow::Error::from)?;
        let credits = allowances::preview_upgrade(
            &mut tx,
            &sub.stripe_subscription_id,
            sub.period(),
            &current,
            &target,
            proration_date,
        )
        .await?;
        let intent = db::insert_plan_change(
            &mut tx,
            workspace_id,
            &sub.stripe_subscription_id,
            &current.plan_code,
            &target.plan_code,
            credits,
            at,
        )
        .await?;
        tx.commit().await.map_err(anyhow::Error::from)?;
        (intent, credits)
    };
    let fetched_at = db_now(db).await?;
    let answer = stripe
        .change_price(
            &sub.stripe_subscription_id,
            &sub.stripe_item_id,
            &price_id,
            proration_date,
        )
        .await;
    let mut tx = db.begin().await.map_err(anyhow::Error::from)?;
    match answer {
        Ok(updated) => {
            // `pending_if_incomplete`: a declined charge leaves the old price in place.
            let applied = updated.price_id == price_id;
            db::set_plan_change_status(&mut tx, intent, applied).await?;
            apply_fetched(&mut tx, &updated, fetched_at).await?;
            tx.commit().await.map_err(anyhow::Error::from)?;
            if applied {
                Ok(Upgraded { target, credits })
            } else {
                Err(PlanChangeError::PaymentDeclined)
            }
        }
        Err(e) => {
            db::set_plan_change_status(&mut tx, intent, false).await?;
            tx.commit().await.map_err(anyhow::Error::from)?;
            Err(e.into())
        }
    }
}

/// A downgrade scheduled for the period's end.
#[derive(Debug, Clone)]
pub struct Downgraded {
    /// The plan kept until then.
    pub current: Plan,
    /// The plan after.
    pub target: Plan,
    /// When it takes effect.
    pub effective_at: OffsetDateTime,
}

/// Schedules a move to a cheaper paid plan at the end of the period: Stripe's price
/// changes now without proration (the renewal bills the cheaper plan), the workspace
/// keeps its plan until then, nothing is refunded. Refused with the blockers when the
/// workspace uses more than the target allows.
pub async fn schedule_downgrade(
    db: &PgPool,
    stripe: &StripeClient,
    workspace_id: WorkspaceId,
    plan_code: &PlanCode,
) -> Result<Downgraded, PlanChangeError> {
    let (current, target, sub, option) = offer(db, workspace_id, plan_code).await?;
    let (PlanOption::Downgrade(blockers), Some(sub), Some(price_id)) =
        (&option, sub, target.stripe_price_id.clone())
    else {
        return Err(not_offered(&option, &target));
    };
    if !blockers.is_empty() {
        return Err(PlanChangeError::Blocked(blockers.clone()));
    }
    {
        let mut tx = db.begin().await.map_err(anyhow::Error::from)?;
        db::schedule_downgrade(
            &mut tx,
            &sub.stripe_subscription_id,
            &current.plan_code,
            &target.plan_code,
            sub.current_period_end,
        )
        .await?;
        tx.commit().await.map_err(anyhow::Error::from)?;
    }
    let fetched_at = db_now(db).await?;
    let answer = stripe
        .change_price_at_renewal(&sub.stripe_subscription_id, &sub.stripe_item_id, &price_id)
        .await;
    let mut tx = db.begin().await.map_err(anyhow::Error::from)?;
    match answer {
        Ok(updated) => {
            apply_fetched(&mut tx, &updated, fetched_at).await?;
            tx.commit().await.map_err(anyhow::Error::from)?;
            Ok(Downgraded {
                current,
                target,
                effective_at: sub.current_period_end,
            })
        }
        Err(e) => {
            db::clear_scheduled_downgrade(&mut tx, &sub.stripe_subscription_id).await?;
            tx.commit().await.map_err(anyhow::Error::from)?;
            Err(e.into())
        }
    }
}

/// Takes back a scheduled downgrade: Stripe's price returns to the current plan's.
pub async fn cancel_downgrade(
    db: &PgPool,
    stripe: &StripeClient,
    workspace_id: WorkspaceId,
) -> Result<(), PlanChangeError> {
    let (sub, price_id) = {
        let mut conn = db.acquire().await.map_err(anyhow::Error::from)?;
        let sub = db::current(&mut conn, workspace_id)
            .await?
            .filter(|s| s.scheduled_plan_code.is_some())
            .ok_or_else(|| PlanChangeError::NotOffered("No downgrade is scheduled.".into()))?;
        let kept = sub
            .scheduled_from_plan_code
            .clone()
            .ok_or_else(|| PlanChangeError::NotOffered("No downgrade is scheduled.".into()))?;
        let plan = catalog::db::plan(&mut conn, &kept)
            .await?
            .ok_or(PlanChangeError::UnknownPlan)?;
        let price = plan
            .stripe_price_id
            .ok_or(PlanChangeError::NotOnSale(plan.name))?;
        (sub, price)
    };
    let fetched_at = db_now(db).await?;
    let updated = stripe
        .change_price_at_renewal(&sub.stripe_subscription_id, &sub.stripe_item_id, &price_id)
        .await?;
    let mut tx = db.begin().await.map_err(anyhow::Error::from)?;
    db::clear_scheduled_downgrade(&mut tx, &sub.stripe_subscription_id).await?;
    apply_fetched(&mut tx, &updated, fetched_at).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok(())
}

/// Cancels the live subscription at period end (`cancel`), or resumes it. Stripe's
/// answer is mirrored at once, so the page is right on the redirect.
pub async fn set_cancel_at_period_end(
    db: &PgPool,
    stripe: &StripeClient,
    workspace_id: WorkspaceId,
    cancel: bool,
) -> Result<(), PlanChangeError> {
    let sub = db::current(
        &mut *db.acquire().await.map_err(anyhow::Error::from)?,
        workspace_id,
    )
    .await?
    .filter(Subscription::is_live)
    .ok_or_else(|| {
        PlanChangeError::NotOffered("There is no active subscription to change.".into())
    })?;
    let fetched_at = db_now(db).await?;
    let updated = stripe
        .set_cancel_at_period_end(&sub.stripe_subscription_id, cancel)
        .await?;
    let mut tx = db.begin().await.map_err(anyhow::Error::from)?;
    apply_fetched(&mut tx, &updated, fetched_at).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok(())
}

/// A Stripe billing portal session for the workspace's own customer (never one named
/// by the request), returning to `return_url`; `None` before the workspace has one.
pub async fn portal_url(
    db: &PgPool,
    stripe: &StripeClient,
    workspace_id: WorkspaceId,
    return_url: &str,
) -> Result<Option<String>, PlanChangeError> {
    let customer = accounts::db::stripe_customer(
        &mut *db.acquire().await.map_err(anyhow::Error::from)?,
        workspace_id,
    )
    .await?;
    let Some(customer) = customer else {
        return Ok(None);
    };
    Ok(Some(
        stripe.create_portal_session(&customer, return_url).await?,
    ))
}

/// The database clock, read just before a Stripe call whose answer is mirrored.
async fn db_now(db: &PgPool) -> anyhow::Result<OffsetDateTime> {
    crate::database::now(&mut *db.acquire().await?).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(code: &str, price: i64, credits: i64, members: i32) -> Plan {
        Plan {
            plan_code: code.into(),
            name: code.to_uppercase(),
            monthly_price_minor: price,
            currency: "eur".into(),
            monthly_credits: Some(credits),
            rate_limit_per_min: Some(10),
            max_members: Some(members),
            max_api_keys: Some(5),
            stripe_price_id: (price > 0).then(|| format!("price_{code}")),
        }
    }

    fn used(code: &str, name: &str, last: OffsetDateTime) -> FeatureUse {
        FeatureUse {
            feature_code: code.into(),
            name: name.into(),
            last_used_before: last,
        }
    }

    #[test]
    fn a_downgrade_names_what_blocks_it() {
        let starter = plan("starter", 2_900, 500, 3);
        let usage = Usage {
            members: 4,
            api_keys: 2,
            features: vec![
                used(
                    "manager.process",
                    "Process a request",
                    time::macros::datetime!(2026-12-05 10:00 UTC),
                ),
                used(
                    "trace.start",
                    "Start a trace",
                    time::macros::datetime!(2026-12-01 10:00 UTC),
                ),
                used(
                    "pattern.detect",
                    "Detect patterns",
                    time::macros::datetime!(2026-12-03 10:00 UTC),
                ),
            ],
        };
        let b = blockers(&starter, &["manager".into()], &usage);
        assert_eq!(b.len(), 2);
        assert!(
            b[0].to_string()
                .contains("allows 3 members; this workspace has 4")
        );
        // Names, not codes, and the day the last of them falls out of the window.
        assert_eq!(
            b[1].to_string(),
            "STARTER does not include Start a trace and Detect patterns, which this workspace used in the last 30 days. Without further use, the downgrade becomes possible on 2 Jan 2027."
        );
    }

    #[test]
    fn without_a_subscription_paid_plans_are_subscribed_to() {
        let free = plan("free", 0, 100, 1);
        let pro = plan("pro", 4_900, 2_000, 10);
        let usage = Usage::default();
        assert_eq!(
            decide(&free, &pro, None, &[], &usage),
            PlanOption::Subscribe
        );
        assert_eq!(decide(&free, &free, None, &[], &usage), PlanOption::Current);
        let mut unsold = pro.clone();
        unsold.stripe_price_id = None;
        assert!(matches!(
            decide(&free, &unsold, None, &[], &usage),
            PlanOption::Unavailable(_)
        ));
    }

    #[test]
    fn while_a_downgrade_is_scheduled_only_taking_it_back_is_offered() {
        let starter = plan("starter", 2_900, 500, 3);
        let pro = plan("pro", 4_900, 2_000, 10);
        let business = plan("business", 9_900, 10_000, 25);
        let now = OffsetDateTime::now_utc();
        let sub = Subscription {
            stripe_subscription_id: "sub_test".into(),
            workspace_id: WorkspaceId::new(),
            stripe_customer_id: "cus_test".into(),
            stripe_item_id: "si_test".into(),
            stripe_price_id: "price_starter".into(),
            status: super::super::SubscriptionStatus::Active,
            plan_code: Some("starter".into()),
            current_period_start: now,
            current_period_end: now + time::Duration::days(30),
            cancel_at_period_end: false,
            scheduled_plan_code: Some("starter".into()),
            scheduled_from_plan_code: Some("pro".into()),
            fetched_at: now,
        };
        let usage = Usage::default();
        assert_eq!(
            decide(&pro, &starter, Some(&sub), &[], &usage),
            PlanOption::Scheduled
        );
        assert_eq!(
            decide(&pro, &business, Some(&sub), &[], &usage),
            PlanOption::Unavailable("Take back the scheduled downgrade first".into())
        );
    }
}
