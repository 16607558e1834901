//! Configuration, read only from the environment (12-factor; README.md lists every
//! variable). Secrets are [`SecretString`]s so they never reach logs or `Debug` output.

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::SecretString;

/// Everything billfold needs to start. Tests build it as a struct literal.
#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`; `None` starts the embedded PostgreSQL under [`Config::data_dir`].
    pub database_url: Option<SecretString>,
    /// `BIND`, default `127.0.0.1:8080`. Port 0 picks a free port (tests).
    pub bind: SocketAddr,
    /// `BASE_URL`: where users reach billfold (no trailing slash). Default
    /// `http://<bound address>`. Stripe redirects and sandbox pages are built from it.
    pub base_url: Option<String>,
    /// `DATA_DIR`, default `.billfold`: embedded PostgreSQL data and generated secrets.
    pub data_dir: PathBuf,
    /// `STRIPE_SECRET_KEY`; `None` = the built-in Stripe sandbox.
    pub stripe_secret_key: Option<SecretString>,
    /// `STRIPE_API_BASE`: override of Stripe's API base URL (a proxy or a mock).
    pub stripe_api_base: Option<String>,
    /// `STRIPE_WEBHOOK_SECRET` (`whsec_...`). Required with a real key; in sandbox mode
    /// it is generated and stored under `DATA_DIR` when unset.
    pub stripe_webhook_secret: Option<SecretString>,
    /// `SESSION_SECURE`: mark the session cookie `Secure` (serve over https).
    pub session_secure: bool,
    /// `LOG_FORMAT`: `text` (default) or `json`.
    pub log_format: LogFormat,
    /// Delay before the sandbox's first webhook retry (doubles each attempt).
    pub sandbox_retry_base: std::time::Duration,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// A variable is present but unusable.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {message}")]
pub struct ConfigError {
    name: &'static str,
    message: String,
}

impl Config {
    /// Reads the environment. Unset optional variables get the defaults documented on
    /// each field; a malformed value is an error naming the variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        let var = |name: &'static str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let secret = |name: &'static str| var(name).map(SecretString::from);
        let bind = match var("BIND") {
            Some(v) => v.parse().map_err(|e| ConfigError {
                name: "BIND",
                message: format!("expected host:port, {e}"),
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let base_url = match var("BASE_URL") {
            Some(v) => {
                let parsed = url::Url::parse(&v).map_err(|e| ConfigError {
                    name: "BASE_URL",
                    message: format!("expected an absolute URL, {e}"),
                })?;
                Some(parsed.as_str().trim_end_matches('/').to_owned())
            }
            None => None,
        };
        let session_secure = match var("SESSION_SECURE").as_deref() {
            None | Some("0" | "false" | "no") => false,
            Some("1" | "true" | "yes") => true,
            Some(other) => {
                return Err(ConfigError {
                    name: "SESSION_SECURE",
                    message: format!("expected true or false, got {other:?}"),
                });
            }
        };
        let log_format = match var("LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError {
                    name: "LOG_FORMAT",
                    message: format!("expected text or json, got {other:?}"),
                });
            }
        };
        Ok(Self {
            database_url: secret("DATABASE_URL"),
            bind,
            base_url,
            data_dir: var("DATA_DIR").map_or_else(|| PathBuf::from(".billfold"), PathBuf::from),
            stripe_secret_key: secret("STRIPE_SECRET_KEY"),
            stripe_api_base: var("STRIPE_API_BASE"),
            stripe_webhook_secret: secret("STRIPE_WEBHOOK_SECRET"),
            session_secure,
            log_format,
            sandbox_retry_base: std::time::Duration::from_secs(2),
        })
    }

    /// Whether billfold runs against its built-in Stripe sandbox (no real key).
    pub fn stripe_sandbox(&self) -> bool {
        self.stripe_secret_key.is_none()
    }
}
