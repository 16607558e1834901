//! Credits ledger and metering. Owns tables `balances`, `ledger_entries`,
//! `usage_events` and the `consume_credits` SQL function.
//!
//! Invariants (DESIGN.md "Credits"): a balance changes only in the transaction that
//! writes its ledger entry; both buckets stay ≥ 0 (CHECK constraints); the ledger is
//! append-only (a trigger refuses updates and deletes); for every workspace
//! `plan_credits = Σ plan_delta` and `purchased_credits = Σ purchased_delta`
//! ([`check_balance`]).

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

/// Why a ledger entry exists (Postgres enum `ledger_entry_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type, Serialize)]
#[sqlx(type_name = "ledger_entry_kind", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum LedgerEntryKind {
    /// A plan's monthly allowance.
    PlanAllowance,
    /// Credits bought through Checkout.
    TopUp,
    /// A metering API call.
    Usage,
    /// A staff correction with a reason.
    Adjustment,
    /// A refunded top-up taken back.
    Refund,
}

impl LedgerEntryKind {
    /// Human label for statements and CSV.
    pub fn label(self) -> &'static str {
        match self {
            Self::PlanAllowance => "Plan allowance",
            Self::TopUp => "Top-up",
            Self::Usage => "Usage",
            Self::Adjustment => "Adjustment",
            Self::Refund => "Refund",
        }
    }

    /// CSS class of the kind's badge.
    pub fn css_class(self) -> &'static str {
        match self {
            Self::PlanAllowance => "plan-allowance",
            Self::TopUp => "top-up",
            Self::Usage => "usage",
            Self::Adjustment => "adjustment",
            Self::Refund => "refund",
        }
    }
}

/// A workspace's credits in its two buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Balance {
    /// Monthly allowance left (reset each period, no rollover).
    #[sqlx(rename = "plan_credits")]
    pub plan: i64,
    /// Purchased credits left (never expire).
    #[sqlx(rename = "purchased_credits")]
    pub purchased: i64,
}

impl Balance {
    /// Plan plus purchased credits.
    pub fn total(&self) -> i64 {
        self.plan + self.purchased
    }
}

/// Credits added to a workspace, at most once per `(workspace, kind, reference)`.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Who receives the credits.
    pub workspace_id: Uuid,
    /// Why (allowance, top-up, adjustment).
    pub kind: LedgerEntryKind,
    /// Credits added to the plan bucket (≥ 0).
    pub plan_credits: i64,
    /// Credits added to the purchased bucket (≥ 0).
    pub purchased_credits: i64,
    /// Shown on the statement.
    pub description: String,
    /// Idempotency: a checkout session id, an invoice id, `signup:<workspace>`.
    pub reference: String,
}

/// Whether a grant changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantOutcome {
    /// Credits added; the balance after the grant.
    Granted(Balance),
    /// This reference was granted before; nothing changed.
    AlreadyGranted,
}

/// Adds credits inside the caller's transaction: locks the balance row, skips a
/// reference that was already granted, updates the balance and appends the entry.
/// Grants of one workspace are serialised by the row lock, so the check is exact; the
/// unique index `ledger_entries_grant_once_key` backs it up.
pub async fn grant(conn: &mut PgConnection, grant: &Grant) -> anyhow::Result<GrantOutcome> {
    anyhow::ensure!(
        grant.plan_credits >= 0 && grant.purchased_credits >= 0,
        "a grant cannot be negative"
    );
    sqlx::query("select 1 from balances where workspace_id = $1 for update")
        .bind(grant.workspace_id)
        .fetch_one(&mut *conn)
        .await?;
    let seen: Option<i64> = sqlx::query_scalar(
        "select ledger_entry_id from ledger_entries
          where workspace_id = $1 and kind = $2 and reference = $3",
    )
    .bind(grant.workspace_id)
    .bind(grant.kind)
    .bind(&grant.reference)
    .fetch_optional(&mut *conn)
    .await?;
    if seen.is_some() {
        return Ok(GrantOutcome::AlreadyGranted);
    }
    let balance = sqlx::query_as::<_, Balance>(
        "update balances set plan_credits = plan_credits + $2,
                purchased_credits = purchased_credits + $3, updated_at = now()
          where workspace_id = $1
         returning plan_credits, purchased_credits",
    )
    .bind(grant.workspace_id)
    .bind(grant.plan_credits)
    .bind(grant.purchased_credits)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "insert into ledger_entries (workspace_id, kind, plan_delta, purchased_delta,
                plan_balance_after, purchased_balance_after, description, reference)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(grant.workspace_id)
    .bind(grant.kind)
    .bind(grant.plan_credits)
    .bind(grant.purchased_credits)
    .bind(balance.plan)
    .bind(balance.purchased)
    .bind(&grant.description)
    .bind(&grant.reference)
    .execute(&mut *conn)
    .await?;
    Ok(GrantOutcome::Granted(balance))
}

