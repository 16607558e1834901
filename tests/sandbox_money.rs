//! Money moving back in the Stripe sandbox: payment intents and charges of paid
//! checkout sessions, refunds through async-stripe's `CreateRefund`, disputes opened
//! and closed by the control functions and routes, faults injected into the API, and
//! events emitted by another process delivered at once. Every event is received by a
//! webhook endpoint and parsed with `Webhook::construct_event`, as billfold does.

#![cfg(feature = "sandbox")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use billfold::sandbox::{self, ControlError, DisputeOutcome, Fault};
use common::{SandboxApp, code, idempotent, stripe_error};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use stripe::StripeRequest;
use stripe_billing::subscription::RetrieveSubscription;
use stripe_checkout::CheckoutSessionMode;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, RetrieveCheckoutSession,
};
use stripe_core::charge::RetrieveCharge;
use stripe_core::customer::{CreateCustomer, RetrieveCustomer};
use stripe_core::refund::{CreateRefund, CreateRefundReason, RetrieveRefund};
use stripe_product::price::{CreatePrice, CreatePriceRecurring, CreatePriceRecurringInterval};
use stripe_product::product::CreateProduct;
use stripe_shared::{
    Charge, ChargeStatus, Dispute, DisputeStatus, PaymentIntent, PaymentIntentStatus, Refund,
    RefundReason,
};
use stripe_webhook::EventObject;

/// What a paid credit pack left behind.
struct Paid {
    session: String,
    payment_intent: String,
    charge: String,
    customer: String,
}

