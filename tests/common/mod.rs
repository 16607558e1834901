//! The harness the sandbox test crates share: the sandbox router mounted alone on a
//! random port, a webhook endpoint capturing its signed deliveries, an async-stripe
//! client and a raw HTTP client pointed at it, and the small helpers every file needs.
//! What one file alone needs stays in that file, as an `impl SandboxApp` block there.

// each test crate compiles this module on its own and uses only part of it
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use billfold::sandbox::{self, SANDBOX_SECRET_KEY, SandboxConfig};
use serde_json::Value;
use sqlx::PgPool;
use stripe::{IdempotencyKey, RequestStrategy, StripeError};
use stripe_checkout::checkout_session::{
    CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData, ProductData,
};
use stripe_webhook::Webhook;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub const WEBHOOK_SECRET: &str = "whsec_billfold_sandbox_test";

/// A webhook URL nothing listens on.
pub const NO_ENDPOINT: &str = "http://127.0.0.1:9/webhooks/stripe";

/// How long a test waits for a delivery it expects.
const DELIVERY_WAIT: Duration = Duration::from_secs(5);

/// The sandbox's configuration for a test: 8 attempts, signed with [`WEBHOOK_SECRET`].
pub fn config(
    public_base_url: String,
    webhook_url: &str,
    retry_base_delay: Duration,
) -> SandboxConfig {
    SandboxConfig {
        public_base_url,
        webhook_url: webhook_url.to_owned(),
        webhook_secret: WEBHOOK_SECRET.into(),
        retry_base_delay,
        max_attempts: 8,
    }
}

/// One request received by a [`WebhookEndpoint`].
#[derive(Clone, Debug)]
pub struct Delivery {
    pub signature: String,
    pub payload: String,
}

impl Delivery {
    /// The event, verified and parsed with `Webhook::construct_event` as billfold does.
    pub fn event(&self) -> stripe_webhook::Event {
        Webhook::construct_event(&self.payload, &self.signature, WEBHOOK_SECRET)
            .unwrap_or_else(|error| panic!("unreadable event {error:?}: {}", self.payload))
    }

    /// The payload as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.payload).unwrap()
    }
}

/// A webhook endpoint keeping every request it receives, answering with `statuses`
/// in turn, then 200.
pub struct WebhookEndpoint {
    pub url: String,
    received: watch::Receiver<Vec<Delivery>>,
    /// How many deliveries [`Self::next`] has handed out.
    taken: usize,
}

impl WebhookEndpoint {
    pub async fn spawn(statuses: &[u16]) -> Self {
        type EndpointState = (Arc<Mutex<VecDeque<u16>>>, watch::Sender<Vec<Delivery>>);
        async fn receive(
            State((statuses, received)): State<EndpointState>,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            let signature = headers
                .get("stripe-signature")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let payload = String::from_utf8(body.to_vec()).unwrap();
            received.send_modify(|all| all.push(Delivery { signature, payload }));
            let status = statuses.lock().unwrap().pop_front().unwrap_or(200);
            StatusCode::from_u16(status).unwrap()
        }

        let (sender, received) = watch::channel(Vec::new());
        let statuses = Arc::new(Mutex::new(statuses.iter().copied().collect()));
        let app = Router::new()
            .route("/webhooks/stripe", post(receive))
            .with_state((statuses, sender));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url: format!("http://{addr}/webhooks/stripe"),
            received,
            taken: 0,
        }
    }

    /// The next delivery (retries included), waiting up to 5 s.
    pub async fn next(&mut self) -> Delivery {
        let taken = self.taken;
        let delivery = tokio::time::timeout(
            DELIVERY_WAIT,
            self.received.wait_for(|all| all.len() > taken),
        )
        .await
        .expect("a webhook delivery within 5 s")
        .expect("the endpoint is running")[taken]
            .clone();
        self.taken += 1;
        delivery
    }

    /// Asserts that nothing more arrives for a while.
    pub async fn assert_quiet(&mut self) {
        let taken = self.taken;
        let more = tokio::time::timeout(
            Duration::from_millis(400),
            self.received.wait_for(|all| all.len() > taken),
        )
        .await
        .map(|received| received.map(|all| all[taken..].to_vec()));
        assert!(more.is_err(), "unexpected extra delivery: {more:?}");
    }

    /// Every delivery so far, in the order received.
    pub fn all(&self) -> Vec<Delivery> {
        self.received.borrow().clone()
    }

    /// Every delivery once there are at least `count`, or after waiting 5 s.
    pub async fn at_least(&self, count: usize) -> Vec<Delivery> {
        let mut received = self.received.clone();
        let _ =
            tokio::time::timeout(DELIVERY_WAIT, received.wait_for(|all| all.len() >= count)).await;
        self.all()
    }
}

/// A billfold-like app with only the sandbox mounted, and clients for it.
pub struct SandboxApp {
    pub addr: SocketAddr,
    pub pool: PgPool,
    pub config: SandboxConfig,
    pub stripe: stripe::Client,
    /// Raw HTTP, redirects not followed.
    pub http: reqwest::Client,
    /// The app's own capturing endpoint; `None` when it delivers to a URL it was given.
    webhooks: Option<WebhookEndpoint>,
}

