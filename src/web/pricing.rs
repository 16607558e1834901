//! The public pricing page (`/pricing`: plans compared, every feature's credit cost
//! and quality multiplier) and the signed-in "Your limits" page (`/limits`).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::Result;
use super::extract::AccountMember;
use super::referral::HostBranding;
use super::views::{PageCtx, filters};
use crate::catalog::{self, Feature, Plan, PriceList};
use crate::ledger::Quality;
use crate::usage::{self, WorkspaceLimits};

#[derive(Template, WebTemplate)]
#[template(path = "pricing.html")]
struct PricingPage {
    page: PageCtx,
    prices: PriceList,
    /// The visitor's plan, when signed in.
    current: Option<String>,
    signed_in: bool,
}

impl PricingPage {
    fn groups_of(&self, plan: &Plan) -> String {
        self.prices.group_names_of(plan).join(", ")
    }
    fn first_plan_with(&self, feature: &Feature) -> String {
        self.prices
            .first_plan_with(feature)
            .map_or_else(|| "No plan".to_owned(), |p| p.name.clone())
    }
    fn pro_cost(&self, feature: &Feature) -> i64 {
        feature.cost_at(Quality::Pro)
    }
    fn is_current(&self, plan: &Plan) -> bool {
        self.current.as_deref() == Some(plan.plan_code.as_str())
    }
}

/// `GET /pricing`: public, also before sign-up (with the reseller branding of the host
/// it is served on); signed in, the portal's chrome and the current plan marked.
pub async fn show_pricing(
    State(state): State<AppState>,
    host: HostBranding,
    mut parts: Parts,
) -> Result<Response> {
    let auth = super::auth::AuthSession::from_request_parts(&mut parts, &state)
        .await
        .ok();
    let member = match auth.and_then(|a| a.user) {
        Some(_) => AccountMember::from_request_parts(&mut parts, &state)
            .await
            .ok(),
        None => None,
    };
    let prices = {
        let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
        catalog::db::price_list(&mut conn).await?
    };
    let (page, current) = match &member {
        Some(m) => (
            m.page("pricing"),
            Some(m.workspace.plan_code.as_str().to_owned()),
        ),
        None => (
            PageCtx {
                sandbox: state.config.stripe_sandbox(),
                branding: host.0,
                active: "pricing",
                ..PageCtx::default()
            },
            None,
        ),
    };
    Ok(PricingPage {
        page,
        signed_in: member.is_some(),
        prices,
        current,
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "dashboard/limits.html")]
struct LimitsPage {
    page: PageCtx,
    limits: WorkspaceLimits,
    can_manage: bool,
}

impl LimitsPage {
    fn percent(&self, used: &i64, cap: &Option<i32>) -> i64 {
        WorkspaceLimits::percent(*used, cap.map(i64::from))
    }
    fn allowance_percent(&self) -> i64 {
        match (self.limits.allowance_used(), self.limits.period) {
            (Some(used), Some(p)) => WorkspaceLimits::percent(used, Some(p.granted_credits)),
            _ => 0,
        }
    }
}

/// `GET /limits`: the workspace against its plan's caps: calls per minute and the
/// minute's use, members and API keys, and the allowance used this period with its
/// reset date.
pub async fn show_limits(State(state): State<AppState>, member: AccountMember) -> Result<Response> {
    let limits = {
        let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
        usage::db::limits(
            &mut conn,
            member.workspace.workspace_id,
            &member.workspace.plan_code,
        )
        .await?
    };
    Ok(LimitsPage {
        page: member.page("limits"),
        limits,
        can_manage: member.workspace.role.can_manage(),
    }
    .into_response())
}
