//! Accounts: users, workspaces, memberships, the workspace's Stripe customer and the
//! addresses users signed in from. Owns tables `users`, `workspaces`, `memberships`,
//! `login_addresses` (SQL in [`db`]). Sign-up creates a workspace on the free plan and
//! grants its first month's allowance through the ledger, in one transaction.

pub mod db;
pub mod password;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::ids::{PlanCode, UserId, WorkspaceId};
use crate::stripe::{StripeCallError, StripeClient};
use crate::{allowances, catalog, ledger};
use password::{PasswordError, PasswordHasher};

/// A signed-up person. `password_hash` is the argon2id PHC string; `Debug` hides it.
#[derive(Clone, sqlx::FromRow)]
pub struct User {
    /// Primary key.
    pub user_id: UserId,
    /// Lowercased email, unique.
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Staff may use admin pages.
    pub is_staff: bool,
    /// Suspended by staff: cannot sign in, and has no session.
    pub suspended: bool,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("user_id", &self.user_id)
            .field("is_staff", &self.is_staff)
            .finish_non_exhaustive()
    }
}

/// A member's role in a workspace (Postgres enum `membership_role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type, Serialize, Deserialize)]
#[sqlx(type_name = "membership_role", rename_all = "snake_case")]
pub enum Role {
    /// Created the workspace; full control.
    Owner,
    /// Manages billing and keys.
    Admin,
    /// Uses the product; sees billing read-only.
    Member,
}

impl Role {
    /// Whether this role may change billing, credits and API keys.
    pub fn can_manage(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

/// The workspace a user acts in, with their role and the workspace's plan.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkspaceMembership {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// Its display name.
    pub workspace_name: String,
    /// The user's role in it.
    pub role: Role,
    /// The workspace's plan code (`free`, `pro`, ...).
    pub plan_code: PlanCode,
    /// The plan's display name.
    pub plan_name: String,
    /// A subscription payment failed and is not settled yet (Stripe `past_due`).
    pub past_due: bool,
    /// The reseller the workspace came through (not a closed one): its id, display
    /// name, accent colour and logo hash, for the portal's branding.
    pub brand_reseller_id: Option<crate::ids::ResellerId>,
    /// See `brand_reseller_id`.
    pub brand_name: Option<String>,
    /// See `brand_reseller_id`.
    pub brand_accent: Option<String>,
    /// See `brand_reseller_id`.
    pub brand_logo: Option<String>,
    /// Whether the workspace shares its owner's email with that reseller.
    pub shares_email: bool,
    /// Whether the user works for a reseller (the nav shows its dashboard).
    pub is_reseller: bool,
    /// The workspace's time zone (IANA name, default `UTC`): dates and days on its
    /// pages are in it.
    pub time_zone: String,
}

impl WorkspaceMembership {
    /// The branding of the reseller the workspace came through, if any.
    pub fn branding(&self) -> Option<crate::resellers::Branding> {
        Some(crate::resellers::Branding {
            reseller_id: self.brand_reseller_id?,
            name: self.brand_name.clone()?,
            accent_color: self.brand_accent.clone(),
            logo_sha256: self.brand_logo.clone(),
        })
    }
}

/// Why a sign-up was refused. Field errors are for the form; `Unexpected` is a 500.
#[derive(Debug, thiserror::Error)]
pub enum SignupError {
    /// The email does not look like `local@domain.tld`.
    #[error("enter a valid email address")]
    InvalidEmail,
    /// Shorter than [`MIN_PASSWORD_LEN`] or longer than [`MAX_PASSWORD_LEN`].
    #[error("use a password of {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters")]
    InvalidPassword,
    /// The email already has an account.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Too many passwords being hashed right now.
    #[error("too many sign-ups at once; try again in a few seconds")]
    Busy,
    /// Database or hashing failure.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// OWASP ASVS 2.1.1/2.1.2: at least 12 characters, at most 128 (long passphrases allowed).
pub const MIN_PASSWORD_LEN: usize = 12;
/// Upper bound on password length, in characters.
pub const MAX_PASSWORD_LEN: usize = 128;

/// Normalises and checks an email: trimmed, lowercased, one `@`, a dotted domain,
/// at most 254 characters (RFC 5321 path limit).
pub fn parse_email(raw: &str) -> Result<String, SignupError> {
    let email = raw.trim().to_lowercase();
    let ok = email.len() <= 254
        && !email.chars().any(char::is_control)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !email.chars().any(char::is_whitespace);
    if ok {
        Ok(email)
    } else {
        Err(SignupError::InvalidEmail)
    }
}

/// Checks the password length rule.
pub fn check_password(password: &str) -> Result<(), SignupError> {
    let n = password.chars().count();
    if (MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&n) {
        Ok(())
    } else {
        Err(SignupError::InvalidPassword)
    }
}

impl From<PasswordError> for SignupError {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::Busy => Self::Busy,
            PasswordError::Unexpected(e) => Self::Unexpected(e),
        }
    }
}