impl SandboxApp {
    /// Buys a €40.00 credit pack (2 × €20.00) through Checkout as a new customer.
    async fn pay_credit_pack(&self) -> Paid {
        let customer = CreateCustomer::new()
            .email("owner@example.com")
            .send(&self.stripe)
            .await
            .unwrap();
        let session = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Payment)
            .line_items(vec![common::credit_pack_item()])
            .customer(customer.id.as_str())
            .client_reference_id("ws_42")
            .success_url("https://billfold.test/billing?checkout={CHECKOUT_SESSION_ID}")
            .send(&self.stripe)
            .await
            .unwrap();
        let paid = self.pay(session.id.as_str()).await;
        assert_eq!(paid.status(), reqwest::StatusCode::SEE_OTHER);
        let session = RetrieveCheckoutSession::new(session.id.as_str())
            .send(&self.stripe)
            .await
            .unwrap();
        let payment_intent = session.payment_intent.unwrap().id().to_string();
        let intent = self.payment_intent(&payment_intent).await;
        Paid {
            session: session.id.to_string(),
            charge: intent.latest_charge.unwrap().id().to_string(),
            payment_intent,
            customer: customer.id.to_string(),
        }
    }

    /// `GET /v1/payment_intents/{id}` read as async-stripe's `PaymentIntent`.
    async fn payment_intent(&self, id: &str) -> PaymentIntent {
        let body: Value = self
            .api_get(&format!("/payment_intents/{id}"))
            .await
            .json()
            .await
            .unwrap();
        serde_json::from_value(body.clone()).unwrap_or_else(|error| panic!("{error}: {body}"))
    }

    async fn charge(&self, id: &str) -> Charge {
        RetrieveCharge::new(id).send(&self.stripe).await.unwrap()
    }

    /// A €49.00 monthly subscription of a new customer, paid through Checkout.
    async fn subscription(&self) -> String {
        let product = CreateProduct::new("Pro").send(&self.stripe).await.unwrap();
        let price = CreatePrice::new("eur".parse::<stripe_types::Currency>().unwrap())
            .product(product.id.as_str())
            .unit_amount(4900)
            .recurring(CreatePriceRecurring::new(
                CreatePriceRecurringInterval::Month,
            ))
            .send(&self.stripe)
            .await
            .unwrap();
        let customer = CreateCustomer::new().send(&self.stripe).await.unwrap();
        let mut item = CreateCheckoutSessionLineItems::new();
        item.price = Some(price.id.to_string());
        item.quantity = Some(1);
        let session = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Subscription)
            .line_items(vec![item])
            .customer(customer.id.as_str())
            .send(&self.stripe)
            .await
            .unwrap();
        self.pay(session.id.as_str()).await;
        RetrieveCheckoutSession::new(session.id.as_str())
            .send(&self.stripe)
            .await
            .unwrap()
            .subscription
            .unwrap()
            .id()
            .to_string()
    }

    async fn post_json(&self, path: &str, body: Value) -> (reqwest::StatusCode, Value) {
        let response = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn refunds_of(events: &[stripe_webhook::Event]) -> Vec<&Refund> {
    events
        .iter()
        .filter_map(|event| match &event.data.object {
            EventObject::RefundCreated(refund) => Some(&**refund),
            _ => None,
        })
        .collect()
}

fn refunded_charges(events: &[stripe_webhook::Event]) -> Vec<&Charge> {
    events
        .iter()
        .filter_map(|event| match &event.data.object {
            EventObject::ChargeRefunded(charge) => Some(&**charge),
            _ => None,
        })
        .collect()
}

fn disputes_of(events: &[stripe_webhook::Event], event_type: &str) -> Vec<Dispute> {
    events
        .iter()
        .filter(|event| event.type_.as_str() == event_type)
        .map(|event| match &event.data.object {
            EventObject::ChargeDisputeCreated(dispute)
                if event_type == "charge.dispute.created" =>
            {
                (**dispute).clone()
            }
            EventObject::ChargeDisputeClosed(dispute) if event_type == "charge.dispute.closed" => {
                (**dispute).clone()
            }
            other => panic!("{event_type} parsed as {other:?}"),
        })
        .collect()
}

#[sqlx::test]
async fn paying_a_credit_pack_leaves_a_succeeded_payment_intent_and_charge(pool: PgPool) {
    let app = SandboxApp::spawn(pool).await;
    let paid = app.pay_credit_pack().await;
    assert!(paid.payment_intent.starts_with("pi_"));
    assert!(paid.charge.starts_with("ch_"));

    let intent = app.payment_intent(&paid.payment_intent).await;
    assert_eq!(intent.status, PaymentIntentStatus::Succeeded);
    assert_eq!((intent.amount, intent.amount_received), (4000, 4000));
    assert_eq!(intent.currency, stripe_types::Currency::EUR);
    assert_eq!(
        intent.customer.map(|customer| customer.id().to_string()),
        Some(paid.customer.clone())
    );

    let charge = app.charge(&paid.charge).await;
    assert!(charge.paid && charge.captured);
    assert_eq!(charge.status, ChargeStatus::Succeeded);
    assert_eq!(
        (
            charge.amount,
            charge.amount_captured,
            charge.amount_refunded
        ),
        (4000, 4000, 0)
    );
    assert!(!charge.refunded && !charge.disputed);
    assert_eq!(charge.currency, stripe_types::Currency::EUR);
    assert_eq!(
        charge.payment_intent.map(|intent| intent.id().to_string()),
        Some(paid.payment_intent.clone())
    );
    assert_eq!(
        charge.customer.map(|customer| customer.id().to_string()),
        Some(paid.customer.clone())
    );
    assert_eq!(
        charge.billing_details.email.as_deref(),
        Some("owner@example.com")
    );
    // like Stripe since 2022-11-15, refunds are listed only when expanded
    assert!(charge.refunds.is_none());
    let expanded = RetrieveCharge::new(paid.charge.as_str())
        .expand(vec!["refunds".to_owned()])
        .send(&app.stripe)
        .await
        .unwrap();
    assert!(expanded.refunds.unwrap().data.is_empty());

    // the CLI resolves a checkout session (or either id) to the payment to refund
    for id in [&paid.session, &paid.payment_intent, &paid.charge] {
        let payment = sandbox::find_payment(&app.pool, id).await.unwrap();
        assert_eq!(payment.payment_intent, paid.payment_intent);
        assert_eq!(payment.charge, paid.charge);
    }
    let missing = sandbox::find_payment(&app.pool, "cs_test_missing").await;
    assert!(
        matches!(missing, Err(ControlError::NotFound(_))),
        "{missing:?}"
    );

    let missing = RetrieveCharge::new("ch_missing")
        .send(&app.stripe)
        .await
        .unwrap_err();
    let (error, status) = stripe_error(missing);
    assert_eq!(
        (status, code(&error).as_deref()),
        (404, Some("resource_missing"))
    );
    let missing = app.api_get("/payment_intents/pi_missing").await;
    assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);
    app.delivered_events().await;
}

