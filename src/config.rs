//! Configuration, read only from the environment (12-factor; README.md lists every
//! variable). Secrets are [`SecretString`]s so they never reach logs or `Debug` output.

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::SecretString;

/// Everything billfold needs to start. Tests build it as a struct literal.
#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`: the database owner (migrations); `None` starts the embedded
    /// PostgreSQL under [`Config::data_dir`].
    pub database_url: Option<SecretString>,
    /// `DATABASE_APP_URL`: the restricted role serving requests; `None` = billfold
    /// creates `billfold_app` itself (see [`crate::database`]).
    pub database_app_url: Option<SecretString>,
    /// `BIND`, default `127.0.0.1:8080`. Port 0 picks a free port (tests).
    pub bind: SocketAddr,
    /// `BASE_URL`: where users reach billfold (no trailing slash). Default
    /// `http://<bound address>`. Stripe redirects and sandbox pages are built from it.
    pub base_url: Option<String>,
    /// `DATA_DIR`, default `.billfold`: embedded PostgreSQL data and generated secrets.
    pub data_dir: PathBuf,
    /// `STRIPE_SECRET_KEY`: real Stripe (`sk_live_…`/`sk_test_…`).
    pub stripe_secret_key: Option<SecretString>,
    /// `STRIPE_SANDBOX=true`: run against the built-in Stripe sandbox (never together
    /// with a key; with neither, `serve` refuses to start).
    pub stripe_sandbox: bool,
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
    /// `TRUSTED_PROXIES`: reverse proxies in front of billfold (default 0). With N > 0
    /// the client address is the N-th address from the right of `X-Forwarded-For`;
    /// with 0 the header is ignored and the peer address is the client.
    pub trusted_proxies: usize,
    /// `SIGNUPS_PER_ADDRESS_PER_HOUR` (default 10): sign-ups one client address may
    /// make per hour (each creates a workspace with free credits).
    pub signups_per_address_per_hour: u32,
    /// `JOB_WORKERS` (default 4): background jobs `serve` runs at once; 0 leaves them
    /// to `billfold worker`.
    pub job_workers: usize,
    /// Delay before a failed job's first retry (doubles each attempt; 2 s).
    pub job_retry_base: std::time::Duration,
    /// `PASSWORD_HASH_CONCURRENCY` (default 2): passwords hashed at once; more wait
    /// up to 3 s, then get 503.
    pub password_hash_concurrency: usize,
    /// Sessions end this long after sign-in whatever the activity (30 days; OWASP
    /// Session Management Cheat Sheet, "absolute timeout").
    pub session_lifetime: std::time::Duration,
    /// How long a metering call may wait for the database before answering 503
    /// `timeout` (10 s; below the 30 s request timeout, so the client gets JSON).
    pub metering_timeout: std::time::Duration,
    /// `ADMIN_APPROVAL_ABOVE_CREDITS` (default 10,000): a staff credit adjustment of
    /// more credits than this (either sign) waits for a second staff member's approval
    /// (four-eyes).
    pub admin_approval_above_credits: i64,
    /// How long a staff member's password re-entry unlocks sensitive actions (sudo mode,
    /// as GitHub does; 15 minutes).
    pub sudo_window: std::time::Duration,
}

