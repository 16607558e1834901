//! The metering API: charging, refusals, idempotency, concurrency.

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use billfold::ids::WorkspaceId;

use crate::helpers::{TestApp, how_many, statuses_of};

async fn customer_with_key(app: &TestApp) -> (WorkspaceId, String) {
    let ws = app.sign_up("ops@example.com").await;
    let key = app.create_api_key("Backend").await;
    (ws, key)
}

#[sqlx::test]
async fn a_call_consumes_feature_cost_times_quantity(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (ws, key) = customer_with_key(&app).await;

    let (status, body) = app
        .consume(
            &key,
            json!({"feature": "graph.query", "quantity": 2, "idempotency_key": "a"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"charged": 6, "quality": "standard", "balance": {"plan": 94, "purchased": 0, "total": 94, "debt": 0}, "idempotency_key": "a"})
    );

    let res = app
        .client
        .get(app.url("/api/v1/balance"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap(),
        json!({"balance": {"plan": 94, "purchased": 0, "total": 94, "debt": 0}})
    );
    assert_eq!(app.assert_ledger_consistent(ws).await, (94, 0));
    assert_eq!(app.count("select count(*) from usage_events").await, 1);
}

#[sqlx::test]
async fn plan_credits_are_used_before_purchased_credits(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (ws, key) = customer_with_key(&app).await;
    grant_purchased(&app, ws, 50).await;

    let (status, body) = app
        .consume(&key, json!({"feature": "manager.process", "quantity": 120}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["balance"],
        json!({"plan": 0, "purchased": 30, "total": 30, "debt": 0})
    );
    let deltas: (i64, i64) = sqlx::query_as(
        "select plan_delta, purchased_delta from ledger_entries where kind = 'usage'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(deltas, (-100, -20));
    assert_eq!(app.assert_ledger_consistent(ws).await, (0, 30));
}

pub async fn grant_purchased(app: &TestApp, ws: WorkspaceId, credits: i64) {
    let mut tx = app.db.begin().await.unwrap();
    billfold::ledger::grant_purchased(
        &mut tx,
        ws,
        billfold::ledger::LedgerEntryKind::Adjustment,
        credits,
        "test grant",
        &format!("test:{}", uuid::Uuid::new_v4()),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Moves a workspace onto `plan` with `plan_credits` plan credits (through the ledger).
pub async fn put_on_plan(app: &TestApp, ws: WorkspaceId, plan: &str, plan_credits: i64) {
    let mut tx = app.db.begin().await.unwrap();
    sqlx::query("update workspaces set plan_code = $2 where workspace_id = $1")
        .bind(ws)
        .bind(plan)
        .execute(&mut *tx)
        .await
        .unwrap();
    billfold::ledger::reset_plan_credits(
        &mut tx,
        ws,
        plan_credits,
        "test plan",
        &format!("test:{}", uuid::Uuid::new_v4()),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

#[sqlx::test]
async fn a_call_that_cannot_be_paid_answers_402_and_writes_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (ws, key) = customer_with_key(&app).await;

    let (status, body) = app
        .consume(
            &key,
            json!({"feature": "manager.process", "quantity": 101, "idempotency_key": "big"}),
        )
        .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(body["error"]["code"], "insufficient_credits");
    assert_eq!(body["error"]["required"], 101);
    assert_eq!(body["error"]["available"], 100);
    assert_eq!(
        body["error"]["top_up_url"],
        format!("{}/billing/top-up", app.base)
    );
    assert_eq!(app.count("select count(*) from usage_events").await, 0);
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 0));

    // A refused call leaves its idempotency key unused: the retry that fits is charged.
    let (status, body) = app
        .consume(
            &key,
            json!({"feature": "manager.process", "quantity": 100, "idempotency_key": "big"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(app.assert_ledger_consistent(ws).await, (0, 0));
}

#[sqlx::test]
async fn retries_with_the_same_idempotency_key_are_answered_not_charged(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (ws, key) = customer_with_key(&app).await;
    let body = json!({"feature": "risk.score", "quantity": 3, "idempotency_key": "req-1"});
    let first = app.consume(&key, body.clone()).await;
    let second = app.consume(&key, body).await;
    assert_eq!(first.0, StatusCode::OK);
    assert_eq!(first, second, "the retry gets the first answer");

    // The header works too, and a different body under a used key is a conflict.
    let res = app
        .client
        .post(app.url("/api/v1/usage"))
        .bearer_auth(&key)
        .header("idempotency-key", "req-1")
        .json(&json!({"feature": "risk.score", "quantity": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let err: serde_json::Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "idempotency_conflict");
    assert_eq!(app.assert_ledger_consistent(ws).await, (94, 0));
}

#[sqlx::test]
async fn bad_requests_get_a_clear_error_and_change_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (ws, key) = customer_with_key(&app).await;
    let cases = [
        (
            json!({"feature": "nope.nothing"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_feature",
        ),
        (
            json!({"feature": "manager.process", "quantity": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"feature": "manager.process", "quantity": -3}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"feature": "manager.process", "quantity": 1_000_001}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"feature": "manager.process", "quantity": 1.5}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"feature": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"quantity": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"feature": "manager.process", "idempotency_key": "x".repeat(256)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"feature": "planner.create_plan"}),
            StatusCode::FORBIDDEN,
            "feature_not_in_plan",
        ),
    ];
    for (body, status, code) in cases {
        let (got, answer) = app.consume(&key, body.clone()).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let res = app
        .client
        .post(app.url("/api/v1/usage"))
        .bearer_auth(&key)
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    for auth in [None, Some("Bearer bf_0000"), Some("Basic abc")] {
        let mut req = app
            .client
            .post(app.url("/api/v1/usage"))
            .json(&json!({"feature": "manager.process"}));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
    }
    assert_eq!(app.count("select count(*) from usage_events").await, 0);
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 0));
}

#[sqlx::test]
async fn fifty_parallel_calls_with_credits_for_ten_charge_exactly_ten(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (ws, key) = customer_with_key(&app).await;
    // Plus allows 500 calls a minute: credits, not the rate limit, decide here.
    // 100 plan credits; each call costs 10.
    put_on_plan(&app, ws, "plus", 100).await;
    let calls = (0..50).map(|i| {
        let client = app.client.clone();
        let url = app.url("/api/v1/usage");
        let key = key.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"feature": "manager.process", "quantity": 10, "idempotency_key": format!("k{i}")}))
                .send()
                .await
                .unwrap()
                .status()
        })
    });
    let statuses = statuses_of(calls).await;
    assert_eq!(how_many(&statuses, StatusCode::OK), 10);
    assert_eq!(how_many(&statuses, StatusCode::PAYMENT_REQUIRED), 40);
    assert_eq!(app.assert_ledger_consistent(ws).await, (0, 0));
    assert_eq!(app.count("select count(*) from usage_events").await, 10);
}

#[sqlx::test]
async fn fifty_parallel_retries_of_one_call_charge_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (ws, key) = customer_with_key(&app).await;
    let calls = (0..50).map(|_| {
        let client = app.client.clone();
        let url = app.url("/api/v1/usage");
        let key = key.clone();
        tokio::spawn(async move {
            let res = client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"feature": "graph.query", "idempotency_key": "same"}))
                .send()
                .await
                .unwrap();
            (res.status(), res.json::<serde_json::Value>().await.unwrap())
        })
    });
    let answers: Vec<_> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(
        answers
            .iter()
            .all(|a| a == &answers[0] && a.0 == StatusCode::OK),
        "{answers:?}"
    );
    assert_eq!(app.assert_ledger_consistent(ws).await, (97, 0));
}

