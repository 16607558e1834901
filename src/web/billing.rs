//! `/billing`: the workspace's plan and subscription, every plan to compare, Checkout
//! for a first subscription, the Stripe customer portal, and the invoice list. Pages
//! render from Postgres only (no Stripe call on a GET).

use std::collections::HashMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::Form;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::AppState;
use super::error::{AppError, Result};
use super::extract::AccountMember;
use super::views::{PageCtx, filters, set_flash};
use crate::catalog::{self, Plan};
use crate::ledger::{self, Balance};
use crate::stripe::billing::SubscriptionCheckout;
use crate::subscriptions::{self, Invoice, Subscription};
use crate::top_ups;

#[derive(Template, WebTemplate)]
#[template(path = "billing/billing.html")]
struct BillingPage {
    page: PageCtx,
    plan: Plan,
    plans: Vec<Plan>,
    subscription: Option<Subscription>,
    balance: Balance,
    invoices: Vec<Invoice>,
    can_manage: bool,
    has_customer: bool,
    form_key: Uuid,
    /// Why the last downgrade was refused (422).
    downgrade_errors: Vec<String>,
}

impl BillingPage {
    fn plan_name<'a>(&'a self, code: &'a str) -> &'a str {
        self.plans
            .iter()
            .find(|p| p.plan_code == code)
            .map_or(code, |p| p.name.as_str())
    }

    fn live(&self) -> bool {
        self.subscription.as_ref().is_some_and(|s| s.is_live())
    }
}

/// `GET /billing`.
pub async fn show_billing(
    State(state): State<AppState>,
    member: AccountMember,
) -> Result<Response> {
    Ok(render(&state, &member).await?.into_response())
}

async fn render(state: &AppState, member: &AccountMember) -> Result<BillingPage> {
    let ws = member.workspace.workspace_id;
    let plans = catalog::plans(&state.db).await?;
    let plan = plans
        .iter()
        .find(|p| p.plan_code == member.workspace.plan_code)
        .cloned()
        .ok_or(AppError::NotFound)?;
    let has_customer: bool = sqlx::query_scalar(
        "select stripe_customer_id is not null from workspaces where workspace_id = $1",
    )
    .bind(ws)
    .fetch_one(&state.db)
    .await
    .map_err(anyhow::Error::from)?;
    Ok(BillingPage {
        page: member.page_with_flash("billing").await,
        plan,
        plans,
        subscription: subscriptions::current(&state.db, ws).await?,
        balance: ledger::balance(&state.db, ws).await?,
        invoices: subscriptions::invoices(&state.db, ws).await?,
        can_manage: member.workspace.role.can_manage(),
        has_customer,
        form_key: Uuid::new_v4(),
        downgrade_errors: Vec::new(),
    })
}

/// The subscribe form.
#[derive(Debug, Deserialize)]
pub struct SubscribeForm {
    plan_code: String,
    form_key: Uuid,
}

/// `POST /billing/subscribe`: Checkout in subscription mode for a paid plan (free →
/// paid). A workspace with a live subscription changes plan in the customer portal.
pub async fn create_subscription_checkout(
    State(state): State<AppState>,
    member: AccountMember,
    Form(form): Form<SubscribeForm>,
) -> Result<Response> {
    member.require_manager()?;
    let ws = member.workspace.workspace_id;
    if subscriptions::current(&state.db, ws)
        .await?
        .is_some_and(|s| s.is_live())
    {
        set_flash(
            &member.session,
            "You already have a subscription: change plans in the billing portal.",
        )
        .await;
        return Ok(Redirect::to("/billing").into_response());
    }
    let price: Option<Option<String>> = sqlx::query_scalar(
        "select stripe_price_id from plans where plan_code = $1 and monthly_price_minor > 0",
    )
    .bind(&form.plan_code)
    .fetch_optional(&state.db)
    .await
    .map_err(anyhow::Error::from)?;
    let price_id = match price {
        Some(Some(id)) => id,
        Some(None) => {
            set_flash(
                &member.session,
                "This plan is not on sale yet: an operator must run `billfold stripe sync`.",
            )
            .await;
            return Ok(Redirect::to("/billing").into_response());
        }
        None => return Err(AppError::NotFound),
    };
    let customer_id = top_ups::ensure_customer(
        &state.db,
        &state.stripe,
        ws,
        &member.workspace.workspace_name,
        &member.user.email,
    )
    .await
    .map_err(provider_error)?;
    let metadata = HashMap::from([
        ("workspace_id".to_owned(), ws.to_string()),
        ("plan_code".to_owned(), form.plan_code.clone()),
    ]);
    let session = state
        .stripe
        .create_subscription_checkout(&SubscriptionCheckout {
            price_id,
            customer_id,
            client_reference_id: ws.to_string(),
            metadata,
            success_url: format!("{}/billing?subscribed=1", state.base_url),
            cancel_url: format!("{}/billing", state.base_url),
            idempotency_key: format!("subscribe-{}-{}", form.form_key, form.plan_code),
        })
        .await
        .map_err(|e| provider_error(e.into()))?;
    let url = session
        .url
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("checkout session without url")))?;
    Ok(Redirect::to(&url).into_response())
}

