//! Password hashing with argon2id at OWASP's recommended minimum (19 MiB memory,
//! 2 iterations, 1 lane; OWASP Password Storage Cheat Sheet), which is argon2's
//! `Params::DEFAULT`, stored as PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$...`).
//!
//! Each hash works in 19 MiB. Allocating and freeing that for every sign-in
//! fragments the allocator: measured here, glibc kept about 4 MiB per hash, so a
//! burst of 200 logins left the process at half a gigabyte for good. So
//! [`PasswordHasher`] runs at most a few hashes at once, off the async runtime, each
//! in one of a few 19 MiB buffers allocated once and reused; a request that cannot get
//! a turn within a short wait is refused ([`PasswordError::Busy`], answered 503 with
//! `Retry-After`). Memory for hashing is therefore bounded by the concurrency.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngCore;
use subtle::ConstantTimeEq;
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

/// Working memory of one hash (`Params::DEFAULT`'s block count), reused.
type Memory = Vec<Block>;

/// Hashes and verifies passwords, at most `concurrency` at a time, in reused memory
/// (cheap to clone).
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    memory: Arc<Mutex<Vec<Memory>>>,
    wait: Duration,
}

impl PasswordHasher {
    /// At most `concurrency` (≥ 1) hashes at once; a caller waits at most `wait` for a
    /// turn.
    pub fn new(concurrency: usize, wait: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            memory: Arc::new(Mutex::new(Vec::new())),
            wait,
        }
    }

    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Memory) -> R + Send + 'static,
    ) -> Result<R, PasswordError> {
        let permit = tokio::time::timeout(self.wait, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| PasswordError::Busy)?
            .map_err(|e| anyhow::anyhow!("hashing closed: {e}"))?;
        // One buffer per permit: the pool never holds more than `concurrency`.
        let mut memory = self
            .memory
            .lock()
            .map_err(|_| anyhow::anyhow!("hashing memory poisoned"))?
            .pop()
            .unwrap_or_else(|| vec![Block::default(); Params::DEFAULT.block_count()]);
        let (result, memory) = spawn_blocking_with_tracing(move || {
            let result = f(&mut memory);
            (result, memory)
        })
        .await
        .map_err(|e| anyhow::anyhow!("hashing task: {e}"))?;
        if let Ok(mut pool) = self.memory.lock() {
            pool.push(memory);
        }
        drop(permit);
        Ok(result)
    }

    /// Hashes `password` with a fresh random salt; returns the PHC string.
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let password = password.to_owned();
        Ok(self.run(move |memory| hash_in(&password, memory)).await??)
    }

    /// Whether `password` matches `phc`, or, for an unknown account (`phc` `None`),
    /// `false` after the same work, so a missing account answers as slowly as a wrong
    /// password (OWASP Authentication Cheat Sheet, "authentication responses").
    pub async fn verify(&self, password: &str, phc: Option<&str>) -> Result<bool, PasswordError> {
        let password = password.to_owned();
        let known = phc.is_some();
        let phc = phc.map_or_else(|| dummy_hash().to_owned(), str::to_owned);
        Ok(self
            .run(move |memory| verify_in(&password, &phc, memory))
            .await?
            && known)
    }
}

/// Hashes `password` with a fresh random salt in `memory` (blocking).
fn hash_in(password: &str, memory: &mut Memory) -> anyhow::Result<String> {
    let mut salt = [0u8; Salt::RECOMMENDED_LENGTH];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = Salt::new(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let params = Params::DEFAULT;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, memory.as_mut_slice())
        .map_err(|e| anyhow::anyhow!("hash password: {e}"))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| anyhow::anyhow!("params: {e}"))?,
        salt: Some(salt),
        hash: Some(Output::new(&out).map_err(|e| anyhow::anyhow!("output: {e}"))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string, computed in `memory` (blocking); a
/// stored hash with other parameters gets memory of its own. A malformed stored hash
/// counts as no match.
fn verify_in(password: &str, phc: &str, memory: &mut Memory) -> bool {
    let mut check = || -> Option<bool> {
        let parsed = PasswordHash::new(phc).ok()?;
        let algorithm = Algorithm::try_from(parsed.algorithm.as_str()).ok()?;
        let version = parsed
            .version
            .map_or(Ok(Version::V0x13), Version::try_from)
            .ok()?;
        let params = Params::try_from(&parsed).ok()?;
        let salt = parsed.salt?;
        let expected = parsed.hash?;
        let mut out = vec![0u8; expected.len()];
        let argon = Argon2::new(algorithm, version, params.clone());
        let done = if memory.len() == params.block_count() {
            argon.hash_password_into_with_memory(
                password.as_bytes(),
                &salt,
                &mut out,
                memory.as_mut_slice(),
            )
        } else {
            argon.hash_password_into(password.as_bytes(), &salt, &mut out)
        };
        done.ok()?;
        Some(bool::from(out.as_slice().ct_eq(expected.as_bytes())))
    };
    check().unwrap_or(false)
}

/// Hashes `password` with a fresh random salt (blocking; tests and tools — the app
/// uses [`PasswordHasher`]).
pub fn hash(password: &str) -> anyhow::Result<String> {
    hash_in(
        password,
        &mut vec![Block::default(); Params::DEFAULT.block_count()],
    )
}

/// Whether `password` matches the PHC string (blocking; see [`hash`]).
pub fn verify(password: &str, phc: &str) -> bool {
    verify_in(
        password,
        phc,
        &mut vec![Block::default(); Params::DEFAULT.block_count()],
    )
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
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("correct horse battery", &h));
        assert!(!verify("correct horse batterx", &h));
        assert!(!verify("anything", "not a phc string"));
        assert!(!verify("anything", dummy_hash()));
    }

    #[test]
    fn hashes_made_by_argon2s_own_hasher_still_verify() {
        use argon2::PasswordHasher as _;
        let h = Argon2::default()
            .hash_password(b"an older password")
            .unwrap()
            .to_string();
        assert!(verify("an older password", &h));
        assert!(!verify("another password", &h));
        // Other parameters (a cheaper hash) verify too, in memory of their own.
        let params = Params::new(8, 1, 1, None).unwrap();
        let cheap = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"cheap")
            .unwrap()
            .to_string();
        assert!(verify("cheap", &cheap));
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
        assert!(
            hasher.memory.lock().unwrap().len() <= 1,
            "one buffer per slot"
        );
    }
}
