//! `POST /webhooks/stripe` and the inbox behind it: signatures, idempotency under
//! concurrent duplicate deliveries, events billfold does not handle or cannot read.

use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, WEBHOOK_SECRET, statuses_of};
use crate::top_up::start_top_up;

/// A `checkout.session.completed` event for a top-up session created through the app,
/// built from the session exactly as the sandbox's API returns it, marked paid.
async fn completed_event(app: &TestApp, checkout_url: &str, event_id: &str) -> String {
    let session_id = checkout_url.rsplit('/').next().unwrap();
    let mut session: Value = app
        .client
        .get(app.url(&format!("/sandbox/v1/checkout/sessions/{session_id}")))
        .bearer_auth(billfold::sandbox::SANDBOX_SECRET_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    session["status"] = json!("complete");
    session["payment_status"] = json!("paid");
    event(event_id, "checkout.session.completed", session)
}

fn event(id: &str, event_type: &str, object: Value) -> String {
    json!({
        "id": id,
        "object": "event",
        "api_version": "2026-09-30.endive",
        "created": time::OffsetDateTime::now_utc().unix_timestamp(),
        "data": {"object": object},
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": event_type,
    })
    .to_string()
}

fn sign(body: &str, secret: &str, age_secs: i64) -> String {
    let ts = time::OffsetDateTime::now_utc().unix_timestamp() - age_secs;
    billfold::stripe::webhooks::sign(body, &SecretString::from(secret), ts)
}

async fn deliver(app: &TestApp, body: &str, signature: Option<&str>) -> StatusCode {
    let mut req = app
        .client
        .post(app.url("/webhooks/stripe"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(sig) = signature {
        req = req.header("stripe-signature", sig);
    }
    req.send().await.unwrap().status()
}

#[sqlx::test]
async fn twenty_concurrent_deliveries_of_one_event_grant_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("ada@example.com").await;
    let checkout = start_top_up(&app, &[("credit_pack", "pack_500")]).await;
    let body = completed_event(&app, &checkout, "evt_test_concurrent").await;
    let sig = sign(&body, WEBHOOK_SECRET, 0);

    let deliveries = (0..20).map(|_| {
        let client = app.client.clone();
        let (url, body, sig) = (app.url("/webhooks/stripe"), body.clone(), sig.clone());
        tokio::spawn(async move {
            client
                .post(url)
                .header("stripe-signature", sig)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        })
    });
    let statuses = statuses_of(deliveries).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    app.settle().await;
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 500));
    assert_eq!(
        app.count(
            "select count(*) from jobs where kind = 'stripe_event' and key = 'evt_test_concurrent'"
        )
        .await,
        1,
        "one application queued for twenty deliveries"
    );
    assert_eq!(
        app.count("select count(*) from ledger_entries where kind = 'top_up'")
            .await,
        1
    );
    assert_eq!(
        app.count(
            "select count(*) from stripe_events where stripe_event_id = 'evt_test_concurrent'"
        )
        .await,
        1
    );

    // Another event about the same session (Stripe may send both completed and
    // async_payment_succeeded) grants nothing more: grants are keyed by session id.
    let again = completed_event(&app, &checkout, "evt_test_other").await;
    assert_eq!(
        deliver(&app, &again, Some(&sign(&again, WEBHOOK_SECRET, 0))).await,
        StatusCode::OK
    );
    app.settle().await;
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 500));
}

#[sqlx::test]
async fn badly_signed_deliveries_are_refused_and_change_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("ada@example.com").await;
    let checkout = start_top_up(&app, &[("credit_pack", "pack_100")]).await;
    let body = completed_event(&app, &checkout, "evt_test_bad").await;
    let good = sign(&body, WEBHOOK_SECRET, 0);

    let tampered = body.replace("\"livemode\":false", "\"livemode\":false ");
    assert_ne!(tampered, body);
    let cases: [(&str, &str, Option<String>); 5] = [
        ("tampered body", &tampered, Some(good.clone())),
        (
            "wrong secret",
            &body,
            Some(sign(&body, "whsec_someone_else", 0)),
        ),
        (
            "ten minutes old",
            &body,
            Some(sign(&body, WEBHOOK_SECRET, 600)),
        ),
        ("garbage header", &body, Some("t=abc,v1=zzz".to_owned())),
        ("no header", &body, None),
    ];
    for (what, payload, sig) in cases {
        assert_eq!(
            deliver(&app, payload, sig.as_deref()).await,
            StatusCode::BAD_REQUEST,
            "{what}"
        );
    }
    assert_eq!(
        app.count("select count(*) from stripe_events where stripe_event_id = 'evt_test_bad'")
            .await,
        0
    );
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 0));

    // The genuine delivery still works afterwards.
    assert_eq!(deliver(&app, &body, Some(&good)).await, StatusCode::OK);
    app.settle().await;
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 100));
}

