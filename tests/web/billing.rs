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

async fn plan_of(app: &TestApp, ws: uuid::Uuid) -> String {
    sqlx::query_scalar("select plan_code from workspaces where workspace_id = $1")
        .bind(ws)
        .fetch_one(&app.db)
        .await
        .unwrap()
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
    assert_eq!(back, format!("{}/billing?subscribed=1", app.base));

    // Plan credits reset to the Pro allowance (no rollover of the 100 free credits).
    wait_for_balance(&app, ws, 2_000).await;
    assert_eq!(plan_of(&app, ws).await, "pro");
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
}
