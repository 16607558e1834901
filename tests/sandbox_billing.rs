//! Subscriptions, invoices, preview invoices, the sandbox clock, failing cards and the
//! customer portal of the Stripe sandbox, driven through the real async-stripe client,
//! the hosted pages and signed webhooks.

#![cfg(feature = "sandbox")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use axum::http::StatusCode;
use common::SandboxApp;
use serde_json::Value;
use sqlx::PgPool;
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::invoice::{
    CreatePreviewInvoice, CreatePreviewInvoiceSubscriptionDetails,
    CreatePreviewInvoiceSubscriptionDetailsItems,
    CreatePreviewInvoiceSubscriptionDetailsProrationBehavior, ListInvoice, RetrieveInvoice,
};
use stripe_billing::subscription::{
    CancelSubscription, ListSubscription, RetrieveSubscription, UpdateSubscription,
    UpdateSubscriptionItems, UpdateSubscriptionProrationBehavior,
};
use stripe_checkout::CheckoutSessionMode;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, RetrieveCheckoutSession,
};
use stripe_core::customer::CreateCustomer;
use stripe_product::price::{CreatePrice, CreatePriceRecurring, CreatePriceRecurringInterval};
use stripe_product::product::CreateProduct;
use stripe_shared::{InvoiceStatus, Subscription, SubscriptionStatus};
use stripe_webhook::EventObject;

impl SandboxApp {
    /// A monthly plan price in EUR with lookup key `billfold_plan_{key}`.
    async fn plan(&self, name: &str, amount: i64) -> String {
        let product = CreateProduct::new(name).send(&self.stripe).await.unwrap();
        let mut recurring = CreatePriceRecurring::new(CreatePriceRecurringInterval::Month);
        recurring.interval_count = Some(1);
        CreatePrice::new("eur".parse::<stripe_types::Currency>().unwrap())
            .product(product.id.as_str())
            .unit_amount(amount)
            .recurring(recurring)
            .lookup_key(format!("billfold_plan_{}", name.to_lowercase()))
            .send(&self.stripe)
            .await
            .unwrap()
            .id
            .to_string()
    }

