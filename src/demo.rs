//! Demo data for a new user's first ten minutes: three users (customer, reseller,
//! staff), each with a workspace on the free plan, and for the customer a purchased
//! top-up, an API key and two weeks of usage history so the dashboard has something to
//! show. Created only when the database has no users.

use sqlx::PgPool;
use time::{Duration, OffsetDateTime};

use crate::accounts::{self, password::PasswordHasher};
use crate::ledger::{self, LedgerEntryKind};

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
pub async fn seed(db: &PgPool, hasher: &PasswordHasher) -> anyhow::Result<bool> {
    let mut tx = db.begin().await?;
    sqlx::query("select pg_advisory_xact_lock(7242100002)")
        .execute(&mut *tx)
        .await?;
    let any = accounts::db::any_user(&mut tx).await?;
    tx.commit().await?;
    if any {
        return Ok(false);
    }
    let mut customer = None;
    for (role, email, password) in LOGINS {
        let user = match accounts::sign_up(db, hasher, email, password, role == "staff").await {
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
    let mut tx = db.begin().await?;
    let ws = accounts::db::primary_workspace(&mut tx, customer.user_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("demo customer has no workspace"))?;
    let workspace_id = ws.workspace_id;
    ledger::grant_purchased(
        &mut tx,
        workspace_id,
        LedgerEntryKind::Adjustment,
        500,
        "Demo: welcome credits",
        "demo:welcome",
    )
    .await?;
    // Two weeks of usage, dated in the past, written through the ledger's one append
    // path with its usage events, so balance = Σ ledger holds.
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
        let at = now - Duration::days(day) + Duration::minutes(day * 13 % 600);
        ledger::db::record_past_usage(
            &mut tx,
            workspace_id,
            feature,
            quantity,
            cost * quantity,
            &format!("demo-{day}"),
            at,
        )
        .await?;
    }
    crate::api_keys::create(&mut tx, workspace_id, Some(customer.user_id), "Demo key").await?;
    tx.commit().await?;
    Ok(true)
}
