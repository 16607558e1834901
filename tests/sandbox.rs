//! The Stripe sandbox, driven as billfold drives Stripe: through the real async-stripe
//! client, the hosted Checkout page and signed webhooks received by a small endpoint.

#![cfg(feature = "sandbox")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use billfold::sandbox::{self, ControlCsrfToken};
use common::{NO_ENDPOINT, SandboxApp, WebhookEndpoint, code, idempotent, stripe_error};
use scraper::{Html, Selector};
use sqlx::PgPool;
use stripe::StripeRequest;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, ExpireCheckoutSession, RetrieveCheckoutSession,
};
use stripe_checkout::{
    CheckoutSession, CheckoutSessionMode, CheckoutSessionPaymentStatus, CheckoutSessionStatus,
};
use stripe_core::customer::{CreateCustomer, RetrieveCustomer, RetrieveCustomerReturned};
use stripe_webhook::EventObject;
use tower::ServiceExt;

impl SandboxApp {
    /// Creates a €40.00 payment session (2 × €20.00) for workspace `ws_42`.
    async fn create_session(&self) -> CheckoutSession {
        credit_pack_session().send(&self.stripe).await.unwrap()
    }

    async fn get_html(&self, path: &str) -> (StatusCode, Html) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        (
            status,
            Html::parse_document(&response.text().await.unwrap()),
        )
    }
}

fn credit_pack_session() -> CreateCheckoutSession {
    CreateCheckoutSession::new()
        .mode(CheckoutSessionMode::Payment)
        .line_items(vec![common::credit_pack_item()])
        .client_reference_id("ws_42")
        .metadata(HashMap::from([
            ("workspace_id".to_owned(), "ws_42".to_owned()),
            ("purchase".to_owned(), "credit_pack".to_owned()),
        ]))
        .success_url("https://billfold.test/billing?checkout={CHECKOUT_SESSION_ID}")
        .cancel_url("https://billfold.test/billing")
}

fn text(html: &Html, selector: &str) -> String {
    let selector = Selector::parse(selector).unwrap();
    html.select(&selector)
        .next()
        .unwrap_or_else(|| panic!("no element matches {selector:?}"))
        .text()
        .collect::<String>()
        .trim()
        .to_owned()
}

#[sqlx::test]
async fn customers_are_created_and_retrieved(pool: PgPool) {
    let app = SandboxApp::delivering_to(pool, NO_ENDPOINT, Duration::from_millis(50)).await;

    let created = CreateCustomer::new()
        .email("ada@example.com")
        .name("Ada Lovelace")
        .metadata(HashMap::from([(
            "workspace_id".to_owned(),
            "ws_42".to_owned(),
        )]))
        .send(&app.stripe)
        .await
        .unwrap();
    assert!(created.id.as_str().starts_with("cus_"));
    assert_eq!(created.email.as_deref(), Some("ada@example.com"));
    assert_eq!(created.name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(created.metadata.unwrap()["workspace_id"], "ws_42");
    assert!(!created.livemode);

    let retrieved = RetrieveCustomer::new(created.id.clone())
        .send(&app.stripe)
        .await
        .unwrap();
    let RetrieveCustomerReturned::Customer(retrieved) = retrieved else {
        panic!("expected a customer, got {retrieved:?}");
    };
    assert_eq!(retrieved.id, created.id);
    assert_eq!(retrieved.email.as_deref(), Some("ada@example.com"));
}

#[sqlx::test]
async fn a_payment_session_carries_amounts_urls_and_metadata(pool: PgPool) {
    let app = SandboxApp::delivering_to(pool, NO_ENDPOINT, Duration::from_millis(50)).await;
    let customer = CreateCustomer::new()
        .email("ada@example.com")
        .send(&app.stripe)
        .await
        .unwrap();

    let session = credit_pack_session()
        .customer(customer.id.as_str())
        .send(&app.stripe)
        .await
        .unwrap();

    let id = session.id.as_str();
    assert!(id.starts_with("cs_test_"), "{id}");
    assert_eq!(session.mode, CheckoutSessionMode::Payment);
    assert_eq!(session.amount_subtotal, Some(4000));
    assert_eq!(session.amount_total, Some(4000));
    assert_eq!(
        session.currency.map(|c| c.to_string()).as_deref(),
        Some("eur")
    );
    assert_eq!(
        session.url,
        Some(app.url(&format!("/sandbox/checkout/{id}")))
    );
    assert_eq!(session.status, Some(CheckoutSessionStatus::Open));
    assert_eq!(session.payment_status, CheckoutSessionPaymentStatus::Unpaid);
    assert_eq!(session.expires_at, session.created + 24 * 60 * 60);
    assert_eq!(session.payment_intent.map(|pi| pi.id().to_string()), None);
    assert_eq!(session.client_reference_id.as_deref(), Some("ws_42"));
    assert_eq!(session.metadata.as_ref().unwrap()["workspace_id"], "ws_42");
    assert_eq!(
        session.customer.as_ref().map(|c| c.id().to_string()),
        Some(customer.id.to_string())
    );
    assert_eq!(
        session.success_url.as_deref(),
        Some("https://billfold.test/billing?checkout={CHECKOUT_SESSION_ID}")
    );
    assert!(
        session.line_items.is_none(),
        "line_items only when expanded"
    );

    let retrieved = RetrieveCheckoutSession::new(session.id.clone())
        .expand(vec!["line_items".to_owned()])
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(retrieved.id, session.id);
    assert_eq!(retrieved.amount_total, Some(4000));
    let items = retrieved.line_items.unwrap().data;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].description.as_deref(), Some("Credit pack 1,000"));
    assert_eq!((items[0].quantity, items[0].amount_total), (Some(2), 4000));
}

