//! `/billing`: the workspace's plan and subscription, every plan with what it offers
//! (the subscriptions domain decides: [`plan_change::plan_options`]), Checkout for a
//! first subscription, upgrades after Stripe's preview, downgrades at period end,
//! cancel/resume, the Stripe customer portal, and the invoice list. Pages render from
//! Postgres only (no Stripe call on a GET).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::AppState;
use super::error::{AppError, Result};
use super::extract::{AccountMember, Form, Query};
use super::views::{ConfirmForm, ConfirmPage, PageCtx, filters, set_flash};
use crate::catalog::{self, Plan};
use crate::ids::PlanCode;
use crate::ledger::{self, Balance};
use crate::subscriptions::plan_change::{
    self, PlanChangeError, PlanOption, Subscriber, UpgradePreview,
};
use crate::subscriptions::{self, Invoice, Subscription, SubscriptionStatus};

#[derive(Template, WebTemplate)]
#[template(path = "billing/billing.html")]
struct BillingPage {
    page: PageCtx,
    plan: Plan,
    options: Vec<(Plan, PlanOption)>,
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
    fn plan_name<'a>(&'a self, code: &'a PlanCode) -> &'a str {
        self.options
            .iter()
            .find(|(p, _)| &p.plan_code == code)
            .map_or(code.as_str(), |(p, _)| p.name.as_str())
    }

    fn live(&self) -> bool {
        self.subscription.as_ref().is_some_and(|s| s.is_live())
    }
}

/// Where a subscription's Checkout returns: the plan it was for.
#[derive(Debug, Deserialize)]
pub struct SubscribedQuery {
    plan: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "billing/subscribed.html")]
struct SubscribedPage {
    page: PageCtx,
    status: SubscribedStatus,
}

/// Whether the plan paid for in Checkout is active yet (the webhook may land after the
/// customer is back).
#[derive(Template, WebTemplate)]
#[template(path = "billing/subscribed_status_partial.html")]
struct SubscribedStatus {
    /// The plan paid for.
    plan: Plan,
    /// The workspace is on it with a live subscription.
    active: bool,
    balance: Balance,
}

async fn subscribed_status(
    state: &AppState,
    member: &AccountMember,
    plan_code: &str,
) -> Result<SubscribedStatus> {
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    let plan = catalog::db::plan(&mut conn, &plan_code.into())
        .await?
        .filter(Plan::is_paid)
        .ok_or(AppError::NotFound)?;
    let ws = member.workspace.workspace_id;
    let active = member.workspace.plan_code == plan.plan_code
        && subscriptions::db::current(&mut conn, ws)
            .await?
            .is_some_and(|s| s.is_live());
    Ok(SubscribedStatus {
        plan,
        active,
        balance: ledger::db::balance(&mut conn, ws).await?,
    })
}

/// `GET /billing/subscribed?plan=pro`: where a subscription's Checkout returns:
/// "payment received, the plan is activating", updating itself (htmx polls the
/// status fragment) until Stripe's webhook has moved the workspace onto the plan.
/// A plan that is not a paid one of the catalog is a 404.
pub async fn show_subscribed(
    State(state): State<AppState>,
    member: AccountMember,
    Query(q): Query<SubscribedQuery>,
) -> Result<Response> {
    Ok(SubscribedPage {
        page: member.page("billing"),
        status: subscribed_status(&state, &member, &q.plan).await?,
    }
    .into_response())
}

/// `GET /billing/subscribed/status?plan=pro`: the fragment the return page polls.
pub async fn subscribed_status_partial(
    State(state): State<AppState>,
    member: AccountMember,
    Query(q): Query<SubscribedQuery>,
) -> Result<Response> {
    Ok(subscribed_status(&state, &member, &q.plan)
        .await?
        .into_response())
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
    let (plan, subscription, balance, invoices, has_customer) = {
        let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
        let plan = catalog::db::plan(&mut conn, &member.workspace.plan_code)
            .await?
            .ok_or(AppError::NotFound)?;
        (
            plan,
            subscriptions::db::current(&mut conn, ws).await?,
            ledger::db::balance(&mut conn, ws).await?,
            subscriptions::db::invoices(&mut conn, ws).await?,
            crate::accounts::db::stripe_customer(&mut conn, ws)
                .await?
                .is_some(),
        )
    };
    let live = subscription.as_ref().filter(|s| s.is_live());
    let options = plan_change::plan_options(&state.db, ws, &plan, live).await?;
    Ok(BillingPage {
        page: member.page_with_flash("billing").await,
        plan,
        options,
        subscription,
        balance,
        invoices,
        can_manage: member.workspace.role.can_manage(),
        has_customer,
        form_key: Uuid::new_v4(),
        downgrade_errors: Vec::new(),
    })
}

