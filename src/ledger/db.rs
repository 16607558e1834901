//! SQL of the ledger: free functions on a connection; the caller owns the transaction.

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    Balance, ConsumeOutcome, Consumption, LedgerEntry, LedgerEntryKind, NewEntry, RateLimitState,
    request_hash,
};
use crate::ids::WorkspaceId;

const ENTRY_COLUMNS: &str = "ledger_entry_id, kind, plan_delta, purchased_delta, debt_delta, \
     plan_balance_after, purchased_balance_after, debt_after, description, created_at";

/// Appends one entry through `ledger_append` (the single path of every balance change)
/// and applies its deltas. `None` when an entry with the same workspace, kind and
/// reference exists (nothing changed). Fails, changing nothing, when a figure would go
/// below zero.
pub async fn append(
    conn: &mut PgConnection,
    entry: &NewEntry<'_>,
) -> anyhow::Result<Option<LedgerEntry>> {
    let sql = format!("select {ENTRY_COLUMNS} from ledger_append($1, $2, $3, $4, $5, $6, $7, $8)");
    Ok(sqlx::query_as::<_, LedgerEntry>(&sql)
        .bind(entry.workspace_id)
        .bind(entry.kind)
        .bind(entry.plan_delta)
        .bind(entry.purchased_delta)
        .bind(entry.debt_delta)
        .bind(entry.description)
        .bind(entry.reference)
        .bind(entry.created_at)
        .fetch_optional(conn)
        .await?)
}

/// Creates a new workspace's balance row (all zero).
pub async fn create_balance(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
) -> anyhow::Result<()> {
    sqlx::query("insert into balances (workspace_id) values ($1)")
        .bind(workspace_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Plan credits consumed by usage since `since` (≥ 0).
pub async fn plan_credits_used_since(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    since: OffsetDateTime,
) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "select coalesce(-sum(plan_delta), 0)::bigint from ledger_entries
          where workspace_id = $1 and kind = 'usage' and created_at >= $2",
    )
    .bind(workspace_id)
    .bind(since)
    .fetch_one(conn)
    .await?)
}

/// The balance, locked until the transaction ends (serialises changes of one workspace).
pub async fn lock_balance(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
) -> anyhow::Result<Balance> {
    Ok(sqlx::query_as::<_, Balance>(
        "select plan_credits, purchased_credits, debt from balances where workspace_id = $1 for update",
    )
    .bind(workspace_id)
    .fetch_one(conn)
    .await?)
}

/// The current balance of a workspace.
pub async fn balance(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
) -> anyhow::Result<Balance> {
    Ok(sqlx::query_as::<_, Balance>(
        "select plan_credits, purchased_credits, debt from balances where workspace_id = $1",
    )
    .bind(workspace_id)
    .fetch_one(conn)
    .await?)
}

/// `balance == Σ ledger` for one workspace, figure by figure. Returns the stored
/// balance, or the stored balance and the ledger sums when they differ.
pub async fn check_balance(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
) -> anyhow::Result<Result<Balance, (Balance, Balance)>> {
    let row: (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "select b.plan_credits, b.purchased_credits, b.debt,
                coalesce(sum(e.plan_delta), 0)::bigint, coalesce(sum(e.purchased_delta), 0)::bigint,
                coalesce(sum(e.debt_delta), 0)::bigint
           from balances b left join ledger_entries e using (workspace_id)
          where b.workspace_id = $1
          group by b.plan_credits, b.purchased_credits, b.debt",
    )
    .bind(workspace_id)
    .fetch_one(conn)
    .await?;
    let stored = Balance {
        plan: row.0,
        purchased: row.1,
        debt: row.2,
    };
    let summed = Balance {
        plan: row.3,
        purchased: row.4,
        debt: row.5,
    };
    Ok(if stored == summed {
        Ok(stored)
    } else {
        Err((stored, summed))
    })
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
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
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
        "select {ENTRY_COLUMNS} from ledger_entries
          where workspace_id = $1 and {filter}
          order by ledger_entry_id {order}
          limit $3"
    );
    Ok(sqlx::query_as::<_, LedgerEntry>(&sql)
        .bind(workspace_id)
        .bind(cursor)
        .bind(limit)
        .fetch_all(conn)
        .await?)
}

/// Number of ledger entries of a workspace (statement pagination).
pub async fn count_entries(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("select count(*) from ledger_entries where workspace_id = $1")
            .bind(workspace_id)
            .fetch_one(conn)
            .await?,
    )
}

/// `consume_credits`' outcome column (Postgres enum `consume_outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "consume_outcome", rename_all = "snake_case")]
enum Outcome {
    Charged,
    Replayed,
    InsufficientCredits,
    InDebt,
    RateLimited,
    UnknownKey,
    UnknownFeature,
    FeatureNotInPlan,
    IdempotencyConflict,
    WorkspaceSuspended,
}