#[sqlx::test]
async fn the_same_idempotency_key_returns_the_same_session(pool: PgPool) {
    let app = SandboxApp::delivering_to(pool.clone(), NO_ENDPOINT, Duration::from_millis(50)).await;
    let request = credit_pack_session();

    let first = request
        .customize()
        .request_strategy(idempotent("buy-1"))
        .send(&app.stripe)
        .await;
    let second = request
        .customize()
        .request_strategy(idempotent("buy-1"))
        .send(&app.stripe)
        .await;
    assert_eq!(first.unwrap().id, second.unwrap().id);
    let stored: i64 = sqlx::query_scalar(
        "select count(*) from sandbox_objects where object_type = 'checkout.session'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stored, 1);

    let other = credit_pack_session().client_reference_id("ws_43");
    let error = other
        .customize()
        .request_strategy(idempotent("buy-1"))
        .send(&app.stripe)
        .await;
    let (error, status) = stripe_error(error.unwrap_err());
    assert_eq!(status, 400);
    assert_eq!(error.type_, stripe::ApiErrorsType::IdempotencyError);
}

#[sqlx::test]
async fn the_hosted_page_shows_the_order_and_a_pay_button(pool: PgPool) {
    let app = SandboxApp::delivering_to(pool, NO_ENDPOINT, Duration::from_millis(50)).await;
    let session = app.create_session().await;

    let (status, page) = app
        .get_html(&format!("/sandbox/checkout/{}", session.id))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        text(&page, ".sandbox-banner"),
        "Sandbox — no real money moves"
    );
    assert_eq!(text(&page, ".checkout-merchant"), "billfold");
    assert_eq!(text(&page, ".checkout-total"), "€40.00");
    assert_eq!(
        text(&page, ".checkout-item td:first-child"),
        "Credit pack 1,000"
    );
    assert_eq!(text(&page, ".checkout-item td:nth-child(2)"), "2");
    assert_eq!(text(&page, "form button[type=submit]"), "Pay €40.00");
    let form = page
        .select(&Selector::parse("form").unwrap())
        .next()
        .unwrap();
    assert_eq!(form.attr("method"), Some("post"));
    assert_eq!(
        form.attr("action"),
        Some(format!("/sandbox/checkout/{}/pay", session.id).as_str())
    );
    let card = page
        .select(&Selector::parse("#card-number").unwrap())
        .next()
        .unwrap();
    assert_eq!(card.attr("value"), Some("4242 4242 4242 4242"));
    let cancel = page
        .select(&Selector::parse("a.checkout-cancel").unwrap())
        .next()
        .unwrap();
    assert_eq!(cancel.attr("href"), Some("https://billfold.test/billing"));
    let stylesheet = page
        .select(&Selector::parse("link[rel=stylesheet]").unwrap())
        .next()
        .unwrap();
    assert_eq!(stylesheet.attr("href"), Some("/sandbox/assets/sandbox.css"));
    let css = app
        .http
        .get(app.url("/sandbox/assets/sandbox.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), reqwest::StatusCode::OK);
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert!(css.text().await.unwrap().contains(".sandbox-banner"));
    assert!(
        page.select(&Selector::parse("script, style, [style]").unwrap())
            .next()
            .is_none()
    );

    let (status, page) = app.get_html("/sandbox/checkout/cs_test_missing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(text(&page, "h2"), "Checkout session not found");
}

#[sqlx::test]
async fn paying_delivers_a_signed_checkout_session_completed_event_once(pool: PgPool) {
    let mut endpoint = WebhookEndpoint::spawn(&[]).await;
    let app = SandboxApp::delivering_to(pool, &endpoint.url, Duration::from_millis(50)).await;
    let session = app.create_session().await;

    let response = app.pay(session.id.as_str()).await;
    assert_eq!(response.status(), reqwest::StatusCode::SEE_OTHER);
    assert_eq!(
        response.headers()["location"],
        format!("https://billfold.test/billing?checkout={}", session.id).as_str()
    );

    let delivery = endpoint.next().await;
    let event = delivery.event();
    assert!(event.id.as_str().starts_with("evt_"));
    assert_eq!(event.type_.as_str(), "checkout.session.completed");
    assert_eq!(
        event.api_version.map(|v| v.to_string()).as_deref(),
        Some("2026-09-30.endive")
    );
    assert!(!event.livemode);
    let EventObject::CheckoutSessionCompleted(paid) = event.data.object else {
        panic!("expected a checkout session, got {:?}", event.data.object);
    };
    assert_eq!(paid.id, session.id);
    assert_eq!(paid.payment_status, CheckoutSessionPaymentStatus::Paid);
    assert_eq!(paid.status, Some(CheckoutSessionStatus::Complete));
    assert_eq!(paid.amount_total, Some(4000));
    assert_eq!(paid.metadata.unwrap()["workspace_id"], "ws_42");
    assert_eq!(paid.client_reference_id.as_deref(), Some("ws_42"));
    assert!(paid.payment_intent.is_some());

    let retrieved = RetrieveCheckoutSession::new(session.id.clone())
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(retrieved.status, Some(CheckoutSessionStatus::Complete));
    assert_eq!(retrieved.payment_status, CheckoutSessionPaymentStatus::Paid);
    assert!(retrieved.payment_intent.is_some());

    // paying again only redirects
    let again = app.pay(session.id.as_str()).await;
    assert_eq!(again.status(), reqwest::StatusCode::SEE_OTHER);
    endpoint.assert_quiet().await;
    let (_, page) = app
        .get_html(&format!("/sandbox/checkout/{}", session.id))
        .await;
    assert_eq!(text(&page, "h2"), "Payment complete");

    let stored: serde_json::Value = app
        .api_get(&format!("/events/{}", event.id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored["id"], event.id.as_str());
    assert_eq!(stored["data"]["object"]["id"], session.id.as_str());
}

#[sqlx::test]
async fn a_failing_endpoint_is_retried_until_it_answers_2xx(pool: PgPool) {
    let mut endpoint = WebhookEndpoint::spawn(&[500, 500]).await;
    let app =
        SandboxApp::delivering_to(pool.clone(), &endpoint.url, Duration::from_millis(50)).await;
    let session = app.create_session().await;

    app.pay(session.id.as_str()).await;

    let attempts = [
        endpoint.next().await,
        endpoint.next().await,
        endpoint.next().await,
    ];
    assert!(attempts.iter().all(|a| a.payload == attempts[0].payload));
    endpoint.assert_quiet().await;
    let (status, attempt_count, next_attempt_due): (String, i32, bool) = sqlx::query_as(
        "select status, attempt_count, next_attempt_at is not null from sandbox_webhook_deliveries",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), attempt_count, next_attempt_due),
        ("succeeded", 3, false)
    );
}

#[sqlx::test]
async fn pending_deliveries_are_resumed_after_a_restart(pool: PgPool) {
    // the first process fails one attempt, then dies with the retry an hour away
    let mut failing = WebhookEndpoint::spawn(&[500]).await;
    let first_pool = PgPool::connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let first =
        SandboxApp::delivering_to(first_pool.clone(), &failing.url, Duration::from_secs(3600))
            .await;
    let session = first.create_session().await;
    first.pay(session.id.as_str()).await;
    failing.next().await;
    first_pool.close().await;
    sqlx::query("update sandbox_webhook_deliveries set next_attempt_at = now()")
        .execute(&pool)
        .await
        .unwrap();

    let mut endpoint = WebhookEndpoint::spawn(&[]).await;
    let _second =
        SandboxApp::delivering_to(pool.clone(), &endpoint.url, Duration::from_millis(50)).await;

    let delivery = endpoint.next().await;
    let event = delivery.event();
    assert!(matches!(
        event.data.object,
        EventObject::CheckoutSessionCompleted(_)
    ));
    failing.assert_quiet().await;
    let (status, attempt_count): (String, i32) =
        sqlx::query_as("select status, attempt_count from sandbox_webhook_deliveries")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), attempt_count), ("succeeded", 2));
}

