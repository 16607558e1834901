//! SQL of accounts: free functions on a connection; the caller owns the transaction.

use std::net::IpAddr;

use sqlx::PgConnection;

use super::{Role, User, WorkspaceMembership};
use crate::ids::{PlanCode, UserId, WorkspaceId};
use crate::stripe::billing::SubscriptionStatus;

/// Inserts a user; `None` when the email is taken.
pub async fn insert_user(
    conn: &mut PgConnection,
    email: &str,
    password_hash: &str,
    is_staff: bool,
) -> anyhow::Result<Option<User>> {
    Ok(sqlx::query_as::<_, User>(
        "insert into users (email, password_hash, is_staff) values ($1, $2, $3)
         on conflict (email) do nothing
         returning user_id, email, password_hash, is_staff, false as suspended",
    )
    .bind(email)
    .bind(password_hash)
    .bind(is_staff)
    .fetch_optional(conn)
    .await?)
}

/// Inserts a workspace on `plan_code`.
pub async fn insert_workspace(
    conn: &mut PgConnection,
    name: &str,
    plan_code: &PlanCode,
) -> anyhow::Result<WorkspaceId> {
    Ok(sqlx::query_scalar(
        "insert into workspaces (name, plan_code) values ($1, $2) returning workspace_id",
    )
    .bind(name)
    .bind(plan_code)
    .fetch_one(conn)
    .await?)
}

/// Makes `user_id` a member of `workspace_id` with `role`.
pub async fn insert_membership(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    user_id: UserId,
    role: Role,
) -> anyhow::Result<()> {
    sqlx::query("insert into memberships (workspace_id, user_id, role) values ($1, $2, $3)")
        .bind(workspace_id)
        .bind(user_id)
        .bind(role)
        .execute(conn)
        .await?;
    Ok(())
}

/// Looks a user up by (lowercased) email.
pub async fn find_by_email(conn: &mut PgConnection, email: &str) -> anyhow::Result<Option<User>> {
    Ok(sqlx::query_as::<_, User>(
        "select user_id, email, password_hash, is_staff, suspended_at is not null as suspended
           from users where email = $1",
    )
    .bind(email)
    .fetch_optional(conn)
    .await?)
}

/// Looks an active user up by id (session restore): a suspended user is not found, so
/// every session of theirs ends on its next request.
pub async fn find_by_id(conn: &mut PgConnection, user_id: UserId) -> anyhow::Result<Option<User>> {
    Ok(sqlx::query_as::<_, User>(
        "select user_id, email, password_hash, is_staff, false as suspended
           from users where user_id = $1 and suspended_at is null",
    )
    .bind(user_id)
    .fetch_optional(conn)
    .await?)
}

/// Whether any user exists (the demo seed runs on an empty database only).
pub async fn any_user(conn: &mut PgConnection) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar("select exists (select 1 from users)")
        .fetch_one(conn)
        .await?)
}

/// What [`primary_workspace`] and [`owner_view`] select (`$2`: the past-due status).
const MEMBERSHIP_SELECT: &str =
    "select w.workspace_id, w.name as workspace_name, m.role, p.plan_code,
            p.name as plan_name,
            exists (select 1 from subscriptions s
                     where s.workspace_id = w.workspace_id and s.status = $2) as past_due,
            r.reseller_id as brand_reseller_id, coalesce(r.display_name, r.name) as brand_name,
            r.accent_color as brand_accent, l.sha256 as brand_logo,
            w.share_email_with_reseller as shares_email,
            exists (select 1 from reseller_members rm where rm.user_id = m.user_id) as is_reseller,
            w.time_zone
       from memberships m
       join workspaces w using (workspace_id)
       join plans p on p.plan_code = w.plan_code
       left join resellers r on r.reseller_id = w.reseller_id and r.status <> 'closed'
       left join reseller_logos l on l.reseller_id = r.reseller_id";

/// The workspace a user works in: their oldest membership (a workspace switcher comes
/// with team management). `None` for a user without any workspace.
pub async fn primary_workspace(
    conn: &mut PgConnection,
    user_id: UserId,
) -> anyhow::Result<Option<WorkspaceMembership>> {
    Ok(sqlx::query_as::<_, WorkspaceMembership>(&format!(
        "{MEMBERSHIP_SELECT} where m.user_id = $1 order by m.created_at, w.workspace_id limit 1"
    ))
    .bind(user_id)
    .bind(SubscriptionStatus::PastDue)
    .fetch_optional(conn)
    .await?)
}

/// A workspace as its (first) owner sees it: what staff see in "view as customer".
/// `None` when there is no such workspace or it has no owner.
pub async fn owner_view(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
) -> anyhow::Result<Option<WorkspaceMembership>> {
    Ok(sqlx::query_as::<_, WorkspaceMembership>(&format!(
        "{MEMBERSHIP_SELECT} where m.workspace_id = $1 and m.role = 'owner'
          order by m.created_at limit 1"
    ))
    .bind(workspace_id)
    .bind(SubscriptionStatus::PastDue)
    .fetch_optional(conn)
    .await?)
}

