//! What staff do to billfold's objects (issue 8; DESIGN.md "Admin resources"): credit
//! adjustments (with four-eyes approval above a threshold), workspace suspension and
//! complimentary plans, staff flags and user suspension, early approval and voiding of
//! reseller commissions.
//!
//! Every operation runs in the caller's transaction and records its audit event there
//! ([`crate::audit`]): the change and its record commit together or not at all. Owns
//! table `credit_adjustment_requests`; the web layer is `crate::web::admin`.

pub mod overview;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::audit::{self, NewAuditEvent};
use crate::ids::{CommissionId, PlanCode, ResellerId, UserId, WorkspaceId};
use crate::ledger::{self, LedgerEntry, LedgerEntryKind, NewEntry};
use crate::resellers::{ResellerRole, ResellerStatus};

/// The staff member acting, as the audit log records them.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// Their user id.
    pub user_id: UserId,
    /// Their email.
    pub email: &'a str,
    /// The request's `x-request-id`.
    pub request_id: Option<&'a str>,
    /// Where they connected from.
    pub client_address: Option<IpAddr>,
}

impl Actor<'_> {
    /// Records `action` on `subject` in the caller's transaction.
    pub async fn record(
        &self,
        conn: &mut PgConnection,
        action: &str,
        subject: (&str, String),
        before: Option<Value>,
        after: Option<Value>,
        reason: Option<&str>,
    ) -> anyhow::Result<()> {
        audit::record(
            conn,
            &NewAuditEvent {
                actor_user_id: Some(self.user_id),
                actor_email: Some(self.email),
                action,
                subject: Some(subject),
                before,
                after,
                reason,
                request_id: self.request_id,
                client_address: self.client_address,
            },
        )
        .await?;
        Ok(())
    }
}

/// Which credit bucket an adjustment changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    /// The plan's allowance (reset each period).
    Plan,
    /// Purchased credits (never expire); a positive adjustment settles debt first.
    Purchased,
}

impl Bucket {
    /// Its name in `credit_adjustment_requests.bucket`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plan => "plan",
            Self::Purchased => "purchased",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "plan" => Some(Self::Plan),
            "purchased" => Some(Self::Purchased),
            _ => None,
        }
    }
}

/// Largest adjustment one request may make, either sign (credits).
pub const MAX_ADJUSTMENT: i64 = 100_000_000;

/// A credit adjustment a staff member asks for.
#[derive(Debug, Clone)]
pub struct Adjustment<'a> {
    /// Whose credits.
    pub workspace_id: WorkspaceId,
    /// Which bucket.
    pub bucket: Bucket,
    /// Credits to add (positive) or remove (negative), never 0.
    pub credits: i64,
    /// Why (3 to 1,000 characters): shown to the customer on their statement.
    pub reason: &'a str,
    /// The form's one-time token: a resubmitted form applies once.
    pub nonce: &'a str,
}

/// Why an adjustment (or its approval) was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum AdjustError {
    /// Zero, or more than [`MAX_ADJUSTMENT`] either way.
    #[error("enter a whole number of credits other than 0, at most {MAX_ADJUSTMENT} either way")]
    InvalidAmount,
    /// The reason is missing or too long.
    #[error("give a reason of 3 to 1,000 characters; the customer sees it on their statement")]
    InvalidReason,
    /// Removing more than the bucket holds.
    #[error("the workspace has only {available} {bucket} credits; remove at most that")]
    WouldGoNegative {
        /// The bucket's name.
        bucket: &'static str,
        /// What it holds.
        available: i64,
    },
    /// No such workspace.
    #[error("no such workspace")]
    NotFound,
    /// Database failure.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// What [`adjust_credits`] did.
#[derive(Debug, Clone)]
pub enum Adjusted {
    /// The ledger entry was written.
    Applied(Box<LedgerEntry>),
    /// This form was applied before; nothing changed.
    AlreadyApplied,
    /// Above the approval threshold: a request waits for another staff member.
    AwaitingApproval {
        /// The request's id.
        request_id: i64,
    },
}

fn check_adjustment(credits: i64, reason: &str) -> Result<(), AdjustError> {
    if credits == 0 || credits.abs() > MAX_ADJUSTMENT {
        return Err(AdjustError::InvalidAmount);
    }
    let len = reason.trim().chars().count();
    if !(3..=1_000).contains(&len) {
        return Err(AdjustError::InvalidReason);
    }
    Ok(())
}

