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
