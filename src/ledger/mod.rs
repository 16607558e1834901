//! Credits ledger and metering. Owns tables `balances`, `ledger_entries`,
//! `usage_events`, `rate_limit_states` and the SQL functions `ledger_append` (the one
//! path every balance change takes) and `consume_credits` (a metering call in one round
//! trip). SQL lives in [`db`]; this module holds the types and the operations built on
//! [`db::append`].
//!
//! Invariants (DESIGN.md "Credits"), enforced by the database itself: both credit
//! buckets and the debt stay ≥ 0 (CHECK constraints); the ledger is append-only
//! (triggers refuse update, delete and truncate); every entry continues its workspace's
//! ledger, and at commit a balance row equals its newest entry (deferred constraint
//! triggers), so `plan_credits = Σ plan_delta`, `purchased_credits = Σ purchased_delta`
//! and `debt = Σ debt_delta` always hold ([`db::check_balance`] verifies it).
//!
//! Debt: a refund or dispute reverses a top-up's credits; what was already spent
//! cannot come out of a bucket, so it becomes debt. Debt blocks consumption (402
//! `credits_in_debt`) until purchased credits settle it: every purchased grant pays
//! debt first ([`grant_purchased`]).

pub mod db;

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::ids::WorkspaceId;

/// Why a ledger entry exists (Postgres enum `ledger_entry_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type, Serialize)]
#[sqlx(type_name = "ledger_entry_kind", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum LedgerEntryKind {
    /// A plan's allowance: a period's reset or a pro-rata upgrade.
    PlanAllowance,
    /// Credits bought through Checkout.
    TopUp,
    /// A metering API call.
    Usage,
    /// A staff correction with a reason (and the demo seed's welcome credits).
    Adjustment,
    /// A refunded top-up's credits taken back.
    Refund,
    /// A disputed top-up's credits taken back.
    Dispute,
    /// A dispute the business won: the credits it took back are restored.
    DisputeWon,
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
            Self::Dispute => "Dispute",
            Self::DisputeWon => "Dispute won",
        }
    }

    /// CSS class of the kind's badge.
    pub fn css_class(self) -> &'static str {
        match self {
            Self::PlanAllowance => "plan-allowance",
            Self::TopUp => "top-up",
            Self::Usage => "usage",
            Self::Adjustment => "adjustment",
            Self::Refund | Self::Dispute => "refund",
            Self::DisputeWon => "top-up",
        }
    }
}

/// A workspace's credits: two buckets and the debt (all ≥ 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, sqlx::FromRow)]
pub struct Balance {
    /// Monthly allowance left (reset each period, no rollover).
    #[sqlx(rename = "plan_credits")]
    pub plan: i64,
    /// Purchased credits left (never expire).
    #[sqlx(rename = "purchased_credits")]
    pub purchased: i64,
    /// Credits owed after a refund or dispute of credits already spent; while above
    /// zero, consumption is refused.
    pub debt: i64,
}

impl Balance {
    /// Plan plus purchased credits.
    pub fn total(&self) -> i64 {
        self.plan + self.purchased
    }

    /// What the workspace has net of its debt (negative while it owes more than it holds).
    pub fn net(&self) -> i64 {
        self.plan + self.purchased - self.debt
    }
}

/// One line of a credit statement (a row of `ledger_entries`).
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
    /// Change of the debt (positive: more owed).
    pub debt_delta: i64,
    /// Plan credits right after this entry.
    pub plan_balance_after: i64,
    /// Purchased credits right after this entry.
    pub purchased_balance_after: i64,
    /// Debt right after this entry.
    pub debt_after: i64,
    /// Statement text.
    pub description: String,
    /// When it was written.
    pub created_at: OffsetDateTime,
}

impl LedgerEntry {
    /// Net change: credits gained minus debt taken on.
    pub fn amount(&self) -> i64 {
        self.plan_delta + self.purchased_delta - self.debt_delta
    }

    /// Net balance right after this entry: the running balance (negative in debt).
    pub fn balance_after(&self) -> i64 {
        self.plan_balance_after + self.purchased_balance_after - self.debt_after
    }
}