/// Adjusts a workspace's credits through the ledger (kind `adjustment`, the reason as
/// the statement text) and records `workspace.credits_adjusted` with the balance
/// before and after, in the caller's transaction. Above `approval_above` credits
/// (either sign) nothing is applied: a pending request is stored and audited
/// (`credit_adjustment.requested`) for another staff member to decide
/// ([`decide_adjustment`]).
pub async fn adjust_credits(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    adjustment: &Adjustment<'_>,
    approval_above: i64,
) -> Result<Adjusted, AdjustError> {
    check_adjustment(adjustment.credits, adjustment.reason)?;
    let reason = adjustment.reason.trim();
    if adjustment.credits.abs() > approval_above {
        // A removal the bucket cannot cover is refused now, not after the approval.
        if adjustment.credits < 0 {
            let balance = ledger::db::balance(conn, adjustment.workspace_id)
                .await
                .map_err(not_found_if_missing)?;
            let (bucket, available) = match adjustment.bucket {
                Bucket::Plan => ("plan", balance.plan),
                Bucket::Purchased => ("purchased", balance.purchased),
            };
            if available < -adjustment.credits {
                return Err(AdjustError::WouldGoNegative { bucket, available });
            }
        }
        // One request per form: a resubmitted form (double click, back button) must
        // not queue the same adjustment twice for approval.
        let request_id: Option<i64> = sqlx::query_scalar(
            "insert into credit_adjustment_requests
                    (workspace_id, bucket, credits, reason, requested_by, nonce)
             select $1, $2, $3, $4, $5, $6 where exists (select 1 from workspaces where workspace_id = $1)
             on conflict (workspace_id, nonce) do nothing
             returning adjustment_request_id",
        )
        .bind(adjustment.workspace_id)
        .bind(adjustment.bucket.as_str())
        .bind(adjustment.credits)
        .bind(reason)
        .bind(actor.user_id)
        .bind(adjustment.nonce)
        .fetch_optional(&mut *conn)
        .await
        .map_err(anyhow::Error::from)?;
        let Some(request_id) = request_id else {
            return Ok(Adjusted::AlreadyApplied);
        };
        actor
            .record(
                conn,
                "credit_adjustment.requested",
                ("workspace", adjustment.workspace_id.to_string()),
                None,
                Some(json!({
                    "adjustment_request_id": request_id,
                    "bucket": adjustment.bucket,
                    "credits": adjustment.credits,
                })),
                Some(reason),
            )
            .await?;
        return Ok(Adjusted::AwaitingApproval { request_id });
    }
    let reference = format!("staff:{}", adjustment.nonce);
    match apply(
        conn,
        adjustment.workspace_id,
        adjustment.bucket,
        adjustment.credits,
        reason,
        &reference,
    )
    .await?
    {
        None => Ok(Adjusted::AlreadyApplied),
        Some((before, entry)) => {
            actor
                .record(
                    conn,
                    "workspace.credits_adjusted",
                    ("workspace", adjustment.workspace_id.to_string()),
                    Some(before),
                    Some(balance_json(&entry)),
                    Some(reason),
                )
                .await?;
            Ok(Adjusted::Applied(Box::new(entry)))
        }
    }
}

fn balance_json(entry: &LedgerEntry) -> Value {
    json!({
        "plan_credits": entry.plan_balance_after,
        "purchased_credits": entry.purchased_balance_after,
        "debt": entry.debt_after,
        "ledger_entry_id": entry.ledger_entry_id,
    })
}

/// `NotFound` for a workspace without a balance row (no such workspace), else the
/// database's error.
fn not_found_if_missing(e: anyhow::Error) -> AdjustError {
    match e.downcast_ref::<sqlx::Error>() {
        Some(sqlx::Error::RowNotFound) => AdjustError::NotFound,
        _ => AdjustError::Unexpected(e),
    }
}

/// Writes the adjustment's ledger entry under the balance lock. `None` when this
/// reference was written before.
async fn apply(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    bucket: Bucket,
    credits: i64,
    reason: &str,
    reference: &str,
) -> Result<Option<(Value, LedgerEntry)>, AdjustError> {
    let balance = ledger::db::lock_balance(conn, workspace_id)
        .await
        .map_err(not_found_if_missing)?;
    let before = json!({
        "plan_credits": balance.plan,
        "purchased_credits": balance.purchased,
        "debt": balance.debt,
    });
    let description = format!("Adjustment: {reason}");
    if bucket == Bucket::Purchased && credits > 0 {
        // Like a top-up: debt left by a refund is settled first.
        return Ok(ledger::grant_purchased(
            conn,
            workspace_id,
            LedgerEntryKind::Adjustment,
            credits,
            &description,
            reference,
        )
        .await?
        .map(|written| (before, written)));
    }
    let mut entry = NewEntry::new(
        workspace_id,
        LedgerEntryKind::Adjustment,
        &description,
        Some(reference),
    );
    match (bucket, credits > 0) {
        (Bucket::Plan, true) => entry.plan_delta = credits,
        (Bucket::Plan, false) => {
            if balance.plan < -credits {
                return Err(AdjustError::WouldGoNegative {
                    bucket: "plan",
                    available: balance.plan,
                });
            }
            entry.plan_delta = credits;
        }
        (Bucket::Purchased, _) => {
            if balance.purchased < -credits {
                return Err(AdjustError::WouldGoNegative {
                    bucket: "purchased",
                    available: balance.purchased,
                });
            }
            entry.purchased_delta = credits;
        }
    }
    Ok(ledger::db::append(conn, &entry)
        .await?
        .map(|written| (before, written)))
}

