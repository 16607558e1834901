//! Everything HTTP: the router, its layers, extractors, error pages and handlers.
//! Handlers are thin: extract, call a domain module, build the view.
//!
//! Layer order (outermost first): request id → trace → security headers → error pages
//! (JSON under `/api/`) → timeout → body limit; session routes add `no-store` → sessions →
//! auth → session lifetime → CSRF (token, and no cross-site `Origin`). The
//! metering API and the Stripe webhook get no session, CSRF or login; the sandbox's
//! control endpoints answer loopback or a signed-in staff member only.

pub mod admin;
pub mod api;
pub mod api_error;
pub mod assets;
pub mod auth;
pub mod billing;
pub mod csrf;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod health;
pub mod limits;
pub mod pricing;
pub mod referral;
pub mod reseller;
pub mod reseller_api;
pub mod sandbox_guard;
pub mod settings;
pub mod top_up;
pub mod usage;
pub mod views;
pub mod webhooks;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::extract::FromRef;
use axum::http::{HeaderName, HeaderValue, header};
use axum::routing::{get, post};
use axum::{Router, middleware};
use axum_login::AuthManagerLayerBuilder;
use secrecy::SecretString;
use sqlx::PgPool;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};
use tower_sessions_sqlx_store::PostgresStore;

use crate::accounts::password::PasswordHasher;
use crate::config::Config;
use crate::stripe::StripeClient;

/// Shared state of every handler (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    /// The connection pool.
    pub db: PgPool,
    /// Configuration as loaded at startup.
    pub config: Arc<Config>,
    /// Stripe (or the sandbox).
    pub stripe: StripeClient,
    /// Where users reach billfold, no trailing slash.
    pub base_url: Arc<str>,
    /// Secret that verifies `Stripe-Signature`.
    pub webhook_secret: Arc<SecretString>,
    /// Sign-in and sign-up throttles ([`limits`]).
    pub limits: Arc<limits::Limits>,
    /// Password hashing with bounded concurrency.
    pub hasher: PasswordHasher,
    /// Whether billfold is ready to serve customers (`/readyz`); in sandbox mode it
    /// turns true once the catalog is on sale.
    pub ready: Arc<AtomicBool>,
}

impl FromRef<AppState> for PgPool {
    fn from_ref(s: &AppState) -> Self {
        s.db.clone()
    }
}

/// The request id header set on every request and echoed on every response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Strict CSP: only our own scripts and styles, no inline code, no framing, no
/// `<base>` (OWASP Content Security Policy Cheat Sheet).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   form-action 'self' http: https:; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// HSTS over https: a year, subdomains included (OWASP HTTP Strict Transport Security
/// Cheat Sheet).
const HSTS: &str = "max-age=31536000; includeSubDomains";

/// The session cookie's name: `__Host-`-prefixed over https (the browser then insists
/// on Secure, `Path=/` and no `Domain`, so no subdomain can plant or read it).
pub fn session_cookie_name(https: bool) -> &'static str {
    if https {
        "__Host-billfold.sid"
    } else {
        "billfold.sid"
    }
}

/// The Stripe sandbox's routes, mounted at `/sandbox` in sandbox mode: Stripe's API and
/// hosted pages, and the control endpoints (clock, faults, disputes, test cards), which
/// answer only loopback or a signed-in staff member ([`sandbox_guard`]).
#[derive(Debug)]
pub struct SandboxRoutes {
    /// The API subset and the hosted Checkout, invoice and portal pages.
    pub stripe: Router,
    /// What moves time, injects faults, opens disputes or sets test cards.
    pub control: Router,
}