#[sqlx::test]
async fn partial_then_full_refunds_add_up_on_the_charge_and_emit_signed_events(pool: PgPool) {
    let app = SandboxApp::spawn(pool).await;
    let paid = app.pay_credit_pack().await;

    let first = CreateRefund::new()
        .payment_intent(paid.payment_intent.as_str())
        .amount(1500)
        .reason(CreateRefundReason::RequestedByCustomer)
        .metadata(HashMap::from([(
            "workspace_id".to_owned(),
            "ws_42".to_owned(),
        )]))
        .send(&app.stripe)
        .await
        .unwrap();
    assert!(first.id.as_str().starts_with("re_"));
    assert_eq!(first.amount, 1500);
    assert_eq!(first.status.as_deref(), Some("succeeded"));
    assert_eq!(first.reason, Some(RefundReason::RequestedByCustomer));
    assert_eq!(
        first.charge.as_ref().map(|charge| charge.id().to_string()),
        Some(paid.charge.clone())
    );
    assert_eq!(first.metadata.as_ref().unwrap()["workspace_id"], "ws_42");
    let charge = app.charge(&paid.charge).await;
    assert_eq!((charge.amount_refunded, charge.refunded), (1500, false));

    // no amount: what is left
    let rest = CreateRefund::new()
        .charge(paid.charge.as_str())
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(rest.amount, 2500);
    let charge = RetrieveCharge::new(paid.charge.as_str())
        .expand(vec!["refunds".to_owned()])
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!((charge.amount_refunded, charge.refunded), (4000, true));
    let listed: Vec<_> = charge
        .refunds
        .unwrap()
        .data
        .iter()
        .map(|refund| refund.id.to_string())
        .collect();
    assert_eq!(listed, [rest.id.to_string(), first.id.to_string()]);
    let retrieved = RetrieveRefund::new(first.id.clone())
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(retrieved.amount, 1500);

    let events = app.delivered_events().await;
    let refunds: Vec<_> = refunds_of(&events).iter().map(|r| r.amount).collect();
    assert_eq!(refunds, [1500, 2500]);
    let charges: Vec<_> = refunded_charges(&events)
        .iter()
        .map(|c| (c.amount_refunded, c.refunded))
        .collect();
    assert_eq!(charges, [(1500, false), (4000, true)]);
}

