//! The Stripe sandbox, driven as billfold drives Stripe: through the real async-stripe
//! client, the hosted Checkout page and signed webhooks received by a small endpoint.

#![cfg(feature = "sandbox")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::routing::post;
use billfold::sandbox::{self, ControlCsrfToken, SANDBOX_SECRET_KEY, SandboxConfig};
use scraper::{Html, Selector};
use sqlx::PgPool;
use stripe::{IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData,
    ExpireCheckoutSession, ProductData, RetrieveCheckoutSession,
};
use stripe_checkout::{
    CheckoutSession, CheckoutSessionMode, CheckoutSessionPaymentStatus, CheckoutSessionStatus,
};
use stripe_core::customer::{CreateCustomer, RetrieveCustomer, RetrieveCustomerReturned};
use stripe_webhook::{EventObject, Webhook};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower::ServiceExt;

const WEBHOOK_SECRET: &str = "whsec_billfold_sandbox_test";

/// One request received by the test webhook endpoint.
#[derive(Debug)]
struct Delivery {
    signature: String,
    payload: String,
}

/// A webhook endpoint answering with `statuses` in turn, then 200.
struct WebhookEndpoint {
    url: String,
    received: mpsc::UnboundedReceiver<Delivery>,
}

impl WebhookEndpoint {
    async fn spawn(statuses: &[u16]) -> Self {
        type EndpointState = (Arc<Mutex<VecDeque<u16>>>, mpsc::UnboundedSender<Delivery>);
        async fn receive(
            State((statuses, sender)): State<EndpointState>,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            let signature = headers
                .get("stripe-signature")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let payload = String::from_utf8(body.to_vec()).unwrap();
            sender.send(Delivery { signature, payload }).unwrap();
            let status = statuses.lock().unwrap().pop_front().unwrap_or(200);
            StatusCode::from_u16(status).unwrap()
        }

        let (sender, received) = mpsc::unbounded_channel();
        let statuses = Arc::new(Mutex::new(statuses.iter().copied().collect()));
        let app = Router::new()
            .route("/webhooks/stripe", post(receive))
            .with_state((statuses, sender));
        let addr = serve(app).await;
        Self {
            url: format!("http://{addr}/webhooks/stripe"),
            received,
        }
    }

    /// The next delivery, waiting up to 5 s.
    async fn next(&mut self) -> Delivery {
        tokio::time::timeout(Duration::from_secs(5), self.received.recv())
            .await
            .expect("a webhook delivery within 5 s")
            .expect("the endpoint is running")
    }

    /// Asserts that nothing more arrives for a while.
    async fn assert_quiet(&mut self) {
        let more = tokio::time::timeout(Duration::from_millis(400), self.received.recv()).await;
        assert!(more.is_err(), "unexpected extra delivery: {more:?}");
    }
}

/// A billfold-like app with only the sandbox mounted, and clients for it.
struct TestApp {
    addr: SocketAddr,
    stripe: stripe::Client,
    /// Raw HTTP, redirects not followed.
    http: reqwest::Client,
}