/// `POST /billing/portal`: a Stripe billing portal session for this workspace's
/// customer (taken from the session's workspace, never from the request), returning to
/// `/billing`.
pub async fn create_portal_session(
    State(state): State<AppState>,
    member: AccountMember,
) -> Result<Response> {
    member.require_manager()?;
    let customer: Option<String> =
        sqlx::query_scalar("select stripe_customer_id from workspaces where workspace_id = $1")
            .bind(member.workspace.workspace_id)
            .fetch_one(&state.db)
            .await
            .map_err(anyhow::Error::from)?;
    let Some(customer) = customer else {
        set_flash(
            &member.session,
            "There is nothing to manage yet: subscribe or buy credits first.",
        )
        .await;
        return Ok(Redirect::to("/billing").into_response());
    };
    let url = state
        .stripe
        .create_portal_session(&customer, &format!("{}/billing", state.base_url))
        .await
        .map_err(|e| provider_error(e.into()))?;
    Ok(Redirect::to(&url).into_response())
}

/// `POST /billing/cancel`: cancel at period end (the plan stays until then).
pub async fn cancel_subscription(
    State(state): State<AppState>,
    member: AccountMember,
) -> Result<Response> {
    set_cancel(state, member, true).await
}

/// `POST /billing/resume`: undo a cancellation before the period ends.
pub async fn resume_subscription(
    State(state): State<AppState>,
    member: AccountMember,
) -> Result<Response> {
    set_cancel(state, member, false).await
}

/// Changes `cancel_at_period_end` on the workspace's live subscription (found through
/// the session's workspace, never the request), then mirrors Stripe's answer at once so
/// the page is right on the redirect; the webhook that follows changes nothing more.
async fn set_cancel(state: AppState, member: AccountMember, cancel: bool) -> Result<Response> {
    member.require_manager()?;
    let ws = member.workspace.workspace_id;
    let Some(sub) = subscriptions::current(&state.db, ws)
        .await?
        .filter(Subscription::is_live)
    else {
        set_flash(
            &member.session,
            "There is no active subscription to change.",
        )
        .await;
        return Ok(Redirect::to("/billing").into_response());
    };
    let updated = state
        .stripe
        .set_cancel_at_period_end(&sub.stripe_subscription_id, cancel)
        .await
        .map_err(|e| provider_error(e.into()))?;
    let mut tx = state.db.begin().await.map_err(anyhow::Error::from)?;
    subscriptions::apply(&mut tx, &updated).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    let message = if cancel {
        "Your subscription will end at the end of the period. You can resume it until then."
    } else {
        "Your subscription will renew as usual."
    };
    set_flash(&member.session, message).await;
    Ok(Redirect::to("/billing").into_response())
}

fn provider_error(e: top_ups::TopUpError) -> AppError {
    match e {
        top_ups::TopUpError::Unexpected(e) => AppError::Internal(e),
        other => {
            tracing::error!(error = %other, "stripe call failed");
            AppError::ProviderUnavailable
        }
    }
}

/// The plan an upgrade preview is for.
#[derive(Debug, Deserialize)]
pub struct ChangeQuery {
    plan_code: String,
}

/// What an upgrade does, shown before it is confirmed.
struct ChangePreview {
    target: Plan,
    current: Plan,
    lines: Vec<(String, crate::money::Money)>,
    due_now: crate::money::Money,
    renews_on: time::OffsetDateTime,
    credits: i64,
    proration_date: i64,
}

#[derive(Template, WebTemplate)]
#[template(path = "billing/change_partial.html")]
struct ChangePartial {
    csrf_token: String,
    preview: ChangePreview,
}

#[derive(Template, WebTemplate)]
#[template(path = "billing/change.html")]
struct ChangePage {
    page: PageCtx,
    partial: ChangePartial,
}