#[derive(sqlx::FromRow)]
struct ConsumeRow {
    outcome: Outcome,
    workspace_id: Option<WorkspaceId>,
    charged: i64,
    plan_credits: i64,
    purchased_credits: i64,
    debt: i64,
    required: i64,
    available: i64,
    rate_limit: Option<i32>,
    rate_remaining: Option<i32>,
    rate_reset_ms: Option<i64>,
    retry_after_ms: Option<i64>,
}

impl ConsumeRow {
    fn into_domain(self) -> anyhow::Result<ConsumeOutcome> {
        let ws = || {
            self.workspace_id
                .ok_or_else(|| anyhow::anyhow!("consume_credits returned no workspace"))
        };
        let rate = self.rate_limit.map(|limit| RateLimitState {
            limit,
            remaining: self.rate_remaining.unwrap_or(0),
            reset_ms: self.rate_reset_ms.unwrap_or(0),
        });
        let balance = Balance {
            plan: self.plan_credits,
            purchased: self.purchased_credits,
            debt: self.debt,
        };
        Ok(match self.outcome {
            Outcome::Charged => ConsumeOutcome::Charged {
                workspace_id: ws()?,
                charged: self.charged,
                balance,
                rate,
            },
            Outcome::Replayed => ConsumeOutcome::Replayed {
                workspace_id: ws()?,
                charged: self.charged,
                balance,
            },
            Outcome::InsufficientCredits => ConsumeOutcome::InsufficientCredits {
                workspace_id: ws()?,
                required: self.required,
                available: self.available,
                rate,
            },
            Outcome::InDebt => ConsumeOutcome::InDebt {
                workspace_id: ws()?,
                debt: self.debt,
                rate,
            },
            Outcome::RateLimited => ConsumeOutcome::RateLimited {
                workspace_id: ws()?,
                rate: rate.ok_or_else(|| anyhow::anyhow!("rate_limited without a limit"))?,
                retry_after_ms: self.retry_after_ms.unwrap_or(1000),
            },
            Outcome::UnknownKey => ConsumeOutcome::UnknownKey,
            Outcome::WorkspaceSuspended => ConsumeOutcome::WorkspaceSuspended {
                workspace_id: ws()?,
            },
            Outcome::UnknownFeature => ConsumeOutcome::UnknownFeature { rate },
            Outcome::FeatureNotInPlan => ConsumeOutcome::FeatureNotInPlan { rate },
            Outcome::IdempotencyConflict => ConsumeOutcome::IdempotencyConflict,
        })
    }
}

/// Consumes credits in one round trip to PostgreSQL (`consume_credits`): authenticate,
/// replay, rate limit, entitlement, debt, conditional decrement (plan credits first,
/// then purchased) through `ledger_append`, and the usage event, atomically.
pub async fn consume(
    conn: &mut PgConnection,
    c: &Consumption<'_>,
) -> anyhow::Result<ConsumeOutcome> {
    sqlx::query_as::<_, ConsumeRow>("select * from consume_credits($1, $2, $3, $4, $5, $6)")
        .bind(c.key_hash)
        .bind(c.feature)
        .bind(c.quantity)
        .bind(c.idempotency_key)
        .bind(request_hash(c.feature, c.quantity, c.quality))
        .bind(c.quality.as_str())
        .fetch_one(conn)
        .await?
        .into_domain()
}

/// Records a usage event written in the past, with its ledger entry, as
/// `consume_credits` would have (the demo seed's history). Takes purchased credits.
pub async fn record_past_usage(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    feature: &str,
    quantity: i64,
    credits: i64,
    idempotency_key: &str,
    at: OffsetDateTime,
) -> anyhow::Result<()> {
    let event_id = Uuid::new_v4();
    let reference = event_id.to_string();
    // Named as consume_credits names it: the feature's name, not its code.
    let name: String =
        sqlx::query_scalar("select description from features where feature_code = $1")
            .bind(feature)
            .fetch_one(&mut *conn)
            .await?;
    let description = format!("{name} × {quantity}");
    let mut entry = NewEntry::new(
        workspace_id,
        LedgerEntryKind::Usage,
        &description,
        Some(&reference),
    );
    entry.purchased_delta = -credits;
    entry.created_at = Some(at);
    let entry = append(conn, &entry)
        .await?
        .ok_or_else(|| anyhow::anyhow!("usage entry not written"))?;
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
    .bind(idempotency_key)
    .bind(request_hash(feature, quantity, super::Quality::Standard))
    .bind(entry.plan_balance_after)
    .bind(entry.purchased_balance_after)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}
