//! The command line: `billfold [serve]`, `migrate`, `seed-demo`, `create-user`,
//! `api-key create`, `db url`. Configuration comes from the environment (see
//! [`crate::config`]); flags only say what to do.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::startup::{self, Application};
use crate::{accounts, api_keys, demo, telemetry};

/// billfold: a self-hostable billing portal.
#[derive(Debug, Parser)]
#[command(name = "billfold", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the portal (the default): migrate, seed an empty database, listen on BIND.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Create the demo catalog and demo users (if missing) and exit.
    SeedDemo,
    /// Create a user with their own workspace on the free plan.
    CreateUser {
        /// Email address (login).
        #[arg(long)]
        email: String,
        /// Password, 12 to 128 characters.
        #[arg(long)]
        password: String,
        /// Make the user staff (admin pages).
        #[arg(long)]
        staff: bool,
    },
    /// Manage metering API keys.
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Stripe helpers.
    Stripe {
        #[command(subcommand)]
        command: StripeCommand,
    },
    /// The Stripe sandbox (only without STRIPE_SECRET_KEY).
    #[cfg(feature = "sandbox")]
    Sandbox {
        #[command(subcommand)]
        command: SandboxCommand,
    },
    /// Database helpers.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ApiKeyCommand {
    /// Create a key for the workspace of the user with this email; prints it once.
    Create {
        /// The user's email.
        #[arg(long)]
        email: String,
        /// A name to recognise the key by.
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum StripeCommand {
    /// Create or update Stripe products and prices for every paid plan and credit pack,
    /// idempotently by lookup key (against the sandbox when STRIPE_SECRET_KEY is unset).
    Sync,
}

#[cfg(feature = "sandbox")]
#[derive(Debug, Subcommand)]
enum SandboxCommand {
    /// Move the sandbox clock forward: renewals, failed payments and cancellations
    /// that fall due happen now; a running `billfold serve` delivers their webhooks.
    Advance {
        /// Days to move forward (0 to 3650).
        #[arg(long)]
        days: i64,
    },
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Print the database URL (DATABASE_URL, or the embedded server's, started if needed).
    Url,
}

/// Entry point of the binary: parses arguments, runs the command, and turns an error
/// into one line on stderr and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    telemetry::init(config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let (db, pg) = startup::connect(&config).await?;
            startup::migrate(&db).await?;
            crate::catalog::seed_default(&db).await?;
            println!("migrations applied");
            finish(db, pg).await
        }
        Command::SeedDemo => {
            let (db, pg) = startup::connect(&config).await?;
            startup::migrate(&db).await?;
            crate::catalog::seed_default(&db).await?;
            let created = demo::seed(&db).await?;
            println!(
                "{}",
                if created {
                    "demo data created"
                } else {
                    "demo users exist already"
                }
            );
            demo::print_logins();
            finish(db, pg).await
        }
        Command::CreateUser {
            email,
            password,
            staff,
        } => {
            let (db, pg) = startup::connect(&config).await?;
            startup::migrate(&db).await?;
            crate::catalog::seed_default(&db).await?;
            let user = accounts::sign_up(&db, &email, &password, staff).await?;
            println!(
                "created {}{}",
                user.email,
                if staff { " (staff)" } else { "" }
            );
            finish(db, pg).await
        }
        Command::ApiKey {
            command: ApiKeyCommand::Create { email, name },
        } => {
            let (db, pg) = startup::connect(&config).await?;
            startup::migrate(&db).await?;
            let user = accounts::find_by_email(&db, &email.trim().to_lowercase())
                .await?
                .ok_or_else(|| anyhow::anyhow!("no user with email {email}"))?;
            let ws = accounts::primary_workspace(&db, user.user_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("{email} has no workspace"))?;
            let created = api_keys::create(&db, ws.workspace_id, Some(user.user_id), &name).await?;
            println!("{}", created.plaintext);
            eprintln!(
                "API key {:?} for workspace {:?}: shown once, store it now",
                created.key.name, ws.workspace_name
            );
            finish(db, pg).await
        }
        #[cfg(feature = "sandbox")]
        Command::Sandbox {
            command: SandboxCommand::Advance { days },
        } => {
            let (db, pg) = startup::connect(&config).await?;
            startup::migrate(&db).await?;
            let now = startup::advance_sandbox_clock(&config, &db, days).await?;
            let shown = time::OffsetDateTime::from_unix_timestamp(now)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(|| now.to_string());
            println!("sandbox time is now {shown}");
            finish(db, pg).await
        }
        Command::Stripe {
            command: StripeCommand::Sync,
        } => {
            let (db, pg) = startup::connect(&config).await?;
            startup::migrate(&db).await?;
            crate::catalog::seed_default(&db).await?;
            let (stripe, sandbox) = startup::stripe_client_for_cli(&config, &db).await?;
            let report = crate::catalog::sync::sync(&db, &stripe).await;
            if let Some(server) = sandbox {
                server.abort();
            }
            for line in report? {
                println!("{line}");
            }
            finish(db, pg).await
        }
        Command::Db {
            command: DbCommand::Url,
        } => {
            use secrecy::ExposeSecret;
            match &config.database_url {
                Some(url) => println!("{}", url.expose_secret()),
                None => {
                    // Leave the server running: the caller (script/test) uses the URL.
                    let pg = crate::embedded_pg::EmbeddedPostgres::start(&config.data_dir).await?;
                    println!("{}", pg.database_url());
                }
            }
            Ok(())
        }
    }
}

/// Closes the pool and stops an embedded server this command started.
async fn finish(
    db: sqlx::PgPool,
    pg: Option<crate::embedded_pg::EmbeddedPostgres>,
) -> anyhow::Result<()> {
    db.close().await;
    if let Some(pg) = pg {
        pg.stop().await?;
    }
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Demo users (one of them staff, with a published password) only in sandbox mode:
    // a production deployment with a real Stripe key never gets them implicitly.
    let sandbox = config.stripe_sandbox();
    let app = Application::build(config).await?;
    let seeded = sandbox && demo::seed(app.db()).await?;
    println!();
    println!("  billfold is running at {}", app.base_url());
    if seeded {
        println!(
            "  demo data created. Sign in at {}/login with:",
            app.base_url()
        );
        demo::print_logins();
    } else if sandbox {
        println!(
            "  sign in at {}/login (demo logins, unless you changed them):",
            app.base_url()
        );
        demo::print_logins();
    } else {
        println!(
            "  create the first account at {}/signup or with `billfold create-user`",
            app.base_url()
        );
    }
    if sandbox {
        println!("  Stripe: built-in sandbox (set STRIPE_SECRET_KEY for real Stripe; see README)");
    } else {
        println!(
            "  Stripe: live API with STRIPE_SECRET_KEY; webhooks at {}/webhooks/stripe",
            app.base_url()
        );
    }
    println!("  stop with Ctrl-C");
    println!();
    if sandbox {
        // The sandbox is served by this very process: put the catalog on sale once it
        // listens, so plans can be subscribed to right away.
        let (db, stripe) = (app.db().clone(), app.stripe().clone());
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            if let Err(e) = crate::catalog::sync::sync(&db, &stripe).await {
                tracing::warn!(error = ?e, "could not sync the catalog to the sandbox");
            }
        });
    }
    app.run_until_stopped().await
}