/// Sets plan credits to `allowance` (a new period: no rollover), writing the
/// difference as one `plan_allowance` entry, at most once per `reference` (an invoice
/// id). Purchased credits are untouched. Returns whether it changed anything.
pub async fn reset_plan_credits(
    conn: &mut PgConnection,
    workspace_id: Uuid,
    allowance: i64,
    reference: &str,
    description: &str,
) -> anyhow::Result<bool> {
    anyhow::ensure!(allowance >= 0, "an allowance cannot be negative");
    let current: i64 =
        sqlx::query_scalar("select plan_credits from balances where workspace_id = $1 for update")
            .bind(workspace_id)
            .fetch_one(&mut *conn)
            .await?;
    let seen: Option<i64> = sqlx::query_scalar(
        "select ledger_entry_id from ledger_entries
          where workspace_id = $1 and kind = 'plan_allowance' and reference = $2",
    )
    .bind(workspace_id)
    .bind(reference)
    .fetch_optional(&mut *conn)
    .await?;
    if seen.is_some() {
        return Ok(false);
    }
    let balance = sqlx::query_as::<_, Balance>(
        "update balances set plan_credits = $2, updated_at = now() where workspace_id = $1
         returning plan_credits, purchased_credits",
    )
    .bind(workspace_id)
    .bind(allowance)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "insert into ledger_entries (workspace_id, kind, plan_delta, purchased_delta,
                plan_balance_after, purchased_balance_after, description, reference)
         values ($1, 'plan_allowance', $2, 0, $3, $4, $5, $6)",
    )
    .bind(workspace_id)
    .bind(allowance - current)
    .bind(balance.plan)
    .bind(balance.purchased)
    .bind(description)
    .bind(reference)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// The current balance of a workspace.
pub async fn balance(db: &PgPool, workspace_id: Uuid) -> anyhow::Result<Balance> {
    Ok(sqlx::query_as::<_, Balance>(
        "select plan_credits, purchased_credits from balances where workspace_id = $1",
    )
    .bind(workspace_id)
    .fetch_one(db)
    .await?)
}

/// `balance == Σ ledger` for one workspace, bucket by bucket. Returns the stored
/// balance and the ledger sums when they differ.
pub async fn check_balance(
    db: &PgPool,
    workspace_id: Uuid,
) -> anyhow::Result<Result<Balance, (Balance, Balance)>> {
    let (stored, plan_sum, purchased_sum): (Balance, i64, i64) = {
        let row: (i64, i64, i64, i64) = sqlx::query_as(
            "select b.plan_credits, b.purchased_credits,
                    coalesce(sum(e.plan_delta), 0)::bigint, coalesce(sum(e.purchased_delta), 0)::bigint
               from balances b left join ledger_entries e using (workspace_id)
              where b.workspace_id = $1
              group by b.plan_credits, b.purchased_credits",
        )
        .bind(workspace_id)
        .fetch_one(db)
        .await?;
        (
            Balance {
                plan: row.0,
                purchased: row.1,
            },
            row.2,
            row.3,
        )
    };
    let summed = Balance {
        plan: plan_sum,
        purchased: purchased_sum,
    };
    Ok(if stored == summed {
        Ok(stored)
    } else {
        Err((stored, summed))
    })
}

/// One line of a credit statement.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LedgerEntry {
    /// Increasing id: the statement's order.
    pub ledger_entry_id: i64,
    /// Why the entry exists.
    pub kind: LedgerEntryKind,
    /// Change of plan credits.
    pub plan_delta: i64,
    /// Change of purchased credits.
    pub purchased_delta: i64,
    /// Plan credits right after this entry.
    pub plan_balance_after: i64,
    /// Purchased credits right after this entry.
    pub purchased_balance_after: i64,
    /// Statement text.
    pub description: String,
    /// When it was written.
    pub created_at: OffsetDateTime,
}

impl LedgerEntry {
    /// Total change (both buckets).
    pub fn amount(&self) -> i64 {
        self.plan_delta + self.purchased_delta
    }

    /// Total balance right after this entry: the running balance.
    pub fn balance_after(&self) -> i64 {
        self.plan_balance_after + self.purchased_balance_after
    }
}

/// Which page of a statement to read (keyset pagination on the entry id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementPage {
    /// Newest first, entries older than this id (`None`: the newest page).
    NewestBefore(Option<i64>),
    /// Oldest first, entries newer than this id (`None`: from the start; CSV export).
    OldestAfter(Option<i64>),
}

/// At most `limit` ledger entries of a workspace, in the page's order.
pub async fn entries(
    db: &PgPool,
    workspace_id: Uuid,
    page: StatementPage,
    limit: i64,
) -> anyhow::Result<Vec<LedgerEntry>> {
    let (filter, order, cursor) = match page {
        StatementPage::NewestBefore(id) => (
            "ledger_entry_id < coalesce($2, 9223372036854775807)",
            "desc",
            id,
        ),
        StatementPage::OldestAfter(id) => ("ledger_entry_id > coalesce($2, 0)", "asc", id),
    };
    let sql = format!(
        "select ledger_entry_id, kind, plan_delta, purchased_delta, plan_balance_after,
                purchased_balance_after, description, created_at
           from ledger_entries
          where workspace_id = $1 and {filter}
          order by ledger_entry_id {order}
          limit $3"
    );
    Ok(sqlx::query_as::<_, LedgerEntry>(&sql)
        .bind(workspace_id)
        .bind(cursor)
        .bind(limit)
        .fetch_all(db)
        .await?)
}

