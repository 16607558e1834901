//! TEMPORARY stub until the sandbox branch lands.
pub struct SandboxConfig {
    pub public_base_url: String,
    pub webhook_url: String,
    pub webhook_secret: secrecy::SecretString,
    pub retry_base_delay: std::time::Duration,
    pub max_attempts: u32,
}
pub fn router(_db: sqlx::PgPool, _config: SandboxConfig) -> axum::Router {
    axum::Router::new()
}
pub const SANDBOX_SECRET_KEY: &str = "sk_test_billfold_sandbox";