/// A credit adjustment waiting for (or given) a second staff member's decision.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AdjustmentRequest {
    /// Its id.
    pub adjustment_request_id: i64,
    /// Whose credits.
    pub workspace_id: WorkspaceId,
    /// The workspace's name.
    pub workspace_name: String,
    /// `plan` or `purchased`.
    pub bucket: String,
    /// Credits to add or remove.
    pub credits: i64,
    /// Why.
    pub reason: String,
    /// Who asked.
    pub requested_by: UserId,
    /// Their email.
    pub requested_by_email: String,
    /// When.
    pub requested_at: OffsetDateTime,
}

/// Pending adjustment requests, oldest first.
pub async fn pending_adjustments(
    conn: &mut PgConnection,
) -> anyhow::Result<Vec<AdjustmentRequest>> {
    Ok(sqlx::query_as::<_, AdjustmentRequest>(
        "select r.adjustment_request_id, r.workspace_id, w.name as workspace_name, r.bucket,
                r.credits, r.reason, r.requested_by, u.email as requested_by_email, r.requested_at
           from credit_adjustment_requests r
           join workspaces w using (workspace_id)
           join users u on u.user_id = r.requested_by
          where r.status = 'pending'
          order by r.requested_at, r.adjustment_request_id",
    )
    .fetch_all(conn)
    .await?)
}

/// Why a decision on an adjustment request was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// No such request, or it was decided already.
    #[error("this request was decided already or does not exist")]
    NotPending,
    /// The staff member who asked cannot decide (four-eyes).
    #[error("another staff member must decide on your own request")]
    OwnRequest,
    /// Applying it failed (the bucket no longer holds enough, say).
    #[error(transparent)]
    Adjust(#[from] AdjustError),
}

impl From<anyhow::Error> for DecideError {
    fn from(e: anyhow::Error) -> Self {
        Self::Adjust(AdjustError::Unexpected(e))
    }
}

/// Approves (applies, through the ledger) or rejects a pending adjustment request, as
/// a staff member other than the one who asked, recording
/// `credit_adjustment.approved` / `credit_adjustment.rejected` (and on approval
/// `workspace.credits_adjusted`). The request row is locked: two approvals race to one.
pub async fn decide_adjustment(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    request_id: i64,
    approve: bool,
) -> Result<Option<LedgerEntry>, DecideError> {
    #[derive(sqlx::FromRow)]
    struct Pending {
        workspace_id: WorkspaceId,
        bucket: String,
        credits: i64,
        reason: String,
        requested_by: UserId,
    }
    let pending = sqlx::query_as::<_, Pending>(
        "select workspace_id, bucket, credits, reason, requested_by
           from credit_adjustment_requests
          where adjustment_request_id = $1 and status = 'pending' for update",
    )
    .bind(request_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(anyhow::Error::from)?
    .ok_or(DecideError::NotPending)?;
    if pending.requested_by == actor.user_id {
        return Err(DecideError::OwnRequest);
    }
    let subject = ("workspace", pending.workspace_id.to_string());
    let details = json!({
        "adjustment_request_id": request_id,
        "bucket": pending.bucket,
        "credits": pending.credits,
        "requested_by": pending.requested_by,
    });
    if !approve {
        sqlx::query(
            "update credit_adjustment_requests
                set status = 'rejected', decided_by = $2, decided_at = now()
              where adjustment_request_id = $1",
        )
        .bind(request_id)
        .bind(actor.user_id)
        .execute(&mut *conn)
        .await
        .map_err(anyhow::Error::from)?;
        actor
            .record(
                conn,
                "credit_adjustment.rejected",
                subject,
                None,
                Some(details),
                Some(&pending.reason),
            )
            .await?;
        return Ok(None);
    }
    let bucket = Bucket::parse(&pending.bucket)
        .ok_or_else(|| anyhow::anyhow!("unknown bucket {}", pending.bucket))?;
    let (before, entry) = apply(
        conn,
        pending.workspace_id,
        bucket,
        pending.credits,
        &pending.reason,
        &format!("adjustment_request:{request_id}"),
    )
    .await?
    .ok_or(DecideError::NotPending)?;
    sqlx::query(
        "update credit_adjustment_requests
            set status = 'approved', decided_by = $2, decided_at = now(), ledger_entry_id = $3
          where adjustment_request_id = $1",
    )
    .bind(request_id)
    .bind(actor.user_id)
    .bind(entry.ledger_entry_id)
    .execute(&mut *conn)
    .await
    .map_err(anyhow::Error::from)?;
    actor
        .record(
            conn,
            "credit_adjustment.approved",
            subject.clone(),
            None,
            Some(details),
            Some(&pending.reason),
        )
        .await?;
    actor
        .record(
            conn,
            "workspace.credits_adjusted",
            subject,
            Some(before),
            Some(balance_json(&entry)),
            Some(&pending.reason),
        )
        .await?;
    Ok(Some(entry))
}

/// Why a staff action on a workspace or user was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The reason is missing or too long.
    #[error("give a reason of 3 to 1,000 characters")]
    InvalidReason,
    /// No such subject.
    #[error("not found")]
    NotFound,
    /// The subject is already in the asked state.
    #[error("{0}")]
    Unchanged(&'static str),
    /// Something about the request makes no sense (an unknown plan, say).
    #[error("{0}")]
    Invalid(String),
    /// Database failure.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ActionError {
    fn from(e: sqlx::Error) -> Self {
        Self::Unexpected(e.into())
    }
}

fn check_reason(reason: &str) -> Result<&str, ActionError> {
    let reason = reason.trim();
    if (3..=1_000).contains(&reason.chars().count()) {
        Ok(reason)
    } else {
        Err(ActionError::InvalidReason)
    }
}

/// Suspends a workspace: its API keys answer 403 `workspace_suspended` until it is
/// restored; nothing else changes. Audited as `workspace.suspended`.
pub async fn suspend_workspace(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    workspace_id: WorkspaceId,
    reason: &str,
) -> Result<(), ActionError> {
    let reason = check_reason(reason)?;
    let done = sqlx::query(
        "update workspaces set suspended_at = now(), suspended_reason = $2
          where workspace_id = $1 and suspended_at is null",
    )
    .bind(workspace_id)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(workspace_state(conn, workspace_id, "already suspended").await);
    }
    actor
        .record(
            conn,
            "workspace.suspended",
            ("workspace", workspace_id.to_string()),
            Some(json!({"suspended": false})),
            Some(json!({"suspended": true})),
            Some(reason),
        )
        .await?;
    Ok(())
}

