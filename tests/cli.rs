//! The `billfold` binary's commands against a real database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use sqlx::PgPool;

fn billfold(db_url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_billfold"))
        .args(args)
        .env("DATABASE_URL", db_url)
        .env("RUST_LOG", "warn")
        .env("DATA_DIR", std::env::temp_dir().join("billfold-cli-test"))
        .env_remove("STRIPE_SECRET_KEY")
        .output()
        .expect("run billfold")
}

/// The URL of the database `#[sqlx::test]` made for this test.
async fn url_of(pool: &PgPool) -> String {
    let name: String = sqlx::query_scalar("select current_database()")
        .fetch_one(pool)
        .await
        .unwrap();
    let base = std::env::var("DATABASE_URL").unwrap();
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{name}")
}

#[sqlx::test]
async fn create_user_and_api_key_create_make_a_working_key(pool: PgPool) {
    let url = url_of(&pool).await;
    let out = billfold(&url, &["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = billfold(
        &url,
        &[
            "create-user",
            "--email",
            "Ops@Example.com",
            "--password",
            "a long enough password",
            "--staff",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "created ops@example.com (staff)"
    );

    let out = billfold(
        &url,
        &[
            "create-user",
            "--email",
            "ops@example.com",
            "--password",
            "a long enough password",
        ],
    );
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: an account with this email already exists"
    );

    let out = billfold(
        &url,
        &[
            "api-key",
            "create",
            "--email",
            "ops@example.com",
            "--name",
            "CLI key",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(key.starts_with("bf_"));
    let hash = billfold::api_keys::hash_key(&key);
    let outcome = billfold::ledger::consume(
        &pool,
        &billfold::ledger::Consumption {
            key_hash: &hash,
            feature: "manager.process",
            quantity: 5,
            idempotency_key: "cli",
        },
    )
    .await
    .unwrap();
    assert!(
        matches!(
            outcome,
            billfold::ledger::ConsumeOutcome::Charged { charged: 5, .. }
        ),
        "{outcome:?}"
    );

    let out = billfold(&url, &["db", "url"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), url);
}

#[sqlx::test]
async fn seed_demo_creates_the_demo_logins_once_with_a_consistent_ledger(pool: PgPool) {
    let url = url_of(&pool).await;
    let out = billfold(&url, &["seed-demo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("customer@billfold.test"));
    let out = billfold(&url, &["seed-demo"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("demo users exist already"));

    let users: i64 = sqlx::query_scalar("select count(*) from users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users, 3);
    let workspaces: Vec<uuid::Uuid> = sqlx::query_scalar("select workspace_id from workspaces")
        .fetch_all(&pool)
        .await
        .unwrap();
    for ws in workspaces {
        let check = billfold::ledger::check_balance(&pool, ws).await.unwrap();
        assert!(check.is_ok(), "{check:?}");
    }
    let usage: i64 = sqlx::query_scalar("select count(*) from usage_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(usage, 14, "two weeks of demo usage for the chart");
}

#[cfg(feature = "sandbox")]
#[sqlx::test]
async fn stripe_sync_runs_against_the_in_process_sandbox_and_is_idempotent(pool: PgPool) {
    let url = url_of(&pool).await;
    let out = billfold(&url, &["stripe", "sync"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(first.lines().count(), 8, "{first}");
    assert!(first.lines().all(|l| l.ends_with(" created")), "{first}");
    assert!(first.contains("billfold_plan_pro_monthly"));

    let out = billfold(&url, &["stripe", "sync"]);
    let second = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        second.lines().all(|l| l.ends_with(" unchanged")),
        "{second}"
    );
}

#[cfg(feature = "sandbox")]
#[sqlx::test]
async fn sandbox_advance_moves_the_sandbox_clock(pool: PgPool) {
    let url = url_of(&pool).await;
    let before = time::OffsetDateTime::now_utc().unix_timestamp();
    let out = billfold(&url, &["sandbox", "advance", "--days", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let shown = line.strip_prefix("sandbox time is now ").expect(&line);
    let now =
        time::OffsetDateTime::parse(shown, &time::format_description::well_known::Rfc3339).unwrap();
    let moved = now.unix_timestamp() - before;
    assert!(
        (3 * 86_400..3 * 86_400 + 60).contains(&moved),
        "moved {moved} s"
    );
    let out = billfold(&url, &["sandbox", "advance", "--days=-1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--days must be from 0 to 3650"));
}
