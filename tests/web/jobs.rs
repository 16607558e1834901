//! Background jobs (issue 6 §4): the free plan's monthly allowance and the
//! reconciliation of abandoned top-ups, run by the app's job runner.

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{TestApp, eventually};
use crate::top_up::start_top_up;

/// Queues a run of a periodic job now (as its schedule would).
async fn run_job(app: &TestApp, kind: &str) {
    sqlx::query("insert into jobs (kind, key) values ($1, $2)")
        .bind(kind)
        .bind(format!("test-{}", uuid::Uuid::new_v4()))
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("select pg_notify('billfold_jobs', $1)")
        .bind(kind)
        .execute(&app.db)
        .await
        .unwrap();
    eventually(&format!("{kind} to run"), || async {
        app.count(
            "select count(*) from jobs where key like 'test-%' and status in ('queued', 'running')",
        )
        .await
            == 0
    })
    .await;
}

/// Moves a free workspace's sign-up `months` months and a day into the past, with its
/// first free month.
async fn signed_up_ago(app: &TestApp, ws: billfold::ids::WorkspaceId, interval: &str) {
    let mut tx = app.db.begin().await.unwrap();
    sqlx::query(&format!(
        "update workspaces set created_at = now() - interval '{interval}' where workspace_id = $1"
    ))
    .bind(ws)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(&format!(
        "update allowance_periods set period_start = now() - interval '{interval}',
                period_end = now() - interval '{interval}' + interval '1 month'
          where workspace_id = $1"
    ))
    .bind(ws)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

#[sqlx::test]
async fn the_free_allowance_resets_monthly_from_the_sign_up_day_once_per_month(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("ada@example.com").await;
    let key = app.create_api_key("Backend").await;
    crate::api::grant_purchased(&app, ws, 40).await;
    let (status, _) = app
        .consume(&key, json!({"feature": "manager.process", "quantity": 70}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.assert_ledger_consistent(ws).await, (30, 40));

    // Still inside the first month: nothing happens.
    run_job(&app, "free_allowance").await;
    assert_eq!(app.assert_ledger_consistent(ws).await, (30, 40));

    // A month and a day after sign-up: plan credits back to 100, purchased untouched.
    signed_up_ago(&app, ws, "1 month 1 day").await;
    run_job(&app, "free_allowance").await;
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 40));
    // Twice in the same month grants once.
    run_job(&app, "free_allowance").await;
    assert_eq!(
        app.count("select count(*) from ledger_entries where kind = 'plan_allowance'")
            .await,
        2,
        "the sign-up month and this month"
    );
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 40));
}

#[sqlx::test]
async fn a_paying_workspace_gets_no_free_allowance(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("ada@example.com").await;
    crate::api::put_on_plan(&app, ws, "pro", 1_234).await;
    signed_up_ago(&app, ws, "2 months 3 days").await;
    run_job(&app, "free_allowance").await;
    assert_eq!(app.assert_ledger_consistent(ws).await, (1_234, 0));
}

async fn sandbox_session(app: &TestApp, checkout: &str) -> serde_json::Value {
    let id = checkout.rsplit('/').next().unwrap();
    app.client
        .get(app.url(&format!("/sandbox/v1/checkout/sessions/{id}")))
        .bearer_auth(billfold::sandbox::SANDBOX_SECRET_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[sqlx::test]
async fn abandoned_top_ups_are_expired_and_a_paid_one_whose_webhook_was_lost_is_granted(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("ada@example.com").await;
    let abandoned = start_top_up(&app, &[("credit_pack", "pack_100")]).await;
    let lost = start_top_up(&app, &[("credit_pack", "pack_500")]).await;
    // Stripe took the payment of the second, but its webhook never arrived.
    let lost_id = lost.rsplit('/').next().unwrap().to_owned();
    sqlx::query(
        "update sandbox_objects set data = data || '{\"status\": \"complete\", \"payment_status\": \"paid\", \"url\": null}'::jsonb
          where object_id = $1",
    )
    .bind(&lost_id)
    .execute(&app.db)
    .await
    .unwrap();
    // Both were started more than a day ago.
    sqlx::query("update top_ups set created_at = now() - interval '26 hours'")
        .execute(&app.db)
        .await
        .unwrap();

    run_job(&app, "reconcile_top_ups").await;
    let statuses: Vec<(String, String)> = sqlx::query_as(
        "select stripe_checkout_session_id, status::text from top_ups order by credits",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(statuses[0].1, "expired");
    assert_eq!(statuses[1], (lost_id, "paid".to_owned()));
    assert_eq!(sandbox_session(&app, &abandoned).await["status"], "expired");
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 500));

    // Running again changes nothing (the expired session's webhook too).
    run_job(&app, "reconcile_top_ups").await;
    app.settle().await;
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 500));
}

#[sqlx::test]
async fn free_resets_racing_each_other_and_usage_reset_each_workspace_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut workspaces = Vec::new();
    for i in 0..5 {
        let visitor = app.visitor();
        let ws = visitor.sign_up(&format!("user{i}@example.com")).await;
        let key = visitor.create_api_key("Backend").await;
        signed_up_ago(&app, ws, "1 month 1 day").await;
        workspaces.push((ws, key));
    }
    app.lift_rate_limits().await;
    // Eight resets at once (as several worker processes would), while every workspace
    // consumes.
    let resets = (0..8).map(|_| {
        let db = app.app_db.clone();
        tokio::spawn(async move { billfold::allowances::run_free_resets(&db).await.unwrap() })
    });
    let calls = workspaces.iter().flat_map(|(_, key)| {
        (0..10).map(|_| {
            let (app, key) = (app.visitor(), key.clone());
            tokio::spawn(async move {
                app.consume(&key, json!({"feature": "manager.process", "quantity": 5}))
                    .await
                    .0
            })
        })
    });
    let calls: Vec<_> = calls.collect();
    let reset: usize = futures_util::future::join_all(resets)
        .await
        .into_iter()
        .map(Result::unwrap)
        .sum();
    let statuses = crate::helpers::statuses_of(calls).await;
    // (The app's own periodic run may take some of them.)
    assert!(
        reset <= 5,
        "each workspace reset at most once in all: {reset}"
    );
    for (ws, _) in &workspaces {
        assert_eq!(
            sqlx::query_scalar::<_, i64>(
                "select count(*) from ledger_entries where workspace_id = $1 and kind = 'plan_allowance'"
            )
            .bind(ws)
            .fetch_one(&app.db)
            .await
            .unwrap(),
            2,
            "the sign-up month and this one"
        );
        let (plan, _) = app.assert_ledger_consistent(*ws).await;
        assert!((0..=100).contains(&plan), "{plan}");
    }
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
}
