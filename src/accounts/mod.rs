//! Accounts: users, workspaces and memberships. Owns tables `users`, `workspaces`,
//! `memberships`. Sign-up creates a workspace on the free plan and grants its monthly
//! allowance through the ledger, in one transaction.

pub mod password;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::ledger::{self, Grant, LedgerEntryKind};
use crate::telemetry::spawn_blocking_with_tracing;

/// A signed-up person. `password_hash` is the argon2id PHC string; `Debug` hides it.
#[derive(Clone, sqlx::FromRow)]
pub struct User {
    /// Primary key.
    pub user_id: Uuid,
    /// Lowercased email, unique.
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Staff may use admin pages.
    pub is_staff: bool,
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
    pub workspace_id: Uuid,
    /// Its display name.
    pub workspace_name: String,
    /// The user's role in it.
    pub role: Role,
    /// The workspace's plan code (`free`, `pro`, ...).
    pub plan_code: String,
    /// The plan's display name.
    pub plan_name: String,
    /// A subscription payment failed and is not settled yet (Stripe `past_due`).
    pub past_due: bool,
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

/// Creates a user, their workspace on the free plan (named after the email), the
/// owner membership, the balance row and the free plan's allowance ledger entry, all
/// in one transaction. `is_staff` is for the CLI and the demo seed.
#[tracing::instrument(skip_all)]
pub async fn sign_up(
    db: &PgPool,
    email: &str,
    password: &str,
    is_staff: bool,
) -> Result<User, SignupError> {
    let email = parse_email(email)?;
    check_password(password)?;
    let pw = password.to_owned();
    let password_hash = spawn_blocking_with_tracing(move || password::hash(&pw))
        .await
        .map_err(anyhow::Error::from)??;

    let mut tx = db.begin().await.map_err(anyhow::Error::from)?;
    let user = sqlx::query_as::<_, User>(
        "insert into users (email, password_hash, is_staff) values ($1, $2, $3)
         on conflict (email) do nothing
         returning user_id, email, password_hash, is_staff",
    )
    .bind(&email)
    .bind(&password_hash)
    .bind(is_staff)
    .fetch_optional(&mut *tx)
    .await
    .map_err(anyhow::Error::from)?
    .ok_or(SignupError::EmailTaken)?;

    let workspace_name = format!("{}'s workspace", email.split('@').next().unwrap_or("my"));
    let (workspace_id, allowance): (Uuid, Option<i64>) = sqlx::query_as(
        "insert into workspaces (name, plan_code) values ($1, 'free')
         returning workspace_id, (select monthly_credits from plans where plan_code = 'free')",
    )
    .bind(&workspace_name)
    .fetch_one(&mut *tx)
    .await
    .map_err(anyhow::Error::from)?;
    sqlx::query("insert into memberships (workspace_id, user_id, role) values ($1, $2, 'owner')")
        .bind(workspace_id)
        .bind(user.user_id)
        .execute(&mut *tx)
        .await
        .map_err(anyhow::Error::from)?;
    sqlx::query("insert into balances (workspace_id) values ($1)")
        .bind(workspace_id)
        .execute(&mut *tx)
        .await
        .map_err(anyhow::Error::from)?;
    if let Some(credits) = allowance.filter(|c| *c > 0) {
        ledger::grant(
            &mut tx,
            &Grant {
                workspace_id,
                kind: LedgerEntryKind::PlanAllowance,
                plan_credits: credits,
                purchased_credits: 0,
                description: "Free plan: monthly allowance".into(),
                reference: format!("signup:{workspace_id}"),
            },
        )
        .await?;
    }
    tx.commit().await.map_err(anyhow::Error::from)?;
    tracing::info!(user_id = %user.user_id, %workspace_id, "signed up");
    Ok(user)
}

/// Checks an email and password. `Ok(None)` for an unknown email or a wrong password
/// (indistinguishable, and equally slow).
pub async fn authenticate(
    db: &PgPool,
    email: &str,
    password: &str,
) -> anyhow::Result<Option<User>> {
    let email = email.trim().to_lowercase();
    let user = find_by_email(db, &email).await?;
    let stored = user.as_ref().map_or_else(
        || password::dummy_hash().to_owned(),
        |u| u.password_hash.clone(),
    );
    let pw = password.to_owned();
    let ok = spawn_blocking_with_tracing(move || password::verify(&pw, &stored)).await?;
    Ok(user.filter(|_| ok))
}

/// Looks a user up by (lowercased) email.
pub async fn find_by_email(db: &PgPool, email: &str) -> anyhow::Result<Option<User>> {
    Ok(sqlx::query_as::<_, User>(
        "select user_id, email, password_hash, is_staff from users where email = $1",
    )
    .bind(email)
    .fetch_optional(db)
    .await?)
}

/// Looks a user up by id (session restore).
pub async fn find_by_id(db: &PgPool, user_id: Uuid) -> anyhow::Result<Option<User>> {
    Ok(sqlx::query_as::<_, User>(
        "select user_id, email, password_hash, is_staff from users where user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(db)
    .await?)
}

/// The workspace a user works in: their oldest membership (a workspace switcher comes
/// with team management). `None` for a user without any workspace.
pub async fn primary_workspace(
    db: &PgPool,
    user_id: Uuid,
) -> anyhow::Result<Option<WorkspaceMembership>> {
    Ok(sqlx::query_as::<_, WorkspaceMembership>(
        "select w.workspace_id, w.name as workspace_name, m.role, p.plan_code, p.name as plan_name,
                exists (select 1 from subscriptions s
                         where s.workspace_id = w.workspace_id and s.status = 'past_due') as past_due
           from memberships m
           join workspaces w using (workspace_id)
           join plans p on p.plan_code = w.plan_code
          where m.user_id = $1
          order by m.created_at, w.workspace_id
          limit 1",
    )
    .bind(user_id)
    .fetch_optional(db)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
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
