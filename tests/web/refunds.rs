//! Refunds and disputes reverse credits (issue 6 §1): through the sandbox's refund API
//! and dispute controls, signed events, the inbox and the ledger; duplicated and
//! reordered events; the `billfold sandbox refund|dispute` commands.

use billfold::ids::WorkspaceId;
use billfold::stripe::StripeClient;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, WEBHOOK_SECRET, text};
use crate::top_up::{pay, start_top_up, wait_for_balance};

fn stripe(app: &TestApp) -> StripeClient {
    let key = SecretString::from(billfold::sandbox::SANDBOX_SECRET_KEY);
    StripeClient::new(&key, Some(&format!("{}/sandbox/", app.base))).unwrap()
}

/// Buys `fields` (a pack or an amount) and waits for the credits; returns the
/// checkout session id.
pub(crate) async fn buy(
    app: &TestApp,
    ws: WorkspaceId,
    fields: &[(&str, &str)],
    total_after: i64,
) -> String {
    let checkout = start_top_up(app, fields).await;
    pay(app, &checkout).await;
    wait_for_balance(app, ws, total_after).await;
    app.settle().await;
    checkout.rsplit('/').next().unwrap().to_owned()
}

/// Refunds through the same path an admin's "refund" button takes.
pub(crate) async fn refund(app: &TestApp, session: &str, amount: Option<i64>) {
    billfold::top_ups::refund(
        &app.app_db,
        &stripe(app),
        session,
        amount,
        &uuid::Uuid::new_v4().to_string(),
    )
    .await
    .unwrap();
    app.settle().await;
}

async fn customer(app: &TestApp) -> (WorkspaceId, String) {
    let ws = app.sign_up("ada@example.com").await;
    let key = app.create_api_key("Backend").await;
    app.lift_rate_limits().await;
    (ws, key)
}

async fn spend(app: &TestApp, key: &str, credits: i64) -> (StatusCode, Value) {
    app.consume(
        key,
        json!({"feature": "manager.process", "quantity": credits}),
    )
    .await
}

#[sqlx::test]
async fn refunding_a_spent_top_up_leaves_debt_that_blocks_use_until_a_top_up_settles_it(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    let (ws, key) = customer(&app).await;
    // 500 EUR buys 5,000 credits; 4,000 of them are spent (after the 100 plan credits).
    let session = buy(&app, ws, &[("amount_eur", "500")], 5_100).await;
    assert_eq!(spend(&app, &key, 4_100).await.0, StatusCode::OK);
    assert_eq!(app.assert_ledger_consistent(ws).await, (0, 1_000));

    refund(&app, &session, None).await;
    let balance = app.balance(ws).await;
    assert_eq!(
        (balance.plan, balance.purchased, balance.debt),
        (0, 0, 4_000)
    );
    app.assert_ledger_consistent(ws).await;

    // Nothing more can be used, with its own code, whatever the plan credits.
    let (status, body) = spend(&app, &key, 1).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(body["error"]["code"], "credits_in_debt");
    assert_eq!(body["error"]["debt"], 4_000);
    let (_, html) = app.get_html("/credits").await;
    let statement = text(&html, "#statement").unwrap();
    assert!(
        statement.contains("5,000 credits taken back, 4,000 of them already spent and now owed"),
        "{statement}"
    );

    // The next top-up pays the debt first; the rest is usable.
    buy(&app, ws, &[("amount_eur", "500")], 1_000).await;
    let balance = app.balance(ws).await;
    assert_eq!((balance.purchased, balance.debt), (1_000, 0));
    assert_eq!(spend(&app, &key, 10).await.0, StatusCode::OK);
    app.assert_ledger_consistent(ws).await;
}

