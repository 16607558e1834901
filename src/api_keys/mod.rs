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
    /// The limit on active keys (the plan's, or a reseller's 10) is reached.
    #[error("{0} API keys are already active, the most allowed here; revoke one first")]
    LimitReached(i32),
    /// The form that asked was already used to create a key (its secret was shown
    /// once then).
    #[error("this form already created a key, whose secret was shown once")]
    AlreadyCreated,
    /// Database failure.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// SHA-256 of a presented key: what `api_keys.key_hash` holds.
pub fn hash_key(plaintext: &str) -> Vec<u8> {
    Sha256::digest(plaintext.as_bytes()).to_vec()
}

/// A key's name, trimmed: 1 to [`MAX_NAME_LEN`] characters, no control characters.
pub fn check_name(name: &str) -> Result<&str, ApiKeyError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control)
    {
        return Err(ApiKeyError::InvalidName);
    }
    Ok(name)
}

/// A freshly generated key: `prefix` + 40 random hex characters (160 bits), what
/// lists show of it, and the SHA-256 that is stored. Shared by workspace keys (`bf_`)
/// and reseller keys (`bfr_`).
pub struct NewKey {
    /// Show once, never store.
    pub plaintext: String,
    /// `bf_4f3a9c…`: recognisable in lists.
    pub key_prefix: String,
    /// [`hash_key`] of the plaintext.
    pub key_hash: Vec<u8>,
}

impl NewKey {
    /// A new random key with `prefix`.
    pub fn generate(prefix: &str) -> Self {
        let mut bytes = [0u8; 20];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let plaintext = format!("{prefix}{}", hex::encode(bytes));
        Self {
            key_prefix: format!("{}…", &plaintext[..prefix.len() + 6]),
            key_hash: hash_key(&plaintext),
            plaintext,
        }
    }
}

/// Creates a key for a workspace, enforcing the plan's `max_api_keys`, in the caller's
/// transaction (the workspace row is locked so two concurrent creations cannot both
/// pass the limit). The name: 1 to [`MAX_NAME_LEN`] characters, no control characters.
/// `form_key`: the creating form's one-time key; a second creation with the same one
/// is [`ApiKeyError::AlreadyCreated`] (a reloaded or double-clicked form makes one key).
pub async fn create(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    created_by: Option<UserId>,
    name: &str,
    form_key: Option<uuid::Uuid>,
) -> Result<CreatedKey, ApiKeyError> {
    let name = check_name(name)?;
    let new = NewKey::generate(KEY_PREFIX);
    let limit = db::lock_key_limit(conn, workspace_id).await?;
    // Under the workspace's lock: a form already used says so before any limit does.
    if let Some(form_key) = form_key
        && db::form_key_used(conn, workspace_id, form_key).await?
    {
        return Err(ApiKeyError::AlreadyCreated);
    }
    if let Some(limit) = limit {
        let active = db::active_count(conn, workspace_id).await?;
        if active >= i64::from(limit) {
            return Err(ApiKeyError::LimitReached(limit));
        }
    }
    let key = db::insert(
        conn,
        workspace_id,
        name,
        &new.key_prefix,
        &new.key_hash,
        created_by,
        form_key,
    )
    .await?
    .ok_or(ApiKeyError::AlreadyCreated)?;
    Ok(CreatedKey {
        key,
        plaintext: new.plaintext,
    })
}