/// Which Stripe billfold talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StripeMode {
    /// Real Stripe with this key.
    Live,
    /// The built-in sandbox (`STRIPE_SANDBOX=true`).
    Sandbox,
    /// Neither a key nor `STRIPE_SANDBOX=true`.
    Unconfigured,
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
        let flag = |name: &'static str| -> Result<bool, ConfigError> {
            match var(name).as_deref() {
                None | Some("0" | "false" | "no") => Ok(false),
                Some("1" | "true" | "yes") => Ok(true),
                Some(other) => Err(ConfigError {
                    name,
                    message: format!("expected true or false, got {other:?}"),
                }),
            }
        };
        let number = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            match var(name) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| ConfigError {
                    name,
                    message: format!("expected a whole number, got {v:?}"),
                }),
            }
        };
        let session_secure = flag("SESSION_SECURE")?;
        let stripe_sandbox = flag("STRIPE_SANDBOX")?;
        let stripe_secret_key = secret("STRIPE_SECRET_KEY");
        if stripe_sandbox && stripe_secret_key.is_some() {
            return Err(ConfigError {
                name: "STRIPE_SANDBOX",
                message: "the sandbox cannot run with STRIPE_SECRET_KEY set; unset one of them"
                    .into(),
            });
        }
        let signups = number("SIGNUPS_PER_ADDRESS_PER_HOUR", 10)?;
        Ok(Self {
            database_url: secret("DATABASE_URL"),
            database_app_url: secret("DATABASE_APP_URL"),
            bind,
            base_url,
            data_dir: var("DATA_DIR").map_or_else(|| PathBuf::from(".billfold"), PathBuf::from),
            stripe_secret_key,
            stripe_sandbox,
            stripe_api_base: var("STRIPE_API_BASE"),
            stripe_webhook_secret: secret("STRIPE_WEBHOOK_SECRET"),
            session_secure,
            log_format,
            sandbox_retry_base: std::time::Duration::from_secs(2),
            trusted_proxies: usize::try_from(number("TRUSTED_PROXIES", 0)?).unwrap_or(0),
            signups_per_address_per_hour: u32::try_from(signups.max(1)).unwrap_or(u32::MAX),
            job_workers: usize::try_from(number("JOB_WORKERS", 4)?).unwrap_or(4),
            job_retry_base: std::time::Duration::from_secs(2),
            password_hash_concurrency: usize::try_from(
                number("PASSWORD_HASH_CONCURRENCY", 2)?.max(1),
            )
            .unwrap_or(2),
            metering_timeout: std::time::Duration::from_secs(10),
            session_lifetime: std::time::Duration::from_secs(30 * 86_400),
            admin_approval_above_credits: i64::try_from(number(
                "ADMIN_APPROVAL_ABOVE_CREDITS",
                10_000,
            )?)
            .unwrap_or(i64::MAX),
            sudo_window: std::time::Duration::from_secs(15 * 60),
        })
    }

    /// Which Stripe billfold talks to.
    pub fn stripe_mode(&self) -> StripeMode {
        match (&self.stripe_secret_key, self.stripe_sandbox) {
            (Some(_), _) => StripeMode::Live,
            (None, true) => StripeMode::Sandbox,
            (None, false) => StripeMode::Unconfigured,
        }
    }

    /// Whether billfold runs against its built-in Stripe sandbox.
    pub fn stripe_sandbox(&self) -> bool {
        self.stripe_mode() == StripeMode::Sandbox
    }

    /// Whether users reach billfold over https (`BASE_URL` starts with `https://`, or
    /// `SESSION_SECURE=true`): the session cookie is then `__Host-`-prefixed and
    /// Secure, and responses carry HSTS.
    pub fn https(&self) -> bool {
        self.session_secure
            || self
                .base_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
    }

    /// Where the app role comes from ([`crate::database`]): `DATABASE_APP_URL`, or
    /// `billfold_app` provisioned with a password derived from the owner's
    /// (`owner_url`: the embedded server's URL, else `DATABASE_URL`), so every process
    /// with the same owner agrees on it whatever its `DATA_DIR`.
    pub fn app_role(&self, owner_url: Option<&str>) -> anyhow::Result<crate::database::AppRole> {
        use secrecy::ExposeSecret;
        if let Some(url) = &self.database_app_url {
            return Ok(crate::database::AppRole::Given(url.clone()));
        }
        let owner_url = owner_url.map(str::to_owned).or_else(|| {
            self.database_url
                .as_ref()
                .map(|u| u.expose_secret().to_owned())
        });
        let owner_password = owner_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.password().map(str::to_owned))
            .filter(|p| !p.is_empty());
        let secret = match owner_password {
            Some(p) => SecretString::from(p),
            // No password to derive from (trust or peer authentication): a secret
            // generated once under DATA_DIR.
            None => {
                crate::secrets::load_or_create(&self.data_dir.join("pg.app_secret"), |bytes| {
                    hex::encode(bytes)
                })?
            }
        };
        Ok(crate::database::AppRole::Provision { secret })
    }
}