/// A change to append ([`db::append`]); deltas may be negative.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    /// Whose balance changes.
    pub workspace_id: WorkspaceId,
    /// Why.
    pub kind: LedgerEntryKind,
    /// Change of plan credits.
    pub plan_delta: i64,
    /// Change of purchased credits.
    pub purchased_delta: i64,
    /// Change of the debt.
    pub debt_delta: i64,
    /// Shown on the statement.
    pub description: &'a str,
    /// Idempotency: an entry with a reference is written once per workspace and kind
    /// (a checkout session, an invoice, `signup`); `None` for usage.
    pub reference: Option<&'a str>,
    /// Backdating for the demo seed; `None` = now.
    pub created_at: Option<OffsetDateTime>,
}

impl<'a> NewEntry<'a> {
    /// An entry of `kind` with all deltas zero, written now.
    pub fn new(
        workspace_id: WorkspaceId,
        kind: LedgerEntryKind,
        description: &'a str,
        reference: Option<&'a str>,
    ) -> Self {
        Self {
            workspace_id,
            kind,
            plan_delta: 0,
            purchased_delta: 0,
            debt_delta: 0,
            description,
            reference,
            created_at: None,
        }
    }
}

/// Adds `credits` (≥ 0) to the plan bucket, once per reference. `None` when the
/// reference was recorded before (nothing changed).
pub async fn grant_plan_credits(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    credits: i64,
    description: &str,
    reference: &str,
) -> anyhow::Result<Option<LedgerEntry>> {
    anyhow::ensure!(credits >= 0, "a grant cannot be negative");
    let mut entry = NewEntry::new(
        workspace_id,
        LedgerEntryKind::PlanAllowance,
        description,
        Some(reference),
    );
    entry.plan_delta = credits;
    db::append(conn, &entry).await
}

/// Adds `credits` (≥ 0) of purchased credits, settling debt first (a top-up after a
/// refund pays what is owed, the rest is usable), once per `(kind, reference)`.
/// `None` when already recorded.
pub async fn grant_purchased(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    kind: LedgerEntryKind,
    credits: i64,
    description: &str,
    reference: &str,
) -> anyhow::Result<Option<LedgerEntry>> {
    anyhow::ensure!(credits >= 0, "a grant cannot be negative");
    let balance = db::lock_balance(conn, workspace_id).await?;
    let settles = credits.min(balance.debt);
    let mut entry = NewEntry::new(workspace_id, kind, description, Some(reference));
    entry.purchased_delta = credits - settles;
    entry.debt_delta = -settles;
    db::append(conn, &entry).await
}

/// Takes back `credits` (≥ 0) of purchased credits (a refund or dispute): what the
/// purchased bucket holds is removed, the rest becomes debt. Once per
/// `(kind, reference)`; `None` when already recorded.
pub async fn reverse_purchased(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    kind: LedgerEntryKind,
    credits: i64,
    description: &str,
    reference: &str,
) -> anyhow::Result<Option<LedgerEntry>> {
    anyhow::ensure!(credits >= 0, "a reversal cannot be negative");
    let balance = db::lock_balance(conn, workspace_id).await?;
    let taken = credits.min(balance.purchased);
    let mut entry = NewEntry::new(workspace_id, kind, description, Some(reference));
    entry.purchased_delta = -taken;
    entry.debt_delta = credits - taken;
    db::append(conn, &entry).await
}

/// Sets plan credits to `allowance` (a new period: no rollover), writing the
/// difference as one `plan_allowance` entry, once per reference. Purchased credits and
/// debt are untouched. `None` when already recorded.
pub async fn reset_plan_credits(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    allowance: i64,
    description: &str,
    reference: &str,
) -> anyhow::Result<Option<LedgerEntry>> {
    anyhow::ensure!(allowance >= 0, "an allowance cannot be negative");
    let balance = db::lock_balance(conn, workspace_id).await?;
    let mut entry = NewEntry::new(
        workspace_id,
        LedgerEntryKind::PlanAllowance,
        description,
        Some(reference),
    );
    entry.plan_delta = allowance - balance.plan;
    db::append(conn, &entry).await
}

/// Lowers plan credits to at most `cap` (never raises them), once per reference.
pub async fn cap_plan_credits(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    cap: i64,
    description: &str,
    reference: &str,
) -> anyhow::Result<Option<LedgerEntry>> {
    let balance = db::lock_balance(conn, workspace_id).await?;
    let mut entry = NewEntry::new(
        workspace_id,
        LedgerEntryKind::PlanAllowance,
        description,
        Some(reference),
    );
    entry.plan_delta = cap.max(0).min(balance.plan) - balance.plan;
    db::append(conn, &entry).await
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
    /// The quality asked for: the feature's cost times its multiplier.
    pub quality: Quality,
}

