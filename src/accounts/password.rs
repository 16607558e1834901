//! Password hashing with argon2id at OWASP's recommended minimum (19 MiB memory,
//! 2 iterations, 1 lane; OWASP Password Storage Cheat Sheet), which is argon2's
//! `Params::DEFAULT`. Hashing is CPU-bound: callers run it through
//! [`crate::telemetry::spawn_blocking_with_tracing`].

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

/// Hashes `password` with a fresh random salt; returns the PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$...`).
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

/// A hash of a password nobody knows, verified against when the email is unknown so
/// that a login takes as long for a missing account as for a wrong password (OWASP
/// Authentication Cheat Sheet, "authentication responses").
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| hash("no account has this password").unwrap_or_default());
    &DUMMY
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = super::hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(super::verify("correct horse battery", &h));
        assert!(!super::verify("correct horse batterx", &h));
        assert!(!super::verify("anything", "not a phc string"));
        assert!(!super::verify("anything", super::dummy_hash()));
    }
}