/// Turns a workflow error into what the customer sees: a flash on `/billing` for what
/// they can act on, 503 when Stripe is down, 500 for the rest.
async fn refused(member: &AccountMember, e: PlanChangeError) -> Result<Response> {
    match e {
        PlanChangeError::UnknownPlan => Err(AppError::NotFound),
        PlanChangeError::Provider(err) => {
            tracing::error!(error = %err, "stripe call failed; nothing changed");
            Err(AppError::ProviderUnavailable)
        }
        PlanChangeError::Unexpected(err) => Err(AppError::Internal(err)),
        PlanChangeError::NotOnSale(plan) => {
            tracing::warn!(
                plan,
                "a customer tried a plan that has no Stripe price: run `billfold stripe sync`"
            );
            set_flash(
                &member.session,
                format!("The {plan} plan is not on sale yet. Please try again in a few minutes."),
            )
            .await;
            Ok(Redirect::to("/billing").into_response())
        }
        PlanChangeError::PaymentDeclined => {
            set_flash(
                &member.session,
                "Your card was declined, so your plan has not changed. Update your card \
                 under Manage billing: the upgrade happens as soon as its invoice is paid."
                    .to_owned(),
            )
            .await;
            Ok(Redirect::to("/billing").into_response())
        }
        PlanChangeError::NotOffered(message) => {
            set_flash(&member.session, message).await;
            Ok(Redirect::to("/billing").into_response())
        }
        PlanChangeError::Blocked(blockers) => {
            set_flash(
                &member.session,
                format!(
                    "This downgrade is not possible yet: {}",
                    blockers
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            )
            .await;
            Ok(Redirect::to("/billing").into_response())
        }
    }
}

/// The subscribe form.
#[derive(Debug, Deserialize)]
pub struct SubscribeForm {
    plan_code: String,
    form_key: Uuid,
}

/// `POST /billing/subscribe`: Checkout in subscription mode for a paid plan (free →
/// paid). A workspace with a live subscription changes plan with upgrade/downgrade.
pub async fn create_subscription_checkout(
    State(state): State<AppState>,
    member: AccountMember,
    Form(form): Form<SubscribeForm>,
) -> Result<Response> {
    member.require_manager()?;
    let who = Subscriber {
        workspace_id: member.workspace.workspace_id,
        workspace_name: &member.workspace.workspace_name,
        email: &member.user.email,
        base_url: &state.base_url,
        form_key: form.form_key,
    };
    match plan_change::start_subscription(
        &state.db,
        &state.stripe,
        &who,
        &form.plan_code.as_str().into(),
    )
    .await
    {
        Ok(url) => Ok(Redirect::to(&url).into_response()),
        Err(e) => refused(&member, e).await,
    }
}

/// `POST /billing/portal`: a Stripe billing portal session for this workspace's
/// customer (taken from the session's workspace, never from the request), returning to
/// `/billing`.
pub async fn create_portal_session(
    State(state): State<AppState>,
    member: AccountMember,
) -> Result<Response> {
    member.require_manager()?;
    let return_url = format!("{}/billing", state.base_url);
    match plan_change::portal_url(
        &state.db,
        &state.stripe,
        member.workspace.workspace_id,
        &return_url,
    )
    .await
    {
        Ok(Some(url)) => Ok(Redirect::to(&url).into_response()),
        Ok(None) => {
            set_flash(
                &member.session,
                "There is nothing to manage yet: subscribe or buy credits first.",
            )
            .await;
            Ok(Redirect::to("/billing").into_response())
        }
        Err(e) => refused(&member, e).await,
    }
}

/// `POST /billing/cancel`: asks for confirmation (what ends when, what stays), then
/// (with `confirm=yes`) cancels at period end: the plan stays until then.
pub async fn cancel_subscription(
    State(state): State<AppState>,
    member: AccountMember,
    Form(form): Form<ConfirmForm>,
) -> Result<Response> {
    member.require_manager()?;
    if !form.confirmed() {
        let sub = {
            let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
            subscriptions::db::current(&mut conn, member.workspace.workspace_id).await?
        };
        let Some(sub) = sub.filter(|s| s.is_live() && !s.cancel_at_period_end) else {
            set_flash(&member.session, "There is no subscription to cancel.").await;
            return Ok(Redirect::to("/billing").into_response());
        };
        let ends = filters::local_day(&sub.current_period_end, &member.workspace.time_zone);
        return Ok(ConfirmPage {
            page: member.page("billing"),
            title: "Cancel your subscription?".to_owned(),
            lines: vec![
                format!("Your plan stays active until {ends}; nothing more is charged. Then the workspace moves to the Free plan and its plan credits reset to Free's allowance."),
                "Purchased credits stay yours. You can resume the subscription until it ends.".to_owned(),
            ],
            action: "/billing/cancel".to_owned(),
            button: "Cancel at period end".to_owned(),
            back: "/billing".to_owned(),
            back_label: "Keep my subscription".to_owned(),
        }
        .into_response());
    }
    set_cancel(state, member, true).await
}

/// `POST /billing/resume`: undo a cancellation before the period ends.
pub async fn resume_subscription(
    State(state): State<AppState>,
    member: AccountMember,
) -> Result<Response> {
    set_cancel(state, member, false).await
}

async fn set_cancel(state: AppState, member: AccountMember, cancel: bool) -> Result<Response> {
    member.require_manager()?;
    let ws = member.workspace.workspace_id;
    if let Err(e) =
        plan_change::set_cancel_at_period_end(&state.db, &state.stripe, ws, cancel).await
    {
        return refused(&member, e).await;
    }
    let message = if cancel {
        "Your subscription will end at the end of the period. You can resume it until then."
    } else {
        "Your subscription will renew as usual."
    };
    set_flash(&member.session, message).await;
    Ok(Redirect::to("/billing").into_response())
}

/// The plan an upgrade preview is for.
#[derive(Debug, Deserialize)]
pub struct ChangeQuery {
    plan_code: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "billing/change_partial.html")]
