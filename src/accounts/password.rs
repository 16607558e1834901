//! Password hashing with argon2id at OWASP's recommended minimum (19 MiB memory,
//! 2 iterations, 1 lane; OWASP Password Storage Cheat Sheet), which is argon2's
//! `Params::DEFAULT`.
//!
//! Each hash takes 19 MiB and a core for tens of milliseconds, so an unbounded burst
//! of logins (or of unknown emails, verified against a dummy hash) would take memory
//! the allocator never returns. [`PasswordHasher`] runs at most a few at once off the
//! async runtime; a request that cannot get a turn within a short wait is refused
//! ([`PasswordError::Busy`], answered 503 with `Retry-After`).

use std::sync::Arc;
use std::time::Duration;

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier};
use tokio::sync::Semaphore;

use crate::telemetry::spawn_blocking_with_tracing;

/// Why hashing did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Every hashing slot stayed busy for the whole wait: try again shortly.
    #[error("too many sign-ins at once; try again in a few seconds")]
    Busy,
    /// argon2 failed (it does not for valid parameters).
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Hashes and verifies passwords, at most `concurrency` at a time (cheap to clone).
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    wait: Duration,
}

impl PasswordHasher {
    /// At most `concurrency` (≥ 1) hashes at once; a caller waits at most `wait` for a
    /// turn.
    pub fn new(concurrency: usize, wait: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            wait,
        }
    }

    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, PasswordError> {
        let permit = tokio::time::timeout(self.wait, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| PasswordError::Busy)?
            .map_err(|e| anyhow::anyhow!("hashing closed: {e}"))?;
        let result = spawn_blocking_with_tracing(f)
            .await
            .map_err(|e| anyhow::anyhow!("hashing task: {e}"))?;
        drop(permit);
        Ok(result)
    }

    /// Hashes `password` with a fresh random salt; returns the PHC string
    /// (`$argon2id$v=19$m=19456,t=2,p=1$...`).
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let password = password.to_owned();
        Ok(self.run(move || hash(&password)).await??)
    }

    /// Whether `password` matches `phc`, or, for an unknown account (`phc` `None`),
    /// `false` after the same work, so a missing account answers as slowly as a wrong
    /// password (OWASP Authentication Cheat Sheet, "authentication responses").
    pub async fn verify(&self, password: &str, phc: Option<&str>) -> Result<bool, PasswordError> {
        let password = password.to_owned();
        let known = phc.is_some();
        let phc = phc.map_or_else(|| dummy_hash().to_owned(), str::to_owned);
        Ok(self.run(move || verify(&password, &phc)).await? && known)
    }
}

/// Hashes `password` with a fresh random salt (blocking; see [`PasswordHasher`]).
pub fn hash(password: &str) -> anyhow::Result<String> {
    let hash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| anyhow::anyhow!("hash password: {e}"))?;
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string. A malformed stored hash counts as no match.
pub fn verify(password: &str, phc: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), phc)
        .is_ok()
}

/// A hash of a password nobody knows, verified against when the email is unknown.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| hash("no account has this password").unwrap_or_default());
    &DUMMY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify("correct horse battery", &h));
        assert!(!verify("correct horse batterx", &h));
        assert!(!verify("anything", "not a phc string"));
        assert!(!verify("anything", dummy_hash()));
    }

    #[tokio::test]
    async fn a_burst_beyond_the_slots_is_refused_not_queued_forever() {
        let hasher = PasswordHasher::new(1, Duration::from_millis(1));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let h = hasher.clone();
                tokio::spawn(async move { h.verify("x", None).await })
            })
            .collect();
        let mut busy = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), Err(PasswordError::Busy)) {
                busy += 1;
            }
        }
        assert!(
            busy >= 1,
            "some of 8 concurrent hashes on one slot are refused"
        );
    }
}
