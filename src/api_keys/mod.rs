//! API keys for the metering API. Owns table `api_keys` (SQL in [`db`]). A key is `bf_` followed by
//! 40 random hex characters (160 bits); only its SHA-256 is stored, the key
//! itself is shown once. SHA-256 without salt is right here (unlike passwords): the
//! key is long and random, so it cannot be guessed from the hash (OWASP ASVS 2.9).

pub mod db;

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::ids::{ApiKeyId, UserId, WorkspaceId};

/// Prefix of every billfold API key, so leaked keys are recognisable by scanners.
pub const KEY_PREFIX: &str = "bf_";
/// Longest key name.
pub const MAX_NAME_LEN: usize = 100;

/// A key as listed in settings (never the key itself).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKey {
    /// Primary key.
    pub api_key_id: ApiKeyId,
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

/// Creates a key for a workspace, enforcing the plan's `max_api_keys`, in the caller's
/// transaction (the workspace row is locked so two concurrent creations cannot both
/// pass the limit). The name: 1 to [`MAX_NAME_LEN`] characters, no control characters.
pub async fn create(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    created_by: Option<UserId>,
    name: &str,
) -> Result<CreatedKey, ApiKeyError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control)
    {
        return Err(ApiKeyError::InvalidName);
    }
    let mut bytes = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let plaintext = format!("{KEY_PREFIX}{}", hex::encode(bytes));
    let key_prefix = format!("{}…", &plaintext[..KEY_PREFIX.len() + 6]);
    if let Some(limit) = db::lock_key_limit(conn, workspace_id).await? {
        let active = db::active_count(conn, workspace_id).await?;
        if active >= i64::from(limit) {
            return Err(ApiKeyError::LimitReached(limit));
        }
    }
    let key = db::insert(
        conn,
        workspace_id,
        name,
        &key_prefix,
        &hash_key(&plaintext),
        created_by,
    )
    .await?;
    Ok(CreatedKey { key, plaintext })
}
