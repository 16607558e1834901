//! `/billing`: plans, subscribing through Checkout, the customer portal, invoices,
//! and who may change billing.

use reqwest::StatusCode;
use sqlx::PgPool;

use crate::helpers::{TestApp, location, select, text};
use crate::top_up::{pay, wait_for_balance};

async fn on_sale(app: &TestApp) {
    let key = secrecy::SecretString::from(billfold::sandbox::SANDBOX_SECRET_KEY);
    let stripe =
        billfold::stripe::StripeClient::new(&key, Some(&format!("{}/sandbox/", app.base))).unwrap();
    billfold::catalog::sync::sync(&app.db, &stripe)
        .await
        .unwrap();
}

#[sqlx::test]
async fn the_billing_page_compares_every_plan(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.sign_up("ada@example.com").await;
    let (status, html) = app.get_html("/billing").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text(&html, "#current-plan-name").unwrap(), "Free");
    let plans = select(&html, "#plans .plan");
    assert_eq!(plans.len(), 6);
    let pro = text(&html, "[data-plan=pro]").unwrap();
    assert!(
        pro.contains("€49.00")
            && pro.contains("2,000 credits / month")
            && pro.contains("100 API calls / min"),
        "{pro}"
    );
    assert!(
        text(&html, "[data-plan=enterprise]")
            .unwrap()
            .contains("Unlimited credits")
    );
    assert!(
        select(&html, "#open-portal").is_empty(),
        "no portal before there is a customer"
    );
}