impl SandboxApp {
    /// The sandbox delivering to a capturing endpoint of its own, retrying after 50 ms.
    pub async fn spawn(pool: PgPool) -> Self {
        let endpoint = WebhookEndpoint::spawn(&[]).await;
        let mut app = Self::delivering_to(pool, &endpoint.url, Duration::from_millis(50)).await;
        app.webhooks = Some(endpoint);
        app
    }

    /// The sandbox delivering to `webhook_url`, retrying after `retry_base_delay`.
    pub async fn delivering_to(
        pool: PgPool,
        webhook_url: &str,
        retry_base_delay: Duration,
    ) -> Self {
        // `#[sqlx::test]` applies only the app's migrations
        sandbox::migrate(&pool).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = config(format!("http://{addr}"), webhook_url, retry_base_delay);
        let routers = sandbox::router(pool.clone(), config.clone());
        let app = Router::new().nest("/sandbox", routers.stripe.merge(routers.control));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            pool,
            config,
            stripe: stripe::ClientBuilder::new(SANDBOX_SECRET_KEY)
                .url(format!("http://{addr}/sandbox/"))
                .build()
                .unwrap(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            webhooks: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn endpoint(&self) -> &WebhookEndpoint {
        self.webhooks
            .as_ref()
            .expect("an app spawned with its own webhook endpoint")
    }

    /// Every delivery so far, in the order received.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.endpoint().all()
    }

    /// The next delivery to the app's own endpoint, waiting up to 5 s.
    pub async fn next_delivery(&mut self) -> Delivery {
        self.webhooks
            .as_mut()
            .expect("an app spawned with its own webhook endpoint")
            .next()
            .await
    }

    /// Ids and types of every event, in the order they were emitted: by the wall-clock
    /// time of their insert (`clock_timestamp()`, microseconds, so two events of one
    /// transaction differ too), then by their delivery row's identity, which follows
    /// insertion. Neither the event's `created` (whole seconds of the sandbox clock,
    /// which tests move) nor the order of arrival (deliveries go out in parallel) says
    /// this.
    async fn emitted(&self) -> Vec<(String, String)> {
        sqlx::query_as(
            "select e.event_id, e.event_type
             from sandbox_events e join sandbox_webhook_deliveries d using (event_id)
             order by e.created_at, d.delivery_id",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// Event types in the order they were emitted.
    pub async fn event_types(&self) -> Vec<String> {
        self.emitted()
            .await
            .into_iter()
            .map(|(_, event_type)| event_type)
            .collect()
    }

    /// Waits until every event is delivered and returns them, each verified and parsed
    /// with `Webhook::construct_event`, in the order they were emitted.
    pub async fn delivered_events(&self) -> Vec<stripe_webhook::Event> {
        let emitted = self.emitted().await;
        let deliveries = self.endpoint().at_least(emitted.len()).await;
        assert_eq!(
            deliveries.len(),
            emitted.len(),
            "every event is delivered once"
        );
        let mut by_id: std::collections::HashMap<String, stripe_webhook::Event> = deliveries
            .iter()
            .map(|delivery| {
                let event = delivery.event();
                (event.id.to_string(), event)
            })
            .collect();
        emitted
            .iter()
            .map(|(id, _)| {
                by_id
                    .remove(id)
                    .unwrap_or_else(|| panic!("event {id} was not delivered"))
            })
            .collect()
    }

    /// Pays a checkout session on its hosted page.
    pub async fn pay(&self, session_id: &str) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/sandbox/checkout/{session_id}/pay")))
            .send()
            .await
            .unwrap()
    }

    /// A form POST to a hosted page or a control route.
    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// A raw GET from the sandbox API (`/sandbox/v1{path}`) with the secret key.
    pub async fn api_get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(&format!("/sandbox/v1{path}")))
            .bearer_auth(SANDBOX_SECRET_KEY)
            .send()
            .await
            .unwrap()
    }

    /// A raw form POST to the sandbox API (`/sandbox/v1{path}`) with the secret key, for
    /// requests async-stripe cannot make.
    pub async fn api_post_form(&self, path: &str, body: &str) -> (reqwest::StatusCode, Value) {
        let response = self
            .http
            .post(self.url(&format!("/sandbox/v1{path}")))
            .bearer_auth(SANDBOX_SECRET_KEY)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }
}

/// The line of a €40.00 credit pack: 2 × €20.00 "Credit pack 1,000".
pub fn credit_pack_item() -> CreateCheckoutSessionLineItems {
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
    item
}

/// The error and HTTP status of a Stripe error reply.
pub fn stripe_error(error: StripeError) -> (stripe::ApiErrors, u16) {
    match error {
        StripeError::Stripe(error, status) => (*error, status),
        other => panic!("expected a Stripe error reply, got {other:?}"),
    }
}

pub fn code(error: &stripe::ApiErrors) -> Option<String> {
    error.code.as_ref().map(|code| code.as_str().to_owned())
}

pub fn idempotent(key: &str) -> RequestStrategy {
    RequestStrategy::Idempotent(IdempotencyKey::new(key).unwrap())
}