#[sqlx::test]
async fn partial_refunds_take_back_their_share_once_however_often_stripe_reports_them(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    let (ws, _) = customer(&app).await;
    // 500 credits for 40 EUR; 10 EUR refunded twice: 125 credits each time.
    let session = buy(&app, ws, &[("credit_pack", "pack_500")], 600).await;
    refund(&app, &session, Some(1_000)).await;
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 375));
    refund(&app, &session, Some(1_000)).await;
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 250));

    // Stripe delivers each refund event again, concurrently, and under new ids too:
    // the refunded total is cumulative, so nothing moves.
    let refunds: Vec<Value> = sqlx::query_scalar(
        "select payload from stripe_events where event_type = 'charge.refunded'",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(refunds.len(), 2);
    let deliveries = (0..20).map(|i| {
        let mut event = refunds[i % 2].clone();
        if i >= 10 {
            event["id"] = json!(format!("evt_again_{i}"));
        }
        app.deliver_signed(event.to_string())
    });
    for status in futures_util::future::join_all(deliveries).await {
        assert_eq!(status, StatusCode::OK);
    }
    app.settle().await;
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 250));
    assert_eq!(
        app.count("select count(*) from ledger_entries where kind = 'refund'")
            .await,
        2
    );
    // More than what is left is refused before Stripe is asked.
    let err = billfold::top_ups::refund(&app.app_db, &stripe(&app), &session, Some(2_001), "k")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("from 1 to 2000"), "{err}");
}

pub(crate) async fn control(app: &TestApp, path: &str, body: Value) -> Value {
    let res = app
        .client
        .post(app.url(&format!("/sandbox/{path}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{path}: {}", res.status());
    res.json().await.unwrap()
}

#[sqlx::test]
async fn a_dispute_takes_the_credits_back_and_winning_it_restores_them(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (ws, key) = customer(&app).await;
    let session = buy(&app, ws, &[("credit_pack", "pack_1000")], 1_100).await;
    assert_eq!(spend(&app, &key, 400).await.0, StatusCode::OK);
    assert_eq!(app.assert_ledger_consistent(ws).await, (0, 700));

    let dispute = control(&app, "disputes", json!({"payment": session})).await;
    app.settle().await;
    let balance = app.balance(ws).await;
    assert_eq!((balance.purchased, balance.debt), (0, 300));
    assert_eq!(spend(&app, &key, 1).await.0, StatusCode::PAYMENT_REQUIRED);

    let id = dispute["id"].as_str().unwrap();
    control(
        &app,
        &format!("disputes/{id}/close"),
        json!({"outcome": "won"}),
    )
    .await;
    app.settle().await;
    let balance = app.balance(ws).await;
    assert_eq!(
        (balance.purchased, balance.debt),
        (700, 0),
        "restored, debt first"
    );

    // A late copy of "created" after "closed" does not take them again.
    let created: Value = sqlx::query_scalar(
        "select payload from stripe_events where event_type = 'charge.dispute.created'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    let mut late = created.clone();
    late["id"] = json!("evt_late_dispute_created");
    assert_eq!(app.deliver_signed(late.to_string()).await, StatusCode::OK);
    app.settle().await;
    assert_eq!(app.balance(ws).await.purchased, 700);
    assert_eq!(spend(&app, &key, 10).await.0, StatusCode::OK);
    app.assert_ledger_consistent(ws).await;
}

#[sqlx::test]
async fn a_lost_dispute_keeps_the_credits_taken(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (ws, _) = customer(&app).await;
    let session = buy(&app, ws, &[("credit_pack", "pack_100")], 200).await;
    let dispute = control(&app, "disputes", json!({"payment": session})).await;
    let id = dispute["id"].as_str().unwrap();
    control(
        &app,
        &format!("disputes/{id}/close"),
        json!({"outcome": "lost"}),
    )
    .await;
    app.settle().await;
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 0));
    assert_eq!(
        app.count("select count(*) from ledger_entries where kind = 'dispute'")
            .await,
        1
    );
}

#[sqlx::test]
async fn a_refund_reported_before_its_top_up_is_applied_with_the_top_up(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("ada@example.com").await;
    let mut tx = app.db.begin().await.unwrap();
    billfold::top_ups::db::insert(
        &mut tx,
        &billfold::top_ups::db::NewTopUp {
            workspace_id: ws,
            session_id: "cs_test_reordered",
            credit_pack_code: Some("pack_500"),
            credits: 500,
            price: &billfold::money::Money::new(4_000, "eur"),
            created_by: None,
        },
    )
    .await
    .unwrap();
    // The refund of half the payment arrives first...
    billfold::top_ups::reversals::apply_refund(
        &mut tx,
        &billfold::stripe::payments::ChargeInfo {
            id: "ch_test_reordered".into(),
            payment_intent_id: Some("pi_test_reordered".into()),
            amount: 4_000,
            amount_refunded: 2_000,
            currency: "eur".into(),
        },
        "evt_refund_first",
    )
    .await
    .unwrap();
    // ...then the completed session.
    let session = billfold::stripe::CheckoutSessionInfo {
        id: "cs_test_reordered".into(),
        url: None,
        mode: "payment".into(),
        status: Some("complete".into()),
        paid: true,
        amount_total: Some(4_000),
        currency: Some("eur".into()),
        client_reference_id: Some(ws.to_string()),
        metadata: Default::default(),
        subscription_id: None,
        payment_intent_id: Some("pi_test_reordered".into()),
        amount_tax: 0,
    };
    billfold::top_ups::apply_completed_session(&mut tx, &session, "evt_completed_later")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 250));
}

