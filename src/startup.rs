//! Building and running the application: database (given or embedded), migrations,
//! catalog seed, Stripe client (real or sandbox), router, graceful shutdown.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rand::RngCore;
use secrecy::SecretString;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tower_sessions::ExpiredDeletion;
use tower_sessions_sqlx_store::PostgresStore;

use crate::config::Config;
use crate::embedded_pg::EmbeddedPostgres;
use crate::stripe::StripeClient;
use crate::web::{self, AppState};

/// Connects to `DATABASE_URL`, or starts the embedded PostgreSQL under `DATA_DIR`
/// (returned so the caller can stop it on shutdown).
pub async fn connect(config: &Config) -> anyhow::Result<(PgPool, Option<EmbeddedPostgres>)> {
    use secrecy::ExposeSecret;
    let (url, embedded) = match &config.database_url {
        Some(url) => (url.expose_secret().to_owned(), None),
        None => {
            let pg = EmbeddedPostgres::start(&config.data_dir).await?;
            (pg.database_url(), Some(pg))
        }
    };
    let db = PgPoolOptions::new()
        .max_connections(32)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(&url)
        .await
        .context("connect to postgres")?;
    Ok((db, embedded))
}

/// Applies the embedded migrations, then (with the `sandbox` feature) the Stripe
/// sandbox's own, which live in `migrations/sandbox/`. Both migrators record their
/// versions in the same `_sqlx_migrations` table, so each ignores the other's
/// versions. sqlx takes a Postgres advisory lock while migrating, so several
/// processes starting together apply each migration once.
pub async fn migrate(db: &PgPool) -> anyhow::Result<()> {
    let mut migrator = sqlx::migrate!();
    migrator.set_ignore_missing(true);
    migrator.run(db).await.context("run migrations")?;
    #[cfg(feature = "sandbox")]
    crate::sandbox::migrate(db)
        .await
        .context("run sandbox migrations")?;
    PostgresStore::new(db.clone())
        .migrate()
        .await
        .context("create session table")?;
    Ok(())
}

/// A built, bound, not yet serving billfold.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    base_url: String,
    db: PgPool,
    embedded: Option<EmbeddedPostgres>,
    session_store: PostgresStore,
    stripe: StripeClient,
}

impl Application {
    /// Connects (or starts the embedded database), migrates, seeds the catalog on an
    /// empty database, and binds `config.bind`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let (db, embedded) = connect(&config).await?;
        let mut app = Self::build_with_pool(config, db).await?;
        app.embedded = embedded;
        Ok(app)
    }

    /// Like [`Application::build`] on an existing pool (tests use `#[sqlx::test]`'s).
    pub async fn build_with_pool(config: Config, db: PgPool) -> anyhow::Result<Self> {
        migrate(&db).await?;
        crate::catalog::seed_default(&db).await?;
        let listener = TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("bind {}", config.bind))?;
        let addr = listener.local_addr()?;
        let base_url = config
            .base_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let webhook_secret = webhook_secret(&config)?;
        let session_store = PostgresStore::new(db.clone());

        let (stripe, sandbox) = if let Some(key) = &config.stripe_secret_key {
            (
                StripeClient::new(key, config.stripe_api_base.as_deref())?,
                None,
            )
        } else {
            sandbox_parts(&config, &db, &base_url, &webhook_secret)?
        };
        let state = AppState {
            db: db.clone(),
            config: Arc::new(config),
            stripe: stripe.clone(),
            base_url: base_url.clone().into(),
            webhook_secret: Arc::new(webhook_secret),
            login_limiter: Arc::new(crate::web::auth::login_limiter()),
        };
        let router = web::router(state, session_store.clone(), sandbox);
        Ok(Self {
            listener,
            router,
            base_url,
            db,
            embedded: None,
            session_store,
            stripe,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Where users reach this instance.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The database pool.
    pub fn db(&self) -> &PgPool {
        &self.db
    }

    /// The Stripe client (real or sandbox).
    pub fn stripe(&self) -> &StripeClient {
        &self.stripe
    }

    /// Serves until SIGINT/SIGTERM, finishes in-flight requests, then stops the
    /// embedded PostgreSQL if this process started it.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let deletion = tokio::spawn(
            self.session_store
                .clone()
                .continuously_delete_expired(std::time::Duration::from_secs(3600)),
        );
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown_signal())
            .await;
        deletion.abort();
        self.db.close().await;
        if let Some(pg) = self.embedded {
            pg.stop().await?;
        }
        served.context("serve http")
    }
}

