//! Buying credits end to end through the Stripe sandbox: Checkout session, hosted
//! page, signed webhook, grant, success page.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{TestApp, location, text};

/// Starts a top-up through the form and returns the sandbox checkout URL.
pub async fn start_top_up(app: &TestApp, fields: &[(&str, &str)]) -> String {
    let form_key = uuid::Uuid::new_v4().to_string();
    let mut form = fields.to_vec();
    form.push(("form_key", &form_key));
    let res = app.post_form("/billing/top-up", &form).await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "{}",
        res.text().await.unwrap()
    );
    location(&res)
}

/// Pays on the sandbox's hosted page; returns where it sends the customer back.
pub async fn pay(app: &TestApp, checkout_url: &str) -> String {
    let res = app
        .client
        .post(format!("{checkout_url}/pay"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    location(&res)
}

pub async fn wait_for_balance(app: &TestApp, ws: billfold::ids::WorkspaceId, total: i64) {
    for _ in 0..400 {
        if app.balance(ws).await.total() == total {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("balance never reached {total}");
}

#[sqlx::test]
async fn sign_up_consume_run_out_buy_a_pack_and_consume_again(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("ada@example.com").await;
    let key = app.create_api_key("Backend").await;

    let (status, _) = app
        .consume(&key, json!({"feature": "manager.process", "quantity": 100}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.consume(&key, json!({"feature": "graph.query"})).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    let top_up_url = body["error"]["top_up_url"].as_str().unwrap().to_owned();

    let (status, html) = app.get_html(&top_up_url).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text(&html, ".packs").unwrap().contains("€10.00"));

    let checkout = start_top_up(&app, &[("credit_pack", "pack_100")]).await;
    assert!(
        checkout.starts_with(&format!("{}/sandbox/checkout/cs_", app.base)),
        "{checkout}"
    );
    let page = app.get(&checkout).await.text().await.unwrap();
    assert!(
        page.contains("€10.00") && page.contains("100 credits"),
        "checkout shows what is bought"
    );

    let back = pay(&app, &checkout).await;
    assert!(
        back.starts_with(&format!(
            "{}/billing/top-up/success?session_id=cs_",
            app.base
        )),
        "{back}"
    );
    wait_for_balance(&app, ws, 100).await;

    let (status, html) = app.get_html(&back).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text(&html, "#top-up-status h1").unwrap(), "Credits added");

    let (status, body) = app.consume(&key, json!({"feature": "graph.query"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["balance"],
        json!({"plan": 0, "purchased": 97, "total": 97, "debt": 0})
    );
    assert_eq!(app.assert_ledger_consistent(ws).await, (0, 97));
    let grants = app
        .count("select count(*) from ledger_entries where kind = 'top_up'")
        .await;
    assert_eq!(grants, 1);
    let status: String = sqlx::query_scalar("select status::text from top_ups")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(status, "paid");
}

#[sqlx::test]
async fn the_success_page_polls_until_the_credits_arrive(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.sign_up("ada@example.com").await;
    let checkout = start_top_up(&app, &[("amount_eur", "25")]).await;
    let session_id = checkout.rsplit('/').next().unwrap().to_owned();
    // Before payment: pending, with an htmx poll of the status fragment.
    let (status, html) = app
        .get_html(&format!("/billing/top-up/success?session_id={session_id}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        text(&html, "#top-up-status h1").unwrap(),
        "Payment received"
    );
    let poll = crate::helpers::attr(&html, "#top-up-status", "hx-get").unwrap();
    assert!(poll.starts_with("/billing/top-up/status?session_id="));
    assert!(
        text(&html, "#top-up-status")
            .unwrap()
            .contains("250 credits")
    );

    pay(&app, &checkout).await;
    let ws = app.workspace_of("ada@example.com").await;
    wait_for_balance(&app, ws, 350).await;
    let fragment = app.get(&poll).await.text().await.unwrap();
    assert!(
        fragment.contains("Credits added") && !fragment.contains("hx-trigger"),
        "{fragment}"
    );

    // Another workspace cannot see this top-up.
    let other = app.visitor();
    other.sign_up("eve@example.com").await;
    assert_eq!(other.get(&poll).await.status(), StatusCode::NOT_FOUND);
}

#[sqlx::test]
async fn bad_top_up_amounts_are_refused_and_nothing_is_created(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.sign_up("ada@example.com").await;
    for (fields, message) in [
        (vec![("amount_eur", "4")], "from 5 to 1000"),
        (vec![("amount_eur", "1001")], "from 5 to 1000"),
        (vec![("amount_eur", "12.50")], "whole number"),
        (vec![("amount_eur", "ten")], "whole number"),
        (vec![("amount_eur", "")], "Enter an amount"),
        (
            vec![("credit_pack", "pack_999")],
            "choose one of the credit packs",
        ),
    ] {
        let mut form = fields.clone();
        let key = uuid::Uuid::new_v4().to_string();
        form.push(("form_key", &key));
        let res = app.post_form("/billing/top-up", &form).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{fields:?}");
        let html = scraper::Html::parse_document(&res.text().await.unwrap());
        let shown = text(&html, "#top-up-error").unwrap();
        assert!(shown.contains(message), "{fields:?}: {shown}");
    }
    assert_eq!(app.count("select count(*) from top_ups").await, 0);
    let customer: Option<String> = sqlx::query_scalar("select stripe_customer_id from workspaces")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(customer, None, "no Stripe call for a bad amount");
}

#[sqlx::test]
async fn a_double_submitted_form_opens_one_checkout_session(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.sign_up("ada@example.com").await;
    let form_key = uuid::Uuid::new_v4().to_string();
    let mut urls = Vec::new();
    for _ in 0..2 {
        let res = app
            .post_form(
                "/billing/top-up",
                &[("credit_pack", "pack_500"), ("form_key", &form_key)],
            )
            .await;
        urls.push(location(&res));
    }
    assert_eq!(urls[0], urls[1]);
    assert_eq!(app.count("select count(*) from top_ups").await, 1);
}

#[sqlx::test]
async fn canceling_checkout_returns_to_the_top_up_page_and_grants_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("ada@example.com").await;
    let checkout = start_top_up(&app, &[("credit_pack", "pack_100")]).await;
    let page = scraper::Html::parse_document(&app.get(&checkout).await.text().await.unwrap());
    let cancel = crate::helpers::select(&page, "a")
        .into_iter()
        .find(|a| a.text().collect::<String>().contains("Cancel"))
        .and_then(|a| a.value().attr("href"))
        .unwrap()
        .to_owned();
    assert_eq!(cancel, format!("{}/billing/top-up?canceled=1", app.base));
    let (_, html) = app.get_html(&cancel).await;
    assert!(
        text(&html, ".flash.warn")
            .unwrap()
            .contains("Nothing was charged")
    );
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 0));
}

#[sqlx::test]
async fn another_pack_from_the_same_page_opens_its_own_session(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.sign_up("ada@example.com").await;
    let form_key = uuid::Uuid::new_v4().to_string();
    let a = app
        .post_form(
            "/billing/top-up",
            &[("credit_pack", "pack_100"), ("form_key", &form_key)],
        )
        .await;
    let b = app
        .post_form(
            "/billing/top-up",
            &[("credit_pack", "pack_500"), ("form_key", &form_key)],
        )
        .await;
    assert_eq!(
        (a.status(), b.status()),
        (StatusCode::SEE_OTHER, StatusCode::SEE_OTHER)
    );
    assert_ne!(location(&a), location(&b));
    assert_eq!(app.count("select count(*) from top_ups").await, 2);
    let page = app.get("/billing/top-up").await;
    assert_eq!(page.headers()["cache-control"], "no-store");
}
