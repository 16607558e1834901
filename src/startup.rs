//! Building and running the application: database (given or embedded), migrations as
//! the owner, the restricted app role, catalog seed, Stripe client (real or sandbox),
//! router, background jobs, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use secrecy::SecretString;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_sessions::ExpiredDeletion;
use tower_sessions_sqlx_store::PostgresStore;

use crate::accounts::password::PasswordHasher;
use crate::config::{Config, StripeMode};
use crate::embedded_pg::EmbeddedPostgres;
use crate::jobs::{Runner, RunnerSettings};
use crate::resellers::commissions;
use crate::stripe::StripeClient;
use crate::web::{self, AppState};
use crate::{allowances, database, stripe_events, top_ups};

/// Connects to `DATABASE_URL` (the owner), or starts the embedded PostgreSQL under
/// `DATA_DIR` (returned so the caller can stop it on shutdown).
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
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await
        .context("connect to postgres")?;
    Ok((db, embedded))
}

/// Migrates and seeds the catalog as the owner, then opens the app role's pool.
/// `embedded`: the embedded server `connect` started, if any.
pub async fn prepare(
    config: &Config,
    owner: &PgPool,
    embedded: Option<&EmbeddedPostgres>,
) -> anyhow::Result<PgPool> {
    database::migrate(owner).await?;
    crate::catalog::seed_default(owner).await?;
    let owner_url = embedded.map(EmbeddedPostgres::database_url);
    database::app_pool(owner, &config.app_role(owner_url.as_deref())?).await
}

/// A built, bound, not yet serving billfold.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    base_url: String,
    db: PgPool,
    owner: Option<PgPool>,
    embedded: Option<EmbeddedPostgres>,
    session_store: PostgresStore,
    stripe: StripeClient,
    config: Arc<Config>,
    ready: Arc<AtomicBool>,
}

impl Application {
    /// Connects (or starts the embedded database), migrates, seeds the catalog on an
    /// empty database, opens the app role's pool and binds `config.bind`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let (owner, embedded) = connect(&config).await?;
        let db = prepare(&config, &owner, embedded.as_ref()).await?;
        let mut app = Self::build_on(config, db).await?;
        app.embedded = embedded;
        app.owner = Some(owner);
        Ok(app)
    }

    /// Like [`Application::build`] with an owner pool (tests use `#[sqlx::test]`'s; it
    /// is not closed at shutdown). The app role's password derives from
    /// `config.database_url`'s, else from a secret under `DATA_DIR`.
    pub async fn build_with_pool(config: Config, owner: PgPool) -> anyhow::Result<Self> {
        let db = prepare(&config, &owner, None).await?;
        Self::build_on(config, db).await
    }

    async fn build_on(config: Config, db: PgPool) -> anyhow::Result<Self> {
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

        let (stripe, sandbox) = match config.stripe_mode() {
            StripeMode::Live => (live_client(&config)?, None),
            StripeMode::Sandbox => sandbox_parts(&config, &db, &base_url, &webhook_secret, true)?,
            StripeMode::Unconfigured => anyhow::bail!(
                "set STRIPE_SECRET_KEY to use Stripe, or STRIPE_SANDBOX=true to try billfold with its built-in Stripe sandbox"
            ),
        };
        // In sandbox mode the catalog is put on sale by this very process once it
        // listens; until then billfold is not ready.
        let ready = Arc::new(AtomicBool::new(!config.stripe_sandbox()));
        let config = Arc::new(config);
        let state = AppState {
            db: db.clone(),
            config: Arc::clone(&config),
            stripe: stripe.clone(),
            base_url: base_url.clone().into(),
            webhook_secret: Arc::new(webhook_secret),
            limits: Arc::new(web::limits::Limits::new(&config)),
            hasher: hasher(&config),
            ready: Arc::clone(&ready),
        };
        let router = web::router(state, session_store.clone(), sandbox);
        Ok(Self {
            listener,
            router,
            base_url,
            db,
            owner: None,
            embedded: None,
            session_store,
            stripe,
            config,
            ready,
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

    /// The app role's pool.
    pub fn db(&self) -> &PgPool {
        &self.db
    }

    /// The Stripe client (real or sandbox).
    pub fn stripe(&self) -> &StripeClient {
        &self.stripe
    }

    /// A password hasher with the configured concurrency (CLI and demo seed).
    pub fn hasher(&self) -> PasswordHasher {
        hasher(&self.config)
    }

    /// Whether billfold is ready (`/readyz`).
    pub fn ready_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.ready)
    }

    /// Serves until SIGINT/SIGTERM ([`Application::run_until`]).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal(), || {}).await
    }

    /// Serves and runs background jobs until `shutdown` completes; calls `on_ready`
    /// once billfold is ready (in sandbox mode: once the catalog is on sale, so a
    /// customer's first "Subscribe" reaches Checkout). Then finishes in-flight requests
    /// and jobs, and stops the embedded PostgreSQL if this process started it. Logs
    /// "listening" once it listens; `shutdown` should be listening by then (as
    /// [`shutdown_signal`]'s is from its call), so a stop from then on is a clean one.
    pub async fn run_until<F>(
        self,
        shutdown: F,
        on_ready: impl FnOnce() + Send + 'static,
    ) -> anyhow::Result<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let (stop_tx, stop_rx) = watch::channel(false);
        let deletion = tokio::spawn(
            self.session_store
                .clone()
                .continuously_delete_expired(Duration::from_secs(3600)),
        );
        let runner = (self.config.job_workers > 0).then(|| {
            job_runner(
                &self.db,
                &self.stripe,
                &self.config,
                self.config.job_workers,
            )
            .spawn(stop_rx.clone())
        });
        let address = self
            .listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let mut server_stop = stop_rx.clone();
        let server = tokio::spawn(
            axum::serve(
                self.listener,
                self.router
                    .into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|stop| *stop).await;
            })
            .into_future(),
        );
        let signal = tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        tracing::info!(%address, "listening");
        if self.config.stripe_sandbox() {
            put_catalog_on_sale(&self.db, &self.stripe, stop_rx.clone()).await;
        } else if let Ok(mut conn) = self.db.acquire().await
            && let Ok(false) = crate::catalog::db::all_plans_on_sale(&mut conn).await
        {
            tracing::warn!(
                "paid plans have no Stripe price yet: customers cannot subscribe until you run `billfold stripe sync`"
            );
        }
        if !*stop_rx.borrow() {
            self.ready.store(true, Ordering::SeqCst);
            on_ready();
        }
        let served = server.await.context("server task")?;
        signal.abort();
        if let Some(runner) = runner {
            // Jobs in hand finish (or their lease lets another process take them).
            let _ = tokio::time::timeout(Duration::from_secs(10), runner).await;
        }
        deletion.abort();
        self.db.close().await;
        if let Some(owner) = self.owner {
            owner.close().await;
        }
        if let Some(pg) = self.embedded {
            pg.stop().await?;
        }
        served.context("serve http")
    }
}

