//! The database connection: migrations as the owner, and a restricted role for the
//! running app (issue 6, "the web app cannot break the ledger").
//!
//! Two roles: the **owner** (`DATABASE_URL`, or the embedded server's superuser) runs
//! migrations and owns every table; the **app role** serves requests and runs jobs
//! with select/insert/update/delete only: no superuser, no ownership (so it cannot
//! disable the ledger's triggers or alter tables), no TRUNCATE, and on
//! `ledger_entries` only select and insert. With `DATABASE_APP_URL` unset, billfold
//! creates the login role `billfold_app` itself (the owner needs CREATEROLE), its
//! password derived from the owner's (or, for an owner without one, from a secret kept
//! in `DATA_DIR/pg.app_secret`, mode 0600); with it set, billfold grants that role
//! what it needs and refuses to serve if it is a superuser.

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use tower_sessions_sqlx_store::PostgresStore;

/// The login role billfold creates for itself when it may.
pub const APP_ROLE: &str = "billfold_app";

/// Connections the app's pool may hold.
pub const MAX_CONNECTIONS: u32 = 32;

/// The database clock (`clock_timestamp()`): the time every process agrees on.
pub async fn now(conn: &mut PgConnection) -> anyhow::Result<OffsetDateTime> {
    Ok(sqlx::query_scalar("select clock_timestamp()")
        .fetch_one(conn)
        .await?)
}

/// Stripe's clock: what commission hold periods and payout months count in. With real
/// Stripe, the database's clock; in sandbox mode (`sandbox = true`), the sandbox clock
/// (`billfold sandbox advance` moves it), so a hold period can pass in a demo or a
/// test as it would over weeks.
pub async fn stripe_now(conn: &mut PgConnection, sandbox: bool) -> anyhow::Result<OffsetDateTime> {
    if sandbox {
        let at: Option<OffsetDateTime> = sqlx::query_scalar(
            "select clock_timestamp() + make_interval(secs => offset_seconds) from sandbox_clocks",
        )
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(at) = at {
            return Ok(at);
        }
    }
    now(conn).await
}

/// Whether the database answers (`select 1`).
pub async fn ping(db: &PgPool) -> anyhow::Result<()> {
    sqlx::query("select 1").execute(db).await?;
    Ok(())
}

/// Applies billfold's migrations (and, with the sandbox feature, the sandbox's), then
/// creates the session table. sqlx takes a Postgres advisory lock while migrating, so
/// several processes starting together apply each migration once. Both migrators share
/// `_sqlx_migrations`, so each ignores the other's versions.
pub async fn migrate(owner: &PgPool) -> anyhow::Result<()> {
    let mut main = sqlx::migrate!();
    main.set_ignore_missing(true);
    main.run(owner).await.context("run migrations")?;
    #[cfg(feature = "sandbox")]
    crate::sandbox::migrate(owner)
        .await
        .context("run sandbox migrations")?;
    PostgresStore::new(owner.clone())
        .migrate()
        .await
        .context("create session table")?;
    Ok(())
}

/// Where the app role comes from.
#[derive(Debug, Clone)]
pub enum AppRole {
    /// `DATABASE_APP_URL`: a role the operator made.
    Given(SecretString),
    /// Create `billfold_app`, its password derived from `secret` (HMAC-SHA256), so
    /// every process holding the same secret computes the same password.
    Provision {
        /// The owner's password, or a generated secret.
        secret: SecretString,
    },
}

/// The app role's password for a provisioning secret.
fn derive_password(secret: &SecretString) -> anyhow::Result<SecretString> {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.expose_secret().as_bytes())
        .map_err(|e| anyhow::anyhow!("derive the app role's password: {e}"))?;
    mac.update(APP_ROLE.as_bytes());
    Ok(SecretString::from(hex::encode(mac.finalize().into_bytes())))
}

