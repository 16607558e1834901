//! The public pricing page and "Your limits".

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{TestApp, attr, select, text};

#[sqlx::test]
async fn pricing_compares_every_plan_and_prices_every_feature_before_sign_up(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (status, html) = app.visitor().get_html("/pricing").await;
    assert_eq!(status, StatusCode::OK);
    let plans: Vec<String> = select(&html, "#pricing-plans [data-plan] h2")
        .iter()
        .map(|h| h.text().collect::<String>().trim().to_owned())
        .collect();
    assert_eq!(
        plans,
        ["Free", "Starter", "Pro", "Business", "Plus", "Enterprise"]
    );
    let free = text(&html, "[data-plan=free]").unwrap();
    for expected in ["100 credits / month", "10 API calls / min", "Graph", "Risk"] {
        assert!(free.contains(expected), "{expected} in {free}");
    }
    assert!(
        !free.contains("Planner"),
        "Free does not include the planner: {free}"
    );
    let enterprise = text(&html, "[data-plan=enterprise]").unwrap();
    assert!(enterprise.contains("Unlimited credits") && enterprise.contains("No rate limit"));
    // Every feature, by name, with its standard and pro cost and the first plan with it.
    let rows: Vec<Vec<String>> = select(&html, "#feature-costs tbody tr")
        .iter()
        .map(|r| {
            r.text()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 17);
    assert!(
        rows.contains(&vec![
            "Graph query".into(),
            "graph.query".into(),
            "3".into(),
            "6".into(),
            "Free".into()
        ]),
        "{rows:?}"
    );
    assert!(
        rows.contains(&vec![
            "Start a trace".into(),
            "trace.start".into(),
            "10".into(),
            "20".into(),
            "Pro".into()
        ]),
        "{rows:?}"
    );
    assert_eq!(
        attr(&html, ".page-head a.button", "href").unwrap(),
        "/signup"
    );

    // Signed in, the current plan is marked and the button leads to billing.
    app.sign_up("prices@example.com").await;
    let (_, html) = app.get_html("/pricing").await;
    assert!(
        text(&html, "[data-plan=free] h2")
            .unwrap()
            .contains("Your plan")
    );
    assert!(
        !text(&html, "[data-plan=pro] h2")
            .unwrap()
            .contains("Your plan")
    );
    assert_eq!(
        attr(&html, ".page-head a.button", "href").unwrap(),
        "/billing"
    );
}

#[sqlx::test]
async fn your_limits_shows_the_plans_caps_against_current_use(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.sign_up("caps@example.com").await;
    let key = app.create_api_key("Backend").await;
    for i in 0..4 {
        let (status, _) = app
            .consume(
                &key,
                json!({"feature": "graph.query", "idempotency_key": format!("c-{i}")}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, html) = app.get_html("/limits").await;
    assert_eq!(status, StatusCode::OK);
    // Free: 10 calls a minute (4 just made), 100 credits (12 used), 1 member, 1 key.
    let rate = text(&html, "#limit-rate").unwrap();
    assert!(rate.contains("4 of 10 used"), "{rate}");
    let allowance = text(&html, "#limit-allowance").unwrap();
    assert!(
        allowance.contains("12 of 100 credits used") && allowance.contains("Resets on"),
        "{allowance}"
    );
    let members = text(&html, "#limit-members").unwrap();
    assert!(members.contains("1 of"), "{members}");
    let keys = text(&html, "#limit-keys").unwrap();
    assert!(keys.contains("1 of"), "{keys}");
}