fn header(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[sqlx::test]
async fn the_free_plan_allows_ten_calls_a_minute_then_answers_429(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (ws, key) = customer_with_key(&app).await;
    let mut remaining = Vec::new();
    for i in 0..10 {
        let res = app
            .client
            .post(app.url("/api/v1/usage"))
            .bearer_auth(&key)
            .json(&json!({"feature": "manager.process", "idempotency_key": format!("r{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "call {i}");
        assert_eq!(header(&res, "ratelimit-limit").as_deref(), Some("10"));
        remaining.push(
            header(&res, "ratelimit-remaining")
                .unwrap()
                .parse::<i32>()
                .unwrap(),
        );
        let reset: i64 = header(&res, "ratelimit-reset").unwrap().parse().unwrap();
        assert!((1..=60).contains(&reset), "reset {reset}");
    }
    assert_eq!(
        remaining,
        (0..10).rev().collect::<Vec<_>>(),
        "counts down to zero"
    );

    let res = app
        .client
        .post(app.url("/api/v1/usage"))
        .bearer_auth(&key)
        .json(&json!({"feature": "manager.process", "idempotency_key": "over"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = header(&res, "retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=6).contains(&retry),
        "one call every 6 s: retry after {retry}"
    );
    assert_eq!(header(&res, "ratelimit-remaining").as_deref(), Some("0"));
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");

    // A retry of a charged call is still answered: replays are not rate limited.
    let (status, _) = app
        .consume(
            &key,
            json!({"feature": "manager.process", "idempotency_key": "r3"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.count("select count(*) from usage_events").await, 10);
    assert_eq!(app.assert_ledger_consistent(ws).await, (90, 0));
}

#[sqlx::test]
async fn two_billfold_processes_share_one_rate_limit(pool: PgPool) {
    let first = TestApp::spawn(pool.clone()).await;
    let second = TestApp::spawn(pool).await;
    let (ws, key) = customer_with_key(&first).await;
    let calls = (0..40).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        let (client, url, key) = (app.client.clone(), app.url("/api/v1/usage"), key.clone());
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"feature": "manager.process", "idempotency_key": format!("p{i}")}))
                .send()
                .await
                .unwrap()
                .status()
        })
    });
    let statuses = statuses_of(calls).await;
    assert_eq!(how_many(&statuses, StatusCode::OK), 10);
    assert_eq!(how_many(&statuses, StatusCode::TOO_MANY_REQUESTS), 30);
    assert_eq!(first.assert_ledger_consistent(ws).await, (90, 0));
}

#[sqlx::test]
async fn nul_bytes_control_characters_and_overlong_values_are_422_not_500(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (ws, key) = customer_with_key(&app).await;
    for body in [
        json!({"feature": "manager.process\u{0}"}),
        json!({"feature": "manager\u{0}.process"}),
        json!({"feature": "manager.process", "idempotency_key": "a\u{0}b"}),
        json!({"feature": "manager.process", "idempotency_key": "line\nbreak"}),
        json!({"feature": "m".repeat(200) + ".x"}),
        json!({"feature": "manager.process", "idempotency_key": "é".repeat(256)}),
    ] {
        let (status, answer) = app.consume(&key, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_request");
    }
    // Invalid UTF-8 in the body and in the Idempotency-Key header.
    let res = app
        .client
        .post(app.url("/api/v1/usage"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(b"{\"feature\": \"manager.process\xff\"}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = app
        .client
        .post(app.url("/api/v1/usage"))
        .bearer_auth(&key)
        .header(
            "idempotency-key",
            reqwest::header::HeaderValue::from_bytes(b"k\xe9y").unwrap(),
        )
        .json(&json!({"feature": "manager.process"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request");
    assert_eq!(app.count("select count(*) from usage_events").await, 0);
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 0));
}

#[sqlx::test]
async fn every_path_under_api_answers_the_json_error_shape(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, key) = customer_with_key(&app).await;
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            app.client.get(app.url("/api/v1/nothing-here")),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            app.client.get(app.url("/api/v1/usage")),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            app.client.delete(app.url("/api/v1/balance")),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            app.client
                .post(app.url("/api/v1/usage"))
                .bearer_auth(&key)
                .body(vec![b'x'; 300 * 1024]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (req, status, code) in cases {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), status);
        assert!(
            header(&res, "content-type").is_some_and(|c| c.starts_with("application/json")),
            "{code}: JSON"
        );
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], code);
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
}

#[sqlx::test]
async fn a_call_that_times_out_answers_json_and_its_key_replays_the_outcome(pool: PgPool) {
    let mut config = crate::helpers::test_config();
    config.metering_timeout = std::time::Duration::from_millis(500);
    let app = TestApp::spawn_with(pool, config).await;
    let (ws, key) = customer_with_key(&app).await;

    // Something holds the workspace's balance row for two seconds.
    let mut blocker = app.db.begin().await.unwrap();
    sqlx::query("select 1 from balances where workspace_id = $1 for update")
        .bind(ws)
        .execute(&mut *blocker)
        .await
        .unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        blocker.commit().await.unwrap();
    });

    let body = json!({"feature": "graph.query", "idempotency_key": "slow-1"});
    let (status, answer) = app.consume(&key, body.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"]["code"], "timeout");
    assert_eq!(answer["error"]["idempotency_key"], "slow-1");
    release.await.unwrap();

    // The call went through once the row was free; the retry learns that, once.
    crate::helpers::eventually("the first call to finish", || async {
        app.count("select count(*) from usage_events").await == 1
    })
    .await;
    let (status, answer) = app.consume(&key, body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["charged"], 3);
    assert_eq!(app.assert_ledger_consistent(ws).await, (97, 0));
}

#[sqlx::test]
async fn a_pro_quality_call_costs_twice_and_says_so_on_the_statement(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (ws, key) = customer_with_key(&app).await;

    // graph.query costs 3; pro doubles it; quantity 2: 12 credits.
    let (status, body) = app
        .consume(
            &key,
            json!({"feature": "graph.query", "quantity": 2, "quality": "pro", "idempotency_key": "q-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["charged"], 12);
    assert_eq!(body["quality"], "pro");
    // Standard is the default and costs the listed price.
    let (_, body) = app
        .consume(
            &key,
            json!({"feature": "graph.query", "quantity": 2, "idempotency_key": "q-2"}),
        )
        .await;
    assert_eq!(
        (body["charged"].clone(), body["quality"].clone()),
        (json!(6), json!("standard"))
    );
    assert_eq!(app.assert_ledger_consistent(ws).await, (100 - 18, 0));

    // The key is bound to the quality: the same key at standard is a conflict, and a
    // replay at pro answers the first charge without charging again.
    let (status, body) = app
        .consume(
            &key,
            json!({"feature": "graph.query", "quantity": 2, "quality": "standard", "idempotency_key": "q-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = app
        .consume(
            &key,
            json!({"feature": "graph.query", "quantity": 2, "quality": "pro", "idempotency_key": "q-1"}),
        )
        .await;
    assert_eq!(
        (status, body["charged"].clone()),
        (StatusCode::OK, json!(12))
    );
    assert_eq!(app.assert_ledger_consistent(ws).await, (100 - 18, 0));

    // An unknown quality is the caller's mistake: 422, nothing charged.
    let (status, body) = app
        .consume(
            &key,
            json!({"feature": "graph.query", "quality": "ultra", "idempotency_key": "q-3"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request");
    assert_eq!(app.assert_ledger_consistent(ws).await, (100 - 18, 0));

    // The statement names the feature and the quality.
    let (_, html) = app.get_html("/credits").await;
    let statement = crate::helpers::text(&html, "#statement").unwrap();
    assert!(
        statement.contains("Graph query × 2 (pro, ×2)"),
        "{statement}"
    );
    let quality: String =
        sqlx::query_scalar("select quality from usage_events where idempotency_key = 'q-1'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(quality, "pro");
}

/// schemathesis, installed by `script/bootstrap --schemathesis`.
fn schemathesis() -> std::path::PathBuf {
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/tools/schemathesis/bin/schemathesis");
    assert!(
        bin.exists(),
        "schemathesis is missing: run script/bootstrap --schemathesis (script/test does)"
    );
    bin
}

#[sqlx::test]
async fn schemathesis_finds_no_server_error_in_the_metering_api(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (ws, key) = customer_with_key(&app).await;
    app.lift_rate_limits().await;
    grant_purchased(&app, ws, 1_000_000).await;

    // The document is served without a key and describes both operations.
    let res = app.visitor().get("/api/v1/openapi.json").await;
    assert_eq!(res.status(), StatusCode::OK);
    let doc: serde_json::Value = res.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/api/v1/usage", "/api/v1/balance"] {
        assert!(doc["paths"][path].is_object(), "{path} in {doc}");
    }
    assert_eq!(
        doc["components"]["schemas"]["Quality"]["enum"],
        json!(["standard", "pro"])
    );

    // Generated calls, valid and not, with the key: none may answer 5xx, and the
    // ledger stays whole.
    let reports =
        std::env::temp_dir().join(format!("billfold-schemathesis-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&reports).unwrap();
    let out = tokio::process::Command::new(schemathesis())
        .arg("run")
        .arg(app.url("/api/v1/openapi.json"))
        .args(["--checks", "not_a_server_error"])
        .args(["--header", &format!("Authorization: Bearer {key}")])
        .args(["--max-examples", "40", "--seed", "20261208"])
        .args(["--generation-database", "none", "--no-color"])
        .arg("--report-dir")
        .arg(&reports)
        .current_dir(&reports)
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&reports);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        app.count("select count(*) from usage_events").await > 0,
        "{stdout}"
    );
    app.assert_ledger_consistent(ws).await;
}