/// A password hasher with the configured concurrency; a request waits at most 3 s for
/// a turn.
pub fn hasher(config: &Config) -> PasswordHasher {
    PasswordHasher::new(config.password_hash_concurrency, Duration::from_secs(3))
}

/// Puts the catalog on sale in the sandbox this process serves, retrying quietly while
/// the server comes up; gives up silently at shutdown.
async fn put_catalog_on_sale(db: &PgPool, stripe: &StripeClient, mut stop: watch::Receiver<bool>) {
    for attempt in 1..=20 {
        match crate::catalog::sync::sync(db, stripe).await {
            Ok(_) => return,
            Err(e) => {
                if *stop.borrow() || db.is_closed() {
                    return;
                }
                tracing::debug!(error = %e, attempt, "catalog not on sale yet; retrying");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100 * attempt)) => {}
            _ = stop.changed() => return,
        }
    }
    tracing::error!("could not put the catalog on sale in the sandbox; subscriptions cannot start");
}

/// The background jobs of this process: the webhook inbox, the free plan's monthly
/// allowance, reconciliation of abandoned top-ups, commission approval (every
/// minute) and payout drafting (every 5 minutes; one payout per reseller, currency and
/// month),
/// and housekeeping.
pub fn job_runner(
    db: &PgPool,
    stripe: &StripeClient,
    config: &Config,
    concurrency: usize,
) -> Runner {
    let settings = RunnerSettings {
        concurrency,
        retry_base: config.job_retry_base,
        ..RunnerSettings::default()
    };
    let (d1, s1) = (db.clone(), stripe.clone());
    let d2 = db.clone();
    let (d3, s3) = (db.clone(), stripe.clone());
    let d4 = db.clone();
    let (d5, d6) = (db.clone(), db.clone());
    let sandbox = config.stripe_sandbox();
    Runner::new(db.clone(), settings)
        .handle(
            stripe_events::APPLY_JOB,
            stripe_events::MAX_ATTEMPTS,
            move |job| {
                let (db, stripe) = (d1.clone(), s1.clone());
                async move { stripe_events::apply(&db, &stripe, &job.key).await }
            },
        )
        .handle(allowances::FREE_RESET_JOB, 5, move |_| {
            let db = d2.clone();
            async move { allowances::run_free_resets(&db).await.map(|_| ()) }
        })
        .handle(top_ups::RECONCILE_JOB, 5, move |_| {
            let (db, stripe) = (d3.clone(), s3.clone());
            async move { top_ups::reconcile_open(&db, &stripe).await.map(|_| ()) }
        })
        .handle(crate::jobs::PURGE_JOB, 3, move |_| {
            let db = d4.clone();
            async move { crate::jobs::purge(&db).await }
        })
        .handle(commissions::APPROVE_JOB, 5, move |_| {
            let db = d5.clone();
            async move {
                let mut tx = db.begin().await?;
                let now = crate::database::stripe_now(&mut tx, sandbox).await?;
                commissions::approve_due(&mut tx, now).await?;
                tx.commit().await?;
                Ok(())
            }
        })
        .handle(commissions::PAYOUT_JOB, 5, move |_| {
            let db = d6.clone();
            async move {
                let mut tx = db.begin().await?;
                let now = crate::database::stripe_now(&mut tx, sandbox).await?;
                commissions::draft_payouts(&mut tx, now).await?;
                tx.commit().await?;
                Ok(())
            }
        })
        .every(allowances::FREE_RESET_JOB, Duration::from_secs(600))
        .every(commissions::APPROVE_JOB, Duration::from_secs(60))
        .every(commissions::PAYOUT_JOB, Duration::from_secs(300))
        .every(top_ups::RECONCILE_JOB, Duration::from_secs(3600))
        .every(crate::jobs::PURGE_JOB, Duration::from_secs(86_400))
}