/// Where a workspace stands against its plan's rate limit after a call (for the
/// `RateLimit-*` response headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitState {
    /// Calls per minute the plan allows (also the burst).
    pub limit: i32,
    /// Calls that may be made right now.
    pub remaining: i32,
    /// Milliseconds until the full allowance is available again.
    pub reset_ms: i64,
}

/// What a metering call did. Only `Charged` wrote a ledger entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeOutcome {
    /// Credits taken (0 on an unlimited plan); the balance after.
    Charged {
        /// The key's workspace.
        workspace_id: WorkspaceId,
        /// Credits taken.
        charged: i64,
        /// Balance after the call.
        balance: Balance,
        /// The plan's rate limit, `None` if unlimited.
        rate: Option<RateLimitState>,
    },
    /// The same idempotency key and body were charged before: the first answer.
    Replayed {
        /// The key's workspace.
        workspace_id: WorkspaceId,
        /// Credits taken by the first call.
        charged: i64,
        /// Balance right after the first call.
        balance: Balance,
    },
    /// Not enough credits: cost and available total.
    InsufficientCredits {
        /// The key's workspace.
        workspace_id: WorkspaceId,
        /// What the call costs.
        required: i64,
        /// Plan plus purchased credits.
        available: i64,
        /// The plan's rate limit.
        rate: Option<RateLimitState>,
    },
    /// The workspace owes credits after a refund or dispute; nothing is consumed until
    /// a top-up settles the debt.
    InDebt {
        /// The key's workspace.
        workspace_id: WorkspaceId,
        /// Credits owed.
        debt: i64,
        /// The plan's rate limit.
        rate: Option<RateLimitState>,
    },
    /// Over the plan's rate limit; retry after `retry_after_ms`.
    RateLimited {
        /// The key's workspace.
        workspace_id: WorkspaceId,
        /// The limit state (remaining 0).
        rate: RateLimitState,
        /// Milliseconds until one more call is allowed.
        retry_after_ms: i64,
    },
    /// Missing, unknown or revoked API key.
    UnknownKey,
    /// Staff suspended the key's workspace: nothing is consumed until it is restored.
    WorkspaceSuspended {
        /// The key's workspace.
        workspace_id: WorkspaceId,
    },
    /// No such feature.
    UnknownFeature {
        /// The plan's rate limit.
        rate: Option<RateLimitState>,
    },
    /// The workspace's plan does not include this feature.
    FeatureNotInPlan {
        /// The plan's rate limit.
        rate: Option<RateLimitState>,
    },
    /// The idempotency key was used with another feature or quantity.
    IdempotencyConflict,
}

impl ConsumeOutcome {
    /// The rate-limit state to report in headers, if the call counted against one.
    pub fn rate(&self) -> Option<RateLimitState> {
        match self {
            Self::Charged { rate, .. }
            | Self::InsufficientCredits { rate, .. }
            | Self::InDebt { rate, .. }
            | Self::UnknownFeature { rate }
            | Self::FeatureNotInPlan { rate } => *rate,
            Self::RateLimited { rate, .. } => Some(*rate),
            Self::Replayed { .. }
            | Self::UnknownKey
            | Self::WorkspaceSuspended { .. }
            | Self::IdempotencyConflict => None,
        }
    }
}

/// Fingerprint of the request body an idempotency key is bound to: feature, quantity
/// and, when not standard, the quality (so hashes of standard calls are those recorded
/// before qualities existed).
pub fn request_hash(feature: &str, quantity: i64, quality: Quality) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(feature.as_bytes());
    h.update([0]);
    h.update(quantity.to_be_bytes());
    if quality != Quality::Standard {
        h.update([0]);
        h.update(quality.as_str().as_bytes());
    }
    h.finalize().to_vec()
}

/// The quality a metering call is served at, and what it multiplies the feature's cost
/// by (DESIGN.md "Credits": standard 1, pro 2). JSON: `"standard"`, `"pro"`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    /// The feature's cost as listed.
    #[default]
    Standard,
    /// Twice the feature's cost.
    Pro,
}

impl Quality {
    /// Every quality, cheapest first.
    pub const ALL: [Quality; 2] = [Quality::Standard, Quality::Pro];

    /// The factor on the feature's credit cost.
    pub fn multiplier(self) -> i64 {
        match self {
            Quality::Standard => 1,
            Quality::Pro => 2,
        }
    }

    /// The name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Standard => "standard",
            Quality::Pro => "pro",
        }
    }
}