/// Creates a user, their workspace on the free plan (named after the email), the
/// owner membership, the balance row and the free plan's first month (its allowance
/// through the ledger), all in one transaction; the password is hashed before it opens.
/// `is_staff` is for the CLI and the demo seed.
#[tracing::instrument(skip_all)]
pub async fn sign_up(
    db: &PgPool,
    hasher: &PasswordHasher,
    email: &str,
    password: &str,
    is_staff: bool,
) -> Result<User, SignupError> {
    sign_up_referred(db, hasher, email, password, is_staff, None).await
}

/// [`sign_up`], attributing the new workspace to `referral`'s reseller in the same
/// transaction when that reseller is active (a sign-up through a referral link or on
/// a reseller's host name).
pub async fn sign_up_referred(
    db: &PgPool,
    hasher: &PasswordHasher,
    email: &str,
    password: &str,
    is_staff: bool,
    referral: Option<(crate::ids::ResellerId, crate::resellers::AttributionChannel)>,
) -> Result<User, SignupError> {
    let email = parse_email(email)?;
    check_password(password)?;
    let password_hash = hasher.hash(password).await?;

    let mut tx = db.begin().await.map_err(anyhow::Error::from)?;
    let user = db::insert_user(&mut tx, &email, &password_hash, is_staff)
        .await?
        .ok_or(SignupError::EmailTaken)?;
    let free = catalog::db::plan(&mut tx, &PlanCode::free())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the catalog has no free plan"))?;
    let workspace_name = format!("{}'s workspace", email.split('@').next().unwrap_or("my"));
    let workspace_id = db::insert_workspace(&mut tx, &workspace_name, &free.plan_code).await?;
    db::insert_membership(&mut tx, workspace_id, user.user_id, Role::Owner).await?;
    ledger::db::create_balance(&mut tx, workspace_id).await?;
    allowances::start_free(&mut tx, workspace_id, &free).await?;
    if let Some((reseller_id, via)) = referral {
        crate::resellers::attribute(&mut tx, workspace_id, reseller_id, via).await?;
    }
    if is_staff {
        // Only the command line (`billfold create-user --staff`, the demo seed) creates
        // staff: the grant is audited with the account it creates.
        crate::audit::record_command(
            &mut tx,
            "billfold command line",
            "user.staff_granted",
            ("user", user.user_id.to_string()),
            Some(serde_json::json!({"is_staff": true})),
        )
        .await?;
    }
    tx.commit().await.map_err(anyhow::Error::from)?;
    tracing::info!(user_id = %user.user_id, %workspace_id, "signed up");
    Ok(user)
}

/// The outcome of checking an email and password.
#[derive(Debug)]
pub enum Authentication {
    /// The password is right.
    Verified(User),
    /// An unknown email or a wrong password (indistinguishable to the client, and
    /// equally slow); `account` is the user the email names, if any, for the log.
    Refused {
        /// The account the email belongs to.
        account: Option<UserId>,
    },
}

/// Checks an email and password.
pub async fn authenticate(
    db: &PgPool,
    hasher: &PasswordHasher,
    email: &str,
    password: &str,
) -> Result<Authentication, PasswordError> {
    let email = email.trim().to_lowercase();
    let user = db::find_by_email(
        &mut *db.acquire().await.map_err(anyhow::Error::from)?,
        &email,
    )
    .await?;
    let ok = hasher
        .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
        .await?;
    Ok(match user {
        Some(user) if ok && !user.suspended => Authentication::Verified(user),
        user => Authentication::Refused {
            account: user.map(|u| u.user_id),
        },
    })
}

/// Remembers that `user_id` signed in from `address` (see `login_addresses`).
pub async fn remember_login_address(
    db: &PgPool,
    user_id: UserId,
    address: IpAddr,
) -> anyhow::Result<()> {
    db::record_login_address(&mut *db.acquire().await?, user_id, address).await
}

/// Returns the workspace's Stripe customer id, creating the customer on first use.
/// Concurrent first uses create one customer: the Stripe call is idempotent per
/// workspace and only the first stored id wins. No connection is held during the call.
pub async fn ensure_stripe_customer(
    db: &PgPool,
    stripe: &StripeClient,
    workspace_id: WorkspaceId,
    workspace_name: &str,
    email: &str,
) -> Result<String, CustomerError> {
    let existing = db::stripe_customer(
        &mut *db.acquire().await.map_err(anyhow::Error::from)?,
        workspace_id,
    )
    .await?;
    if let Some(id) = existing {
        return Ok(id);
    }
    let created = stripe
        .create_customer(email, workspace_name, &workspace_id.to_string())
        .await?;
    Ok(db::set_stripe_customer(
        &mut *db.acquire().await.map_err(anyhow::Error::from)?,
        workspace_id,
        &created,
    )
    .await?)
}

/// Why a workspace's Stripe customer could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CustomerError {
    /// Stripe did not answer or refused.
    #[error(transparent)]
    Stripe(#[from] StripeCallError),
    /// Database failure.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert!(parse_email("ada\u{0}@example.com").is_err(), "NUL refused");
        assert_eq!(
            parse_email("  Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "a@b@c.com",
            "ada@.com",
        ] {
            assert!(parse_email(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn passwords_need_twelve_to_128_characters() {
        assert!(check_password("short").is_err());
        assert!(check_password("exactly12chr").is_ok());
        assert!(check_password(&"x".repeat(129)).is_err());
    }
}