#[sqlx::test]
async fn only_open_sessions_can_be_expired(pool: PgPool) {
    let app = SandboxApp::delivering_to(pool, NO_ENDPOINT, Duration::from_millis(50)).await;

    let open = app.create_session().await;
    let expired = ExpireCheckoutSession::new(open.id.clone())
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(expired.status, Some(CheckoutSessionStatus::Expired));
    assert_eq!(expired.payment_status, CheckoutSessionPaymentStatus::Unpaid);
    assert_eq!(expired.url, None);
    let (_, page) = app
        .get_html(&format!("/sandbox/checkout/{}", open.id))
        .await;
    assert_eq!(text(&page, "h2"), "Checkout session expired");
    assert_eq!(
        app.pay(open.id.as_str()).await.status(),
        reqwest::StatusCode::CONFLICT
    );

    let paid = app.create_session().await;
    app.pay(paid.id.as_str()).await;
    let error = ExpireCheckoutSession::new(paid.id.clone())
        .send(&app.stripe)
        .await
        .unwrap_err();
    let (error, status) = stripe_error(error);
    assert_eq!(status, 400);
    assert_eq!(error.type_, stripe::ApiErrorsType::InvalidRequestError);
    assert_eq!(code(&error).as_deref(), Some("status_transition_invalid"));
    assert!(error.message.unwrap().contains("complete"));
}