/// The Stripe client for a one-off CLI command. With a real key: Stripe. In sandbox
/// mode the sandbox is served in-process on a free loopback port for the command's
/// duration (abort the returned task when done); its events queue in the database and
/// are delivered by the next `serve`.
pub async fn stripe_client_for_cli(
    config: &Config,
    db: &PgPool,
) -> anyhow::Result<(StripeClient, Option<tokio::task::JoinHandle<()>>)> {
    if let Some(key) = &config.stripe_secret_key {
        return Ok((
            StripeClient::new(key, config.stripe_api_base.as_deref())?,
            None,
        ));
    }
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("bind the sandbox")?;
    let base_url = format!("http://{}", listener.local_addr()?);
    let webhook_secret = webhook_secret(config)?;
    let mut cli_config = config.clone();
    cli_config.base_url = Some(
        config
            .base_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.bind)),
    );
    let (stripe, sandbox) = sandbox_parts(&cli_config, db, &base_url, &webhook_secret)?;
    let router = axum::Router::new().nest_service("/sandbox", sandbox.unwrap_or_default());
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "in-process sandbox stopped");
        }
    });
    Ok((stripe, Some(server)))
}

/// The sandbox's settings for this configuration and public base URL.
#[cfg(feature = "sandbox")]
pub fn sandbox_config(
    config: &Config,
    base_url: &str,
    webhook_secret: &SecretString,
) -> crate::sandbox::SandboxConfig {
    crate::sandbox::SandboxConfig {
        public_base_url: base_url.to_owned(),
        webhook_url: format!("{base_url}/webhooks/stripe"),
        webhook_secret: webhook_secret.clone(),
        retry_base_delay: config.sandbox_retry_base,
        max_attempts: 8,
    }
}

/// `billfold sandbox advance --days N`: moves the sandbox clock and runs what falls
/// due (renewals, failed payments, cancellations). The events queue in the database and
/// a running `billfold serve` delivers them within seconds. Returns the new sandbox
/// time (unix seconds).
#[cfg(feature = "sandbox")]
pub async fn advance_sandbox_clock(config: &Config, db: &PgPool, days: i64) -> anyhow::Result<i64> {
    anyhow::ensure!(
        config.stripe_sandbox(),
        "the sandbox clock exists only without STRIPE_SECRET_KEY"
    );
    anyhow::ensure!((0..=3650).contains(&days), "--days must be from 0 to 3650");
    let base_url = config
        .base_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.bind));
    let sandbox = sandbox_config(config, &base_url, &webhook_secret(config)?);
    Ok(crate::sandbox::advance(db, &sandbox, days).await?)
}

#[cfg(feature = "sandbox")]
fn sandbox_parts(
    config: &Config,
    db: &PgPool,
    base_url: &str,
    webhook_secret: &SecretString,
) -> anyhow::Result<(StripeClient, Option<axum::Router>)> {
    use crate::sandbox::{self, SANDBOX_SECRET_KEY};
    let stripe = StripeClient::new(
        &SecretString::from(SANDBOX_SECRET_KEY),
        Some(&format!("{base_url}/sandbox/")),
    )?;
    // The sandbox stands in for a remote service: it gets its own small pool, so a
    // webhook transaction waiting on a Stripe call can never starve it of connections.
    let sandbox_db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect_lazy_with((*db.connect_options()).clone());
    {
        // Closes with the application's pool (shutdown, or a test's teardown).
        let (db, sandbox_db) = (db.clone(), sandbox_db.clone());
        tokio::spawn(async move {
            db.close_event().await;
            sandbox_db.close().await;
        });
    }
    // `routers.control` (clock, faults, disputes, test cards) is where the guard goes
    let routers = sandbox::router(sandbox_db, sandbox_config(config, base_url, webhook_secret));
    Ok((stripe, Some(routers.stripe.merge(routers.control))))
}

#[cfg(not(feature = "sandbox"))]
fn sandbox_parts(
    _config: &Config,
    _db: &PgPool,
    _base_url: &str,
    _webhook_secret: &SecretString,
) -> anyhow::Result<(StripeClient, Option<axum::Router>)> {
    anyhow::bail!(
        "STRIPE_SECRET_KEY is not set and this binary was built without the Stripe sandbox"
    )
}

/// `STRIPE_WEBHOOK_SECRET`, or in sandbox mode a secret generated once and kept in
/// `DATA_DIR/stripe_webhook_secret` (mode 0600).
fn webhook_secret(config: &Config) -> anyhow::Result<SecretString> {
    if let Some(s) = &config.stripe_webhook_secret {
        return Ok(s.clone());
    }
    anyhow::ensure!(
        config.stripe_sandbox(),
        "STRIPE_WEBHOOK_SECRET is required with STRIPE_SECRET_KEY (Stripe dashboard → Webhooks → signing secret)"
    );
    load_or_create_secret(&config.data_dir.join("stripe_webhook_secret"))
}

fn load_or_create_secret(path: &Path) -> anyhow::Result<SecretString> {
    if let Ok(s) = std::fs::read_to_string(path) {
        let s = s.trim();
        if !s.is_empty() {
            return Ok(SecretString::from(s.to_owned()));
        }
    }
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = format!("whsec_{}", hex::encode(bytes));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("write {}", path.display()))?;
        f.write_all(secret.as_bytes())?;
    }
    Ok(SecretString::from(secret))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! { () = ctrl_c => {}, () = terminate => {} }
    tracing::info!("shutting down");
}