/// Lifts a workspace's suspension. Audited as `workspace.restored`.
pub async fn restore_workspace(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    workspace_id: WorkspaceId,
    reason: &str,
) -> Result<(), ActionError> {
    let reason = check_reason(reason)?;
    let done = sqlx::query(
        "update workspaces set suspended_at = null, suspended_reason = null
          where workspace_id = $1 and suspended_at is not null",
    )
    .bind(workspace_id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(workspace_state(conn, workspace_id, "not suspended").await);
    }
    actor
        .record(
            conn,
            "workspace.restored",
            ("workspace", workspace_id.to_string()),
            Some(json!({"suspended": true})),
            Some(json!({"suspended": false})),
            Some(reason),
        )
        .await?;
    Ok(())
}

async fn workspace_state(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    unchanged: &'static str,
) -> ActionError {
    match sqlx::query_scalar::<_, i32>("select 1 from workspaces where workspace_id = $1")
        .bind(workspace_id)
        .fetch_optional(conn)
        .await
    {
        Ok(Some(_)) => ActionError::Unchanged(unchanged),
        Ok(None) => ActionError::NotFound,
        Err(e) => e.into(),
    }
}

/// Puts a workspace on `plan` without Stripe (a complimentary plan: nothing is
/// charged, and subscription events no longer move its plan), or with `None` ends the
/// override and returns it to the plan of its live subscription, else the free plan.
/// Audited as `workspace.plan_overridden` / `workspace.plan_override_ended`.
pub async fn override_plan(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    workspace_id: WorkspaceId,
    plan: Option<&PlanCode>,
    reason: &str,
) -> Result<(), ActionError> {
    let reason = check_reason(reason)?;
    let before: Option<(String, bool)> = sqlx::query_as(
        "select plan_code, plan_override from workspaces where workspace_id = $1 for no key update",
    )
    .bind(workspace_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((before_plan, before_override)) = before else {
        return Err(ActionError::NotFound);
    };
    let (target, action) = match plan {
        Some(code) => {
            let known: Option<String> =
                sqlx::query_scalar("select plan_code from plans where plan_code = $1")
                    .bind(code)
                    .fetch_optional(&mut *conn)
                    .await?;
            let Some(code) = known else {
                return Err(ActionError::Invalid(format!("there is no plan {code}")));
            };
            (code, "workspace.plan_overridden")
        }
        None => {
            if !before_override {
                return Err(ActionError::Unchanged("not on a complimentary plan"));
            }
            let billed: String = sqlx::query_scalar(
                "select coalesce(
                    (select s.plan_code from subscriptions s
                      where s.workspace_id = $1 and s.status in ('active', 'trialing', 'past_due')
                        and s.plan_code is not null
                      order by s.current_period_end desc limit 1),
                    (select plan_code from plans order by monthly_price_minor, plan_code limit 1))",
            )
            .bind(workspace_id)
            .fetch_one(&mut *conn)
            .await?;
            (billed, "workspace.plan_override_ended")
        }
    };
    sqlx::query("update workspaces set plan_code = $2, plan_override = $3 where workspace_id = $1")
        .bind(workspace_id)
        .bind(&target)
        .bind(plan.is_some())
        .execute(&mut *conn)
        .await?;
    actor
        .record(
            conn,
            action,
            ("workspace", workspace_id.to_string()),
            Some(json!({"plan_code": before_plan, "plan_override": before_override})),
            Some(json!({"plan_code": target, "plan_override": plan.is_some()})),
            Some(reason),
        )
        .await?;
    Ok(())
}