struct ChangePartial {
    csrf_token: String,
    preview: UpgradePreview,
    /// Swapped in by htmx and opened as a modal (else rendered open in the page).
    modal: bool,
    /// The workspace's time zone (the renewal date).
    time_zone: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "billing/change.html")]
struct ChangePage {
    page: PageCtx,
    partial: ChangePartial,
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
    let preview = match plan_change::preview_upgrade(
        &state.db,
        &state.stripe,
        member.workspace.workspace_id,
        &q.plan_code.as_str().into(),
    )
    .await
    {
        Ok(p) => p,
        Err(e) => return refused(&member, e).await,
    };
    let modal = headers.contains_key("hx-request");
    let partial = ChangePartial {
        csrf_token: member.csrf_token.clone(),
        preview,
        modal,
        time_zone: member.workspace.time_zone.clone(),
    };
    if modal {
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
    match plan_change::confirm_upgrade(
        &state.db,
        &state.stripe,
        member.workspace.workspace_id,
        &form.plan_code.as_str().into(),
        form.proration_date,
    )
    .await
    {
        Ok(done) => {
            set_flash(
                &member.session,
                format!(
                    "Upgraded to {}. {} credits for the rest of this period arrive with the payment.",
                    done.target.name,
                    crate::money::format_credits(done.credits)
                ),
            )
            .await;
            Ok(Redirect::to("/billing").into_response())
        }
        Err(e) => refused(&member, e).await,
    }
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
    match plan_change::schedule_downgrade(
        &state.db,
        &state.stripe,
        member.workspace.workspace_id,
        &form.plan_code.as_str().into(),
    )
    .await
    {
        Ok(done) => {
            set_flash(
                &member.session,
                format!(
                    "You move to {} at the end of this period; {} stays until then.",
                    done.target.name, done.current.name
                ),
            )
            .await;
            Ok(Redirect::to("/billing").into_response())
        }
        Err(PlanChangeError::Blocked(blockers)) => {
            let mut page = render(&state, &member).await?;
            page.downgrade_errors = blockers.iter().map(ToString::to_string).collect();
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(e) => refused(&member, e).await,
    }
}

/// `POST /billing/downgrade/cancel`: keeps the current plan after all.
pub async fn cancel_downgrade(
    State(state): State<AppState>,
    member: AccountMember,
) -> Result<Response> {
    member.require_manager()?;
    if let Err(e) =
        plan_change::cancel_downgrade(&state.db, &state.stripe, member.workspace.workspace_id).await
    {
        return refused(&member, e).await;
    }
    set_flash(
        &member.session,
        "The scheduled downgrade is canceled: your plan renews as before.",
    )
    .await;
    Ok(Redirect::to("/billing").into_response())
}

/// Whether a subscription's status is shown as ended.
pub fn is_canceled(status: SubscriptionStatus) -> bool {
    status == SubscriptionStatus::Canceled
}
