//! API keys for the metering API. Owns table `api_keys`. A key is `bf_` followed by
//! 40 random hex characters (160 bits); only its SHA-256 is stored, the key
//! itself is shown once. SHA-256 without salt is right here (unlike passwords): the
//! key is long and random, so it cannot be guessed from the hash (OWASP ASVS 2.9).

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

/// Prefix of every billfold API key, so leaked keys are recognisable by scanners.
pub const KEY_PREFIX: &str = "bf_";
/// Longest key name.
pub const MAX_NAME_LEN: usize = 100;

/// A key as listed in settings (never the key itself).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKey {
    /// Primary key.
    pub api_key_id: Uuid,
    /// Name given at creation.
    pub name: String,
    /// First characters of the key, to recognise it.
    pub key_prefix: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Last metering call (updated at most once a minute).
    pub last_used_at: Option<OffsetDateTime>,
    /// Set once revoked; revoked keys answer 401.
    pub revoked_at: Option<OffsetDateTime>,
}

/// A newly created key: the only time the plaintext exists.
#[derive(Clone)]
pub struct CreatedKey {
    /// The stored row.
    pub key: ApiKey,
    /// `bf_...`: show once, never store.
    pub plaintext: String,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Why a key was not created.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    /// Empty or longer than [`MAX_NAME_LEN`].
    #[error("give the key a name of 1 to {MAX_NAME_LEN} characters")]
    InvalidName,
    /// The plan's limit on active keys is reached.
    #[error("your plan allows {0} active API keys; revoke one or upgrade")]
    LimitReached(i32),
    /// Database failure.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// SHA-256 of a presented key: what `api_keys.key_hash` holds.
pub fn hash_key(plaintext: &str) -> Vec<u8> {
    Sha256::digest(plaintext.as_bytes()).to_vec()
}

/// Creates a key for a workspace, enforcing the plan's `max_api_keys`.
pub async fn create(
    db: &PgPool,
    workspace_id: Uuid,
    created_by: Option<Uuid>,
    name: &str,
) -> Result<CreatedKey, ApiKeyError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
        return Err(ApiKeyError::InvalidName);
    }
    let mut bytes = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let plaintext = format!("{KEY_PREFIX}{}", hex::encode(bytes));
    let key_prefix = format!("{}…", &plaintext[..KEY_PREFIX.len() + 6]);

    let mut tx = db.begin().await.map_err(anyhow::Error::from)?;
    // Lock the workspace row so two concurrent creations cannot both pass the limit.
    let limit: Option<i32> = sqlx::query_scalar(
        "select p.max_api_keys from workspaces w join plans p using (plan_code)
          where w.workspace_id = $1 for no key update of w",
    )
    .bind(workspace_id)
    .fetch_one(&mut *tx)
    .await
    .map_err(anyhow::Error::from)?;
    if let Some(limit) = limit {
        let active: i64 = sqlx::query_scalar(
            "select count(*) from api_keys where workspace_id = $1 and revoked_at is null",
        )
        .bind(workspace_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(anyhow::Error::from)?;
        if active >= i64::from(limit) {
            return Err(ApiKeyError::LimitReached(limit));
        }
    }
    let key = sqlx::query_as::<_, ApiKey>(
        "insert into api_keys (workspace_id, name, key_prefix, key_hash, created_by)
         values ($1, $2, $3, $4, $5)
         returning api_key_id, name, key_prefix, created_at, last_used_at, revoked_at",
    )
    .bind(workspace_id)
    .bind(name)
    .bind(&key_prefix)
    .bind(hash_key(&plaintext))
    .bind(created_by)
    .fetch_one(&mut *tx)
    .await
    .map_err(anyhow::Error::from)?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok(CreatedKey { key, plaintext })
}

/// The workspace's keys, active first, newest first.
pub async fn list(db: &PgPool, workspace_id: Uuid) -> anyhow::Result<Vec<ApiKey>> {
    Ok(sqlx::query_as::<_, ApiKey>(
        "select api_key_id, name, key_prefix, created_at, last_used_at, revoked_at
           from api_keys where workspace_id = $1
          order by revoked_at is not null, created_at desc",
    )
    .bind(workspace_id)
    .fetch_all(db)
    .await?)
}

/// Revokes a key of this workspace. `false` if no such active key (another
/// workspace's key id counts as missing).
pub async fn revoke(db: &PgPool, workspace_id: Uuid, api_key_id: Uuid) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "update api_keys set revoked_at = now()
          where workspace_id = $1 and api_key_id = $2 and revoked_at is null",
    )
    .bind(workspace_id)
    .bind(api_key_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The workspace and key id a presented key belongs to, if active (balance endpoint).
pub async fn authenticate(db: &PgPool, plaintext: &str) -> anyhow::Result<Option<(Uuid, Uuid)>> {
    Ok(sqlx::query_as::<_, (Uuid, Uuid)>(
        "select workspace_id, api_key_id from api_keys where key_hash = $1 and revoked_at is null",
    )
    .bind(hash_key(plaintext))
    .fetch_optional(db)
    .await?)
}