/// Grants or removes the staff flag. A staff member cannot remove their own (someone
/// must remain able to undo it). Audited as `user.staff_granted` / `user.staff_revoked`.
pub async fn set_staff(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    user_id: UserId,
    staff: bool,
    reason: &str,
) -> Result<(), ActionError> {
    let reason = check_reason(reason)?;
    if user_id == actor.user_id && !staff {
        return Err(ActionError::Invalid(
            "you cannot remove your own staff access; ask another staff member".into(),
        ));
    }
    let done = sqlx::query("update users set is_staff = $2 where user_id = $1 and is_staff <> $2")
        .bind(user_id)
        .bind(staff)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Err(user_state(conn, user_id, "unchanged").await);
    }
    actor
        .record(
            conn,
            if staff {
                "user.staff_granted"
            } else {
                "user.staff_revoked"
            },
            ("user", user_id.to_string()),
            Some(json!({"is_staff": !staff})),
            Some(json!({"is_staff": staff})),
            Some(reason),
        )
        .await?;
    Ok(())
}

/// Suspends a user (`true`: they cannot sign in, and every session of theirs ends at
/// its next request) or lifts it (`false`). Audited as `user.suspended` /
/// `user.restored`.
pub async fn set_user_suspended(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    user_id: UserId,
    suspended: bool,
    reason: &str,
) -> Result<(), ActionError> {
    let reason = check_reason(reason)?;
    if user_id == actor.user_id && suspended {
        return Err(ActionError::Invalid("you cannot suspend yourself".into()));
    }
    let done = sqlx::query(
        "update users set suspended_at = case when $2 then now() end
          where user_id = $1 and (suspended_at is not null) <> $2",
    )
    .bind(user_id)
    .bind(suspended)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(user_state(conn, user_id, "unchanged").await);
    }
    actor
        .record(
            conn,
            if suspended {
                "user.suspended"
            } else {
                "user.restored"
            },
            ("user", user_id.to_string()),
            Some(json!({"suspended": !suspended})),
            Some(json!({"suspended": suspended})),
            Some(reason),
        )
        .await?;
    Ok(())
}

async fn user_state(
    conn: &mut PgConnection,
    user_id: UserId,
    unchanged: &'static str,
) -> ActionError {
    match sqlx::query_scalar::<_, i32>("select 1 from users where user_id = $1")
        .bind(user_id)
        .fetch_optional(conn)
        .await
    {
        Ok(Some(_)) => ActionError::Unchanged(unchanged),
        Ok(None) => ActionError::NotFound,
        Err(e) => e.into(),
    }
}

/// Approves pending commissions (and reversals) before their hold ends, as of `now`.
/// Others are left as they are. Returns how many moved; one audit event
/// (`commissions.approved`) lists them.
pub async fn approve_commissions(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    ids: &[CommissionId],
    now: OffsetDateTime,
) -> Result<u64, ActionError> {
    let moved: Vec<CommissionId> = sqlx::query_scalar(
        "update commissions set status = 'approved', approved_at = $2
          where commission_id = any($1) and status = 'pending'
          returning commission_id",
    )
    .bind(ids)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    if moved.is_empty() {
        return Ok(0);
    }
    let count = moved.len() as u64;
    actor
        .record(
            conn,
            "commissions.approved",
            ("commission", format!("{count} commissions")),
            Some(json!({"status": "pending"})),
            Some(json!({"status": "approved", "commission_ids": moved})),
            None,
        )
        .await?;
    Ok(count)
}

/// Voids a commission: a reversal of what is left of it is written (never an edit),
/// approved at once when the commission was approved or paid, so the next payout
/// claws it back. Audited as `commission.voided`.
pub async fn void_commission(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    commission_id: CommissionId,
    reason: &str,
    now: OffsetDateTime,
) -> Result<i64, ActionError> {
    let reason = check_reason(reason)?;
    let reversed = crate::resellers::commissions::void(
        conn,
        commission_id,
        &format!("void:{commission_id}"),
        now,
    )
    .await?;
    let Some(reversed) = reversed else {
        return Err(ActionError::NotFound);
    };
    if reversed == 0 {
        return Err(ActionError::Unchanged("nothing is left to void"));
    }
    actor
        .record(
            conn,
            "commission.voided",
            ("commission", commission_id.to_string()),
            None,
            Some(json!({"reversed_minor": reversed})),
            Some(reason),
        )
        .await?;
    Ok(reversed)
}

/// A reseller's terms as staff set them.
#[derive(Debug, Clone, Copy)]
pub struct ResellerTerms {
    /// Commission rate in basis points, 0..=10,000 (new payments only: the rate history
    /// keeps what applied when).
    pub commission_rate_bps: i32,
    /// Days a commission waits before approval (the refund window), 0..=365.
    pub hold_days: i32,
    /// Smallest payout, minor units (≥ 0).
    pub minimum_payout_minor: i64,
    /// Active, paused or closed.
    pub status: ResellerStatus,
}

fn check_terms(rate: i32, hold_days: i32) -> Result<(), ActionError> {
    if !(0..=10_000).contains(&rate) {
        return Err(ActionError::Invalid(
            "the commission rate must be from 0 to 100 %".into(),
        ));
    }
    if !(0..=365).contains(&hold_days) {
        return Err(ActionError::Invalid(
            "the hold must be from 0 to 365 days".into(),
        ));
    }
    Ok(())
}