/// What `billfold payouts draft` did.
#[derive(Debug, Clone)]
pub struct PayoutRun {
    /// Stripe's clock when it ran.
    pub now: time::OffsetDateTime,
    /// Commissions (and reversals) approved now.
    pub approved: u64,
    /// Payouts drafted now.
    pub drafted: Vec<crate::resellers::db::BackOfficePayout>,
}

/// `billfold payouts draft`: the approval and payout jobs run once, now, in one
/// transaction, on Stripe's clock as the jobs are (the sandbox clock in sandbox mode).
/// Drafts at most one payout per reseller, currency and month, as the job does.
pub async fn draft_payouts_now(config: &Config, db: &PgPool) -> anyhow::Result<PayoutRun> {
    let mut tx = db.begin().await?;
    let now = database::stripe_now(&mut tx, config.stripe_sandbox()).await?;
    let approved = commissions::approve_due(&mut tx, now).await?;
    let ids = commissions::draft_payouts(&mut tx, now).await?;
    let mut drafted = crate::resellers::db::back_office_payouts(&mut tx, None).await?;
    drafted.retain(|p| ids.contains(&p.payout.payout_id));
    tx.commit().await?;
    Ok(PayoutRun {
        now,
        approved,
        drafted,
    })
}

/// `billfold worker`: the background jobs alone, no HTTP, until SIGINT/SIGTERM.
pub async fn run_worker(config: Config) -> anyhow::Result<()> {
    let (owner, embedded) = connect(&config).await?;
    let db = prepare(&config, &owner, embedded.as_ref()).await?;
    owner.close().await;
    let stripe = match config.stripe_mode() {
        StripeMode::Live => live_client(&config)?,
        // The sandbox is served by `billfold serve`; the worker talks to it there.
        StripeMode::Sandbox => sandbox_client(&config)?,
        StripeMode::Unconfigured => anyhow::bail!(
            "set STRIPE_SECRET_KEY, or STRIPE_SANDBOX=true, before starting the worker"
        ),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let concurrency = config.job_workers.max(1);
    let shutdown = shutdown_signal();
    let handle = job_runner(&db, &stripe, &config, concurrency).spawn(stop_rx);
    tracing::info!(concurrency, "worker running");
    shutdown.await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
    db.close().await;
    if let Some(pg) = embedded {
        pg.stop().await?;
    }
    Ok(())
}

fn live_client(config: &Config) -> anyhow::Result<StripeClient> {
    let key = config
        .stripe_secret_key
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("STRIPE_SECRET_KEY is not set"))?;
    StripeClient::new(key, config.stripe_api_base.as_deref())
}