#[sqlx::test]
async fn refunds_stripe_would_refuse_are_refused_and_change_nothing(pool: PgPool) {
    let app = SandboxApp::spawn(pool).await;
    let paid = app.pay_credit_pack().await;

    let too_much = CreateRefund::new()
        .charge(paid.charge.as_str())
        .amount(5000)
        .send(&app.stripe)
        .await
        .unwrap_err();
    let (error, status) = stripe_error(too_much);
    assert_eq!(status, 400);
    assert_eq!(error.type_, stripe::ApiErrorsType::InvalidRequestError);
    assert_eq!(code(&error).as_deref(), Some("amount_too_large"));
    assert_eq!(error.param.as_deref(), Some("amount"));
    assert_eq!(
        error.message.as_deref(),
        Some("Refund amount (€50.00) is greater than unrefunded amount on charge (€40.00)")
    );

    for amount in [0, -100] {
        let refused = CreateRefund::new()
            .charge(paid.charge.as_str())
            .amount(amount)
            .send(&app.stripe)
            .await
            .unwrap_err();
        let (error, status) = stripe_error(refused);
        assert_eq!((status, error.param.as_deref()), (400, Some("amount")));
    }

    let unknown = CreateRefund::new()
        .charge("ch_missing")
        .send(&app.stripe)
        .await
        .unwrap_err();
    let (error, status) = stripe_error(unknown);
    assert_eq!(status, 404);
    assert_eq!(code(&error).as_deref(), Some("resource_missing"));
    assert_eq!(
        error.message.as_deref(),
        Some("No such charge: 'ch_missing'")
    );
    let unknown = CreateRefund::new()
        .payment_intent("pi_missing")
        .send(&app.stripe)
        .await
        .unwrap_err();
    let (error, status) = stripe_error(unknown);
    assert_eq!(
        (status, error.param.as_deref()),
        (404, Some("payment_intent"))
    );

    let bodies = [
        ("", None),
        (
            &*format!(
                "charge={}&payment_intent={}",
                paid.charge, paid.payment_intent
            ),
            Some("payment_intent"),
        ),
        (
            &*format!("charge={}&reason=bored", paid.charge),
            Some("reason"),
        ),
        (
            &*format!("charge={}&amount=ten", paid.charge),
            Some("amount"),
        ),
        (&*format!("charge={}&bogus=1", paid.charge), Some("bogus")),
    ];
    for (body, param) in bodies {
        let (status, reply) = app.api_post_form("/refunds", body).await;
        assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(reply["error"]["param"].as_str(), param, "{body}: {reply}");
    }

    let charge = app.charge(&paid.charge).await;
    assert_eq!((charge.amount_refunded, charge.refunded), (0, false));
    assert!(!app.event_types().await.iter().any(|t| t.contains("refund")));

    CreateRefund::new()
        .charge(paid.charge.as_str())
        .send(&app.stripe)
        .await
        .unwrap();
    let again = CreateRefund::new()
        .payment_intent(paid.payment_intent.as_str())
        .amount(1)
        .send(&app.stripe)
        .await
        .unwrap_err();
    let (error, status) = stripe_error(again);
    assert_eq!(status, 400);
    assert_eq!(code(&error).as_deref(), Some("charge_already_refunded"));
    assert_eq!(
        error.message,
        Some(format!("Charge {} has already been refunded.", paid.charge))
    );
}

#[sqlx::test]
async fn twenty_concurrent_refunds_never_exceed_the_charge(pool: PgPool) {
    let app = SandboxApp::spawn(pool).await;
    let paid = app.pay_credit_pack().await;

    let request = CreateRefund::new().charge(paid.charge.as_str()).amount(300);
    let attempts = (0..20).map(|_| request.send(&app.stripe));
    let results = futures_util::future::join_all(attempts).await;
    let mut refunded = 0;
    let mut refused = 0;
    for result in results {
        match result {
            Ok(refund) => refunded += refund.amount,
            Err(error) => {
                let (error, status) = stripe_error(error);
                assert_eq!(
                    (status, code(&error).as_deref()),
                    (400, Some("amount_too_large"))
                );
                refused += 1;
            }
        }
    }
    // 13 × €3.00 fit in €40.00; the 14th would need €3.00 of the €1.00 left
    assert_eq!((refunded, refused), (3900, 7));
    let charge = app.charge(&paid.charge).await;
    assert_eq!((charge.amount_refunded, charge.refunded), (3900, false));
    let events = app.delivered_events().await;
    assert_eq!(refunds_of(&events).len(), 13);
    let mut totals: Vec<_> = refunded_charges(&events)
        .iter()
        .map(|charge| charge.amount_refunded)
        .collect();
    totals.sort_unstable();
    assert_eq!(totals, (1..=13).map(|n| n * 300).collect::<Vec<_>>());
}