    /// Subscribes a new customer to `price` through Checkout; returns the
    /// customer id and the subscription.
    async fn subscribe(&self, price: &str) -> (String, Subscription) {
        let customer = CreateCustomer::new()
            .email("owner@example.com")
            .send(&self.stripe)
            .await
            .unwrap();
        let mut item = CreateCheckoutSessionLineItems::new();
        item.price = Some(price.to_owned());
        item.quantity = Some(1);
        let mut data =
            stripe_checkout::checkout_session::CreateCheckoutSessionSubscriptionData::new();
        data.metadata = Some(HashMap::from([(
            "workspace_id".to_owned(),
            "ws_7".to_owned(),
        )]));
        let session = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Subscription)
            .line_items(vec![item])
            .customer(customer.id.as_str())
            .client_reference_id("ws_7")
            .metadata(HashMap::from([("kind".to_owned(), "plan".to_owned())]))
            .subscription_data(data)
            .success_url("http://billfold.test/billing?session={CHECKOUT_SESSION_ID}")
            .cancel_url("http://billfold.test/billing")
            .send(&self.stripe)
            .await
            .unwrap();
        let page = self
            .http
            .get(self.url(&format!("/sandbox/checkout/{}", session.id)))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            page.contains("€49.00 / month") || page.contains("/ month"),
            "{page}"
        );
        let paid = self.pay(session.id.as_str()).await;
        assert_eq!(paid.status(), StatusCode::SEE_OTHER);
        let session = RetrieveCheckoutSession::new(session.id.as_str())
            .send(&self.stripe)
            .await
            .unwrap();
        let subscription_id = session.subscription.unwrap().id().to_string();
        assert!(session.invoice.is_some());
        let subscription = RetrieveSubscription::new(subscription_id.as_str())
            .send(&self.stripe)
            .await
            .unwrap();
        (customer.id.to_string(), subscription)
    }

    async fn advance(&self, days: i64) {
        let response = self
            .http
            .post(self.url("/sandbox/clock/advance"))
            .json(&serde_json::json!({ "days": days }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    /// Waits until every event is delivered; checks each parses as its own variant.
    async fn all_events_delivered_and_parse(&self) {
        for event in self.delivered_events().await {
            let ok = match event.type_.as_str() {
                "customer.subscription.created" => {
                    matches!(
                        event.data.object,
                        EventObject::CustomerSubscriptionCreated(_)
                    )
                }
                "customer.subscription.updated" => {
                    matches!(
                        event.data.object,
                        EventObject::CustomerSubscriptionUpdated(_)
                    )
                }
                "customer.subscription.deleted" => {
                    matches!(
                        event.data.object,
                        EventObject::CustomerSubscriptionDeleted(_)
                    )
                }
                "invoice.created" => matches!(event.data.object, EventObject::InvoiceCreated(_)),
                "invoice.finalized" => {
                    matches!(event.data.object, EventObject::InvoiceFinalized(_))
                }
                "invoice.paid" => matches!(event.data.object, EventObject::InvoicePaid(_)),
                "invoice_payment.paid" => {
                    matches!(event.data.object, EventObject::InvoicePaymentPaid(_))
                }
                "invoice.payment_succeeded" => {
                    matches!(event.data.object, EventObject::InvoicePaymentSucceeded(_))
                }
                "invoice.payment_failed" => {
                    matches!(event.data.object, EventObject::InvoicePaymentFailed(_))
                }
                "checkout.session.completed" => {
                    matches!(event.data.object, EventObject::CheckoutSessionCompleted(_))
                }
                _ => true,
            };
            assert!(ok, "{} parsed as the wrong variant", event.type_.as_str());
        }
    }

    /// Events emitted since `from` (an index into [`Self::event_types`]).
    async fn events_since(&self, from: usize) -> Vec<String> {
        self.event_types().await.split_off(from)
    }
}

fn period(subscription: &Subscription) -> (i64, i64) {
    let item = &subscription.items.data[0];
    (item.current_period_start, item.current_period_end)
}

fn without_prices(events: &[String]) -> Vec<&str> {
    events
        .iter()
        .map(String::as_str)
        .filter(|event| !event.starts_with("price.") && !event.starts_with("product."))
        .collect()
}

#[sqlx::test]
async fn checkout_in_subscription_mode_creates_a_paid_subscription(pool: PgPool) {
    let app = SandboxApp::spawn(pool).await;
    let pro = app.plan("Pro", 4900).await;
    let (customer, subscription) = app.subscribe(&pro).await;

    assert_eq!(subscription.status, SubscriptionStatus::Active);
    assert!(!subscription.cancel_at_period_end);
    assert_eq!(subscription.customer.id().as_str(), customer);
    assert_eq!(
        subscription
            .metadata
            .get("workspace_id")
            .map(String::as_str),
        Some("ws_7")
    );
    assert_eq!(subscription.items.data[0].price.id.as_str(), pro);
    let (start, end) = period(&subscription);
    assert!(end - start >= 28 * 86_400 && end - start <= 31 * 86_400);

    let invoice_id = subscription
        .latest_invoice
        .unwrap()
        .id()
        .clone()
        .unwrap()
        .to_string();
    let invoice = RetrieveInvoice::new(invoice_id.as_str())
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(invoice.status, Some(InvoiceStatus::Paid));
    assert_eq!(invoice.number.as_deref(), Some("SANDBOX-0001"));
    assert_eq!(
        invoice.billing_reason,
        Some(stripe_shared::InvoiceBillingReason::SubscriptionCreate)
    );
    assert_eq!(
        (invoice.amount_due, invoice.amount_paid, invoice.total),
        (4900, 4900, 4900)
    );
    assert_eq!((invoice.period_start, invoice.period_end), (start, end));
    let parent = invoice.parent.unwrap().subscription_details.unwrap();
    assert_eq!(parent.subscription.id().as_str(), subscription.id.as_str());
    let hosted = invoice.hosted_invoice_url.unwrap();
    let page = app.http.get(&hosted).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("SANDBOX-0001"));
    let pdf = app
        .http
        .get(invoice.invoice_pdf.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(pdf.headers()["content-type"], "application/pdf");
    assert!(pdf.bytes().await.unwrap().starts_with(b"%PDF-1.4"));

    let listed = ListInvoice::new()
        .customer(customer.as_str())
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(listed.data.len(), 1);
    let subs = ListSubscription::new()
        .customer(customer.as_str())
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(subs.data.len(), 1);

    assert_eq!(
        without_prices(&app.event_types().await),
        [
            "customer.subscription.created",
            "invoice.created",
            "invoice.finalized",
            "invoice_payment.paid",
            "invoice.paid",
            "invoice.payment_succeeded",
            "checkout.session.completed",
        ]
    );
    app.all_events_delivered_and_parse().await;
}

#[sqlx::test]
async fn an_upgrade_is_prorated_and_matches_its_preview(pool: PgPool) {
    let app = SandboxApp::spawn(pool).await;
    let pro = app.plan("Pro", 4900).await;
    let business = app.plan("Business", 9900).await;
    let (customer, subscription) = app.subscribe(&pro).await;
    app.advance(10).await;

    let (start, end) = period(&subscription);
    let now = start + 10 * 86_400;
    let remaining = end - now;
    let length = end - start;
    // each line rounded half away from zero; the total is the sum of the lines
    let round = |amount: i64| {
        let n = i128::from(amount) * i128::from(remaining);
        let d = i128::from(length);
        i64::try_from(if n >= 0 {
            (n + d / 2) / d
        } else {
            (n - d / 2) / d
        })
        .unwrap()
    };
    let expected = round(9900) - round(4900);

    let item_id = subscription.items.data[0].id.to_string();
    let mut preview_item = CreatePreviewInvoiceSubscriptionDetailsItems::new();
    preview_item.id = Some(item_id.clone());
    preview_item.price = Some(business.clone());
    let mut details = CreatePreviewInvoiceSubscriptionDetails::new();
    details.items = Some(vec![preview_item]);
    details.proration_behavior =
        Some(CreatePreviewInvoiceSubscriptionDetailsProrationBehavior::AlwaysInvoice);
    details.proration_date = Some(now);
    let preview = CreatePreviewInvoice::new()
        .customer(customer.as_str())
        .subscription(subscription.id.as_str())
        .subscription_details(details)
        .send(&app.stripe)
        .await
        .unwrap();
    assert!(preview.id.is_none());
    assert_eq!(preview.amount_due, expected);
    assert_eq!(preview.lines.data.len(), 2);
    assert!(preview.lines.data[0].amount < 0);

    let before = app.event_types().await.len();
    let mut item = UpdateSubscriptionItems::new();
    item.id = Some(item_id);
    item.price = Some(business.clone());
    let updated = UpdateSubscription::new(subscription.id.as_str())
        .items(vec![item])
        .proration_behavior(UpdateSubscriptionProrationBehavior::AlwaysInvoice)
        .proration_date(now)
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(updated.items.data[0].price.id.as_str(), business);
    let invoice_id = updated
        .latest_invoice
        .unwrap()
        .id()
        .clone()
        .unwrap()
        .to_string();
    let invoice = RetrieveInvoice::new(invoice_id.as_str())
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(
        invoice.billing_reason,
        Some(stripe_shared::InvoiceBillingReason::SubscriptionUpdate)
    );
    assert_eq!(invoice.status, Some(InvoiceStatus::Paid));
    assert_eq!(invoice.amount_paid, expected);
    assert_eq!(invoice.amount_due, preview.amount_due);
    assert_eq!(invoice.number.as_deref(), Some("SANDBOX-0002"));
    assert_eq!(
        app.events_since(before).await,
        [
            "customer.subscription.updated",
            "invoice.created",
            "invoice.finalized",
            "invoice_payment.paid",
            "invoice.paid",
            "invoice.payment_succeeded",
        ]
    );
    let event: Value = sqlx::query_scalar(
        "select data from sandbox_events where event_type = 'customer.subscription.updated'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(event["data"]["previous_attributes"]["items"].is_object());
    app.all_events_delivered_and_parse().await;
}

#[sqlx::test]
async fn renewal_failure_and_card_fix_follow_the_clock(pool: PgPool) {
    let app = SandboxApp::spawn(pool).await;
    let pro = app.plan("Pro", 4900).await;
    let (customer, subscription) = app.subscribe(&pro).await;
    let (_, end) = period(&subscription);

    let before = app.event_types().await.len();
    app.advance(32).await;
    let renewed = RetrieveSubscription::new(subscription.id.as_str())
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(period(&renewed).0, end);
    assert_eq!(renewed.status, SubscriptionStatus::Active);
    assert_eq!(
        app.events_since(before).await,
        [
            "invoice.created",
            "invoice.finalized",
            "invoice_payment.paid",
            "invoice.paid",
            "invoice.payment_succeeded",
            "customer.subscription.updated",
        ]
    );
    let cycle = RetrieveInvoice::new(
        renewed
            .latest_invoice
            .unwrap()
            .id()
            .clone()
            .unwrap()
            .to_string(),
    )
    .send(&app.stripe)
    .await
    .unwrap();
    assert_eq!(
        cycle.billing_reason,
        Some(stripe_shared::InvoiceBillingReason::SubscriptionCycle)
    );

    let hook = app
        .post_form(
            &format!("/sandbox/test/customers/{customer}/card"),
            &[("card", "declining")],
        )
        .await;
    assert_eq!(hook.status(), StatusCode::NO_CONTENT);
    let before = app.event_types().await.len();
    app.advance(31).await;
    let failed = RetrieveSubscription::new(subscription.id.as_str())
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(failed.status, SubscriptionStatus::PastDue);
    assert_eq!(
        app.events_since(before).await,
        [
            "invoice.created",
            "invoice.finalized",
            "invoice.payment_failed",
            "customer.subscription.updated",
        ]
    );
    let open = RetrieveInvoice::new(
        failed
            .latest_invoice
            .unwrap()
            .id()
            .clone()
            .unwrap()
            .to_string(),
    )
    .send(&app.stripe)
    .await
    .unwrap();
    assert_eq!(open.status, Some(InvoiceStatus::Open));

    let before = app.event_types().await.len();
    app.post_form(
        &format!("/sandbox/test/customers/{customer}/card"),
        &[("card", "succeeding")],
    )
    .await;
    assert_eq!(
        app.events_since(before).await,
        [
            "invoice_payment.paid",
            "invoice.paid",
            "invoice.payment_succeeded",
            "customer.subscription.updated"
        ]
    );
    let fixed = RetrieveSubscription::new(subscription.id.as_str())
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(fixed.status, SubscriptionStatus::Active);
    app.all_events_delivered_and_parse().await;
}

#[sqlx::test]
async fn cancel_at_period_end_deletes_after_the_clock_passes_it(pool: PgPool) {
    let app = SandboxApp::spawn(pool).await;
    let pro = app.plan("Pro", 4900).await;
    let (_, subscription) = app.subscribe(&pro).await;

    let canceling = UpdateSubscription::new(subscription.id.as_str())
        .cancel_at_period_end(true)
        .send(&app.stripe)
        .await
        .unwrap();
    assert!(canceling.cancel_at_period_end);
    assert_eq!(canceling.cancel_at, Some(period(&subscription).1));
    let resumed = UpdateSubscription::new(subscription.id.as_str())
        .cancel_at_period_end(false)
        .send(&app.stripe)
        .await
        .unwrap();
    assert!(!resumed.cancel_at_period_end);
    UpdateSubscription::new(subscription.id.as_str())
        .cancel_at_period_end(true)
        .send(&app.stripe)
        .await
        .unwrap();

    let before = app.event_types().await.len();
    app.advance(40).await;
    assert_eq!(
        app.events_since(before).await,
        ["customer.subscription.deleted"]
    );
    let ended = RetrieveSubscription::new(subscription.id.as_str())
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(ended.status, SubscriptionStatus::Canceled);
    assert_eq!(ended.ended_at, Some(period(&subscription).1));
    app.all_events_delivered_and_parse().await;
}

#[sqlx::test]
async fn delete_cancels_at_once(pool: PgPool) {
    let app = SandboxApp::spawn(pool).await;
    let pro = app.plan("Pro", 4900).await;
    let (_, subscription) = app.subscribe(&pro).await;
    let canceled = CancelSubscription::new(subscription.id.as_str())
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(canceled.status, SubscriptionStatus::Canceled);
    assert!(canceled.ended_at.is_some() && canceled.canceled_at.is_some());
    assert_eq!(
        app.event_types().await.last().map(String::as_str),
        Some("customer.subscription.deleted")
    );
    app.all_events_delivered_and_parse().await;
}

#[sqlx::test]
async fn the_portal_switches_cancels_resumes_and_updates_the_card(pool: PgPool) {
    let app = SandboxApp::spawn(pool).await;
    let pro = app.plan("Pro", 4900).await;
    let business = app.plan("Business", 9900).await;
    let (customer, subscription) = app.subscribe(&pro).await;

    let session = CreateBillingPortalSession::new()
        .customer(customer.as_str())
        .return_url("http://billfold.test/billing")
        .send(&app.stripe)
        .await
        .unwrap();
    let path = session.url.strip_prefix(&app.url("")).unwrap().to_owned();
    assert!(path.starts_with("/sandbox/portal/bps_"));
    let page = app
        .http
        .get(app.url(&path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Sandbox"));
    assert!(page.contains("http://billfold.test/billing"));
    assert!(page.contains("SANDBOX-0001"));
    assert!(page.contains("Switch to Business"));

    let before = app.event_types().await.len();
    let switched = app
        .post_form(&format!("{path}/switch"), &[("price", &business)])
        .await;
    assert_eq!(switched.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        app.events_since(before).await,
        [
            "customer.subscription.updated",
            "invoice.created",
            "invoice.finalized",
            "invoice_payment.paid",
            "invoice.paid",
            "invoice.payment_succeeded",
        ]
    );
    let upgraded = RetrieveSubscription::new(subscription.id.as_str())
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(upgraded.items.data[0].price.id.as_str(), business);

    app.post_form(&format!("{path}/cancel"), &[]).await;
    let page = app
        .http
        .get(app.url(&path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Cancels on"));
    app.post_form(&format!("{path}/resume"), &[]).await;
    let page = app
        .http
        .get(app.url(&path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("Cancels on"));

    app.post_form(&format!("{path}/card"), &[("card", "declining")])
        .await;
    let page = app
        .http
        .get(app.url(&path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("payments are declined"));
    app.all_events_delivered_and_parse().await;
}

#[sqlx::test]
async fn the_clock_page_shows_time_and_advances_by_form(pool: PgPool) {
    let app = SandboxApp::spawn(pool).await;
    let page = app
        .http
        .get(app.url("/sandbox/clock"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("0 days ahead"));
    let advanced = app
        .post_form("/sandbox/clock/advance", &[("days", "3")])
        .await;
    assert_eq!(advanced.status(), StatusCode::SEE_OTHER);
    let page = app
        .http
        .get(app.url("/sandbox/clock"))
        .send()
        .await
        .unwrap();
    assert!(page.text().await.unwrap().contains("3 days ahead"));
}