/// Builds the whole application router. `sandbox`: the Stripe sandbox's routes (only
/// in sandbox mode).
pub fn router(
    state: AppState,
    session_store: PostgresStore,
    sandbox: Option<SandboxRoutes>,
) -> Router {
    let https = state.config.https();
    let sessions = SessionManagerLayer::new(session_store)
        .with_name(session_cookie_name(https))
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(https)
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(time::Duration::days(7)));
    let auth = AuthManagerLayerBuilder::new(
        auth::Backend::new(state.db.clone(), state.hasher.clone()),
        sessions,
    )
    .build();

    let auth_for_sandbox = auth.clone();
    let session_routes = Router::new()
        .route("/", get(dashboard::root))
        .route("/signup", get(auth::signup_form).post(auth::sign_up))
        .route("/login", get(auth::login_form).post(auth::log_in))
        .route("/logout", post(auth::log_out))
        .route("/dashboard", get(dashboard::show_dashboard))
        .route("/dashboard/live", get(dashboard::show_live_panel))
        .route("/credits", get(dashboard::show_statement))
        .route("/credits.csv", get(dashboard::download_statement))
        .route("/usage", get(usage::show_usage))
        .route("/limits", get(pricing::show_limits))
        .route("/pricing", get(pricing::show_pricing))
        .route("/usage.csv", get(usage::download_usage))
        .route(
            "/billing/top-up",
            get(top_up::top_up_form).post(top_up::create_top_up),
        )
        .route("/billing", get(billing::show_billing))
        .route(
            "/billing/subscribe",
            post(billing::create_subscription_checkout),
        )
        .route("/billing/portal", post(billing::create_portal_session))
        .route("/billing/cancel", post(billing::cancel_subscription))
        .route("/billing/downgrade", post(billing::schedule_downgrade))
        .route("/billing/downgrade/cancel", post(billing::cancel_downgrade))
        .route("/billing/change/preview", post(billing::preview_change))
        .route("/billing/change", post(billing::change_plan))
        .route("/billing/resume", post(billing::resume_subscription))
        .route("/billing/subscribed", get(billing::show_subscribed))
        .route(
            "/billing/subscribed/status",
            get(billing::subscribed_status_partial),
        )
        .route("/billing/top-up/success", get(top_up::show_top_up_success))
        .route("/billing/top-up/status", get(top_up::top_up_status_partial))
        .route(
            "/settings",
            get(settings::show_workspace_settings).post(settings::update_workspace_settings),
        )
        .route(
            "/settings/api-keys",
            get(settings::list_api_keys).post(settings::create_api_key),
        )
        .route(
            "/settings/api-keys/{api_key_id}/revoke",
            post(settings::revoke_api_key),
        )
        .route(
            "/settings/reseller-sharing",
            post(reseller::set_email_sharing),
        )
        .route("/admin", get(admin::show_overview))
        .route("/admin/adjustments", get(admin::show_adjustments))
        .route(
            "/admin/adjustments/{request_id}",
            post(admin::decide_adjustment),
        )
        .route("/admin/plans/sync", post(admin::actions::sync_catalog))
        .route(
            "/admin/resellers/new",
            get(admin::actions::new_reseller_form).post(admin::actions::create_reseller),
        )
        .route("/admin/payouts/draft", post(admin::actions::draft_payouts))
        .route("/admin/{resource}", get(admin::show_list))
        .route("/admin/{resource}/export.csv", get(admin::export_csv))
        .route("/admin/{resource}/bulk", post(admin::bulk))
        .route("/admin/{resource}/{id}", get(admin::show_detail))
        .route(
            "/admin/workspaces/{id}/credits",
            post(admin::actions::adjust_credits),
        )
        .route(
            "/admin/workspaces/{id}/suspend",
            post(admin::actions::suspend_workspace),
        )
        .route(
            "/admin/workspaces/{id}/restore",
            post(admin::actions::restore_workspace),
        )
        .route(
            "/admin/workspaces/{id}/plan",
            post(admin::actions::override_plan),
        )
        .route(
            "/admin/workspaces/{id}/refund",
            post(admin::actions::refund_top_up),
        )
        .route(
            "/admin/workspaces/{id}/reseller",
            post(admin::actions::set_reseller),
        )
        .route(
            "/admin/workspaces/{id}/view-as",
            post(admin::view_as::start),
        )
        .route(admin::view_as::END_PATH, post(admin::view_as::end))
        .route("/admin/users/{id}/staff", post(admin::actions::set_staff))
        .route(
            "/admin/users/{id}/suspend",
            post(admin::actions::suspend_user),
        )
        .route(
            "/admin/commissions/{id}/approve",
            post(admin::actions::approve_commission),
        )
        .route(
            "/admin/commissions/{id}/void",
            post(admin::actions::void_commission),
        )
        .route(
            "/admin/payouts/{id}/mark-paid",
            post(admin::actions::mark_payout_paid),
        )
        .route("/admin/payouts/{id}/csv", get(admin::actions::payout_csv))
        .route(
            "/admin/webhook-events/{id}/replay",
            post(admin::actions::replay_webhook_event),
        )
        .route(
            "/admin/webhook-events/{id}/skip",
            post(admin::actions::skip_webhook_event),
        )
        .route(
            "/admin/jobs/{id}/retry",
            post(admin::actions::retry_job_now),
        )
        .route("/admin/plans/{id}/edit", post(admin::actions::edit_plan))
        .route(
            "/admin/credit-packs/{id}/edit",
            post(admin::actions::edit_credit_pack),
        )
        .route(
            "/admin/resellers/{id}/terms",
            post(admin::actions::edit_reseller_terms),
        )
        .route(
            "/admin/resellers/{id}/branding",
            post(admin::actions::edit_reseller_branding),
        )
        .route(
            "/admin/resellers/{id}/members",
            post(admin::actions::add_reseller_member),
        )
        .route(
            "/admin/features/{id}/edit",
            post(admin::actions::edit_feature),
        )
        .route("/reseller", get(reseller::show_overview))
        .route("/reseller/customers", get(reseller::list_customers))
        .route(
            "/reseller/customers/{workspace_id}",
            get(reseller::show_customer),
        )
        .route("/reseller/commissions", get(reseller::list_commissions))
        .route("/reseller/payouts", get(reseller::list_payouts))
        .route("/reseller/payouts/{payout_id}", get(reseller::show_payout))
        .route(
            "/reseller/payouts/{payout_id}/csv",
            get(reseller::download_payout),
        )
        .route(
            "/reseller/settings",
            get(reseller::show_settings).post(reseller::save_branding),
        )
        .route("/reseller/settings/logo", post(reseller::upload_logo))
        .route(
            "/reseller/settings/logo/remove",
            post(reseller::remove_logo),
        )
        .route("/reseller/api-keys", post(reseller::create_api_key))
        .route(
            "/reseller/api-keys/{key_id}/revoke",
            post(reseller::revoke_api_key),
        )
        .layer(middleware::from_fn(admin::view_as::read_only))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            csrf::verify_csrf,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::enforce_session_lifetime,
        ))
        .layer(auth)
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ));

    let machine_routes = Router::new()
        .route("/api/v1/usage", post(api::record_usage))
        .route("/api/v1/balance", get(api::show_balance))
        .route("/api/v1/openapi.json", get(api::openapi_document))
        .route(
            "/api/v1/reseller/customers",
            get(reseller_api::list_customers),
        )
        .route(
            "/api/v1/reseller/customers/{id}",
            get(reseller_api::show_customer),
        )
        .route(
            "/api/v1/reseller/commissions",
            get(reseller_api::list_commissions),
        )
        .route("/api/v1/reseller/payouts", get(reseller_api::list_payouts))
        .route(
            "/api/v1/reseller/payouts/{id}",
            get(reseller_api::show_payout),
        )
        .route("/r/{code}", get(referral::follow_referral_link))
        .route("/brand/{reseller_id}/logo", get(referral::serve_logo))
        .route("/brand/{reseller_id}/theme.css", get(referral::serve_theme))
        .route("/webhooks/stripe", post(webhooks::receive_stripe_event))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));

    let mut app = Router::new()
        .merge(session_routes)
        .merge(machine_routes)
        .route("/static/{file}", get(assets::serve_asset))
        .fallback(error::not_found);
    if let Some(sandbox) = sandbox {
        let control = sandbox
            .control
            .layer(middleware::from_fn_with_state(
                state.clone(),
                sandbox_guard::guard,
            ))
            .layer(auth_for_sandbox);
        app = app.nest_service("/sandbox", sandbox.stripe.merge(control));
    }
    // Inside out: body limit (413) and timeout (408) first, so the error pages (HTML,
    // or JSON under /api/) cover their answers; security headers on every response.
    let mut app = app
        .layer(tower_http::limit::RequestBodyLimitLayer::new(256 * 1024))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            error::render_error_pages,
        ));
    if https {
        app = app.layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        ));
    }
    app.layer(SetResponseHeaderLayer::if_not_present(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    ))
    .layer(SetResponseHeaderLayer::overriding(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ))
    .layer(SetResponseHeaderLayer::overriding(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    ))
    .layer(SetResponseHeaderLayer::overriding(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("DENY"),
    ))
    .layer(
        TraceLayer::new_for_http()
            .make_span_with(|req: &axum::http::Request<_>| {
                let request_id = req
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                let path = req
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
                tracing::info_span!("request", method = %req.method(), path, request_id)
            })
            // A 5xx is a warning here: a 500 is already logged at ERROR with its cause by
            // `AppError`/`ApiError`, and a 503 (load shed, Stripe down) is expected under
            // pressure, not a defect.
            .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::WARN)),
    )
    .layer(PropagateRequestIdLayer::new(REQUEST_ID))
    .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
    .with_state(state)
}
