//! The credit statement: pagination with running balance, CSV export, health probes.

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{TestApp, select, text};

#[sqlx::test]
async fn the_statement_pages_through_entries_with_a_running_balance(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("ada@example.com").await;
    let key = app.create_api_key("Backend").await;
    app.lift_rate_limits().await;
    for i in 0..60 {
        let (status, _) = app
            .consume(
                &key,
                json!({"feature": "manager.process", "idempotency_key": format!("c{i}")}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, html) = app.get_html("/credits").await;
    assert_eq!(status, StatusCode::OK);
    let rows = select(&html, "#statement tbody tr");
    assert_eq!(rows.len(), 50, "50 entries per page");
    let first: Vec<String> = rows[0]
        .select(&scraper::Selector::parse("td").unwrap())
        .map(|td| td.text().collect())
        .collect();
    assert_eq!(first[5], "-1");
    assert_eq!(first[6], "40", "newest entry shows the balance after it");
    let older =
        crate::helpers::attr(&html, "a[rel=next]", "href").expect("a link to older entries");

    let (_, html) = app.get_html(&older).await;
    let rows = select(&html, "#statement tbody tr");
    assert_eq!(rows.len(), 11, "60 usage entries + the allowance = 61");
    assert!(
        text(&html, "#statement")
            .unwrap()
            .contains("Free plan: monthly allowance")
    );
    assert!(select(&html, "a[rel=next]").is_empty());
    assert_eq!(app.assert_ledger_consistent(ws).await, (40, 0));
}

#[sqlx::test]
async fn the_statement_downloads_as_csv(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.sign_up("ada@example.com").await;
    let key = app.create_api_key("Backend").await;
    app.consume(&key, json!({"feature": "graph.query", "quantity": 2}))
        .await;

    let res = app.get("/credits.csv").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    let body = res.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "ledger_entry_id",
            "created_at",
            "kind",
            "description",
            "plan_delta",
            "purchased_delta",
            "debt_delta",
            "amount",
            "plan_balance",
            "purchased_balance",
            "debt",
            "balance"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(&rows[0][2], "Plan allowance");
    assert_eq!(&rows[0][11], "100");
    assert_eq!(&rows[1][2], "Usage");
    assert_eq!(&rows[1][3], "Graph query × 2");
    assert_eq!(&rows[1][7], "-6");
    assert_eq!(&rows[1][11], "94");

    // Another visitor gets a login redirect, not someone's statement.
    assert_eq!(
        app.visitor().get("/credits.csv").await.status(),
        StatusCode::SEE_OTHER
    );
}

#[sqlx::test]
async fn health_and_readiness_probes_answer(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let res = app.get("/healthz").await;
    assert_eq!(
        (res.status(), res.text().await.unwrap()),
        (StatusCode::OK, "ok".to_owned())
    );
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app.get("/healthz").await;
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert!(res.headers().contains_key("x-request-id"));
    let res = app.get("/static/htmx.min.js").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.text().await.unwrap().contains("version:\"2.0.11\""),
        "vendored htmx is served"
    );
    assert_eq!(
        app.get("/static/nope.js").await.status(),
        StatusCode::NOT_FOUND
    );
}
