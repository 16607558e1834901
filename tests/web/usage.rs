//! Usage insight: the dashboard's live figures (quota, run-out prediction, suggestion)
//! and the hourly roll-ups they read.

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{TestApp, text};

#[sqlx::test]
async fn the_dashboard_shows_quota_run_out_and_a_suggestion_that_refresh_without_a_reload(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("pace@example.com").await;
    let key = app.create_api_key("pace").await;
    app.lift_rate_limits().await;

    let (_, html) = app.get_html("/dashboard").await;
    assert_eq!(text(&html, "#quota-percent").unwrap(), "0 %");
    assert!(text(&html, "#credit-suggestion").is_none());
    assert!(text(&html, "#run-out").is_none(), "no usage, no prediction");
    assert!(
        text(&html, "#quota-reset")
            .unwrap()
            .starts_with("Resets on "),
        "the reset date shows"
    );

    // 30 calls of 3 credits, all at once: 90 of the Free plan's 100 credits.
    let mut calls = Vec::new();
    for i in 0..30 {
        let (client, url, key) = (app.client.clone(), app.url("/api/v1/usage"), key.clone());
        calls.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"feature": "graph.query", "quantity": 1, "idempotency_key": format!("pace-{i}")}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(app.assert_ledger_consistent(ws).await, (10, 0));

    // The live panel htmx polls answers the new figures on its own.
    let res = app.get("/dashboard/live").await;
    assert_eq!(res.status(), StatusCode::OK);
    let fragment = scraper::Html::parse_fragment(&res.text().await.unwrap());
    assert_eq!(text(&fragment, "#quota-percent").unwrap(), "90 %");
    assert_eq!(text(&fragment, "#usage-total").unwrap(), "90 credits");
    assert_eq!(text(&fragment, "#balance-total").unwrap(), "10 credits");
    // 90 credits in the last 7 days: 13 a day, so the 10 left last until today.
    let run_out = text(&fragment, "#run-out").unwrap();
    assert!(run_out.contains("13 credits a day"), "{run_out}");
    let suggestion = text(&fragment, "#credit-suggestion").unwrap();
    assert!(suggestion.contains("You have used 90 %"), "{suggestion}");
    assert!(suggestion.contains("Buy credits"), "{suggestion}");
    assert!(
        text(&fragment, "#live-figures").is_some(),
        "the fragment replaces itself"
    );

    // The roll-up holds exactly what the events hold.
    let (events, credits): (i64, i64) =
        sqlx::query_as("select sum(events)::bigint, sum(credits)::bigint from usage_hourly")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((events, credits), (30, 90));
}

