//! Buying credits: the top-up page (credit packs and a custom amount), the POST that
//! opens Stripe Checkout, and the success page that updates itself (htmx polling of
//! a partial) until the webhook has granted the credits.

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
use super::views::{PageCtx, filters};
use crate::catalog::{self, CreditPack, custom_top_up};
use crate::ledger::{self, Balance};
use crate::top_ups::{self, Buyer, TopUp, TopUpChoice, TopUpError, TopUpStatus};

#[derive(Template, WebTemplate)]
#[template(path = "billing/top_up.html")]
struct TopUpPage {
    page: PageCtx,
    packs: Vec<CreditPack>,
    balance: Balance,
    form_key: Uuid,
    canceled: bool,
    can_manage: bool,
    amount_eur: String,
    error: Option<String>,
    min_eur: i64,
    max_eur: i64,
    credits_per_eur: i64,
}

#[derive(Debug, Default, Deserialize)]
pub struct TopUpQuery {
    canceled: Option<String>,
}

async fn render(
    state: &AppState,
    member: &AccountMember,
    canceled: bool,
    amount_eur: String,
    error: Option<String>,
) -> Result<TopUpPage> {
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    Ok(TopUpPage {
        page: member.page_with_flash("top-up").await,
        packs: catalog::db::credit_packs(&mut conn).await?,
        balance: ledger::db::balance(&mut conn, member.workspace.workspace_id).await?,
        form_key: Uuid::new_v4(),
        canceled,
        can_manage: member.workspace.role.can_manage(),
        amount_eur,
        error,
        min_eur: custom_top_up::MIN_EUR,
        max_eur: custom_top_up::MAX_EUR,
        credits_per_eur: custom_top_up::CREDITS_PER_EUR,
    })
}

/// `GET /billing/top-up[?canceled=1]`.
pub async fn top_up_form(
    State(state): State<AppState>,
    member: AccountMember,
    Query(q): Query<TopUpQuery>,
) -> Result<Response> {
    // Never served from the browser cache: each view carries a fresh form key.
    let page = render(&state, &member, q.canceled.is_some(), String::new(), None).await?;
    Ok(([(axum::http::header::CACHE_CONTROL, "no-store")], page).into_response())
}

/// The top-up form: either `credit_pack` or `amount_eur`.
#[derive(Debug, Deserialize)]
pub struct TopUpForm {
    credit_pack: Option<String>,
    amount_eur: Option<String>,
    form_key: Uuid,
}

/// `POST /billing/top-up`: opens Stripe Checkout (303 to its hosted page). A bad
/// amount re-renders the page with 422; nothing is written or sent to Stripe.
pub async fn create_top_up(
    State(state): State<AppState>,
    member: AccountMember,
    Form(form): Form<TopUpForm>,
) -> Result<Response> {
    member.require_manager()?;
    let raw_amount = form.amount_eur.clone().unwrap_or_default();
    let choice = match (
        form.credit_pack.filter(|p| !p.is_empty()),
        raw_amount.trim(),
    ) {
        (Some(pack), _) => Ok(TopUpChoice::Pack(pack)),
        (None, "") => Err("Enter an amount, or choose a credit pack.".to_owned()),
        (None, amount) => parse_whole_euros(amount).map(TopUpChoice::CustomEur),
    };
    let result = match choice {
        Ok(choice) => {
            let buyer = Buyer {
                workspace_id: member.workspace.workspace_id,
                workspace_name: &member.workspace.workspace_name,
                user_id: member.user.user_id,
                email: &member.user.email,
                base_url: &state.base_url,
                form_key: form.form_key,
            };
            top_ups::start(&state.db, &state.stripe, &buyer, &choice)
                .await
                .map_err(|e| match e {
                    TopUpError::UnknownPack | TopUpError::AmountOutOfRange => Ok(e.to_string()),
                    TopUpError::Stripe(err) => {
                        tracing::error!(error = %err, "stripe refused checkout session");
                        Err(AppError::ProviderUnavailable)
                    }
                    TopUpError::Unexpected(err) => Err(AppError::Internal(err)),
                })
        }
        Err(message) => Err(Ok(message)),
    };
    match result {
        Ok(url) => Ok(Redirect::to(&url).into_response()),
        Err(Err(app_error)) => Err(app_error),
        Err(Ok(message)) => {
            let page = render(&state, &member, false, raw_amount, Some(message)).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
    }
}

/// "25" → 25; decimals, signs and words are refused with the rule in the message.
fn parse_whole_euros(raw: &str) -> std::result::Result<i64, String> {
    let msg = || {
        format!(
            "Enter a whole number of euros from {} to {}.",
            custom_top_up::MIN_EUR,
            custom_top_up::MAX_EUR
        )
    };
    let n: i64 = raw.parse().map_err(|_| msg())?;
    if (custom_top_up::MIN_EUR..=custom_top_up::MAX_EUR).contains(&n) {
        Ok(n)
    } else {
        Err(msg())
    }
}

#[derive(Debug, Deserialize)]
pub struct SessionQuery {
    session_id: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "billing/top_up_success.html")]
struct SuccessPage {
    page: PageCtx,
    top_up: TopUp,
    balance: Balance,
}

#[derive(Template, WebTemplate)]
#[template(path = "billing/top_up_status_partial.html")]
struct StatusPartial {
    top_up: TopUp,
    balance: Balance,
}

async fn status(
    state: &AppState,
    member: &AccountMember,
    session_id: &str,
) -> Result<StatusPartial> {
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    let top_up = top_ups::db::find(&mut conn, member.workspace.workspace_id, session_id)
        .await?
        .ok_or(AppError::NotFound)?;
    Ok(StatusPartial {
        top_up,
        balance: ledger::db::balance(&mut conn, member.workspace.workspace_id).await?,
    })
}

/// `GET /billing/top-up/success?session_id=cs_...`: where Checkout returns. Another
/// workspace's session is a 404.
pub async fn show_top_up_success(
    State(state): State<AppState>,
    member: AccountMember,
    Query(q): Query<SessionQuery>,
) -> Result<Response> {
    let StatusPartial { top_up, balance } = status(&state, &member, &q.session_id).await?;
    Ok(SuccessPage {
        page: member.page("top-up"),
        top_up,
        balance,
    }
    .into_response())
}

/// `GET /billing/top-up/status?session_id=cs_...`: the status fragment the success
/// page polls every second while the credits are on their way.
pub async fn top_up_status_partial(
    State(state): State<AppState>,
    member: AccountMember,
    Query(q): Query<SessionQuery>,
) -> Result<Response> {
    Ok(status(&state, &member, &q.session_id)
        .await?
        .into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn custom_amounts_are_whole_euros_in_range() {
        assert_eq!(super::parse_whole_euros("5"), Ok(5));
        assert_eq!(super::parse_whole_euros("1000"), Ok(1000));
        for bad in ["4", "1001", "0", "-5", "12.50", "ten", "1e3"] {
            assert!(super::parse_whole_euros(bad).is_err(), "{bad}");
        }
    }
}