#[sqlx::test]
async fn bad_keys_ids_and_params_get_stripe_errors(pool: PgPool) {
    let app = SandboxApp::delivering_to(pool, NO_ENDPOINT, Duration::from_millis(50)).await;

    let wrong_key = stripe::ClientBuilder::new("sk_test_wrong")
        .url(app.url("/sandbox/"))
        .build()
        .unwrap();
    let error = CreateCustomer::new().send(&wrong_key).await.unwrap_err();
    let (error, status) = stripe_error(error);
    assert_eq!(status, 401);
    assert_eq!(error.type_, stripe::ApiErrorsType::InvalidRequestError);

    let no_key = app
        .http
        .get(app.url("/sandbox/v1/customers/cus_x"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), reqwest::StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = no_key.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let error = RetrieveCustomer::new("cus_missing")
        .send(&app.stripe)
        .await
        .unwrap_err();
    let (error, status) = stripe_error(error);
    assert_eq!(status, 404);
    assert_eq!(code(&error).as_deref(), Some("resource_missing"));
    let error = RetrieveCheckoutSession::new("cs_test_missing")
        .send(&app.stripe)
        .await
        .unwrap_err();
    assert_eq!(stripe_error(error).1, 404);

    let cases = [
        ("line_items[0][price_data][currency]=eur", "mode"),
        ("mode=payment", "line_items"),
        (
            "mode=payment&line_items[0][quantity]=1&line_items[0][price_data][currency]=eur\
             &line_items[0][price_data][unit_amount]=ten&line_items[0][price_data][product_data][name]=x",
            "line_items[0][price_data][unit_amount]",
        ),
        (
            "mode=payment&line_items[0][quantity]=0&line_items[0][price_data][currency]=eur\
             &line_items[0][price_data][unit_amount]=10&line_items[0][price_data][product_data][name]=x",
            "line_items[0][quantity]",
        ),
        (
            "mode=payment&line_items[0][price]=price_123&line_items[0][quantity]=1",
            "line_items[0][price]",
        ),
    ];
    for (body, param) in cases {
        let (status, reply) = app.api_post_form("/checkout/sessions", body).await;
        assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply["error"]["param"], param, "{body}: {reply}");
        assert_eq!(reply["error"]["type"], "invalid_request_error");
    }
}