/// Changes a reseller's rate, hold, minimum payout and status, recording
/// `reseller.terms_updated` with before and after. A new rate applies to payments made
/// from now on (`reseller_rates`).
pub async fn update_reseller_terms(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    reseller_id: ResellerId,
    terms: &ResellerTerms,
) -> Result<(), ActionError> {
    check_terms(terms.commission_rate_bps, terms.hold_days)?;
    if terms.minimum_payout_minor < 0 {
        return Err(ActionError::Invalid(
            "the minimum payout cannot be negative".into(),
        ));
    }
    let before: Option<(i32, i32, i64, ResellerStatus)> = sqlx::query_as(
        "select commission_rate_bps, hold_days, minimum_payout_minor, status
           from resellers where reseller_id = $1 for update",
    )
    .bind(reseller_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((rate, hold, minimum, status)) = before else {
        return Err(ActionError::NotFound);
    };
    sqlx::query(
        "update resellers set commission_rate_bps = $2, hold_days = $3, minimum_payout_minor = $4,
                status = $5
          where reseller_id = $1",
    )
    .bind(reseller_id)
    .bind(terms.commission_rate_bps)
    .bind(terms.hold_days)
    .bind(terms.minimum_payout_minor)
    .bind(terms.status)
    .execute(&mut *conn)
    .await?;
    actor
        .record(
            conn,
            "reseller.terms_updated",
            ("reseller", reseller_id.to_string()),
            Some(json!({"commission_rate_bps": rate, "hold_days": hold,
                        "minimum_payout_minor": minimum, "status": status})),
            Some(json!({"commission_rate_bps": terms.commission_rate_bps,
                        "hold_days": terms.hold_days,
                        "minimum_payout_minor": terms.minimum_payout_minor,
                        "status": terms.status})),
            None,
        )
        .await?;
    Ok(())
}

/// Creates a reseller (active) and, with `owner_email`, makes that existing user its
/// owner. Refused: a name of 0 or more than 100 characters, a malformed or taken
/// referral code, a rate or hold out of range, an unknown email, or a user who already
/// works for a reseller. Audited as `reseller.created`.
pub async fn create_reseller(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    name: &str,
    referral_code: &str,
    commission_rate_bps: i32,
    hold_days: i32,
    owner_email: Option<&str>,
) -> Result<ResellerId, ActionError> {
    let name = name.trim();
    if !(1..=100).contains(&name.chars().count()) {
        return Err(ActionError::Invalid(
            "give the reseller a name of 1 to 100 characters".into(),
        ));
    }
    let Some(code) = crate::resellers::parse_referral_code(referral_code) else {
        return Err(ActionError::Invalid(
            "the referral code must be 3 to 32 lowercase letters, digits or dashes".into(),
        ));
    };
    check_terms(commission_rate_bps, hold_days)?;
    let taken: Option<i32> = sqlx::query_scalar("select 1 from resellers where referral_code = $1")
        .bind(&code)
        .fetch_optional(&mut *conn)
        .await?;
    if taken.is_some() {
        return Err(ActionError::Invalid(format!(
            "the referral code {code} is taken"
        )));
    }
    let owner = match owner_email.map(str::trim).filter(|e| !e.is_empty()) {
        None => None,
        Some(email) => Some(member_candidate(conn, email).await?),
    };
    let id = crate::resellers::create(
        conn,
        &crate::resellers::NewReseller {
            name,
            referral_code: &code,
            commission_rate_bps,
            hold_days,
        },
    )
    .await?;
    if let Some(user) = owner {
        crate::resellers::add_member(conn, id, user, ResellerRole::Owner).await?;
    }
    actor
        .record(
            conn,
            "reseller.created",
            ("reseller", id.to_string()),
            None,
            Some(json!({"name": name, "referral_code": code,
                        "commission_rate_bps": commission_rate_bps, "hold_days": hold_days,
                        "owner": owner})),
            None,
        )
        .await?;
    Ok(id)
}

/// A user who may join a reseller: exists, and works for no reseller yet.
async fn member_candidate(conn: &mut PgConnection, email: &str) -> Result<UserId, ActionError> {
    let found: Option<(UserId, bool)> = sqlx::query_as(
        "select u.user_id, exists (select 1 from reseller_members m where m.user_id = u.user_id)
           from users u where u.email = lower($1)",
    )
    .bind(email)
    .fetch_optional(&mut *conn)
    .await?;
    match found {
        None => Err(ActionError::Invalid(format!(
            "no user has the email {email}; ask them to sign up first"
        ))),
        Some((_, true)) => Err(ActionError::Invalid(format!(
            "{email} already works for a reseller"
        ))),
        Some((user, false)) => Ok(user),
    }
}

/// Adds an existing user to a reseller as owner or member. Audited as
/// `reseller.member_added`.
pub async fn add_reseller_member(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    reseller_id: ResellerId,
    email: &str,
    role: ResellerRole,
) -> Result<(), ActionError> {
    let exists: Option<i32> = sqlx::query_scalar("select 1 from resellers where reseller_id = $1")
        .bind(reseller_id)
        .fetch_optional(&mut *conn)
        .await?;
    if exists.is_none() {
        return Err(ActionError::NotFound);
    }
    let user = member_candidate(conn, email.trim()).await?;
    crate::resellers::add_member(conn, reseller_id, user, role).await?;
    actor
        .record(
            conn,
            "reseller.member_added",
            ("reseller", reseller_id.to_string()),
            None,
            Some(json!({"user_id": user, "role": role})),
            None,
        )
        .await?;
    Ok(())
}

/// A plan's editable fields (its code, price and currency belong to Stripe's price:
/// change those with a new plan and "Sync to Stripe").
#[derive(Debug, Clone)]
pub struct PlanEdit {
    /// Display name, 1 to 60 characters.
    pub name: String,
    /// Credits per period; `None` = unlimited.
    pub monthly_credits: Option<i64>,
    /// Metering calls per minute; `None` = no limit.
    pub rate_limit_per_min: Option<i32>,
    /// Members a workspace may have; `None` = no cap.
    pub max_members: Option<i32>,
    /// API keys a workspace may have; `None` = no cap.
    pub max_api_keys: Option<i32>,
}

/// Edits a plan (audited as `plan.updated` with before and after). The allowance
/// applies from each workspace's next period.
pub async fn update_plan(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    plan_code: &str,
    edit: &PlanEdit,
) -> Result<(), ActionError> {
    let name = edit.name.trim();
    if !(1..=60).contains(&name.chars().count()) {
        return Err(ActionError::Invalid(
            "give the plan a name of 1 to 60 characters".into(),
        ));
    }
    if edit.monthly_credits.is_some_and(|c| c < 0)
        || edit.rate_limit_per_min.is_some_and(|c| c < 1)
        || edit.max_members.is_some_and(|c| c < 1)
        || edit.max_api_keys.is_some_and(|c| c < 1)
    {
        return Err(ActionError::Invalid(
            "limits must be whole numbers of at least 1 (credits: at least 0), or empty for unlimited".into(),
        ));
    }
    let before = lock_before(
        conn,
        "select jsonb_build_object('name', name, 'monthly_credits', monthly_credits,
                'rate_limit_per_min', rate_limit_per_min, 'max_members', max_members,
                'max_api_keys', max_api_keys)
           from plans where plan_code = $1 for update",
        plan_code,
    )
    .await?;
    sqlx::query(
        "update plans set name = $2, monthly_credits = $3, rate_limit_per_min = $4,
                max_members = $5, max_api_keys = $6
          where plan_code = $1",
    )
    .bind(plan_code)
    .bind(name)
    .bind(edit.monthly_credits)
    .bind(edit.rate_limit_per_min)
    .bind(edit.max_members)
    .bind(edit.max_api_keys)
    .execute(&mut *conn)
    .await?;
    actor
        .record(
            conn,
            "plan.updated",
            ("plan", plan_code.to_owned()),
            Some(before),
            Some(
                json!({"name": name, "monthly_credits": edit.monthly_credits,
                        "rate_limit_per_min": edit.rate_limit_per_min,
                        "max_members": edit.max_members, "max_api_keys": edit.max_api_keys}),
            ),
            None,
        )
        .await?;
    Ok(())
}