#[sqlx::test]
async fn subscribing_through_checkout_puts_the_workspace_on_the_plan_with_its_allowance(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    on_sale(&app).await;
    let ws = app.sign_up("ada@example.com").await;
    let key = uuid::Uuid::new_v4().to_string();
    let res = app
        .post_form(
            "/billing/subscribe",
            &[("plan_code", "pro"), ("form_key", &key)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let checkout = location(&res);
    assert!(checkout.contains("/sandbox/checkout/cs_"), "{checkout}");
    let page = app.get(&checkout).await.text().await.unwrap();
    assert!(page.contains("€49.00"), "checkout shows the plan price");
    let back = pay(&app, &checkout).await;
    assert_eq!(back, format!("{}/billing/subscribed?plan=pro", app.base));

    // Plan credits reset to the Pro allowance (no rollover of the 100 free credits).
    wait_for_balance(&app, ws, 2_000).await;
    // The return page says the plan is active once the webhook landed; until then it
    // says the payment was received and polls (shown here for a plan not active).
    let (status, html) = app.get_html("/billing/subscribed?plan=pro").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        text(&html, "#subscribed-status h1").unwrap(),
        "You are on Pro"
    );
    let (_, html) = app.get_html("/billing/subscribed?plan=business").await;
    assert_eq!(
        text(&html, "#subscribed-status h1").unwrap(),
        "Payment received"
    );
    assert_eq!(
        crate::helpers::attr(&html, "#subscribed-status", "hx-get").unwrap(),
        "/billing/subscribed/status?plan=business"
    );
    let res = app.get("/billing/subscribed/status?plan=pro").await;
    assert!(res.text().await.unwrap().contains("You are on Pro"));
    for plan in ["free", "nope"] {
        let res = app.get(&format!("/billing/subscribed?plan={plan}")).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{plan}");
    }
    assert_eq!(app.plan_of(ws).await, "pro");
    assert_eq!(app.assert_ledger_consistent(ws).await, (2_000, 0));
    let grants = app
        .count("select count(*) from ledger_entries where kind = 'plan_allowance'")
        .await;
    assert_eq!(
        grants, 2,
        "sign-up allowance + one grant for the first invoice"
    );

    let (_, html) = app.get_html("/billing").await;
    assert_eq!(text(&html, "#current-plan-name").unwrap(), "Pro");
    assert_eq!(text(&html, "#subscription-status").unwrap(), "Active");
    let invoices = text(&html, "#invoices").unwrap();
    assert!(
        invoices.contains("€49.00") && invoices.contains("paid"),
        "{invoices}"
    );
    assert!(
        select(&html, "form[action='/billing/subscribe']").is_empty(),
        "no second subscription"
    );

    // The customer portal opens for this workspace's customer.
    let res = app.post_form("/billing/portal", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(
        location(&res).contains("/sandbox/portal/"),
        "{}",
        location(&res)
    );
}

#[sqlx::test]
async fn members_see_billing_read_only(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    on_sale(&app).await;
    let owner_ws = app.sign_up("owner@example.com").await;
    let member = app.visitor();
    member.sign_up("member@example.com").await;
    // Make the member's oldest membership a `member` role in the owner's workspace.
    sqlx::query(
        "insert into memberships (workspace_id, user_id, role, created_at)
         select $1, user_id, 'member', now() - interval '1 day' from users where email = 'member@example.com'",
    )
    .bind(owner_ws)
    .execute(&app.db)
    .await
    .unwrap();
    let (status, html) = member.get_html("/billing").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text(&html, ".flash.warn")
            .unwrap()
            .contains("Only owners and admins")
    );
    let key = uuid::Uuid::new_v4().to_string();
    let res = member
        .post_form(
            "/billing/subscribe",
            &[("plan_code", "pro"), ("form_key", &key)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        member.post_form("/billing/portal", &[]).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.count("select count(*) from workspaces where stripe_customer_id is not null")
            .await,
        0
    );

    // A failed payment: the banner shows to both, the portal button only to the owner
    // (a member's click would be refused).
    sqlx::query(
        "insert into subscriptions (stripe_subscription_id, workspace_id, stripe_customer_id, status,
                stripe_item_id, stripe_price_id, plan_code, current_period_start, current_period_end)
         values ('sub_past_due', $1, 'cus_past_due', 'past_due', 'si_past_due', 'price_pro', 'pro',
                 now() - interval '1 day', now() + interval '29 days')",
    )
    .bind(owner_ws)
    .execute(&app.db)
    .await
    .unwrap();
    let (_, html) = member.get_html("/dashboard").await;
    let banner = text(&html, "#past-due-banner").expect("the member sees the banner");
    assert!(banner.contains("ask an owner or admin"), "{banner}");
    assert!(select(&html, "#past-due-banner form").is_empty());
    let (_, html) = app.get_html("/dashboard").await;
    assert_eq!(
        select(&html, "#past-due-banner form[action='/billing/portal']").len(),
        1
    );
}

/// Subscribes the signed-in workspace to `plan` through Checkout and waits for it.
pub(crate) async fn subscribe(
    app: &TestApp,
    ws: billfold::ids::WorkspaceId,
    plan: &str,
    allowance: i64,
) {
    let key = uuid::Uuid::new_v4().to_string();
    let res = app
        .post_form(
            "/billing/subscribe",
            &[("plan_code", plan), ("form_key", &key)],
        )
        .await;
    pay(app, &location(&res)).await;
    wait_for_plan_credits(app, ws, allowance).await;
}

async fn wait_for_plan_credits(app: &TestApp, ws: billfold::ids::WorkspaceId, plan_credits: i64) {
    for _ in 0..400 {
        if app.balance(ws).await.plan == plan_credits {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("plan credits never reached {plan_credits}");
}

pub(crate) async fn advance_days(app: &TestApp, days: i64) {
    let res = app
        .client
        .post(app.url("/sandbox/clock/advance"))
        .json(&serde_json::json!({"days": days}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[sqlx::test]
async fn a_renewal_resets_plan_credits_and_keeps_purchased_credits(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    on_sale(&app).await;
    let ws = app.sign_up("ada@example.com").await;
    subscribe(&app, ws, "pro", 2_000).await;
    crate::api::grant_purchased(&app, ws, 300).await;
    let key = app.create_api_key("Backend").await;
    let (status, _) = app
        .consume(
            &key,
            serde_json::json!({"feature": "manager.process", "quantity": 1500}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.assert_ledger_consistent(ws).await, (500, 300));

    advance_days(&app, 31).await;
    wait_for_plan_credits(&app, ws, 2_000).await;
    // No rollover of the 500 left; purchased credits untouched.
    assert_eq!(app.assert_ledger_consistent(ws).await, (2_000, 300));
    assert_eq!(
        app.count("select count(*) from invoices where status = 'paid'")
            .await,
        2
    );
    let (_, html) = app.get_html("/billing").await;
    assert_eq!(select(&html, "#invoices tbody tr").len(), 2);
}

#[sqlx::test]
async fn canceling_in_the_portal_returns_to_free_at_period_end_with_purchased_credits_intact(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    on_sale(&app).await;
    let ws = app.sign_up("ada@example.com").await;
    subscribe(&app, ws, "pro", 2_000).await;
    crate::api::grant_purchased(&app, ws, 250).await;

    let res = app.post_form("/billing/portal", &[]).await;
    let portal = location(&res);
    let res = app
        .client
        .post(format!("{portal}/cancel"))
        .send()
        .await
        .unwrap();
    assert!(
        res.status().is_redirection() || res.status().is_success(),
        "{}",
        res.status()
    );
    // The change arrives by webhook: the page then says when the plan ends.
    let mut shown = String::new();
    for _ in 0..200 {
        let (_, html) = app.get_html("/billing").await;
        shown = text(&html, "#current-plan").unwrap();
        if shown.contains("Cancels on") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(shown.contains("Cancels on"), "{shown}");
    assert_eq!(
        app.plan_of(ws).await,
        "pro",
        "the plan stays until the period ends"
    );

    advance_days(&app, 31).await;
    wait_for_plan_credits(&app, ws, 100).await;
    assert_eq!(app.plan_of(ws).await, "free");
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 250));
    let (_, html) = app.get_html("/billing").await;
    assert_eq!(text(&html, "#current-plan-name").unwrap(), "Free");
}

#[sqlx::test]
async fn duplicated_subscription_events_grant_one_allowance_per_invoice(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    on_sale(&app).await;
    let ws = app.sign_up("ada@example.com").await;
    subscribe(&app, ws, "pro", 2_000).await;
    // Replay every event the sandbox sent, 20 times each, concurrently, under new ids
    // (as if Stripe had sent them again): nothing is granted twice.
    app.settle().await;
    let events = app.received_events().await;
    let mut deliveries = Vec::new();
    for (n, event) in events.iter().enumerate() {
        for copy in 0..20 {
            let mut event = event.clone();
            event["id"] = serde_json::json!(format!("evt_replay_{n}_{copy}"));
            deliveries.push(tokio::spawn(app.deliver_signed(event.to_string())));
        }
    }
    for d in futures_util::future::join_all(deliveries).await {
        assert_eq!(d.unwrap(), StatusCode::OK);
    }
    app.settle().await;
    assert_eq!(
        app.count("select count(*) from stripe_events where processed_at is null")
            .await,
        0,
        "every copy applied"
    );
    assert_eq!(app.assert_ledger_consistent(ws).await, (2_000, 0));
    assert_eq!(
        app.count("select count(*) from ledger_entries where kind = 'plan_allowance'")
            .await,
        2
    );
    assert_eq!(app.count("select count(*) from subscriptions").await, 1);
    assert_eq!(app.plan_of(ws).await, "pro");
}

#[sqlx::test]
async fn a_failed_renewal_shows_a_banner_until_the_invoice_is_paid(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    on_sale(&app).await;
    let ws = app.sign_up("ada@example.com").await;
    subscribe(&app, ws, "pro", 2_000).await;
    let customer: String =
        sqlx::query_scalar("select stripe_customer_id from workspaces where workspace_id = $1")
            .bind(ws)
            .fetch_one(&app.db)
            .await
            .unwrap();
    let set_card = |card: &'static str| {
        let (client, url) = (
            app.client.clone(),
            app.url(&format!("/sandbox/test/customers/{customer}/card")),
        );
        async move {
            client
                .post(url)
                .form(&[("card", card)])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert!(set_card("declining").await.is_success());
    let key = app.create_api_key("Backend").await;
    app.consume(
        &key,
        serde_json::json!({"feature": "manager.process", "quantity": 500}),
    )
    .await;

    advance_days(&app, 31).await;
    let mut banner = None;
    for _ in 0..200 {
        let (_, html) = app.get_html("/dashboard").await;
        banner = text(&html, "#past-due-banner");
        if banner.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        banner
            .expect("past-due banner")
            .contains("Your last payment failed")
    );
    let (_, html) = app.get_html("/billing").await;
    assert_eq!(text(&html, "#subscription-status").unwrap(), "Past due");
    assert!(text(&html, "#invoices").unwrap().contains("open"));
    assert_eq!(
        app.assert_ledger_consistent(ws).await,
        (1_500, 0),
        "no allowance for an unpaid period"
    );

    // A working card pays the open invoice: the banner goes, the new period's allowance arrives.
    assert!(set_card("succeeding").await.is_success());
    wait_for_plan_credits(&app, ws, 2_000).await;
    for _ in 0..200 {
        let (_, html) = app.get_html("/dashboard").await;
        if text(&html, "#past-due-banner").is_none() {
            assert_eq!(
                app.count("select count(*) from invoices where status = 'open'")
                    .await,
                0
            );
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the past-due banner never went away");
}

#[sqlx::test]
async fn cancel_and_resume_from_the_billing_page(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    on_sale(&app).await;
    let ws = app.sign_up("ada@example.com").await;
    subscribe(&app, ws, "pro", 2_000).await;

    // Cancelling asks first, saying until when the plan stays; nothing changes yet.
    let res = app.post_form("/billing/cancel", &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    let html = scraper::Html::parse_document(&res.text().await.unwrap());
    let confirm = text(&html, "#confirm").unwrap();
    assert!(
        confirm.contains("Your plan stays active until")
            && confirm.contains("Purchased credits stay"),
        "{confirm}"
    );
    let (_, html) = app.get_html("/billing").await;
    assert!(text(&html, "#current-plan").unwrap().contains("Renews on"));
    let res = app
        .post_form("/billing/cancel", &[("confirm", "yes")])
        .await;
    assert_eq!(location(&res), "/billing");
    let (_, html) = app.get_html("/billing").await;
    assert!(text(&html, "#current-plan").unwrap().contains("Cancels on"));
    assert!(
        text(&html, ".flash")
            .unwrap()
            .contains("end at the end of the period")
    );

    let res = app.post_form("/billing/resume", &[]).await;
    assert_eq!(location(&res), "/billing");
    let (_, html) = app.get_html("/billing").await;
    assert!(text(&html, "#current-plan").unwrap().contains("Renews on"));
    assert!(!select(&html, "#cancel-subscription").is_empty());

    // Resumed: the period end renews instead of ending.
    advance_days(&app, 31).await;
    for _ in 0..200 {
        if app
            .count("select count(*) from invoices where status = 'paid'")
            .await
            == 2
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.count("select count(*) from invoices where status = 'paid'")
            .await,
        2
    );
    assert_eq!(app.plan_of(ws).await, "pro");
}

#[sqlx::test]
async fn stale_and_reordered_events_do_not_undo_newer_state(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    on_sale(&app).await;
    let ws = app.sign_up("ada@example.com").await;
    subscribe(&app, ws, "pro", 2_000).await;
    // Every event of the subscription is stored (invoice.paid and
    // invoice.payment_succeeded both grant, so credits can arrive before the other).
    app.settle().await;
    let events = app.received_events().await;
    let created = events
        .iter()
        .find(|e| e["type"] == "customer.subscription.created")
        .unwrap()
        .clone();
    let paid = events
        .iter()
        .find(|e| e["type"] == "invoice.paid")
        .unwrap()
        .clone();

    // The subscription is canceled now (immediately, through the API).
    let sub_id = created["data"]["object"]["id"].as_str().unwrap().to_owned();
    let res = app
        .client
        .delete(app.url(&format!("/sandbox/v1/subscriptions/{sub_id}")))
        .bearer_auth(billfold::sandbox::SANDBOX_SECRET_KEY)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    wait_for_plan_credits(&app, ws, 100).await;
    assert_eq!(app.plan_of(ws).await, "free");

    // A stale "created" (active) arriving late does not resurrect it.
    let deliver = |mut event: serde_json::Value, id: &str, event_type: Option<&str>| {
        event["id"] = serde_json::json!(id);
        if let Some(t) = event_type {
            event["type"] = serde_json::json!(t);
        }
        app.deliver_signed(event.to_string())
    };
    assert_eq!(
        deliver(created.clone(), "evt_late_created", None).await,
        StatusCode::OK
    );
    assert_eq!(
        deliver(
            created,
            "evt_late_updated",
            Some("customer.subscription.updated")
        )
        .await,
        StatusCode::OK
    );
    app.settle().await;
    assert_eq!(app.plan_of(ws).await, "free");
    let status: String = sqlx::query_scalar("select status::text from subscriptions")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(status, "canceled");

    // A payment_failed for the invoice that was paid does not make it unpaid.
    let mut failed = paid;
    failed["data"]["object"]["status"] = serde_json::json!("open");
    assert_eq!(
        deliver(failed, "evt_late_failed", Some("invoice.payment_failed")).await,
        StatusCode::OK
    );
    app.settle().await;
    assert_eq!(
        app.count("select count(*) from invoices where status = 'paid'")
            .await,
        1
    );
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 0));
    assert_eq!(
        app.count("select count(*) from ledger_entries where kind = 'plan_allowance'")
            .await,
        3
    );
}

#[sqlx::test]
async fn an_upgrade_shows_stripes_preview_then_charges_it_and_grants_the_pro_rata_allowance(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    on_sale(&app).await;
    let ws = app.sign_up("ada@example.com").await;
    subscribe(&app, ws, "pro", 2_000).await;
    // (billfold prorates at wall-clock time, so the sandbox clock stays put here; the
    // pro-rata arithmetic itself is unit-tested in `subscriptions`.)

    let token = app.csrf().await;
    let res = app
        .client
        .post(app.url("/billing/change/preview"))
        .header("hx-request", "true")
        .form(&[("plan_code", "business"), ("csrf_token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let html = scraper::Html::parse_fragment(&res.text().await.unwrap());
    let due_now = text(&html, "#due-now").unwrap();
    let lines = text(&html, "#preview-lines").unwrap();
    assert!(lines.contains("Business"), "{lines}");
    let credits_text = text(&html, "#preview-credits").unwrap();
    let proration_date =
        crate::helpers::attr(&html, "input[name=proration_date]", "value").unwrap();

    let res = app
        .post_form(
            "/billing/change",
            &[
                ("plan_code", "business"),
                ("proration_date", &proration_date),
            ],
        )
        .await;
    assert_eq!(location(&res), "/billing");
    // The proration invoice is paid; its webhook grants the pro-rata allowance.
    let mut granted = 0;
    for _ in 0..200 {
        granted = app
            .count("select coalesce(sum(plan_delta), 0)::bigint from ledger_entries where reference like 'upgrade:%'")
            .await;
        if granted > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        credits_text.contains(&crate::helpers::group(granted)),
        "preview {credits_text:?} vs granted {granted}"
    );
    // Right after subscribing almost the whole period remains: almost all of 8,000.
    assert!((7_990..=8_000).contains(&granted), "{granted}");
    assert_eq!(app.plan_of(ws).await, "business");
    assert_eq!(app.assert_ledger_consistent(ws).await, (2_000 + granted, 0));
    let paid: i64 = sqlx::query_scalar(
        "select amount_paid from invoices where billing_reason = 'subscription_update'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        due_now,
        billfold::money::Money::new(paid, "eur").to_string(),
        "charged what the preview showed"
    );

    // Not an upgrade any more: business → pro is refused here, with the reason.
    let res = app
        .post_form("/billing/change/preview", &[("plan_code", "pro")])
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, html) = app.get_html("/billing").await;
    assert!(
        text(&html, ".flash")
            .unwrap()
            .contains("Pro is a downgrade"),
        "{:?}",
        text(&html, ".flash")
    );
}

#[sqlx::test]
async fn a_downgrade_waits_for_the_period_end_and_can_be_taken_back(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    on_sale(&app).await;
    let ws = app.sign_up("ada@example.com").await;
    subscribe(&app, ws, "pro", 2_000).await;

    let res = app
        .post_form("/billing/downgrade", &[("plan_code", "starter")])
        .await;
    assert_eq!(location(&res), "/billing");
    let (_, html) = app.get_html("/billing").await;
    assert!(
        text(&html, "#scheduled-downgrade")
            .unwrap()
            .contains("Moves to Starter on")
    );
    assert_eq!(
        app.plan_of(ws).await,
        "pro",
        "the paid-for plan stays until the period ends"
    );

    // Taken back, then scheduled again.
    app.post_form("/billing/downgrade/cancel", &[]).await;
    let (_, html) = app.get_html("/billing").await;
    assert!(text(&html, "#scheduled-downgrade").is_none());
    assert!(text(&html, "#current-plan").unwrap().contains("Renews on"));
    app.post_form("/billing/downgrade", &[("plan_code", "starter")])
        .await;

    advance_days(&app, 31).await;
    wait_for_plan_credits(&app, ws, 500).await;
    assert_eq!(app.plan_of(ws).await, "starter");
    let renewal: i64 = sqlx::query_scalar(
        "select amount_paid from invoices where billing_reason = 'subscription_cycle'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(renewal, 2_900, "the renewal bills the cheaper plan");
    assert_eq!(app.assert_ledger_consistent(ws).await, (500, 0));
}

#[sqlx::test]
async fn a_downgrade_is_refused_with_reasons_while_the_workspace_uses_more(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    on_sale(&app).await;
    let ws = app.sign_up("ada@example.com").await;
    subscribe(&app, ws, "pro", 2_000).await;
    let mut key = String::new();
    for i in 0..6 {
        key = app.create_api_key(&format!("key {i}")).await;
    }
    let (status, _) = app
        .consume(
            &key,
            serde_json::json!({"feature": "visual.interpret_image"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let res = app
        .post_form("/billing/downgrade", &[("plan_code", "starter")])
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = scraper::Html::parse_document(&res.text().await.unwrap());
    let reasons = text(&html, "#downgrade-errors").unwrap();
    assert!(
        reasons.contains("Starter allows 5 active API keys; this workspace has 6"),
        "{reasons}"
    );
    // The feature by name, and the day the downgrade becomes possible (30 days after
    // its last use, which was just now; the roll-ups count by the hour, so the hour's
    // end, which may be tomorrow).
    let day = |t: time::OffsetDateTime| {
        t.format(time::macros::format_description!(
            "[day padding:none] [month repr:short] [year]"
        ))
        .unwrap()
    };
    let in_30_days = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    assert!(
        [day(in_30_days), day(in_30_days + time::Duration::hours(1))]
            .iter()
            .any(|possible| reasons.contains(&format!(
                "Starter does not include Interpret an image, which this workspace used in the last 30 days. Without further use, the downgrade becomes possible on {possible}."
            ))),
        "{reasons}"
    );
    let scheduled: Option<String> =
        sqlx::query_scalar("select scheduled_plan_code from subscriptions")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(scheduled, None, "nothing changed");
    // Downgrading to a pricier plan or to free is not a downgrade here: refused with
    // the reason, nothing changes.
    for (plan, reason) in [
        ("business", "Business is an upgrade"),
        ("free", "cancel at period end"),
    ] {
        let res = app
            .post_form("/billing/downgrade", &[("plan_code", plan)])
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let (_, html) = app.get_html("/billing").await;
        assert!(text(&html, ".flash").unwrap().contains(reason), "{plan}");
    }
    assert_eq!(
        app.post_form("/billing/downgrade", &[("plan_code", "nonsense")])
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}

/// Upgrades on `/billing`: Stripe's preview, then the confirmation at its proration date.
async fn upgrade(app: &TestApp, plan: &str) {
    let res = app
        .post_form("/billing/change/preview", &[("plan_code", plan)])
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let html = scraper::Html::parse_document(&res.text().await.unwrap());
    let date = crate::helpers::attr(&html, "input[name=proration_date]", "value").unwrap();
    let res = app
        .post_form(
            "/billing/change",
            &[("plan_code", plan), ("proration_date", &date)],
        )
        .await;
    assert_eq!(location(&res), "/billing");
    app.settle().await;
}

/// Switches plan in the (sandbox) customer portal, as a customer could in Stripe's,
/// and checks the workspace is on `plan` afterwards.
async fn portal_switch(app: &TestApp, ws: billfold::ids::WorkspaceId, plan: &str) {
    let price: String =
        sqlx::query_scalar("select stripe_price_id from plans where plan_code = $1")
            .bind(plan)
            .fetch_one(&app.db)
            .await
            .unwrap();
    let res = app.post_form("/billing/portal", &[]).await;
    let portal = location(&res);
    let res = app
        .client
        .post(format!("{portal}/switch"))
        .form(&[("price", price.as_str())])
        .send()
        .await
        .unwrap();
    assert!(
        res.status().is_redirection() || res.status().is_success(),
        "{}",
        res.status()
    );
    app.settle().await;
    assert_eq!(app.plan_of(ws).await, plan, "the portal switched to {plan}");
}

/// Plan credits granted by upgrades.
async fn upgrade_credits_granted(app: &TestApp) -> i64 {
    app.count(
        "select coalesce(sum(plan_delta), 0)::bigint from ledger_entries
          where kind = 'plan_allowance' and reference like 'upgrade:%'",
    )
    .await
}

#[sqlx::test]
async fn switching_down_and_up_again_never_grants_more_than_the_largest_allowance(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    on_sale(&app).await;
    let ws = app.sign_up("ada@example.com").await;
    subscribe(&app, ws, "starter", 500).await;

    // Starter → Pro on /billing: the pro-rata difference, almost all of 1,500.
    upgrade(&app, "pro").await;
    let first = upgrade_credits_granted(&app).await;
    assert!((1_490..=1_500).contains(&first), "{first}");

    // Back to Starter in the portal and up again, three times, both ways.
    for _ in 0..3 {
        portal_switch(&app, ws, "starter").await;
        upgrade(&app, "pro").await;
        portal_switch(&app, ws, "starter").await;
        portal_switch(&app, ws, "pro").await;
    }
    assert_eq!(app.plan_of(ws).await, "pro");
    assert_eq!(
        upgrade_credits_granted(&app).await,
        first,
        "nothing more after the first upgrade"
    );
    let (plan, _) = app.assert_ledger_consistent(ws).await;
    assert!(plan <= 2_000, "plan credits {plan} on a 2,000-credit plan");
    let marks: Vec<(String, Option<i64>, i64)> = sqlx::query_as(
        "select plan_code, high_water_credits, granted_credits from allowance_periods
          where stripe_subscription_id is not null",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        marks,
        [("pro".to_owned(), Some(2_000), 500 + first)],
        "the period's mark is Pro; Starter's allowance plus one pro-rata difference granted"
    );
}

#[sqlx::test]
async fn a_switch_up_in_the_portal_grants_like_one_on_billing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    on_sale(&app).await;
    let ws = app.sign_up("ada@example.com").await;
    subscribe(&app, ws, "starter", 500).await;
    portal_switch(&app, ws, "business").await;
    assert_eq!(app.plan_of(ws).await, "business");
    let granted = upgrade_credits_granted(&app).await;
    assert!((9_490..=9_500).contains(&granted), "{granted}");
    // Down to Pro: nothing is refunded (no credit proration), so the credits stay;
    // back up to Business: the mark is Business already.
    let before = app.balance(ws).await.plan;
    portal_switch(&app, ws, "pro").await;
    assert_eq!(app.balance(ws).await.plan, before);
    assert_eq!(
        app.count(
            "select count(*) from sandbox_objects
              where object_type = 'invoice' and (data->>'total')::bigint < 0"
        )
        .await,
        0,
        "a switch down credits no unused time"
    );
    portal_switch(&app, ws, "business").await;
    assert_eq!(upgrade_credits_granted(&app).await, granted);
    app.assert_ledger_consistent(ws).await;
}

#[sqlx::test]
async fn subscribing_the_moment_billfold_is_ready_reaches_checkout(pool: PgPool) {
    // TestApp::spawn returns as soon as /readyz would answer 200.
    let app = TestApp::spawn(pool).await;
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    app.sign_up("ada@example.com").await;
    let key = uuid::Uuid::new_v4().to_string();
    let res = app
        .post_form(
            "/billing/subscribe",
            &[("plan_code", "pro"), ("form_key", &key)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(
        location(&res).contains("/sandbox/checkout/cs_"),
        "{}",
        location(&res)
    );
}

#[sqlx::test]
async fn a_plan_not_on_sale_says_so_instead_of_failing_silently(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.sign_up("ada@example.com").await;
    // As with real Stripe before `billfold stripe sync` ran.
    sqlx::query("update plans set stripe_price_id = null where plan_code = 'pro'")
        .execute(&app.db)
        .await
        .unwrap();
    let (_, html) = app.get_html("/billing").await;
    let card = text(&html, "[data-plan=pro]").unwrap();
    assert!(card.contains("Not on sale yet"), "{card}");
    let key = uuid::Uuid::new_v4().to_string();
    let res = app
        .post_form(
            "/billing/subscribe",
            &[("plan_code", "pro"), ("form_key", &key)],
        )
        .await;
    assert_eq!(location(&res), "/billing");
    let (_, html) = app.get_html("/billing").await;
    assert!(
        text(&html, ".flash")
            .unwrap()
            .contains("The Pro plan is not on sale yet"),
        "{:?}",
        text(&html, ".flash")
    );
    assert_eq!(app.count("select count(*) from top_ups").await, 0);
}

/// Sets the sandbox customer's test card (`declining` or `succeeding`).
async fn set_card(app: &TestApp, ws: billfold::ids::WorkspaceId, card: &str) {
    let customer: String =
        sqlx::query_scalar("select stripe_customer_id from workspaces where workspace_id = $1")
            .bind(ws)
            .fetch_one(&app.db)
            .await
            .unwrap();
    let res = app
        .client
        .post(app.url(&format!("/sandbox/test/customers/{customer}/card")))
        .form(&[("card", card)])
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
}

#[sqlx::test]
async fn a_declined_upgrade_changes_nothing_until_its_invoice_is_paid(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    on_sale(&app).await;
    let ws = app.sign_up("ada@example.com").await;
    subscribe(&app, ws, "starter", 500).await;
    set_card(&app, ws, "declining").await;

    // Stripe keeps the switch pending: no plan, no features, no credits, not past due.
    upgrade(&app, "pro").await;
    let (_, html) = app.get_html("/billing").await;
    assert!(
        text(&html, ".flash").unwrap().contains("card was declined"),
        "{:?}",
        text(&html, ".flash")
    );
    assert_eq!(text(&html, "#subscription-status").unwrap(), "Active");
    assert_eq!(app.plan_of(ws).await, "starter");
    assert_eq!(upgrade_credits_granted(&app).await, 0);
    assert_eq!(app.balance(ws).await.plan, 500);

    // Paying the invoice (a working card) applies the switch and its grant, once.
    set_card(&app, ws, "succeeding").await;
    crate::helpers::eventually("the paid switch is applied", || async {
        app.plan_of(ws).await == "pro" && upgrade_credits_granted(&app).await > 0
    })
    .await;
    app.settle().await;
    let granted = upgrade_credits_granted(&app).await;
    assert!((1_490..=1_500).contains(&granted), "{granted}");
    assert_eq!(app.assert_ledger_consistent(ws).await, (500 + granted, 0));
}

/// The mirrored subscription and the Pro plan, after subscribing to Starter.
async fn starter_subscription(
    app: &TestApp,
    ws: billfold::ids::WorkspaceId,
) -> (
    billfold::subscriptions::Subscription,
    billfold::catalog::Plan,
) {
    subscribe(app, ws, "starter", 500).await;
    app.settle().await;
    let mut conn = app.db.acquire().await.unwrap();
    let sub = billfold::subscriptions::db::current(&mut conn, ws)
        .await
        .unwrap()
        .unwrap();
    let pro = billfold::catalog::db::plan(&mut conn, &"pro".into())
        .await
        .unwrap()
        .unwrap();
    (sub, pro)
}

#[sqlx::test]
async fn a_switchs_invoice_grants_for_the_plan_it_paid_for_whatever_the_subscription_is_now(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    on_sale(&app).await;
    let ws = app.sign_up("ada@example.com").await;
    let (sub, pro) = starter_subscription(&app, ws).await;
    // The Starter → Pro invoice is applied after the subscription moved back to Starter
    // (a scheduled downgrade, another switch): it paid for Pro, so it grants Pro's
    // difference, not nothing.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let invoice = billfold::stripe::billing::InvoiceInfo {
        id: "in_test_paid_for_pro".into(),
        customer_id: Some(sub.stripe_customer_id.clone()),
        subscription_id: Some(sub.stripe_subscription_id.clone()),
        number: None,
        status: Some(billfold::subscriptions::InvoiceStatus::Paid),
        billing_reason: Some("subscription_update".into()),
        amount_due: 2_000,
        amount_paid: 2_000,
        currency: "eur".into(),
        hosted_invoice_url: None,
        invoice_pdf: None,
        period_start: now,
        period_end: now,
        created: now,
        billed_period: None,
        proration_at: Some(now),
        prorated_price_id: pro.stripe_price_id.clone(),
        tax: 0,
        paid_at: Some(now),
    };
    let mut tx = app.db.begin().await.unwrap();
    billfold::subscriptions::apply_invoice(&mut tx, &invoice, true)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let granted = upgrade_credits_granted(&app).await;
    assert!((1_490..=1_500).contains(&granted), "{granted}");
    assert_eq!(app.assert_ledger_consistent(ws).await, (500 + granted, 0));
}

#[sqlx::test]
async fn a_renewal_applied_after_an_upgrade_of_its_period_keeps_the_upgrade(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    on_sale(&app).await;
    let ws = app.sign_up("ada@example.com").await;
    let (sub, pro) = starter_subscription(&app, ws).await;
    let starter = {
        let mut conn = app.db.acquire().await.unwrap();
        billfold::catalog::db::plan(&mut conn, &"starter".into())
            .await
            .unwrap()
            .unwrap()
    };
    // The next period: its subscription update was mirrored and an upgrade a day into it
    // paid and applied, all before its renewal invoice is applied (delivered late).
    let day = time::Duration::days(1);
    let next = (sub.current_period_end, sub.current_period_end + day * 30);
    let mut tx = app.db.begin().await.unwrap();
    billfold::allowances::ensure_subscription_period(
        &mut tx,
        ws,
        &sub.stripe_subscription_id,
        next,
        &starter,
    )
    .await
    .unwrap();
    let upgrade = billfold::allowances::grant_upgrade(
        &mut tx,
        ws,
        &sub.stripe_subscription_id,
        next,
        &pro,
        (next.0 + day).unix_timestamp(),
        "in_test_upgrade",
    )
    .await
    .unwrap();
    assert_eq!(upgrade, 1_450, "1,500 × 29/30");
    billfold::allowances::open_subscription_period(
        &mut tx,
        ws,
        &sub.stripe_subscription_id,
        next,
        &starter,
        "in_test_late_renewal",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // Starter's allowance plus the upgrade (nothing used in the period yet), not 500.
    assert_eq!(app.assert_ledger_consistent(ws).await, (1_950, 0));
    let period: (String, Option<i64>, i64) = sqlx::query_as(
        "select plan_code, high_water_credits, granted_credits from allowance_periods
          where period_start = $1",
    )
    .bind(next.0)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(period, ("pro".to_owned(), Some(2_000), 1_950));
}

#[sqlx::test]
async fn an_upgrades_invoice_delivered_twenty_times_at_once_grants_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    on_sale(&app).await;
    let ws = app.sign_up("ada@example.com").await;
    subscribe(&app, ws, "starter", 500).await;
    upgrade(&app, "pro").await;
    let granted = upgrade_credits_granted(&app).await;
    assert!(granted > 0);

    // Every event of the upgrade again, concurrently, half under new ids.
    let events: Vec<serde_json::Value> = sqlx::query_scalar(
        "select payload from stripe_events
          where event_type in ('invoice.paid', 'invoice.payment_succeeded',
                               'customer.subscription.updated')
            and (payload->'data'->'object'->>'billing_reason' = 'subscription_update'
                 or event_type = 'customer.subscription.updated')",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(events.len() >= 2, "{}", events.len());
    let deliveries = (0..20).map(|i| {
        let mut event = events[i % events.len()].clone();
        if i % 2 == 1 {
            event["id"] = serde_json::json!(format!("evt_upgrade_again_{i}"));
        }
        app.deliver_signed(event.to_string())
    });
    for status in futures_util::future::join_all(deliveries).await {
        assert_eq!(status, StatusCode::OK);
    }
    app.settle().await;
    assert_eq!(upgrade_credits_granted(&app).await, granted);
    assert_eq!(app.assert_ledger_consistent(ws).await, (500 + granted, 0));
}
