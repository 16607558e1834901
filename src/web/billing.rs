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
}

impl BillingPage {
    fn live(&self) -> bool {
        self.subscription
            .as_ref()
            .is_some_and(|s| matches!(s.status.as_str(), "active" | "trialing" | "past_due"))
    }
}

/// `GET /billing`.
pub async fn show_billing(
    State(state): State<AppState>,
    member: AccountMember,
) -> Result<Response> {
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
    }
    .into_response())
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
        .is_some_and(|s| matches!(s.status.as_str(), "active" | "trialing" | "past_due"))
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
        .filter(|s| matches!(s.status.as_str(), "active" | "trialing" | "past_due"))
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
