//! SQL of top-ups, refunds and disputes: free functions on a connection; the caller
//! owns the transaction.

use sqlx::PgConnection;
use time::OffsetDateTime;

use super::TopUp;
use crate::ids::{TopUpId, UserId, WorkspaceId};
use crate::money::Money;
use crate::stripe::payments::{DisputeInfo, DisputeStatus};

/// A top-up to record at checkout.
#[derive(Debug, Clone)]
pub struct NewTopUp<'a> {
    /// Who buys.
    pub workspace_id: WorkspaceId,
    /// The Checkout session (`cs_...`).
    pub session_id: &'a str,
    /// The pack, or `None` for a custom amount.
    pub credit_pack_code: Option<&'a str>,
    /// Credits granted when paid.
    pub credits: i64,
    /// What it costs.
    pub price: &'a Money,
    /// The user who clicked "buy".
    pub created_by: Option<UserId>,
}

/// Records a top-up unless its session is recorded already.
pub async fn insert(conn: &mut PgConnection, t: &NewTopUp<'_>) -> anyhow::Result<()> {
    sqlx::query(
        "insert into top_ups (workspace_id, stripe_checkout_session_id, credit_pack_code, credits,
                amount_minor, currency, created_by)
         select $1, $2, $3, $4, $5, $6, $7
          where exists (select 1 from workspaces where workspace_id = $1)
         on conflict (stripe_checkout_session_id) do nothing",
    )
    .bind(t.workspace_id)
    .bind(t.session_id)
    .bind(t.credit_pack_code)
    .bind(t.credits)
    .bind(t.price.minor)
    .bind(&t.price.currency)
    .bind(t.created_by)
    .execute(conn)
    .await?;
    Ok(())
}

/// What the grant and reversal paths need of a locked top-up.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LockedTopUp {
    /// Primary key.
    pub top_up_id: TopUpId,
    /// Whose credits.
    pub workspace_id: WorkspaceId,
    /// Credits bought.
    pub credits: i64,
    /// Paid, minor units.
    pub amount_minor: i64,
    /// ISO 4217, lowercase.
    pub currency: String,
    /// The payment (once paid).
    pub stripe_payment_intent_id: Option<String>,
    /// Credits the ledger has taken back so far.
    pub credits_reversed: i64,
}

const LOCKED_COLUMNS: &str = "top_up_id, workspace_id, credits, amount_minor, currency, stripe_payment_intent_id, credits_reversed";

/// The top-up of a checkout session, locked for the transaction.
pub async fn lock_by_session(
    conn: &mut PgConnection,
    session_id: &str,
) -> anyhow::Result<Option<LockedTopUp>> {
    let sql = format!(
        "select {LOCKED_COLUMNS} from top_ups where stripe_checkout_session_id = $1 for update"
    );
    Ok(sqlx::query_as::<_, LockedTopUp>(&sql)
        .bind(session_id)
        .fetch_optional(conn)
        .await?)
}