#[sqlx::test]
async fn usage_events_cannot_be_rewritten_behind_the_roll_ups(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.sign_up("record@example.com").await;
    let key = app.create_api_key("record").await;
    let (status, _) = app
        .consume(
            &key,
            json!({"feature": "manager.process", "quantity": 2, "idempotency_key": "r-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for sql in [
        "update usage_events set credits_charged = 0",
        "delete from usage_events",
    ] {
        let err = sqlx::query(sql).execute(&app.db).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let credits: i64 = sqlx::query_scalar("select sum(credits)::bigint from usage_hourly")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(credits, 2);
}

/// Records `n` calls of `feature` through `key`, one at a time.
async fn record(app: &TestApp, key: &str, feature: &str, quality: &str, n: usize, tag: &str) {
    for i in 0..n {
        let (status, body) = app
            .consume(
                key,
                json!({"feature": feature, "quality": quality, "idempotency_key": format!("{tag}-{i}")}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

#[sqlx::test]
async fn the_usage_page_breaks_credits_down_by_feature_and_key_and_lists_the_events(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("usage@example.com").await;
    app.lift_rate_limits().await;
    let backend = app.create_api_key("Backend").await;
    let batch = app.create_api_key("Batch").await;
    // 3 graph queries (3 each) and 1 pro risk score (2 × 2) through Backend; 60 calls of
    // manager.process (1 each) through Batch: 73 credits.
    record(&app, &backend, "graph.query", "standard", 3, "g").await;
    record(&app, &backend, "risk.score", "pro", 1, "r").await;
    record(&app, &batch, "manager.process", "standard", 60, "m").await;
    // Another workspace's usage never shows.
    let other = app.visitor();
    other.sign_up("other@example.com").await;
    let other_key = other.create_api_key("Other").await;
    record(&other, &other_key, "graph.query", "standard", 2, "o").await;

    let (status, html) = app.get_html("/usage?range=7").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text(&html, "#usage-credits").unwrap(), "73");
    assert_eq!(text(&html, "#usage-calls").unwrap(), "64");
    let by_feature = crate::helpers::select(&html, "#by-feature tbody tr")
        .iter()
        .map(|r| {
            r.text()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect::<Vec<_>>();
    assert_eq!(
        by_feature,
        [
            "Process a request|60|60|82 %",
            "Graph query|3|9|12 %",
            "Risk score|1|4|5 %"
        ]
    );
    let by_key = text(&html, "#by-key").unwrap();
    assert!(
        by_key.contains("Batch (bf_") && by_key.contains("Backend (bf_"),
        "{by_key}"
    );
    assert!(
        text(&html, "#usage-chart").unwrap().contains("Graph query"),
        "the legend names features"
    );
    // The history: 50 a page, newest first, then the older page.
    let rows = crate::helpers::select(&html, "#usage-events tbody tr").len();
    assert_eq!(rows, 50);
    let older = crate::helpers::attr(&html, "a[rel=next]", "href").unwrap();
    let (_, html) = app.get_html(&older).await;
    assert_eq!(
        crate::helpers::select(&html, "#usage-events tbody tr").len(),
        14
    );
    let history = text(&html, "#usage-events").unwrap();
    assert!(
        history.contains("Pro ×2") && history.contains("Graph query"),
        "{history}"
    );

    // Filters: one feature, one key.
    let (_, html) = app.get_html("/usage?range=7&feature=graph.query").await;
    assert_eq!(
        crate::helpers::select(&html, "#usage-events tbody tr").len(),
        3
    );
    let batch_id: uuid::Uuid =
        sqlx::query_scalar("select api_key_id from api_keys where name = 'Batch'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    let (_, html) = app
        .get_html(&format!("/usage?range=30&key={batch_id}"))
        .await;
    assert_eq!(
        crate::helpers::select(&html, "#usage-events tbody tr").len(),
        50
    );
    assert!(
        !text(&html, "#usage-events")
            .unwrap()
            .contains("Graph query")
    );

    // The CSV holds the events of what is shown, newest first like the page.
    let res = app.get("/usage.csv?range=7&feature=graph.query").await;
    assert_eq!(res.status(), StatusCode::OK);
    let csv = res.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "created_at,feature,feature_name,quality,quantity,credits,api_key,idempotency_key"
    );
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(
        lines[1].contains(",graph.query,Graph query,standard,1,3,Backend,g-2"),
        "{csv}"
    );

    // A range that cannot be shown says why (422) and shows the last 30 days.
    let (status, html) = app.get_html("/usage?from=2026-11-30&to=2026-11-01").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        text(&html, "#range-error")
            .unwrap()
            .contains("must not be after the end date")
    );
    assert_eq!(text(&html, "#usage-credits").unwrap(), "73");
    let res = app.get("/usage.csv?from=nope&to=2026-11-01").await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // A custom range in the past holds nothing.
    let (status, html) = app.get_html("/usage?from=2026-01-01&to=2026-01-31").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text(&html, "#usage-credits").unwrap(), "0");
    assert!(text(&html, "#no-events").is_some());
    assert_eq!(app.assert_ledger_consistent(ws).await, (100 - 73, 0));
}