/// The live subscription and the current and target plans of an upgrade; refuses
/// what is not an upgrade of a live subscription.
async fn upgrade_parts(
    state: &AppState,
    member: &AccountMember,
    plan_code: &str,
) -> Result<(Subscription, Plan, Plan, String)> {
    let ws = member.workspace.workspace_id;
    let sub = subscriptions::current(&state.db, ws)
        .await?
        .filter(|s| matches!(s.status.as_str(), "active" | "trialing"))
        .ok_or(AppError::NotFound)?;
    let current = catalog::plan(&state.db, &member.workspace.plan_code)
        .await?
        .ok_or(AppError::NotFound)?;
    let target = catalog::plan(&state.db, plan_code)
        .await?
        .ok_or(AppError::NotFound)?;
    if target.monthly_price_minor <= current.monthly_price_minor {
        return Err(AppError::NotFound);
    }
    let price_id = catalog::stripe_price_id(&state.db, plan_code)
        .await?
        .ok_or(AppError::NotFound)?;
    Ok((sub, current, target, price_id))
}

/// `POST /billing/change/preview` (`plan_code`): Stripe's preview invoice of an
/// upgrade (lines, amount due now, next renewal) and the credits it grants; a fragment
/// for the htmx dialog, a page without JavaScript. A POST because it calls Stripe, and
/// no GET page does (DESIGN.md principle 3); it changes nothing.
pub async fn preview_change(
    State(state): State<AppState>,
    member: AccountMember,
    headers: axum::http::HeaderMap,
    Form(q): Form<ChangeQuery>,
) -> Result<Response> {
    member.require_manager()?;
    let (sub, current, target, price_id) = upgrade_parts(&state, &member, &q.plan_code).await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let preview = state
        .stripe
        .preview_price_change(
            &sub.stripe_customer_id,
            &sub.stripe_subscription_id,
            &sub.stripe_item_id,
            &price_id,
            now,
        )
        .await
        .map_err(|e| provider_error(e.into()))?;
    let money = |minor| crate::money::Money::new(minor, &preview.currency);
    let credits = subscriptions::upgrade_credits(
        current.monthly_credits,
        target.monthly_credits,
        sub.current_period_start.unix_timestamp(),
        sub.current_period_end.unix_timestamp(),
        now,
    );
    let partial = ChangePartial {
        csrf_token: member.csrf_token.clone(),
        preview: ChangePreview {
            lines: preview
                .lines
                .iter()
                .map(|(d, a)| (d.clone(), money(*a)))
                .collect(),
            due_now: money(preview.amount_due),
            renews_on: sub.current_period_end,
            credits,
            proration_date: now,
            target,
            current,
        },
    };
    if headers.contains_key("hx-request") {
        return Ok(partial.into_response());
    }
    Ok(ChangePage {
        page: member.page("billing"),
        partial,
    }
    .into_response())
}

/// The upgrade confirmation.
#[derive(Debug, Deserialize)]
pub struct ChangeForm {
    plan_code: String,
    proration_date: i64,
}

/// `POST /billing/change`: upgrades now with proration invoiced at once, at the
/// previewed `proration_date` (so the charge is what was shown). The pro-rata
/// allowance is granted when Stripe reports that invoice paid.
pub async fn change_plan(
    State(state): State<AppState>,
    member: AccountMember,
    Form(form): Form<ChangeForm>,
) -> Result<Response> {
    member.require_manager()?;
    let (sub, current, target, price_id) = upgrade_parts(&state, &member, &form.plan_code).await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // A preview older than an hour is stale: price it again.
    let proration_date = if (now - 3600..=now).contains(&form.proration_date) {
        form.proration_date
    } else {
        now
    };
    let credits = subscriptions::upgrade_credits(
        current.monthly_credits,
        target.monthly_credits,
        sub.current_period_start.unix_timestamp(),
        sub.current_period_end.unix_timestamp(),
        proration_date,
    );
    let ws = member.workspace.workspace_id;
    {
        // Recorded before Stripe is called: the paid invoice's webhook may come first.
        let mut tx = state.db.begin().await.map_err(anyhow::Error::from)?;
        subscriptions::record_upgrade(
            &mut tx,
            ws,
            &sub.stripe_subscription_id,
            &current.plan_code,
            &target.plan_code,
            credits,
        )
        .await?;
        tx.commit().await.map_err(anyhow::Error::from)?;
    }
    let updated = state
        .stripe
        .change_price(
            &sub.stripe_subscription_id,
            &sub.stripe_item_id,
            &price_id,
            proration_date,
        )
        .await;
    let updated = match updated {
        Ok(u) => u,
        Err(e) => {
            sqlx::query("delete from plan_changes where stripe_subscription_id = $1 and stripe_invoice_id is null")
                .bind(&sub.stripe_subscription_id)
                .execute(&state.db)
                .await
                .map_err(anyhow::Error::from)?;
            return Err(provider_error(e.into()));
        }
    };
    let mut tx = state.db.begin().await.map_err(anyhow::Error::from)?;
    subscriptions::apply(&mut tx, &updated).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    set_flash(
        &member.session,
        format!(
            "Upgraded to {}. {} credits for the rest of this period arrive with the payment.",
            target.name,
            crate::money::format_credits(credits)
        ),
    )
    .await;
    Ok(Redirect::to("/billing").into_response())
}