#[sqlx::test]
async fn a_retried_refund_with_the_same_idempotency_key_refunds_once(pool: PgPool) {
    let app = SandboxApp::spawn(pool).await;
    let paid = app.pay_credit_pack().await;
    let request = CreateRefund::new()
        .payment_intent(paid.payment_intent.as_str())
        .amount(1000);
    let first = request
        .customize()
        .request_strategy(idempotent("refund-ws42-1"))
        .send(&app.stripe)
        .await
        .unwrap();
    let second = request
        .customize()
        .request_strategy(idempotent("refund-ws42-1"))
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(first.id, second.id);
    assert_eq!(app.charge(&paid.charge).await.amount_refunded, 1000);
}

#[sqlx::test]
async fn a_dispute_opens_on_what_is_left_blocks_refunds_and_closes(pool: PgPool) {
    let app = SandboxApp::spawn(pool.clone()).await;
    let paid = app.pay_credit_pack().await;
    CreateRefund::new()
        .charge(paid.charge.as_str())
        .amount(1000)
        .send(&app.stripe)
        .await
        .unwrap();

    // a checkout session id resolves to its payment
    let dispute = sandbox::open_dispute(&pool, &paid.session).await.unwrap();
    assert!(dispute.id.starts_with("dp_"));
    assert_eq!((dispute.amount, dispute.currency.as_str()), (3000, "eur"));
    assert_eq!(dispute.status, "needs_response");
    assert_eq!(dispute.charge, paid.charge);
    assert_eq!(
        dispute.payment_intent.as_deref(),
        Some(&*paid.payment_intent)
    );
    assert!(app.charge(&paid.charge).await.disputed);

    let again = sandbox::open_dispute(&pool, &paid.charge).await;
    assert!(matches!(again, Err(ControlError::Conflict(_))), "{again:?}");
    let refund = CreateRefund::new()
        .charge(paid.charge.as_str())
        .send(&app.stripe)
        .await
        .unwrap_err();
    let (error, status) = stripe_error(refund);
    assert_eq!(
        (status, code(&error).as_deref()),
        (400, Some("charge_disputed"))
    );

    // a payment intent id finds the dispute too
    let closed = sandbox::close_dispute(&pool, &paid.payment_intent, DisputeOutcome::Lost)
        .await
        .unwrap();
    assert_eq!(
        (closed.id.as_str(), closed.status.as_str()),
        (&*dispute.id, "lost")
    );
    let twice = sandbox::close_dispute(&pool, &dispute.id, DisputeOutcome::Won).await;
    assert!(matches!(twice, Err(ControlError::Conflict(_))), "{twice:?}");

    let events = app.delivered_events().await;
    let [created] = disputes_of(&events, "charge.dispute.created")
        .try_into()
        .unwrap();
    assert_eq!(created.id.as_str(), dispute.id);
    assert_eq!(created.status, DisputeStatus::NeedsResponse);
    assert_eq!(created.reason, "fraudulent");
    assert_eq!(
        (created.amount, &created.currency),
        (3000, &stripe_types::Currency::EUR)
    );
    assert_eq!(created.charge.id().as_str(), paid.charge);
    assert!(!created.is_charge_refundable);
    assert!(created.evidence_details.due_by.unwrap() > created.created);
    let [closed] = disputes_of(&events, "charge.dispute.closed")
        .try_into()
        .unwrap();
    assert_eq!(closed.status, DisputeStatus::Lost);
}

