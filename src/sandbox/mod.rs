//! The built-in Stripe sandbox (DESIGN.md, "The Stripe sandbox"): a small stateful
//! stand-in for the part of Stripe's REST API billfold calls, its hosted Checkout,
//! invoice and portal pages, signed webhook delivery with retries, and control
//! routes and functions for what Stripe does on its own (time passing, disputes) or
//! what tests inject (faults, test cards). billfold mounts it under `/sandbox` when no
//! real Stripe key is configured and talks to it through the real async-stripe client
//! with base URL `{public_base_url}/sandbox/`.
//!
//! Owns tables `sandbox_objects` (every Stripe object, including payment intents,
//! charges, refunds and disputes), `sandbox_idempotency_keys`, `sandbox_clocks`,
//! `sandbox_events`, `sandbox_webhook_deliveries` and `sandbox_faults`, created by its
//! own migrations in `migrations/sandbox/` ([`migrate`]), so a build without the
//! feature has none.
//! New resources plug into the same pieces: objects live in the generic store
//! (`db`), are built from Stripe's fixtures (`objects`), announce changes through
//! `events::emit`, and read time from the sandbox clock (`db::now`).

mod assets;
mod billing;
mod checkout;
mod clock;
mod customers;
mod db;
mod disputes;
mod error;
mod events;
mod faults;
mod invoices;
mod lists;
mod middleware;
mod objects;
mod params;
mod payments;
mod portal;
mod prices;
mod products;
mod refunds;
mod subscriptions;
mod webhooks;

pub use billing::TestCard;
pub use clock::advance;
pub use disputes::{Dispute, DisputeOutcome, close_dispute, open_dispute};
pub use error::{ControlError, SandboxError};
pub use faults::{ActiveFault, Fault, clear_fault, clear_faults, list_faults, set_fault};
pub use payments::{Payment, find_payment};

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::OriginalUri;
use axum::http::{Method, StatusCode};
use axum::routing::{delete, get, post};
use sqlx::PgPool;
use tokio::sync::Notify;

use error::ApiError;

/// Creates or updates the sandbox's tables: runs the migrations in
/// `migrations/sandbox/`, which the app's own migrator (`migrations/`) does not see.
/// Both record their versions in `_sqlx_migrations`, so this migrator ignores the
/// app's versions (and the app's ignores these). `startup::migrate` calls it after
/// the app's migrations; tests that get a database from `#[sqlx::test]` (which applies
/// only the app's migrations) call it themselves.
///
/// # Errors
///
/// Whatever sqlx reports: a database error, or a changed checksum of a migration
/// already applied.
pub async fn migrate(db: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator = sqlx::migrate!("migrations/sandbox");
    migrator.set_ignore_missing(true);
    migrator.run(db).await
}

/// The API key the app should give the async-stripe client in sandbox mode.
pub const SANDBOX_SECRET_KEY: &str = "sk_test_billfold_sandbox";

/// Where the app mounts the [`router`]s; hosted page URLs and forms use it.
const MOUNT_PATH: &str = "/sandbox";

/// How the sandbox reaches billfold.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where billfold is reachable, without trailing slash, e.g. "http://127.0.0.1:8080"; hosted page URLs are built from it.
    pub public_base_url: String,
    /// Where events are POSTed, e.g. "http://127.0.0.1:8080/webhooks/stripe".
    pub webhook_url: String,
    /// Signing secret (whsec_...).
    pub webhook_secret: secrecy::SecretString,
    /// First retry delay; doubles each attempt (production 2 s; tests use ~50 ms).
    pub retry_base_delay: Duration,
    /// Attempts before giving up (e.g. 8).
    pub max_attempts: u32,
}

/// State shared by the sandbox's handlers.
#[derive(Clone)]
struct SandboxState {
    db: PgPool,
    config: Arc<SandboxConfig>,
    /// Wakes the webhook worker when an event is queued.
    new_event: Arc<Notify>,
}

/// The CSRF token the app's guard of the control routes hands the sandbox, as a
/// request extension, for a signed-in staff member: control pages (the clock) put
/// it in a hidden `csrf_token` field of their forms. Without it, forms have no
/// such field (loopback use needs none).
#[derive(Debug, Clone)]
pub struct ControlCsrfToken(pub String);

/// The sandbox's two routers, both to be nested at `/sandbox` (merge them first):
/// what stands in for Stripe, and what controls the sandbox.
pub struct SandboxRouters {
    /// What real Stripe serves:
    ///
    /// - `/v1/...`: the Stripe API subset, behind [`SANDBOX_SECRET_KEY`]: customers,
    ///   products, prices, checkout sessions, events, subscriptions, invoices (with
    ///   `create_preview`), billing portal sessions, payment intents, charges and
    ///   refunds (`POST /v1/refunds`, `GET /v1/refunds/{id}`), with faults injected
    ///   by [`set_fault`];
    /// - `GET /checkout/{id}` and `POST /checkout/{id}/pay`: the hosted Checkout page;
    /// - `GET /invoices/{id}` and `/invoices/{id}/pdf`: hosted invoice page and PDF;
    /// - `GET /portal/{id}` and `POST /portal/{id}/{switch,cancel,resume,card}`: the
    ///   hosted customer portal;
    /// - `GET /assets/sandbox.css`: the hosted pages' stylesheet.
    pub stripe: Router,
    /// What moves time, injects faults, opens and closes disputes or sets test
    /// cards. The app must let only loopback or a signed-in staff member (with a
    /// CSRF token, see [`ControlCsrfToken`]) reach it:
    ///
    /// - `GET /clock` and `POST /clock/advance` (`days`, form or JSON): the sandbox
    ///   clock ([`advance`]);
    /// - `POST /test/customers/{id}/card` (`card=succeeding|declining`): a
    ///   customer's test card, as the portal's "update card" sets it;
    /// - `GET /faults` (JSON array), `POST /faults` (JSON [`Fault`], 201),
    ///   `DELETE /faults` and `DELETE /faults/{id}` (204): injected faults;
    /// - `POST /disputes` (`payment`: a `cs_`, `pi_` or `ch_` id, form or JSON; 200
    ///   with the dispute) and `POST /disputes/{id}/close` (`outcome=won|lost`):
    ///   [`open_dispute`] and [`close_dispute`].
    ///
    /// Errors are JSON in Stripe's error shape.
    pub control: Router,
}

