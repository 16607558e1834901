//! Demo data for a new user's first ten minutes: three users (customer, reseller,
//! staff), each with a workspace on the free plan, and for the customer a purchased
//! top-up, an API key and two weeks of usage history so the dashboard has something to
//! show. Created only when the database has no users.

use sqlx::PgPool;
use time::{Duration, OffsetDateTime};

use crate::accounts;
use crate::ledger::{self, Grant, LedgerEntryKind};

/// Demo logins: (role, email, password).
pub const LOGINS: [(&str, &str, &str); 3] = [
    ("customer", "customer@billfold.test", "billfold-demo"),
    ("reseller", "reseller@billfold.test", "billfold-demo"),
    ("staff", "staff@billfold.test", "billfold-demo"),
];

/// Prints the demo logins, one per line.
pub fn print_logins() {
    for (role, email, password) in LOGINS {
        println!("    {role:<9} {email:<26} password: {password}");
    }
}

/// Seeds the demo users unless any user exists. Returns whether it created them.
pub async fn seed(db: &PgPool) -> anyhow::Result<bool> {
    let mut tx = db.begin().await?;
    sqlx::query("select pg_advisory_xact_lock(7242100002)")
        .execute(&mut *tx)
        .await?;
    let any: bool = sqlx::query_scalar("select exists (select 1 from users)")
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    if any {
        return Ok(false);
    }
    let mut customer = None;
    for (role, email, password) in LOGINS {
        let user = match accounts::sign_up(db, email, password, role == "staff").await {
            Ok(user) => user,
            // Another process starting at the same time seeded first.
            Err(accounts::SignupError::EmailTaken) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if role == "customer" {
            customer = Some(user);
        }
    }
    let Some(customer) = customer else {
        return Ok(true);
    };
    let ws = accounts::primary_workspace(db, customer.user_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("demo customer has no workspace"))?;
    let workspace_id = ws.workspace_id;

    let mut tx = db.begin().await?;
    ledger::grant(
        &mut tx,
        &Grant {
            workspace_id,
            kind: LedgerEntryKind::Adjustment,
            plan_credits: 0,
            purchased_credits: 500,
            description: "Demo: welcome credits".into(),
            reference: "demo:welcome".into(),
        },
    )
    .await?;
    // Two weeks of usage, dated in the past, written exactly as consume_credits
    // would (usage event + ledger entry + balance), so balance = Σ ledger holds.
    let features = [
        ("manager.process", 1_i64),
        ("graph.query", 3),
        ("risk.score", 2),
        ("validator.validate", 1),
    ];
    let now = OffsetDateTime::now_utc();
    for day in (1..=14_i64).rev() {
        let (feature, cost) = features[(day as usize) % features.len()];
        let quantity = 1 + (day * 7 % 5);
        let credits = cost * quantity;
        let at = now - Duration::days(day) + Duration::minutes(day * 13 % 600);
        let (plan, purchased): (i64, i64) = sqlx::query_as(
            "update balances set purchased_credits = purchased_credits - $2
              where workspace_id = $1 returning plan_credits, purchased_credits",
        )
        .bind(workspace_id)
        .bind(credits)
        .fetch_one(&mut *tx)
        .await?;
        let event_id = uuid::Uuid::new_v4();
        sqlx::query(
            "insert into usage_events (usage_event_id, workspace_id, feature_code, quantity, credits_charged,
                    idempotency_key, request_hash, plan_balance_after, purchased_balance_after, created_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(event_id)
        .bind(workspace_id)
        .bind(feature)
        .bind(quantity)
        .bind(credits)
        .bind(format!("demo-{day}"))
        .bind(ledger::request_hash(feature, quantity))
        .bind(plan)
        .bind(purchased)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "insert into ledger_entries (workspace_id, kind, plan_delta, purchased_delta, plan_balance_after,
                    purchased_balance_after, description, reference, created_at)
             values ($1, 'usage', 0, $2, $3, $4, $5, $6, $7)",
        )
        .bind(workspace_id)
        .bind(-credits)
        .bind(plan)
        .bind(purchased)
        .bind(format!("{feature} × {quantity}"))
        .bind(event_id.to_string())
        .bind(at)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    crate::api_keys::create(db, workspace_id, Some(customer.user_id), "Demo key").await?;
    Ok(true)
}