/// The workspace's current plan code.
pub async fn workspace_plan(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
) -> anyhow::Result<PlanCode> {
    Ok(
        sqlx::query_scalar("select plan_code from workspaces where workspace_id = $1")
            .bind(workspace_id)
            .fetch_one(conn)
            .await?,
    )
}

/// The workspace's current plan code, locking the workspace row against concurrent plan
/// changes (`for no key update`: consumes, whose ledger entries reference the row, are
/// not blocked).
pub async fn lock_workspace_plan(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
) -> anyhow::Result<PlanCode> {
    Ok(sqlx::query_scalar(
        "select plan_code from workspaces where workspace_id = $1 for no key update",
    )
    .bind(workspace_id)
    .fetch_one(conn)
    .await?)
}

/// The workspace of a Stripe customer, or the one named in metadata if it has no
/// customer yet (never another customer's workspace: metadata is not proof of who
/// pays), locked like [`lock_workspace_plan`]. `None` for a customer billfold does
/// not know.
pub async fn lock_workspace_of_customer(
    conn: &mut PgConnection,
    by_metadata: Option<WorkspaceId>,
    customer_id: &str,
) -> anyhow::Result<Option<WorkspaceId>> {
    Ok(sqlx::query_scalar(
        "select workspace_id from workspaces
          where stripe_customer_id = $2
             or (workspace_id = $1 and stripe_customer_id is null)
          order by stripe_customer_id = $2 desc limit 1 for no key update",
    )
    .bind(by_metadata)
    .bind(customer_id)
    .fetch_optional(conn)
    .await?)
}

/// Moves a workspace onto a plan, unless staff gave it a complimentary plan
/// (`plan_override`), which subscription changes leave alone.
pub async fn set_workspace_plan(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    plan_code: &PlanCode,
) -> anyhow::Result<()> {
    sqlx::query(
        "update workspaces set plan_code = $2 where workspace_id = $1 and not plan_override",
    )
    .bind(workspace_id)
    .bind(plan_code)
    .execute(conn)
    .await?;
    Ok(())
}

/// The workspace's Stripe customer, if it has one.
pub async fn stripe_customer(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
) -> anyhow::Result<Option<String>> {
    Ok(
        sqlx::query_scalar("select stripe_customer_id from workspaces where workspace_id = $1")
            .bind(workspace_id)
            .fetch_one(conn)
            .await?,
    )
}

/// Stores the workspace's Stripe customer unless one is stored; returns the stored one.
pub async fn set_stripe_customer(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    customer_id: &str,
) -> anyhow::Result<String> {
    Ok(sqlx::query_scalar(
        "update workspaces set stripe_customer_id = coalesce(stripe_customer_id, $2)
          where workspace_id = $1 returning stripe_customer_id",
    )
    .bind(workspace_id)
    .bind(customer_id)
    .fetch_one(conn)
    .await?)
}

/// Members of a workspace.
pub async fn member_count(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("select count(*) from memberships where workspace_id = $1")
            .bind(workspace_id)
            .fetch_one(conn)
            .await?,
    )
}

/// Records a successful sign-in from `address`.
pub async fn record_login_address(
    conn: &mut PgConnection,
    user_id: UserId,
    address: IpAddr,
) -> anyhow::Result<()> {
    sqlx::query(
        "insert into login_addresses (user_id, client_address) values ($1, $2)
         on conflict (user_id, client_address) do update set last_success_at = now()",
    )
    .bind(user_id)
    .bind(sqlx::types::ipnetwork::IpNetwork::from(address))
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether the user with `email` has signed in from `address` before.
pub async fn is_known_login_address(
    conn: &mut PgConnection,
    email: &str,
    address: IpAddr,
) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar(
        "select exists (select 1 from login_addresses a join users u using (user_id)
                         where u.email = $1 and a.client_address = $2)",
    )
    .bind(email)
    .bind(sqlx::types::ipnetwork::IpNetwork::from(address))
    .fetch_one(conn)
    .await?)
}

/// Sets the workspace's time zone if PostgreSQL knows the name (`pg_timezone_names`);
/// `false` (nothing changed) for an unknown one.
pub async fn set_time_zone(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    time_zone: &str,
) -> anyhow::Result<bool> {
    Ok(sqlx::query(
        "update workspaces set time_zone = $2
          where workspace_id = $1
            and exists (select 1 from pg_timezone_names where name = $2)",
    )
    .bind(workspace_id)
    .bind(time_zone)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// The time zones a workspace may choose: `UTC` and the IANA region names
/// (`Europe/Berlin`) PostgreSQL knows, sorted.
pub async fn time_zones(conn: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "select name from pg_timezone_names
          where name = 'UTC'
             or name ~ '^(Africa|America|Antarctica|Asia|Atlantic|Australia|Europe|Indian|Pacific)/'
          order by name <> 'UTC', name",
    )
    .fetch_all(conn)
    .await?)
}