/// The row's fields as JSON, locked until the transaction ends: `sql` selects one
/// jsonb value of the row whose key is `$1`, `for update`. What an edit's audit event
/// records as `before`.
async fn lock_before<K>(conn: &mut PgConnection, sql: &str, key: K) -> Result<Value, ActionError>
where
    K: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send,
{
    sqlx::query_scalar(sql)
        .bind(key)
        .fetch_optional(conn)
        .await?
        .ok_or(ActionError::NotFound)
}

/// A credit pack's editable fields.
#[derive(Debug, Clone)]
pub struct PackEdit {
    /// Display name, 1 to 60 characters.
    pub name: String,
    /// Credits it grants, ≥ 1.
    pub credits: i64,
    /// Price in minor units of the pack's currency, ≥ 1 ("Sync to Stripe" then puts a
    /// price with it on sale).
    pub price_minor: i64,
    /// On sale.
    pub active: bool,
}

/// Edits a credit pack (audited as `credit_pack.updated`). Checkout sessions already
/// open keep the credits and price they were started with.
pub async fn update_credit_pack(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    code: &str,
    edit: &PackEdit,
) -> Result<(), ActionError> {
    let name = edit.name.trim();
    if !(1..=60).contains(&name.chars().count()) {
        return Err(ActionError::Invalid(
            "give the pack a name of 1 to 60 characters".into(),
        ));
    }
    if !(1..=MAX_ADJUSTMENT).contains(&edit.credits) || edit.price_minor < 1 {
        return Err(ActionError::Invalid(
            "a pack grants at least 1 credit and costs more than 0".into(),
        ));
    }
    let before = lock_before(
        conn,
        "select jsonb_build_object('name', name, 'credits', credits, 'price_minor', price_minor,
                'active', active)
           from credit_packs where credit_pack_code = $1 for update",
        code,
    )
    .await?;
    sqlx::query(
        "update credit_packs set name = $2, credits = $3, price_minor = $4, active = $5
          where credit_pack_code = $1",
    )
    .bind(code)
    .bind(name)
    .bind(edit.credits)
    .bind(edit.price_minor)
    .bind(edit.active)
    .execute(&mut *conn)
    .await?;
    actor
        .record(
            conn,
            "credit_pack.updated",
            ("credit_pack", code.to_owned()),
            Some(before),
            Some(json!({"name": name, "credits": edit.credits,
                        "price_minor": edit.price_minor, "active": edit.active})),
            None,
        )
        .await?;
    Ok(())
}