/// Serialises, until the transaction ends, everything applied for one payment intent:
/// its top-up's grant and its refunds and disputes. Without it a refund applied while
/// the grant is uncommitted sees no paid top-up, the grant sees no refund, and the
/// refund is never reversed (both run under READ COMMITTED, each statement seeing what
/// was committed when it began, so after this lock each sees the other).
pub async fn lock_payment(conn: &mut PgConnection, payment_intent_id: &str) -> anyhow::Result<()> {
    sqlx::query("select pg_advisory_xact_lock(hashtextextended('payment:' || $1, 0))")
        .bind(payment_intent_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A paid top-up by id, locked for the transaction.
pub async fn lock_paid(
    conn: &mut PgConnection,
    id: TopUpId,
) -> anyhow::Result<Option<LockedTopUp>> {
    let sql = format!(
        "select {LOCKED_COLUMNS} from top_ups where top_up_id = $1 and status = 'paid' for update"
    );
    Ok(sqlx::query_as::<_, LockedTopUp>(&sql)
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// The paid top-up of a payment intent, if any.
pub async fn paid_by_payment_intent(
    conn: &mut PgConnection,
    payment_intent_id: &str,
) -> anyhow::Result<Option<TopUpId>> {
    Ok(sqlx::query_scalar(
        "select top_up_id from top_ups where stripe_payment_intent_id = $1 and status = 'paid'",
    )
    .bind(payment_intent_id)
    .fetch_optional(conn)
    .await?)
}

/// Marks a top-up paid (first time only sets `paid_at`) and records its payment intent.
pub async fn mark_paid(
    conn: &mut PgConnection,
    id: TopUpId,
    payment_intent_id: Option<&str>,
) -> anyhow::Result<()> {
    sqlx::query(
        "update top_ups set status = 'paid', paid_at = coalesce(paid_at, now()),
                stripe_payment_intent_id = coalesce(stripe_payment_intent_id, $2), updated_at = now()
          where top_up_id = $1",
    )
    .bind(id)
    .bind(payment_intent_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks an unpaid session's top-up expired (nothing to grant).
pub async fn mark_expired(conn: &mut PgConnection, session_id: &str) -> anyhow::Result<()> {
    sqlx::query(
        "update top_ups set status = 'expired', updated_at = now()
          where stripe_checkout_session_id = $1 and status = 'open'",
    )
    .bind(session_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Sessions of top-ups still open that were created before `before` (oldest first).
pub async fn open_before(
    conn: &mut PgConnection,
    before: OffsetDateTime,
    limit: i64,
) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "select stripe_checkout_session_id from top_ups
          where status = 'open' and created_at < $1 order by updated_at limit $2",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Puts an open top-up reconciliation left alone (a delayed payment still settling)
/// behind the others, so a backlog of those never hides newer abandoned ones.
pub async fn touch(conn: &mut PgConnection, session_id: &str) -> anyhow::Result<()> {
    sqlx::query("update top_ups set updated_at = now() where stripe_checkout_session_id = $1")
        .bind(session_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A workspace's top-up by checkout session id (scoped: another workspace's session
/// is `None`).
pub async fn find(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    session_id: &str,
) -> anyhow::Result<Option<TopUp>> {
    Ok(sqlx::query_as::<_, TopUp>(
        "select top_up_id, stripe_checkout_session_id, credits, amount_minor, currency, status,
                paid_at, credits_reversed
           from top_ups where workspace_id = $1 and stripe_checkout_session_id = $2",
    )
    .bind(workspace_id)
    .bind(session_id)
    .fetch_optional(conn)
    .await?)
}

/// The payment of a paid top-up named by checkout session or payment intent:
/// (payment intent, amount paid, amount refunded so far).
pub async fn payment_of(
    conn: &mut PgConnection,
    session_or_payment: &str,
) -> anyhow::Result<Option<(String, i64, i64)>> {
    Ok(sqlx::query_as(
        "select t.stripe_payment_intent_id, t.amount_minor, coalesce(r.amount_refunded_minor, 0)
           from top_ups t left join payment_refunds r using (stripe_payment_intent_id)
          where t.status = 'paid' and t.stripe_payment_intent_id is not null
            and (t.stripe_checkout_session_id = $1 or t.stripe_payment_intent_id = $1)",
    )
    .bind(session_or_payment)
    .fetch_optional(conn)
    .await?)
}

/// Records the refunded total Stripe reported for a payment (the largest wins).
pub async fn record_refund(
    conn: &mut PgConnection,
    payment_intent_id: &str,
    amount: i64,
    amount_refunded: i64,
    currency: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "insert into payment_refunds (stripe_payment_intent_id, amount_minor, amount_refunded_minor, currency)
         values ($1, $2, $3, $4)
         on conflict (stripe_payment_intent_id) do update set
                amount_refunded_minor = greatest(payment_refunds.amount_refunded_minor, excluded.amount_refunded_minor),
                updated_at = now()",
    )
    .bind(payment_intent_id)
    .bind(amount)
    .bind(amount_refunded)
    .bind(currency)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a dispute's state. A closed dispute (won, lost, warning closed, prevented)
/// never reopens: a late `created` or `updated` cannot undo a `closed`.
pub async fn record_dispute(
    conn: &mut PgConnection,
    payment_intent_id: &str,
    dispute: &DisputeInfo,
    status: DisputeStatus,
) -> anyhow::Result<()> {
    sqlx::query(
        "insert into disputes (stripe_dispute_id, stripe_payment_intent_id, amount_minor, currency, status)
         values ($1, $2, $3, $4, $5)
         on conflict (stripe_dispute_id) do update set
                status = case when disputes.status in ('won', 'lost', 'warning_closed', 'prevented')
                              then disputes.status else excluded.status end,
                amount_minor = excluded.amount_minor, updated_at = now()",
    )
    .bind(&dispute.id)
    .bind(payment_intent_id)
    .bind(dispute.amount)
    .bind(&dispute.currency)
    .bind(status)
    .execute(conn)
    .await?;
    Ok(())
}

/// What has left the business for a payment: (refunded, under an open or lost dispute),
/// minor units.
pub async fn withdrawn(
    conn: &mut PgConnection,
    payment_intent_id: &str,
) -> anyhow::Result<(i64, i64)> {
    let statuses = [
        DisputeStatus::NeedsResponse,
        DisputeStatus::UnderReview,
        DisputeStatus::Lost,
    ];
    Ok(sqlx::query_as(
        "select coalesce((select amount_refunded_minor from payment_refunds
                           where stripe_payment_intent_id = $1), 0),
                coalesce((select sum(amount_minor) from disputes
                           where stripe_payment_intent_id = $1 and status = any($2)), 0)::bigint",
    )
    .bind(payment_intent_id)
    .bind(&statuses[..])
    .fetch_one(conn)
    .await?)
}

/// Sets the credits the ledger has taken back from a top-up.
pub async fn set_credits_reversed(
    conn: &mut PgConnection,
    id: TopUpId,
    credits_reversed: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "update top_ups set credits_reversed = $2, updated_at = now() where top_up_id = $1",
    )
    .bind(id)
    .bind(credits_reversed)
    .execute(conn)
    .await?;
    Ok(())
}

/// When Stripe created event `event_id` (its `created`, Stripe's clock: the sandbox
/// clock in sandbox mode); the database's clock for an event not stored (a
/// reconciliation, a test).
pub async fn event_time(conn: &mut PgConnection, event_id: &str) -> anyhow::Result<OffsetDateTime> {
    Ok(sqlx::query_scalar(
        "select coalesce((select to_timestamp((payload->>'created')::double precision)
                            from stripe_events where stripe_event_id = $1), now())",
    )
    .bind(event_id)
    .fetch_one(conn)
    .await?)
}