/// Number of ledger entries of a workspace (statement pagination).
pub async fn count_entries(db: &PgPool, workspace_id: Uuid) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("select count(*) from ledger_entries where workspace_id = $1")
            .bind(workspace_id)
            .fetch_one(db)
            .await?,
    )
}

/// Credits consumed per UTC day over the last `days` days, oldest first, with zero
/// for days without usage.
pub async fn daily_usage(
    db: &PgPool,
    workspace_id: Uuid,
    days: i32,
) -> anyhow::Result<Vec<(time::Date, i64)>> {
    Ok(sqlx::query_as::<_, (time::Date, i64)>(
        "select d::date, coalesce(sum(u.credits_charged), 0)::bigint
           from generate_series((now() at time zone 'utc')::date - ($2 - 1), (now() at time zone 'utc')::date, interval '1 day') d
           left join usage_events u
             on u.workspace_id = $1
            and u.created_at >= d::date::timestamp at time zone 'utc'
            and u.created_at < (d::date + 1)::timestamp at time zone 'utc'
          group by d order by d",
    )
    .bind(workspace_id)
    .bind(days)
    .fetch_all(db)
    .await?)
}

/// Largest quantity one metering call may report; more is refused as absurd.
pub const MAX_QUANTITY: i64 = 1_000_000;
/// Longest idempotency key accepted (Stripe's limit is 255).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// A metering call: `quantity` uses of `feature`, charged once per idempotency key.
#[derive(Debug, Clone)]
pub struct Consumption<'a> {
    /// SHA-256 of the presented API key.
    pub key_hash: &'a [u8],
    /// Feature code, e.g. `planner.create_plan`.
    pub feature: &'a str,
    /// Uses, 1..=[`MAX_QUANTITY`].
    pub quantity: i64,
    /// Client-chosen key; a retry with the same key and body is answered, not charged.
    pub idempotency_key: &'a str,
}

/// What a metering call did. Only `Charged` wrote anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeOutcome {
    /// Credits taken (0 on an unlimited plan); the balance after.
    Charged {
        workspace_id: Uuid,
        charged: i64,
        balance: Balance,
    },
    /// The same idempotency key and body were charged before: the first answer.
    Replayed {
        workspace_id: Uuid,
        charged: i64,
        balance: Balance,
    },
    /// Not enough credits: cost and available total.
    InsufficientCredits {
        workspace_id: Uuid,
        required: i64,
        available: i64,
    },
    /// Missing, unknown or revoked API key.
    UnknownKey,
    /// No such feature.
    UnknownFeature,
    /// The workspace's plan does not include this feature.
    FeatureNotInPlan,
    /// The idempotency key was used with another feature or quantity.
    IdempotencyConflict,
}

/// Fingerprint of the request body an idempotency key is bound to.
pub fn request_hash(feature: &str, quantity: i64) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(feature.as_bytes());
    h.update([0]);
    h.update(quantity.to_be_bytes());
    h.finalize().to_vec()
}

/// Consumes credits in one round trip to PostgreSQL (the `consume_credits` function
/// in the initial migration): authenticate, replay, entitlement, conditional decrement
/// (plan credits first, then purchased), ledger entry and usage event, atomically.
pub async fn consume(db: &PgPool, c: &Consumption<'_>) -> anyhow::Result<ConsumeOutcome> {
    let (outcome, workspace_id, charged, plan, purchased, required, available): (
        String,
        Option<Uuid>,
        i64,
        i64,
        i64,
        i64,
        i64,
    ) = sqlx::query_as("select * from consume_credits($1, $2, $3, $4, $5)")
        .bind(c.key_hash)
        .bind(c.feature)
        .bind(c.quantity)
        .bind(c.idempotency_key)
        .bind(request_hash(c.feature, c.quantity))
        .fetch_one(db)
        .await?;
    let balance = Balance { plan, purchased };
    let ws =
        || workspace_id.ok_or_else(|| anyhow::anyhow!("consume_credits returned no workspace"));
    Ok(match outcome.as_str() {
        "ok" => ConsumeOutcome::Charged {
            workspace_id: ws()?,
            charged,
            balance,
        },
        "replay" => ConsumeOutcome::Replayed {
            workspace_id: ws()?,
            charged,
            balance,
        },
        "insufficient_credits" => ConsumeOutcome::InsufficientCredits {
            workspace_id: ws()?,
            required,
            available,
        },
        "unknown_key" => ConsumeOutcome::UnknownKey,
        "unknown_feature" => ConsumeOutcome::UnknownFeature,
        "feature_not_in_plan" => ConsumeOutcome::FeatureNotInPlan,
        "idempotency_conflict" => ConsumeOutcome::IdempotencyConflict,
        other => anyhow::bail!("consume_credits returned unknown outcome {other:?}"),
    })
}