/// Edits a metered feature's description (1 to 200 characters) and credit cost
/// (1..=1,000,000 credits per use; new calls only). Audited as `feature.updated`.
pub async fn update_feature(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    code: &str,
    description: &str,
    credit_cost: i64,
) -> Result<(), ActionError> {
    let description = description.trim();
    if !(1..=200).contains(&description.chars().count()) {
        return Err(ActionError::Invalid(
            "give a description of 1 to 200 characters".into(),
        ));
    }
    if !(1..=1_000_000).contains(&credit_cost) {
        return Err(ActionError::Invalid(
            "credits per use must be a whole number from 1 to 1,000,000".into(),
        ));
    }
    let before = lock_before(
        conn,
        "select jsonb_build_object('description', description, 'credit_cost', credit_cost)
           from features where feature_code = $1 for update",
        code,
    )
    .await?;
    sqlx::query("update features set description = $2, credit_cost = $3 where feature_code = $1")
        .bind(code)
        .bind(description)
        .bind(credit_cost)
        .execute(&mut *conn)
        .await?;
    actor
        .record(
            conn,
            "feature.updated",
            ("feature", code.to_owned()),
            Some(before),
            Some(json!({"description": description, "credit_cost": credit_cost})),
            None,
        )
        .await?;
    Ok(())
}

/// Attributes a workspace to the active reseller with `referral_code` (channel
/// `admin`), or with `None` detaches it. Commissions already earned stay with the
/// reseller that earned them; future payments follow the new attribution. A workspace
/// attributed elsewhere must be detached first. Audited as `workspace.attributed` /
/// `workspace.detached`.
pub async fn set_reseller(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    workspace_id: WorkspaceId,
    referral_code: Option<&str>,
    reason: &str,
) -> Result<(), ActionError> {
    let reason = check_reason(reason)?;
    let before: Option<Option<ResellerId>> = sqlx::query_scalar(
        "select reseller_id from workspaces where workspace_id = $1 for no key update",
    )
    .bind(workspace_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(before) = before else {
        return Err(ActionError::NotFound);
    };
    let (action, after) = match referral_code.map(str::trim).filter(|c| !c.is_empty()) {
        Some(code) => {
            if before.is_some() {
                return Err(ActionError::Invalid(
                    "the workspace is attributed to a reseller already; detach it first".into(),
                ));
            }
            let code = crate::resellers::parse_referral_code(code).unwrap_or_default();
            let Some(reseller) = crate::resellers::active_by_code(conn, &code).await? else {
                return Err(ActionError::Invalid(format!(
                    "no active reseller has the referral code {code:?}"
                )));
            };
            crate::resellers::attribute(
                conn,
                workspace_id,
                reseller,
                crate::resellers::AttributionChannel::Admin,
            )
            .await?;
            ("workspace.attributed", Some(reseller))
        }
        None => {
            if before.is_none() {
                return Err(ActionError::Unchanged("the workspace has no reseller"));
            }
            sqlx::query(
                "update workspaces set reseller_id = null, attributed_at = null, attributed_via = null
                  where workspace_id = $1",
            )
            .bind(workspace_id)
            .execute(&mut *conn)
            .await?;
            ("workspace.detached", None)
        }
    };
    actor
        .record(
            conn,
            action,
            ("workspace", workspace_id.to_string()),
            Some(json!({"reseller_id": before})),
            Some(json!({"reseller_id": after})),
            Some(reason),
        )
        .await?;
    Ok(())
}

/// Sets a reseller's branding for it (display name, accent colour, host name), with the
/// checks its owners' settings page applies (WCAG contrast for the accent, a valid and
/// unused host name). Audited as `reseller.branding_updated` with before and after.
pub async fn update_reseller_branding(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    reseller_id: ResellerId,
    form: &crate::resellers::BrandingForm,
) -> Result<(), ActionError> {
    let before = lock_before(
        conn,
        "select jsonb_build_object('display_name', display_name, 'accent_color', accent_color,
                'host_name', host_name)
           from resellers where reseller_id = $1 for update",
        reseller_id,
    )
    .await?;
    crate::resellers::update_branding(conn, reseller_id, form)
        .await
        .map_err(|e| match e {
            crate::resellers::BrandingError::Unexpected(e) => ActionError::Unexpected(e),
            other => ActionError::Invalid(other.to_string()),
        })?;
    actor
        .record(
            conn,
            "reseller.branding_updated",
            ("reseller", reseller_id.to_string()),
            Some(before),
            Some(json!({"display_name": form.display_name.trim(),
                        "accent_color": form.accent_color.trim().to_ascii_lowercase(),
                        "host_name": form.host_name.trim().to_ascii_lowercase()})),
            None,
        )
        .await?;
    Ok(())
}