/// Grants the app role its privileges (as the owner) and opens its pool.
pub async fn app_pool(owner: &PgPool, role: &AppRole) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = match role {
        AppRole::Given(url) => url
            .expose_secret()
            .parse()
            .context("DATABASE_APP_URL is not a PostgreSQL URL")?,
        AppRole::Provision { secret } => {
            let password = derive_password(secret)?;
            provision(owner, &password).await?;
            (*owner.connect_options())
                .clone()
                .username(APP_ROLE)
                .password(password.expose_secret())
        }
    };
    // No JIT: its compile time (10–100 ms) dwarfs the short queries billfold runs; the
    // planner turns it on for large row estimates such as the overview's
    // `generate_series` join, making a 9 ms query take 150 ms.
    let options = options.options([("jit", "off")]);
    let name = options.get_username().to_owned();
    grant(owner, &name).await?;
    let pool = PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_with(options)
        .await
        .with_context(|| format!("connect to postgres as {name}"))?;
    let superuser: bool =
        sqlx::query_scalar("select rolsuper from pg_roles where rolname = current_user")
            .fetch_one(&pool)
            .await?;
    anyhow::ensure!(
        !superuser,
        "the app role {name} is a superuser; give billfold a role without superuser (README: roles for an external database)"
    );
    Ok(pool)
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates (or updates the password of) `billfold_app`. Roles are cluster-wide and
/// several processes (or test databases) may do this at once, so a concurrent
/// creation is tolerated.
async fn provision(owner: &PgPool, password: &SecretString) -> anyhow::Result<()> {
    let literal = format!("'{}'", password.expose_secret().replace('\'', "''"));
    let role = quote_ident(APP_ROLE);
    for _ in 0..3 {
        let exists: bool =
            sqlx::query_scalar("select exists (select 1 from pg_roles where rolname = $1)")
                .bind(APP_ROLE)
                .fetch_one(owner)
                .await?;
        let sql = if exists {
            format!(
                "alter role {role} with login nosuperuser nocreatedb nocreaterole password {literal}"
            )
        } else {
            format!(
                "create role {role} with login nosuperuser nocreatedb nocreaterole password {literal}"
            )
        };
        match sqlx::query(&sql).execute(owner).await {
            Ok(_) => return Ok(()),
            // Another process created it between our look and our create: alter it.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42710" | "23505" | "XX000")) => {}
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => {
                anyhow::bail!(
                    "cannot create the database role {APP_ROLE}: give the DATABASE_URL role CREATEROLE, or set DATABASE_APP_URL to a role without superuser (README: roles for an external database)"
                );
            }
            Err(e) => return Err(e).context("create the app role"),
        }
    }
    anyhow::bail!("could not create or update the database role {APP_ROLE}")
}

/// What the app role may do: read and write rows, never truncate, never change or
/// delete ledger entries, never touch the migration history.
async fn grant(owner: &PgPool, role: &str) -> anyhow::Result<()> {
    let role = quote_ident(role);
    let statements = [
        format!("grant usage on schema public to {role}"),
        format!("grant select, insert, update, delete on all tables in schema public to {role}"),
        format!("grant usage, select on all sequences in schema public to {role}"),
        format!("revoke update, delete, truncate on ledger_entries from {role}"),
        format!("revoke all on _sqlx_migrations from {role}"),
        format!("grant usage on schema tower_sessions to {role}"),
        format!(
            "grant select, insert, update, delete on all tables in schema tower_sessions to {role}"
        ),
    ];
    let mut tx = owner.begin().await?;
    // Grants on shared catalogs race between processes ("tuple concurrently updated"):
    // one process grants at a time.
    sqlx::query("select pg_advisory_xact_lock(7242100003)")
        .execute(&mut *tx)
        .await?;
    for sql in &statements {
        sqlx::query(sql)
            .execute(&mut *tx)
            .await
            .with_context(|| sql.clone())?;
    }
    tx.commit().await?;
    Ok(())
}