impl TestApp {
    async fn spawn(pool: PgPool, webhook_url: &str, retry_base_delay: Duration) -> Self {
        // `#[sqlx::test]` applies only the app's migrations
        sandbox::migrate(&pool).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = SandboxConfig {
            public_base_url: format!("http://{addr}"),
            webhook_url: webhook_url.to_owned(),
            webhook_secret: WEBHOOK_SECRET.into(),
            retry_base_delay,
            max_attempts: 8,
        };
        let routers = sandbox::router(pool, config);
        let app = Router::new().nest("/sandbox", routers.stripe.merge(routers.control));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            stripe: stripe::ClientBuilder::new(SANDBOX_SECRET_KEY)
                .url(format!("http://{addr}/sandbox/"))
                .build()
                .unwrap(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Creates a €40.00 payment session (2 × €20.00) for workspace `ws_42`.
    async fn create_session(&self) -> CheckoutSession {
        credit_pack_session().send(&self.stripe).await.unwrap()
    }

    async fn pay(&self, session_id: &str) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/sandbox/checkout/{session_id}/pay")))
            .send()
            .await
            .unwrap()
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

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn credit_pack_session() -> CreateCheckoutSession {
    let price_data = CreateCheckoutSessionLineItemsPriceData {
        // async-stripe does not re-export its `Currency` type; the field names it
        currency: "eur".parse().unwrap(),
        product: None,
        product_data: Some(ProductData::new("Credit pack 1,000")),
        recurring: None,
        tax_behavior: None,
        unit_amount: Some(2000),
        unit_amount_decimal: None,
    };
    let mut item = CreateCheckoutSessionLineItems::new();
    item.price_data = Some(price_data);
    item.quantity = Some(2);
    CreateCheckoutSession::new()
        .mode(CheckoutSessionMode::Payment)
        .line_items(vec![item])
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

fn stripe_error(error: StripeError) -> (stripe::ApiErrors, u16) {
    match error {
        StripeError::Stripe(error, status) => (*error, status),
        other => panic!("expected a Stripe error reply, got {other:?}"),
    }
}

fn idempotent(key: &str) -> RequestStrategy {
    RequestStrategy::Idempotent(IdempotencyKey::new(key).unwrap())
}

/// A webhook URL nothing listens on.
const NO_ENDPOINT: &str = "http://127.0.0.1:9/webhooks/stripe";

#[sqlx::test]
async fn customers_are_created_and_retrieved(pool: PgPool) {
    let app = TestApp::spawn(pool, NO_ENDPOINT, Duration::from_millis(50)).await;

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
    let app = TestApp::spawn(pool, NO_ENDPOINT, Duration::from_millis(50)).await;
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
    let app = TestApp::spawn(pool.clone(), NO_ENDPOINT, Duration::from_millis(50)).await;
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
    let app = TestApp::spawn(pool, NO_ENDPOINT, Duration::from_millis(50)).await;
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
    let app = TestApp::spawn(pool, &endpoint.url, Duration::from_millis(50)).await;
    let session = app.create_session().await;

    let response = app.pay(session.id.as_str()).await;
    assert_eq!(response.status(), reqwest::StatusCode::SEE_OTHER);
    assert_eq!(
        response.headers()["location"],
        format!("https://billfold.test/billing?checkout={}", session.id).as_str()
    );

    let delivery = endpoint.next().await;
    let event = Webhook::construct_event(&delivery.payload, &delivery.signature, WEBHOOK_SECRET)
        .expect("a correctly signed event");
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
        .http
        .get(app.url(&format!("/sandbox/v1/events/{}", event.id)))
        .bearer_auth(SANDBOX_SECRET_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored["id"], event.id.as_str());
    assert_eq!(stored["data"]["object"]["id"], session.id.as_str());
}

#[sqlx::test]
async fn a_failing_endpoint_is_retried_until_it_answers_2xx(pool: PgPool) {
    let mut endpoint = WebhookEndpoint::spawn(&[500, 500]).await;
    let app = TestApp::spawn(pool.clone(), &endpoint.url, Duration::from_millis(50)).await;
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
    let first = TestApp::spawn(first_pool.clone(), &failing.url, Duration::from_secs(3600)).await;
    let session = first.create_session().await;
    first.pay(session.id.as_str()).await;
    failing.next().await;
    first_pool.close().await;
    sqlx::query("update sandbox_webhook_deliveries set next_attempt_at = now()")
        .execute(&pool)
        .await
        .unwrap();

    let mut endpoint = WebhookEndpoint::spawn(&[]).await;
    let _second = TestApp::spawn(pool.clone(), &endpoint.url, Duration::from_millis(50)).await;

    let delivery = endpoint.next().await;
    let event =
        Webhook::construct_event(&delivery.payload, &delivery.signature, WEBHOOK_SECRET).unwrap();
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
    let app = TestApp::spawn(pool, NO_ENDPOINT, Duration::from_millis(50)).await;

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
    assert_eq!(
        error.code.map(|c| c.as_str().to_owned()).as_deref(),
        Some("status_transition_invalid")
    );
    assert!(error.message.unwrap().contains("complete"));
}

#[sqlx::test]
async fn bad_keys_ids_and_params_get_stripe_errors(pool: PgPool) {
    let app = TestApp::spawn(pool, NO_ENDPOINT, Duration::from_millis(50)).await;

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
    assert_eq!(
        error.code.map(|c| c.as_str().to_owned()).as_deref(),
        Some("resource_missing")
    );
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
        let response = app
            .http
            .post(app.url("/sandbox/v1/checkout/sessions"))
            .bearer_auth(SANDBOX_SECRET_KEY)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            reqwest::StatusCode::BAD_REQUEST,
            "{body}"
        );
        let reply: serde_json::Value = response.json().await.unwrap();
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
    let config = SandboxConfig {
        public_base_url: "http://127.0.0.1:9".to_owned(),
        webhook_url: NO_ENDPOINT.to_owned(),
        webhook_secret: WEBHOOK_SECRET.into(),
        retry_base_delay: Duration::from_millis(50),
        max_attempts: 8,
    };
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