#[sqlx::test]
async fn sandbox_migrations_run_beside_the_apps_and_again_without_change(pool: PgPool) {
    billfold::database::migrate(&pool).await.unwrap();
    billfold::database::migrate(&pool).await.unwrap();
    sandbox::migrate(&pool).await.unwrap();
    let sandbox_versions: Vec<i64> = sqlx::query_scalar(
        "select version from _sqlx_migrations where description like 'sandbox%' order by version",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    // the versions (and checksums) databases migrated before the move recorded
    assert!(
        sandbox_versions.starts_with(&[20261121000100, 20261122000100]),
        "{sandbox_versions:?}"
    );
    let clocks: i64 = sqlx::query_scalar("select count(*) from sandbox_clocks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(clocks, 1);
    let faults: i64 = sqlx::query_scalar("select count(*) from sandbox_faults")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(faults, 0);
}

#[sqlx::test]
async fn control_routes_live_in_the_control_router_with_the_staff_csrf_token(pool: PgPool) {
    sandbox::migrate(&pool).await.unwrap();
    let config = common::config(
        "http://127.0.0.1:9".to_owned(),
        NO_ENDPOINT,
        Duration::from_millis(50),
    );
    let routers = sandbox::router(pool, config);
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();

    for path in ["/clock", "/faults"] {
        let stripe = routers.stripe.clone().oneshot(get(path)).await.unwrap();
        assert_eq!(stripe.status(), StatusCode::NOT_FOUND, "{path}");
    }
    for path in [
        "/v1/customers/cus_1",
        "/checkout/cs_1",
        "/assets/sandbox.css",
    ] {
        let control = routers.control.clone().oneshot(get(path)).await.unwrap();
        assert_eq!(control.status(), StatusCode::NOT_FOUND, "{path}");
    }

    let page = |response: axum::response::Response| async move {
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        Html::parse_document(std::str::from_utf8(&body).unwrap())
    };
    let field = Selector::parse("form input[name=csrf_token]").unwrap();
    let loopback = page(
        routers
            .control
            .clone()
            .oneshot(get("/clock"))
            .await
            .unwrap(),
    )
    .await;
    assert!(loopback.select(&field).next().is_none());
    let staff = routers
        .control
        .clone()
        .layer(axum::Extension(ControlCsrfToken("tok-123".to_owned())))
        .oneshot(get("/clock"))
        .await
        .unwrap();
    assert_eq!(staff.status(), StatusCode::OK);
    let staff = page(staff).await;
    let token = staff.select(&field).next().expect("a csrf_token field");
    assert_eq!(token.attr("type"), Some("hidden"));
    assert_eq!(token.attr("value"), Some("tok-123"));
}