/// The downgrade form.
#[derive(Debug, Deserialize)]
pub struct DowngradeForm {
    plan_code: String,
}

/// `POST /billing/downgrade`: schedules a move to a cheaper paid plan at the end of
/// the period (nothing refunded, the current plan kept until then). Refused with the
/// reasons (422) when the workspace uses more than the target plan allows.
pub async fn schedule_downgrade(
    State(state): State<AppState>,
    member: AccountMember,
    Form(form): Form<DowngradeForm>,
) -> Result<Response> {
    member.require_manager()?;
    let ws = member.workspace.workspace_id;
    let sub = subscriptions::current(&state.db, ws)
        .await?
        .filter(|s| matches!(s.status.as_str(), "active" | "trialing"))
        .ok_or(AppError::NotFound)?;
    let current = catalog::plan(&state.db, &member.workspace.plan_code)
        .await?
        .ok_or(AppError::NotFound)?;
    let target = catalog::plan(&state.db, &form.plan_code)
        .await?
        .ok_or(AppError::NotFound)?;
    if target.monthly_price_minor == 0 || target.monthly_price_minor >= current.monthly_price_minor
    {
        return Err(AppError::NotFound);
    }
    let blockers = subscriptions::downgrade_blockers(&state.db, ws, &target.plan_code).await?;
    if !blockers.is_empty() {
        let mut page = render(&state, &member).await?;
        page.downgrade_errors = blockers;
        return Ok((axum::http::StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    let price_id = catalog::stripe_price_id(&state.db, &target.plan_code)
        .await?
        .ok_or(AppError::NotFound)?;
    {
        let mut tx = state.db.begin().await.map_err(anyhow::Error::from)?;
        subscriptions::schedule_downgrade(
            &mut tx,
            &sub.stripe_subscription_id,
            &current.plan_code,
            &target.plan_code,
            sub.current_period_end,
        )
        .await?;
        tx.commit().await.map_err(anyhow::Error::from)?;
    }
    let updated = state
        .stripe
        .change_price_at_renewal(&sub.stripe_subscription_id, &sub.stripe_item_id, &price_id)
        .await;
    let mut tx = state.db.begin().await.map_err(anyhow::Error::from)?;
    match updated {
        Ok(updated) => {
            subscriptions::apply(&mut tx, &updated).await?;
        }
        Err(e) => {
            subscriptions::clear_scheduled_downgrade(&mut tx, &sub.stripe_subscription_id).await?;
            tx.commit().await.map_err(anyhow::Error::from)?;
            return Err(provider_error(e.into()));
        }
    }
    tx.commit().await.map_err(anyhow::Error::from)?;
    set_flash(
        &member.session,
        format!(
            "You move to {} at the end of this period; {} stays until then.",
            target.name, current.name
        ),
    )
    .await;
    Ok(Redirect::to("/billing").into_response())
}

/// `POST /billing/downgrade/cancel`: keeps the current plan after all.
pub async fn cancel_downgrade(
    State(state): State<AppState>,
    member: AccountMember,
) -> Result<Response> {
    member.require_manager()?;
    let ws = member.workspace.workspace_id;
    let sub = subscriptions::current(&state.db, ws)
        .await?
        .filter(|s| s.scheduled_plan_code.is_some())
        .ok_or(AppError::NotFound)?;
    let price_id = catalog::stripe_price_id(&state.db, &member.workspace.plan_code)
        .await?
        .ok_or(AppError::NotFound)?;
    let updated = state
        .stripe
        .change_price_at_renewal(&sub.stripe_subscription_id, &sub.stripe_item_id, &price_id)
        .await
        .map_err(|e| provider_error(e.into()))?;
    let mut tx = state.db.begin().await.map_err(anyhow::Error::from)?;
    subscriptions::clear_scheduled_downgrade(&mut tx, &sub.stripe_subscription_id).await?;
    subscriptions::apply(&mut tx, &updated).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    set_flash(
        &member.session,
        "The scheduled downgrade is canceled: your plan renews as before.",
    )
    .await;
    Ok(Redirect::to("/billing").into_response())
}