/// A client for the sandbox served by `billfold serve` at `BASE_URL`.
#[cfg(feature = "sandbox")]
fn sandbox_client(config: &Config) -> anyhow::Result<StripeClient> {
    let base = config
        .base_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.bind));
    StripeClient::new(
        &SecretString::from(crate::sandbox::SANDBOX_SECRET_KEY),
        Some(&format!("{base}/sandbox/")),
    )
}

#[cfg(not(feature = "sandbox"))]
fn sandbox_client(_config: &Config) -> anyhow::Result<StripeClient> {
    anyhow::bail!("this binary was built without the Stripe sandbox")
}

/// The Stripe client for a one-off CLI command. With a real key: Stripe. In sandbox
/// mode the sandbox is served in-process on a free loopback port for the command's
/// duration (abort the returned task when done); its events queue in the database and
/// are delivered by a running (or the next) `serve`.
pub async fn stripe_client_for_cli(
    config: &Config,
    db: &PgPool,
) -> anyhow::Result<(StripeClient, Option<tokio::task::JoinHandle<()>>)> {
    match config.stripe_mode() {
        StripeMode::Live => return Ok((live_client(config)?, None)),
        StripeMode::Sandbox => {}
        StripeMode::Unconfigured => anyhow::bail!(
            "set STRIPE_SECRET_KEY to use Stripe, or STRIPE_SANDBOX=true for the built-in sandbox"
        ),
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
    let (stripe, sandbox) = sandbox_parts(&cli_config, db, &base_url, &webhook_secret, false)?;
    // Served on a loopback port for this command only: no guard needed.
    let router = match sandbox {
        Some(routes) => {
            axum::Router::new().nest_service("/sandbox", routes.stripe.merge(routes.control))
        }
        None => axum::Router::new(),
    };
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
/// a running `billfold serve` delivers them. Returns the new sandbox time (unix seconds).
#[cfg(feature = "sandbox")]
pub async fn advance_sandbox_clock(config: &Config, db: &PgPool, days: i64) -> anyhow::Result<i64> {
    anyhow::ensure!(
        config.stripe_sandbox(),
        "the sandbox clock exists only with STRIPE_SANDBOX=true"
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
    deliver_webhooks: bool,
) -> anyhow::Result<(StripeClient, Option<web::SandboxRoutes>)> {
    use crate::sandbox::{self, SANDBOX_SECRET_KEY};
    let stripe = StripeClient::new(
        &SecretString::from(SANDBOX_SECRET_KEY),
        Some(&format!("{base_url}/sandbox/")),
    )?;
    // The sandbox stands in for a remote service: it gets its own small pool, so an
    // app waiting on a Stripe call can never starve it of connections.
    let sandbox_db = PgPoolOptions::new()
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
    let sandbox_config = sandbox_config(config, base_url, webhook_secret);
    let routers = if deliver_webhooks {
        sandbox::router(sandbox_db, sandbox_config)
    } else {
        sandbox::router_without_delivery(sandbox_db, sandbox_config)
    };
    Ok((
        stripe,
        Some(web::SandboxRoutes {
            stripe: routers.stripe,
            control: routers.control,
        }),
    ))
}

#[cfg(not(feature = "sandbox"))]
fn sandbox_parts(
    _config: &Config,
    _db: &PgPool,
    _base_url: &str,
    _webhook_secret: &SecretString,
    _deliver_webhooks: bool,
) -> anyhow::Result<(StripeClient, Option<web::SandboxRoutes>)> {
    anyhow::bail!("STRIPE_SANDBOX=true, but this binary was built without the Stripe sandbox")
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
    crate::secrets::load_or_create(&config.data_dir.join("stripe_webhook_secret"), |bytes| {
        format!("whsec_{}", hex::encode(bytes))
    })
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is called,
/// not when the future is first polled: from then on a SIGTERM is a clean stop, not
/// the default action (the process killed).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind, name: &'static str| {
        let installed = signal(kind);
        async move {
            match installed {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for {name}");
                    std::future::pending::<()>().await;
                }
            }
        }
    };
    let interrupt = listen(SignalKind::interrupt(), "SIGINT");
    let terminate = listen(SignalKind::terminate(), "SIGTERM");
    async move {
        tokio::select! { () = interrupt => {}, () = terminate => {} }
        tracing::info!("shutting down");
    }
}