#[sqlx::test]
async fn a_refund_applied_while_its_top_up_is_being_granted_is_not_lost(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("ada@example.com").await;
    // Ten top-ups, each granted and fully refunded by two concurrent transactions (two
    // job workers applying `checkout.session.completed` and `charge.refunded` at once).
    for i in 0..10 {
        let (session_id, pi) = (format!("cs_test_race_{i}"), format!("pi_test_race_{i}"));
        let mut setup = app.db.begin().await.unwrap();
        billfold::top_ups::db::insert(
            &mut setup,
            &billfold::top_ups::db::NewTopUp {
                workspace_id: ws,
                session_id: &session_id,
                credit_pack_code: Some("pack_500"),
                credits: 500,
                price: &billfold::money::Money::new(4_000, "eur"),
                created_by: None,
            },
        )
        .await
        .unwrap();
        setup.commit().await.unwrap();

        let session = billfold::stripe::CheckoutSessionInfo {
            id: session_id.clone(),
            url: None,
            mode: "payment".into(),
            status: Some("complete".into()),
            paid: true,
            amount_total: Some(4_000),
            currency: Some("eur".into()),
            client_reference_id: Some(ws.to_string()),
            metadata: Default::default(),
            subscription_id: None,
            payment_intent_id: Some(pi.clone()),
            amount_tax: 0,
        };
        let mut grant = app.db.begin().await.unwrap();
        billfold::top_ups::apply_completed_session(&mut grant, &session, &format!("evt_c{i}"))
            .await
            .unwrap();
        // The refund is applied while the grant is not committed yet...
        let db = app.db.clone();
        let refund = tokio::spawn(async move {
            let mut tx = db.begin().await.unwrap();
            billfold::top_ups::reversals::apply_refund(
                &mut tx,
                &billfold::stripe::payments::ChargeInfo {
                    id: format!("ch_test_race_{i}"),
                    payment_intent_id: Some(pi),
                    amount: 4_000,
                    amount_refunded: 4_000,
                    currency: "eur".into(),
                },
                &format!("evt_r{i}"),
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // ...and commits after it.
        grant.commit().await.unwrap();
        refund.await.unwrap();
    }
    // Every refunded top-up was taken back: only the free allowance is left.
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 0));
    assert_eq!(
        app.count("select count(*) from ledger_entries where kind = 'refund'")
            .await,
        10
    );
}

/// The URL of the test database, for the `billfold` binary.
async fn database_url(pool: &PgPool) -> String {
    let name: String = sqlx::query_scalar("select current_database()")
        .fetch_one(pool)
        .await
        .unwrap();
    let base = std::env::var("DATABASE_URL").unwrap();
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{name}")
}

fn billfold(app: &TestApp, url: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_billfold"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("STRIPE_SANDBOX", "true")
        .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("BASE_URL", &app.base)
        .env("RUST_LOG", "warn")
        .env_remove("STRIPE_SECRET_KEY")
        .output()
        .unwrap()
}

#[sqlx::test]
async fn the_sandbox_commands_refund_and_dispute_a_top_up(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (ws, _) = customer(&app).await;
    let session = buy(&app, ws, &[("credit_pack", "pack_500")], 600).await;
    let url = database_url(&pool).await;

    let out = billfold(
        &app,
        &url,
        &["sandbox", "refund", &session, "--amount", "1000"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("refunded €10.00"));
    crate::helpers::eventually("the refund applied", || async {
        app.balance(ws).await.purchased == 375
    })
    .await;

    let out = billfold(&app, &url, &["sandbox", "dispute", &session]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    crate::helpers::eventually("the dispute applied", || async {
        app.balance(ws).await.purchased == 0
    })
    .await;
    let dispute: String = sqlx::query_scalar("select stripe_dispute_id from disputes")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let out = billfold(
        &app,
        &url,
        &["sandbox", "dispute", &dispute, "--close", "won"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    crate::helpers::eventually("the dispute's end applied", || async {
        app.balance(ws).await.purchased == 375
    })
    .await;

    let out = billfold(&app, &url, &["sandbox", "refund", "cs_nothing"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no paid top-up"));
    app.assert_ledger_consistent(ws).await;
}

#[sqlx::test]
async fn a_refund_landing_while_fifty_calls_consume_leaves_nothing_negative_or_doubled(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    let (ws, key) = customer(&app).await;
    let session = buy(&app, ws, &[("credit_pack", "pack_500")], 600).await;
    // 50 calls of 20 credits race the refund of the whole 500-credit top-up.
    let calls = (0..50).map(|_| {
        let app = app.visitor();
        let key = key.clone();
        tokio::spawn(async move { spend(&app, &key, 20).await.0 })
    });
    let refunding = refund(&app, &session, None);
    let (statuses, ()) = tokio::join!(crate::helpers::statuses_of(calls), refunding);
    app.settle().await;
    let used = 20 * crate::helpers::how_many(&statuses, StatusCode::OK) as i64;
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::PAYMENT_REQUIRED),
        "{statuses:?}"
    );
    // Every credit is accounted for: 100 plan + 500 bought − 500 taken back − used.
    let (plan, purchased) = app.assert_ledger_consistent(ws).await;
    let balance = app.balance(ws).await;
    assert_eq!(purchased, 0, "the refunded top-up's credits are gone");
    assert_eq!(plan - balance.debt, 100 - used);
    assert_eq!(
        app.count("select count(*) from ledger_entries where kind = 'refund'")
            .await,
        1
    );
}

#[sqlx::test]
async fn dispute_events_delivered_twenty_times_at_once_in_any_order_settle_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (ws, _) = customer(&app).await;
    let session = buy(&app, ws, &[("credit_pack", "pack_1000")], 1_100).await;
    let dispute = control(&app, "disputes", json!({"payment": session})).await;
    let id = dispute["id"].as_str().unwrap();
    control(
        &app,
        &format!("disputes/{id}/close"),
        json!({"outcome": "won"}),
    )
    .await;
    app.settle().await;
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 1_000));

    let events: Vec<Value> = sqlx::query_scalar(
        "select payload from stripe_events where event_type like 'charge.dispute.%'",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(events.len() >= 2);
    let deliveries = (0..20).map(|i| {
        let mut event = events[i % events.len()].clone();
        if i % 2 == 1 {
            event["id"] = json!(format!("evt_dispute_again_{i}"));
        }
        app.deliver_signed(event.to_string())
    });
    for status in futures_util::future::join_all(deliveries).await {
        assert_eq!(status, StatusCode::OK);
    }
    app.settle().await;
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 1_000));
    assert_eq!(
        app.count("select count(*) from ledger_entries where kind in ('dispute', 'dispute_won')")
            .await,
        2,
        "taken once, restored once"
    );
}