#[sqlx::test]
async fn events_billfold_does_not_handle_are_acknowledged_and_ignored(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("ada@example.com").await;
    let body = event(
        "evt_test_unknown",
        "customer.created",
        serde_json::from_str(include_str!("../../src/sandbox/fixtures/customer.json")).unwrap(),
    );
    assert_eq!(
        deliver(&app, &body, Some(&sign(&body, WEBHOOK_SECRET, 0))).await,
        StatusCode::OK
    );
    app.settle().await;
    assert_eq!(
        app.count(
            "select count(*) from stripe_events where stripe_event_id = 'evt_test_unknown' and processed_at is not null"
        )
        .await,
        1
    );
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 0));
}

#[sqlx::test]
async fn genuine_events_billfold_cannot_read_are_kept_and_retried_visibly(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("ada@example.com").await;
    // A handled type whose object this SDK version cannot read: stored (2xx, so Stripe
    // does not pile up retries), and its application fails visibly and is retried.
    let body = event(
        "evt_test_unreadable",
        "checkout.session.completed",
        json!({"id": "cs_test_x", "object": "checkout.session"}),
    );
    assert_eq!(
        deliver(&app, &body, Some(&sign(&body, WEBHOOK_SECRET, 0))).await,
        StatusCode::OK
    );
    crate::helpers::eventually("a failed attempt recorded", || async {
        app.count(
            "select count(*) from jobs where key = 'evt_test_unreadable' and attempts >= 2
                and status = 'queued' and last_error like '%cannot read a checkout.session.completed event%'",
        )
        .await
            == 1
    })
    .await;
    assert_eq!(
        app.count("select count(*) from stripe_events where processed_at is null")
            .await,
        1,
        "kept unapplied for a replay"
    );
    // An unhandled type in a shape we cannot read: acknowledged and done.
    let body = event(
        "evt_test_other_shape",
        "payment_intent.succeeded",
        json!({"id": "pi_x", "object": "payment_intent"}),
    );
    assert_eq!(
        deliver(&app, &body, Some(&sign(&body, WEBHOOK_SECRET, 0))).await,
        StatusCode::OK
    );
    crate::helpers::eventually("the unhandled event applied", || async {
        app.count("select count(*) from stripe_events where stripe_event_id = 'evt_test_other_shape' and processed_at is not null")
            .await
            == 1
    })
    .await;
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 0));
}

#[sqlx::test]
async fn a_session_made_outside_billfold_grants_what_was_paid_not_what_its_metadata_says(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("ada@example.com").await;
    // Someone with the (sandbox) API key creates a 1 EUR session claiming a million credits.
    let form = [
        ("mode", "payment".to_owned()),
        ("line_items[0][price_data][currency]", "eur".to_owned()),
        ("line_items[0][price_data][unit_amount]", "100".to_owned()),
        (
            "line_items[0][price_data][product_data][name]",
            "cheap".to_owned(),
        ),
        ("line_items[0][quantity]", "1".to_owned()),
        ("success_url", "http://example.com".to_owned()),
        ("metadata[purpose]", "top_up".to_owned()),
        ("metadata[credits]", "1000000".to_owned()),
        ("metadata[workspace_id]", ws.to_string()),
    ];
    let session: Value = app
        .client
        .post(app.url("/sandbox/v1/checkout/sessions"))
        .bearer_auth(billfold::sandbox::SANDBOX_SECRET_KEY)
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let checkout_url = session["url"].as_str().unwrap().to_owned();
    let body = completed_event(&app, &checkout_url, "evt_test_forged").await;
    assert_eq!(
        deliver(&app, &body, Some(&sign(&body, WEBHOOK_SECRET, 0))).await,
        StatusCode::OK
    );
    app.settle().await;
    assert_eq!(
        app.assert_ledger_consistent(ws).await,
        (100, 10),
        "1 EUR buys 10 credits"
    );
}

#[sqlx::test]
async fn a_delayed_payment_that_fails_closes_its_top_up_without_credits(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("ada@example.com").await;
    let checkout = start_top_up(&app, &[("credit_pack", "pack_500")]).await;
    let session_id = checkout.rsplit('/').next().unwrap().to_owned();
    // A bank debit: the session completed unpaid, then the payment failed.
    let body = completed_event(&app, &checkout, "evt_test_async_failed").await;
    let mut event: Value = serde_json::from_str(&body).unwrap();
    event["type"] = json!("checkout.session.async_payment_failed");
    event["data"]["object"]["payment_status"] = json!("unpaid");
    let body = event.to_string();
    let signature = sign(&body, WEBHOOK_SECRET, 0);
    assert_eq!(deliver(&app, &body, Some(&signature)).await, StatusCode::OK);
    app.settle().await;
    let status: String = sqlx::query_scalar(
        "select status::text from top_ups where stripe_checkout_session_id = $1",
    )
    .bind(&session_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(status, "expired");
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 0));
}