#[sqlx::test]
async fn unknown_unpaid_or_refunded_payments_cannot_be_disputed(pool: PgPool) {
    let app = SandboxApp::spawn(pool.clone()).await;
    for id in ["cs_test_missing", "pi_missing", "ch_missing", "whatever"] {
        let refused = sandbox::open_dispute(&pool, id).await;
        assert!(
            matches!(refused, Err(ControlError::NotFound(_))),
            "{id}: {refused:?}"
        );
    }
    let subscription_session: String = {
        app.subscription().await;
        sqlx::query_scalar(
            "select object_id from sandbox_objects where object_type = 'checkout.session'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let refused = sandbox::open_dispute(&pool, &subscription_session).await;
    assert!(
        matches!(refused, Err(ControlError::Conflict(_))),
        "{refused:?}"
    );

    let paid = app.pay_credit_pack().await;
    let no_dispute = sandbox::close_dispute(&pool, &paid.charge, DisputeOutcome::Won).await;
    assert!(
        matches!(no_dispute, Err(ControlError::NotFound(_))),
        "{no_dispute:?}"
    );
    CreateRefund::new()
        .charge(paid.charge.as_str())
        .send(&app.stripe)
        .await
        .unwrap();
    let refused = sandbox::open_dispute(&pool, &paid.payment_intent).await;
    assert!(
        matches!(refused, Err(ControlError::Conflict(_))),
        "{refused:?}"
    );
    assert!(!app.charge(&paid.charge).await.disputed);
}

#[sqlx::test]
async fn the_dispute_routes_take_json_or_forms_and_a_won_dispute_allows_refunds(pool: PgPool) {
    let app = SandboxApp::spawn(pool).await;
    let paid = app.pay_credit_pack().await;

    let (status, dispute) = app
        .post_json("/sandbox/disputes", json!({ "payment": paid.charge }))
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{dispute}");
    assert_eq!(dispute["object"], "dispute");
    assert_eq!(dispute["amount"], 4000);
    assert!(dispute.get("_sandbox_dispute").is_none());
    let id = dispute["id"].as_str().unwrap();

    let closed = app
        .http
        .post(app.url(&format!("/sandbox/disputes/{id}/close")))
        .form(&[("outcome", "won"), ("csrf_token", "ignored-here")])
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), reqwest::StatusCode::OK);
    let closed: Value = closed.json().await.unwrap();
    assert_eq!(closed["status"], "won");
    let refund = CreateRefund::new()
        .charge(paid.charge.as_str())
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(refund.amount, 4000);

    let (status, error) = app
        .post_json("/sandbox/disputes", json!({ "payment": "pi_missing" }))
        .await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    assert_eq!(error["error"]["type"], "invalid_request_error");
    let (status, _) = app.post_json("/sandbox/disputes", json!({})).await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);
    let (status, _) = app
        .post_json(
            &format!("/sandbox/disputes/{id}/close"),
            json!({ "outcome": "maybe" }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);
    let (status, _) = app
        .post_json(
            &format!("/sandbox/disputes/{id}/close"),
            json!({ "outcome": "lost" }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CONFLICT);

    let events = app.delivered_events().await;
    assert_eq!(disputes_of(&events, "charge.dispute.created").len(), 1);
    let [won] = disputes_of(&events, "charge.dispute.closed")
        .try_into()
        .unwrap();
    assert_eq!(won.status, DisputeStatus::Won);
}

#[sqlx::test]
async fn a_faulted_endpoint_waits_or_fails_as_asked_and_others_are_unaffected(pool: PgPool) {
    let app = SandboxApp::spawn(pool.clone()).await;
    let subscription = app.subscription().await;
    let customer = CreateCustomer::new().send(&app.stripe).await.unwrap();
    let request = RetrieveSubscription::new(subscription.as_str());
    let retrieve = || request.send(&app.stripe);

    sandbox::set_fault(
        &pool,
        &Fault {
            method: Some("get".to_owned()),
            path: "/v1/subscriptions".to_owned(),
            delay_ms: 3_000,
            count: Some(1),
            ..Fault::default()
        },
    )
    .await
    .unwrap();
    // A long delay and a bound well below it: a slow machine does not look delayed.
    let undelayed = Duration::from_millis(1_500);
    let started = Instant::now();
    let other = RetrieveCustomer::new(customer.id.clone())
        .send(&app.stripe)
        .await;
    assert!(other.is_ok());
    assert!(started.elapsed() < undelayed, "another path is not delayed");
    let started = Instant::now();
    assert_eq!(retrieve().await.unwrap().id.as_str(), subscription);
    assert!(started.elapsed() >= Duration::from_millis(3_000));
    let started = Instant::now();
    retrieve().await.unwrap();
    assert!(started.elapsed() < undelayed, "used up");

    let fault = sandbox::set_fault(
        &pool,
        &Fault {
            path: "/v1/subscriptions/".to_owned(),
            status: Some(500),
            count: Some(2),
            ..Fault::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (fault.path.as_str(), fault.remaining),
        ("/v1/subscriptions", Some(2))
    );
    let (error, status) = stripe_error(retrieve().await.unwrap_err());
    assert_eq!(
        (status, error.type_),
        (500, stripe::ApiErrorsType::ApiError)
    );
    let faults: Value = app
        .http
        .get(app.url("/sandbox/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(faults[0]["remaining"], 1, "{faults}");
    assert_eq!(stripe_error(retrieve().await.unwrap_err()).1, 500);
    assert!(retrieve().await.is_ok());
    assert!(sandbox::list_faults(&pool).await.unwrap().is_empty());

    let statuses = [
        (
            429,
            stripe::ApiErrorsType::Unknown("rate_limit_error".to_owned()),
        ),
        (402, stripe::ApiErrorsType::CardError),
        (404, stripe::ApiErrorsType::InvalidRequestError),
    ];
    for (status, kind) in statuses {
        sandbox::set_fault(
            &pool,
            &Fault {
                path: "/v1/subscriptions".to_owned(),
                status: Some(status),
                ..Fault::default()
            },
        )
        .await
        .unwrap();
        let (error, answered) = stripe_error(retrieve().await.unwrap_err());
        assert_eq!((answered, error.type_), (status, kind));
        if status == 402 {
            assert_eq!(error.decline_code.as_deref(), Some("generic_decline"));
        }
        // lasts until cleared
        assert_eq!(stripe_error(retrieve().await.unwrap_err()).1, status);
        assert_eq!(sandbox::clear_faults(&pool).await.unwrap(), 1);
    }
    assert!(retrieve().await.is_ok());
}

#[sqlx::test]
async fn a_delayed_request_holds_no_database_connection(pool: PgPool) {
    // a small pool: the webhook worker's listener takes one, requests share the rest
    let small = PgPoolOptions::new()
        .max_connections(3)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let app = SandboxApp::spawn(small.clone()).await;
    let customer = CreateCustomer::new().send(&app.stripe).await.unwrap();
    sandbox::set_fault(
        &pool,
        &Fault {
            path: "/v1/subscriptions".to_owned(),
            delay_ms: 6_000,
            ..Fault::default()
        },
    )
    .await
    .unwrap();
    let delayed: Vec<_> = (0..8)
        .map(|_| {
            let stripe = app.stripe.clone();
            tokio::spawn(async move { RetrieveSubscription::new("sub_x").send(&stripe).await })
        })
        .collect();
    // Once the delayed requests wait, a request needing a connection would wait for
    // them (5 s more) if they held one; the bound leaves a slow machine room.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    RetrieveCustomer::new(customer.id.clone())
        .send(&app.stripe)
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "waited {took:?} for a connection"
    );
    for request in delayed {
        let (_, status) = stripe_error(request.await.unwrap().unwrap_err());
        assert_eq!(status, 404);
    }
}

#[sqlx::test]
async fn the_fault_routes_refuse_bad_faults_and_clear_them(pool: PgPool) {
    let app = SandboxApp::spawn(pool).await;
    let bad = [
        json!({ "path": "/checkout/cs_1", "status": 500 }),
        json!({ "path": "/v1x", "status": 500 }),
        json!({ "path": "/v1/subscriptions", "status": 200 }),
        json!({ "path": "/v1/subscriptions", "delay_ms": 600_000 }),
        json!({ "path": "/v1/subscriptions" }),
        json!({ "path": "/v1/subscriptions", "status": 500, "count": 0 }),
        json!({ "path": "/v1/subscriptions", "status": 500, "method": "PATCH" }),
        json!({ "path": "/v1/subscriptions", "status": 500, "delay": 5 }),
        json!({ "status": 500 }),
    ];
    for body in bad {
        let (status, reply) = app.post_json("/sandbox/faults", body.clone()).await;
        assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{body}: {reply}");
        assert_eq!(reply["error"]["type"], "invalid_request_error", "{body}");
    }
    let (status, fault) = app
        .post_json(
            "/sandbox/faults",
            json!({ "method": "POST", "path": "/v1/refunds", "status": 503, "delay_ms": 10 }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED);
    assert_eq!(
        (&fault["method"], &fault["path"], &fault["remaining"]),
        (&json!("POST"), &json!("/v1/refunds"), &Value::Null)
    );
    let (status, _) = app
        .post_json("/sandbox/faults", json!({ "path": "/v1", "delay_ms": 1 }))
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED);
    let listed: Value = app
        .http
        .get(app.url("/sandbox/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);

    let one = app.url(&format!("/sandbox/faults/{}", fault["id"]));
    let deleted = app.http.delete(&one).send().await.unwrap();
    assert_eq!(deleted.status(), reqwest::StatusCode::NO_CONTENT);
    let again = app.http.delete(&one).send().await.unwrap();
    assert_eq!(again.status(), reqwest::StatusCode::NOT_FOUND);
    let all = app
        .http
        .delete(app.url("/sandbox/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(all.status(), reqwest::StatusCode::NO_CONTENT);
    assert!(sandbox::list_faults(&app.pool).await.unwrap().is_empty());
}

/// Waits until the app's endpoint received more than `count` deliveries, failing after
/// `within` (from `since`): the webhook worker's fallback poll comes only every 5 s.
async fn delivered_promptly(app: &SandboxApp, count: usize, since: Instant, what: &str) {
    let within = Duration::from_millis(3_500);
    while app.deliveries().len() <= count {
        assert!(
            since.elapsed() < within,
            "{what}: no delivery within {within:?}, so the worker only polls"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[sqlx::test]
async fn events_emitted_by_another_process_are_delivered_at_once(pool: PgPool) {
    let app = SandboxApp::spawn(pool.clone()).await;
    let paid = app.pay_credit_pack().await;
    app.subscription().await;
    let before = app.delivered_events().await.len();

    // another process: its own pool, and no way to wake this app's worker but NOTIFY
    let other = PgPool::connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    // The worker last delivered just now, so its next poll is about 5 s away: a
    // delivery within 3.5 s came through the notification.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    sandbox::open_dispute(&other, &paid.session).await.unwrap();
    delivered_promptly(&app, before, started, "a dispute opened elsewhere").await;
    let disputed = app.delivered_events().await.len();
    assert_eq!(disputed, before + 1);

    // The clock moved elsewhere past the subscription's renewal: its invoice events.
    sandbox::advance(&other, &app.config, 32).await.unwrap();
    let advanced = Instant::now();
    other.close().await;
    delivered_promptly(&app, disputed, advanced, "a renewal elsewhere").await;
    let renewal = app.event_types().await.split_off(disputed);
    assert!(
        renewal.iter().any(|t| t == "invoice.paid"),
        "the renewal's events: {renewal:?}"
    );
    assert_eq!(
        app.delivered_events().await.len(),
        disputed + renewal.len(),
        "each delivered once"
    );
}