/// The sandbox's routers (see [`SandboxRouters`]), to be nested at `/sandbox`.
///
/// Also starts the webhook worker on the current tokio runtime; it first delivers
/// whatever a previous process left pending, and stops when `db` is closed.
pub fn router(db: PgPool, config: SandboxConfig) -> SandboxRouters {
    let routers = routes(db, config);
    tokio::spawn(webhooks::run_worker(
        routers.0.db.clone(),
        Arc::clone(&routers.0.config),
        Arc::clone(&routers.0.new_event),
    ));
    routers.1
}

/// The sandbox's routers without a webhook worker, for a one-off command: its events
/// stay queued for the worker of a running `billfold serve` (which a short-lived worker
/// could hold leased for a minute if it stopped mid-delivery).
pub fn router_without_delivery(db: PgPool, config: SandboxConfig) -> SandboxRouters {
    routes(db, config).1
}

fn routes(db: PgPool, config: SandboxConfig) -> (SandboxState, SandboxRouters) {
    let state = SandboxState {
        db,
        config: Arc::new(config),
        new_event: Arc::new(Notify::new()),
    };

    let api = Router::new()
        .route("/customers", post(customers::create_customer))
        .route("/customers/{id}", get(customers::retrieve_customer))
        .route("/checkout/sessions", post(checkout::create_session))
        .route("/checkout/sessions/{id}", get(checkout::retrieve_session))
        .route(
            "/checkout/sessions/{id}/expire",
            post(checkout::expire_session),
        )
        .route("/events/{id}", get(events::retrieve_event))
        .route(
            "/products",
            get(products::list_products).post(products::create_product),
        )
        .route(
            "/products/{id}",
            get(products::retrieve_product).post(products::update_product),
        )
        .route(
            "/prices",
            get(prices::list_prices).post(prices::create_price),
        )
        .route(
            "/prices/{id}",
            get(prices::retrieve_price).post(prices::update_price),
        )
        .route("/subscriptions", get(subscriptions::list_subscriptions))
        .route(
            "/subscriptions/{id}",
            get(subscriptions::retrieve_subscription)
                .post(subscriptions::update_subscription)
                .delete(subscriptions::cancel_subscription),
        )
        .route("/invoices", get(invoices::list_invoices))
        .route("/invoices/create_preview", post(invoices::create_preview))
        .route("/invoices/{id}", get(invoices::retrieve_invoice))
        .route("/billing_portal/sessions", post(portal::create_session))
        .route(
            "/payment_intents/{id}",
            get(payments::retrieve_payment_intent),
        )
        .route("/charges/{id}", get(payments::retrieve_charge))
        .route("/refunds", post(refunds::create_refund))
        .route("/refunds/{id}", get(refunds::retrieve_refund))
        .fallback(unknown_endpoint)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::replay_idempotent,
        ))
        // before idempotency: an injected failure leaves the key unused, as a
        // request that never reached Stripe would
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            faults::inject_faults,
        ))
        .layer(axum::middleware::from_fn(middleware::require_secret_key))
        .layer(axum::middleware::from_fn(middleware::request_id));

    let stripe = Router::new()
        .nest("/v1", api)
        .route("/assets/sandbox.css", get(assets::stylesheet))
        .route("/checkout/{id}", get(checkout::checkout_page))
        .route("/checkout/{id}/pay", post(checkout::pay))
        .route("/invoices/{id}", get(invoices::invoice_page))
        .route("/invoices/{id}/pdf", get(invoices::invoice_pdf))
        .route("/portal/{id}", get(portal::portal_page))
        .route("/portal/{id}/switch", post(portal::switch_plan))
        .route("/portal/{id}/cancel", post(portal::cancel))
        .route("/portal/{id}/resume", post(portal::resume))
        .route("/portal/{id}/card", post(portal::update_card))
        .with_state(state.clone());

    let control = Router::new()
        .route("/clock", get(clock::clock_page))
        .route("/clock/advance", post(clock::advance_clock))
        .route("/test/customers/{id}/card", post(portal::set_customer_card))
        .route(
            "/faults",
            get(faults::list_faults_route)
                .post(faults::set_fault_route)
                .delete(faults::clear_faults_route),
        )
        .route("/faults/{id}", delete(faults::clear_fault_route))
        .route("/disputes", post(disputes::open_dispute_route))
        .route("/disputes/{id}/close", post(disputes::close_dispute_route))
        .with_state(state.clone());

    (state, SandboxRouters { stripe, control })
}

/// Stripe's reply to a path it does not serve.
async fn unknown_endpoint(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::refused(
        StatusCode::NOT_FOUND,
        error::ErrorType::InvalidRequest,
        None,
        format!(
            "Unrecognized request URL ({method}: {}). The billfold Stripe sandbox serves only \
             the part of the Stripe API billfold uses.",
            uri.path()
        ),
    )
}
