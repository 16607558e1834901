//! SQL of API keys: free functions on a connection.

use sqlx::PgConnection;

use super::{ApiKey, hash_key};
use crate::ids::{ApiKeyId, UserId, WorkspaceId};

/// The workspace's plan limit on active keys (`None`: unlimited), locking the
/// workspace row (`for no key update`) for the transaction.
pub async fn lock_key_limit(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
) -> anyhow::Result<Option<i32>> {
    Ok(sqlx::query_scalar(
        "select p.max_api_keys from workspaces w join plans p using (plan_code)
          where w.workspace_id = $1 for no key update of w",
    )
    .bind(workspace_id)
    .fetch_one(conn)
    .await?)
}

/// Active (not revoked) keys of a workspace.
pub async fn active_count(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "select count(*) from api_keys where workspace_id = $1 and revoked_at is null",
    )
    .bind(workspace_id)
    .fetch_one(conn)
    .await?)
}

/// Stores a new key (its hash only).
pub async fn insert(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    name: &str,
    key_prefix: &str,
    key_hash: &[u8],
    created_by: Option<UserId>,
    form_key: Option<uuid::Uuid>,
) -> anyhow::Result<Option<ApiKey>> {
    Ok(sqlx::query_as::<_, ApiKey>(
        "insert into api_keys (workspace_id, name, key_prefix, key_hash, created_by, form_key)
         values ($1, $2, $3, $4, $5, $6)
         on conflict (workspace_id, form_key) where form_key is not null do nothing
         returning api_key_id, name, key_prefix, created_at, last_used_at, revoked_at",
    )
    .bind(workspace_id)
    .bind(name)
    .bind(key_prefix)
    .bind(key_hash)
    .bind(created_by)
    .bind(form_key)
    .fetch_optional(conn)
    .await?)
}

/// The workspace's keys, active first, newest first.
pub async fn list(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
) -> anyhow::Result<Vec<ApiKey>> {
    Ok(sqlx::query_as::<_, ApiKey>(
        "select api_key_id, name, key_prefix, created_at, last_used_at, revoked_at
           from api_keys where workspace_id = $1
          order by revoked_at is not null, created_at desc",
    )
    .bind(workspace_id)
    .fetch_all(conn)
    .await?)
}

/// Revokes a key of this workspace. `false` if no such active key (another
/// workspace's key id counts as missing).
pub async fn revoke(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    api_key_id: ApiKeyId,
) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "update api_keys set revoked_at = now()
          where workspace_id = $1 and api_key_id = $2 and revoked_at is null",
    )
    .bind(workspace_id)
    .bind(api_key_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The workspace a presented key belongs to, if the key is active, and whether staff
/// suspended that workspace (the balance endpoint).
pub async fn authenticate_with_status(
    conn: &mut PgConnection,
    plaintext: &str,
) -> anyhow::Result<Option<(WorkspaceId, bool)>> {
    Ok(sqlx::query_as(
        "select k.workspace_id, w.suspended_at is not null
           from api_keys k join workspaces w on w.workspace_id = k.workspace_id
          where k.key_hash = $1 and k.revoked_at is null",
    )
    .bind(hash_key(plaintext))
    .fetch_optional(conn)
    .await?)
}

/// Whether a key was created by the form with this one-time key.
pub async fn form_key_used(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    form_key: uuid::Uuid,
) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar(
        "select exists (select 1 from api_keys where workspace_id = $1 and form_key = $2)",
    )
    .bind(workspace_id)
    .bind(form_key)
    .fetch_one(conn)
    .await?)
}
