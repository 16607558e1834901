//! The command line: `billfold [serve]`, `worker`, `migrate`, `seed-demo`,
//! `create-user`, `api-key create`, `resellers create`,
//! `payouts list|draft|mark-paid|csv`, `stripe sync`, `sandbox advance|refund|dispute`,
//! `db url`. Configuration comes from the environment (see [`crate::config`]); flags
//! only say what to do.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, StripeMode};
use crate::ids::PayoutId;
use crate::resellers::{
    self,
    commissions::{self, MarkedPaid},
};
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
    /// Serve the portal (the default): migrate, seed an empty database, listen on BIND,
    /// run background jobs (JOB_WORKERS).
    Serve,
    /// Run background jobs only (the webhook inbox, monthly allowances, reconciliation),
    /// beside `serve` processes started with JOB_WORKERS=0 or as extra capacity.
    Worker,
    /// Apply database migrations and exit.
    Migrate,
    /// Create the demo catalog and demo users (if missing) and exit; sandbox mode only.
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
    /// Manage resellers (issue 7).
    Resellers {
        #[command(subcommand)]
        command: ResellersCommand,
    },
    /// Reseller payouts: list, draft, record the bank transfer, export for accounting.
    Payouts {
        #[command(subcommand)]
        command: PayoutsCommand,
    },
    /// Stripe helpers.
    Stripe {
        #[command(subcommand)]
        command: StripeCommand,
    },
    /// The Stripe sandbox (only with STRIPE_SANDBOX=true).
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
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk the audit log's hash chain: exits 0 when intact, 1 naming the first event
    /// that was edited, removed or inserted out of order.
    Verify,
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
enum ResellersCommand {
    /// Create a reseller; prints its referral link's path (`/r/{code}`).
    Create {
        /// Its name (1 to 100 characters).
        #[arg(long)]
        name: String,
        /// Its referral code: 3 to 32 of a-z, 0-9 and -.
        #[arg(long)]
        code: String,
        /// Commission rate in basis points (2000 = 20 %), 0 to 10000.
        #[arg(long)]
        rate_bps: i32,
        /// Days between a payment and its commission's approval (the refund window).
        #[arg(long, default_value_t = 30)]
        hold_days: i32,
        /// Make this existing user the reseller's owner.
        #[arg(long)]
        owner_email: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum PayoutsCommand {
    /// List payouts, newest first, one per line (tab-separated): id, reseller code,
    /// currency, amount, status, created, reference.
    List {
        /// Only this reseller's (its referral code).
        #[arg(long)]
        reseller: Option<String>,
    },
    /// Approve commissions past their hold period and draft the payouts due, now, on
    /// Stripe's clock (the sandbox clock in sandbox mode), as the background jobs do.
    Draft,
    /// Record that a payout was transferred (idempotent: a paid payout stays as it was).
    MarkPaid {
        /// The payout's id.
        payout_id: String,
        /// The bank transfer's reference (1 to 200 characters).
        #[arg(long)]
        reference: String,
    },
    /// Write a payout's lines as CSV to stdout (for the accountant).
    Csv {
        /// The payout's id.
        payout_id: String,
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
    /// Refund a paid top-up through the Stripe API (all that is left, or --amount):
    /// Stripe then reports it and billfold reverses the refunded share of its credits.
    Refund {
        /// The top-up's checkout session (`cs_...`) or payment intent (`pi_...`).
        id: String,
        /// Minor units to refund (default: all that is left).
        #[arg(long)]
        amount: Option<i64>,
    },
    /// Open a dispute on a paid top-up (as a cardholder's bank would), or close one.
    Dispute {
        /// The top-up's checkout session, payment intent or charge id; or, with
        /// --close, the dispute (`dp_...`).
        id: String,
        /// Close the dispute: `won` (credits restored) or `lost`.
        #[arg(long, value_parser = ["won", "lost"])]
        close: Option<String>,
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
        Command::Worker => startup::run_worker(config).await,
        Command::Migrate => {
            let (owner, pg) = startup::connect(&config).await?;
            let db = startup::prepare(&config, &owner, pg.as_ref()).await?;
            println!("migrations applied");
            db.close().await;
            finish(owner, pg).await
        }
        Command::SeedDemo => {
            // The demo users' passwords are published (one user is staff): as in
            // `serve`, only in sandbox mode, never beside a real Stripe key.
            anyhow::ensure!(
                config.stripe_sandbox() && cfg!(feature = "sandbox"),
                "seed-demo creates users with published passwords, so it runs only in sandbox mode: set STRIPE_SANDBOX=true and unset STRIPE_SECRET_KEY"
            );
            let (owner, pg) = startup::connect(&config).await?;
            let db = startup::prepare(&config, &owner, pg.as_ref()).await?;
            let created = demo::seed(&db, &startup::hasher(&config)).await?;
            db.close().await;
            println!(
                "{}",
                if created {
                    "demo data created"
                } else {
                    "demo users exist already"
                }
            );
            demo::print_logins();
            finish(owner, pg).await
        }
        Command::CreateUser {
            email,
            password,
            staff,
        } => {
            let (owner, pg) = startup::connect(&config).await?;
            let db = startup::prepare(&config, &owner, pg.as_ref()).await?;
            let user =
                accounts::sign_up(&db, &startup::hasher(&config), &email, &password, staff).await;
            db.close().await;
            let user = user?;
            println!(
                "created {}{}",
                user.email,
                if staff { " (staff)" } else { "" }
            );
            finish(owner, pg).await
        }
        Command::ApiKey {
            command: ApiKeyCommand::Create { email, name },
        } => {
            let (owner, pg) = startup::connect(&config).await?;
            let db = startup::prepare(&config, &owner, pg.as_ref()).await?;
            let mut tx = db.begin().await?;
            let user = accounts::db::find_by_email(&mut tx, &email.trim().to_lowercase())
                .await?
                .ok_or_else(|| anyhow::anyhow!("no user with email {email}"))?;
            let ws = accounts::db::primary_workspace(&mut tx, user.user_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("{email} has no workspace"))?;
            let created =
                api_keys::create(&mut tx, ws.workspace_id, Some(user.user_id), &name, None).await?;
            tx.commit().await?;
            db.close().await;
            println!("{}", created.plaintext);
            eprintln!(
                "API key {:?} for workspace {:?}: shown once, store it now",
                created.key.name, ws.workspace_name
            );
            finish(owner, pg).await
        }
        Command::Resellers { command } => resellers_command(config, command).await,
        Command::Payouts { command } => payouts_command(config, command).await,
        Command::Audit {
            command: AuditCommand::Verify,
        } => {
            let (owner, pg) = startup::connect(&config).await?;
            let db = startup::prepare(&config, &owner, pg.as_ref()).await?;
            let verified = async { crate::audit::verify(&mut *db.acquire().await?).await }.await;
            db.close().await;
            finish(owner, pg).await?;
            match verified? {
                crate::audit::Verified::Intact { events } => {
                    println!(
                        "audit log intact: {events} events, every one chained to the one before"
                    );
                    Ok(())
                }
                crate::audit::Verified::Broken {
                    seq,
                    audit_event_id,
                    reason,
                } => anyhow::bail!(
                    "audit log broken at event {seq} (audit_event_id {audit_event_id}): {reason}"
                ),
            }
        }
        #[cfg(feature = "sandbox")]
        Command::Sandbox { command } => sandbox_command(config, command).await,
        Command::Stripe {
            command: StripeCommand::Sync,
        } => {
            let (owner, pg) = startup::connect(&config).await?;
            let db = startup::prepare(&config, &owner, pg.as_ref()).await?;
            let (stripe, sandbox) = startup::stripe_client_for_cli(&config, &db).await?;
            let report = crate::catalog::sync::sync(&db, &stripe).await;
            if let Some(server) = sandbox {
                server.abort();
            }
            db.close().await;
            for line in report? {
                println!("{line}");
            }
            finish(owner, pg).await
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

#[cfg(feature = "sandbox")]
async fn sandbox_command(config: Config, command: SandboxCommand) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.stripe_sandbox(),
        "the sandbox commands need STRIPE_SANDBOX=true (and no STRIPE_SECRET_KEY)"
    );
    let (owner, pg) = startup::connect(&config).await?;
    let db = startup::prepare(&config, &owner, pg.as_ref()).await?;
    let result = match command {
        SandboxCommand::Advance { days } => {
            let now = startup::advance_sandbox_clock(&config, &db, days).await;
            now.map(|now| {
                let shown = time::OffsetDateTime::from_unix_timestamp(now)
                    .ok()
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_else(|| now.to_string());
                println!("sandbox time is now {shown}");
            })
        }
        SandboxCommand::Refund { id, amount } => {
            let (stripe, server) = startup::stripe_client_for_cli(&config, &db).await?;
            let key = format!("cli-refund-{}", uuid::Uuid::new_v4());
            let refunded = crate::top_ups::refund(&db, &stripe, &id, amount, &key).await;
            if let Some(server) = server {
                server.abort();
            }
            refunded.map_err(anyhow::Error::from).map(|(pi, refund)| {
                println!(
                    "refunded {} of {pi} ({}); a running `billfold serve` reverses the credits",
                    crate::money::Money::new(refund.amount, &refund.currency),
                    refund.id
                );
            })
        }
        SandboxCommand::Dispute { id, close } => match close {
            None => crate::sandbox::open_dispute(&db, &id)
                .await
                .map_err(anyhow::Error::from)
                .map(|d| {
                    println!(
                        "opened dispute {} on {id} ({}); a running `billfold serve` takes the credits back",
                        d.id,
                        crate::money::Money::new(d.amount, &d.currency)
                    );
                }),
            Some(outcome) => {
                let outcome = if outcome == "won" {
                    crate::sandbox::DisputeOutcome::Won
                } else {
                    crate::sandbox::DisputeOutcome::Lost
                };
                crate::sandbox::close_dispute(&db, &id, outcome)
                    .await
                    .map_err(anyhow::Error::from)
                    .map(|d| println!("dispute {} closed: {}", d.id, outcome.as_str()))
            }
        },
    };
    db.close().await;
    finish(owner, pg).await?;
    result
}

async fn resellers_command(config: Config, command: ResellersCommand) -> anyhow::Result<()> {
    let (owner, pg) = startup::connect(&config).await?;
    let db = startup::prepare(&config, &owner, pg.as_ref()).await?;
    let result = match command {
        ResellersCommand::Create {
            name,
            code,
            rate_bps,
            hold_days,
            owner_email,
        } => {
            create_reseller(
                &db,
                &name,
                &code,
                rate_bps,
                hold_days,
                owner_email.as_deref(),
            )
            .await
        }
    };
    db.close().await;
    finish(owner, pg).await?;
    result
}

/// `billfold resellers create`: the reseller and, with `owner_email`, its owner, in one
/// transaction (an error leaves nothing behind).
async fn create_reseller(
    db: &sqlx::PgPool,
    name: &str,
    code: &str,
    rate_bps: i32,
    hold_days: i32,
    owner_email: Option<&str>,
) -> anyhow::Result<()> {
    let name = name.trim();
    anyhow::ensure!(
        (1..=100).contains(&name.chars().count()) && !name.chars().any(char::is_control),
        "--name must be 1 to 100 characters"
    );
    let code = resellers::parse_referral_code(code).ok_or_else(|| {
        anyhow::anyhow!("--code must be 3 to 32 of a-z, 0-9 and -, starting with a letter or digit")
    })?;
    anyhow::ensure!(
        (0..=10_000).contains(&rate_bps),
        "--rate-bps must be from 0 to 10000 (2000 = 20 %)"
    );
    anyhow::ensure!(
        (0..=365).contains(&hold_days),
        "--hold-days must be from 0 to 365"
    );
    let mut tx = db.begin().await?;
    let owner = match owner_email {
        Some(email) => {
            let user = accounts::db::find_by_email(&mut tx, &email.trim().to_lowercase())
                .await?
                .ok_or_else(|| anyhow::anyhow!("no user with email {email}"))?;
            if let Some(m) = resellers::member_of(&mut tx, user.user_id).await? {
                anyhow::bail!(
                    "{email} already belongs to reseller {} (a user belongs to at most one)",
                    m.reseller.referral_code
                );
            }
            Some(user)
        }
        None => None,
    };
    let reseller_id = resellers::create(
        &mut tx,
        &resellers::NewReseller {
            name,
            referral_code: &code,
            commission_rate_bps: rate_bps,
            hold_days,
        },
    )
    .await
    .map_err(|e| match e.downcast_ref::<sqlx::Error>() {
        // `referral_code` is the only unique column set here.
        Some(sqlx::Error::Database(d)) if d.is_unique_violation() => {
            anyhow::anyhow!("a reseller with code {code} exists already")
        }
        _ => e,
    })?;
    if let Some(user) = &owner {
        resellers::add_member(
            &mut tx,
            reseller_id,
            user.user_id,
            resellers::ResellerRole::Owner,
        )
        .await?;
    }
    crate::audit::record_command(
        &mut tx,
        "billfold resellers create",
        "reseller.created",
        ("reseller", reseller_id.to_string()),
        Some(serde_json::json!({"name": name, "referral_code": code,
                                "commission_rate_bps": rate_bps, "hold_days": hold_days,
                                "owner": owner.as_ref().map(|u| u.user_id)})),
    )
    .await?;
    tx.commit().await?;
    println!("/r/{code}");
    eprintln!(
        "created reseller {name:?} ({}, {}-day hold){}",
        resellers::rate_label(rate_bps),
        hold_days,
        owner
            .map(|u| format!(", owned by {}", u.email))
            .unwrap_or_default()
    );
    Ok(())
}

async fn payouts_command(config: Config, command: PayoutsCommand) -> anyhow::Result<()> {
    let (owner, pg) = startup::connect(&config).await?;
    let db = startup::prepare(&config, &owner, pg.as_ref()).await?;
    let result = match command {
        PayoutsCommand::List { reseller } => list_payouts(&db, reseller.as_deref()).await,
        PayoutsCommand::Draft => startup::draft_payouts_now(&config, &db).await.map(|run| {
            println!(
                "{} commission(s) approved as of {}",
                run.approved,
                rfc3339(run.now)
            );
            if run.drafted.is_empty() {
                println!("no payout due");
            }
            for p in &run.drafted {
                println!("drafted {}", payout_line(p));
            }
        }),
        PayoutsCommand::MarkPaid {
            payout_id,
            reference,
        } => mark_payout_paid(&db, &payout_id, &reference).await,
        PayoutsCommand::Csv { payout_id } => payout_csv(&db, &payout_id).await,
    };
    db.close().await;
    finish(owner, pg).await?;
    result
}

fn parse_payout_id(raw: &str) -> anyhow::Result<PayoutId> {
    raw.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{raw:?} is not a payout id (a UUID)"))
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

/// One payout, tab-separated: id, reseller code, currency, amount, status, created,
/// reference (`-` until paid).
fn payout_line(p: &resellers::db::BackOfficePayout) -> String {
    let row = &p.payout;
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
        row.payout_id,
        p.referral_code,
        row.currency,
        row.amount(),
        row.status,
        rfc3339(row.created_at),
        row.reference.as_deref().unwrap_or("-")
    )
}

async fn list_payouts(db: &sqlx::PgPool, reseller: Option<&str>) -> anyhow::Result<()> {
    let mut conn = db.acquire().await?;
    let reseller_id = match reseller {
        Some(code) => Some(
            resellers::db::reseller_by_code(&mut conn, code.trim())
                .await?
                .ok_or_else(|| anyhow::anyhow!("no reseller with code {code}"))?,
        ),
        None => None,
    };
    let payouts = resellers::db::back_office_payouts(&mut conn, reseller_id).await?;
    if payouts.is_empty() {
        eprintln!("no payouts");
    }
    for p in &payouts {
        println!("{}", payout_line(p));
    }
    Ok(())
}

async fn mark_payout_paid(db: &sqlx::PgPool, raw_id: &str, reference: &str) -> anyhow::Result<()> {
    let payout_id = parse_payout_id(raw_id)?;
    let mut tx = db.begin().await?;
    let marked = commissions::mark_paid(&mut tx, payout_id, reference).await?;
    if marked == MarkedPaid::Paid {
        crate::audit::record_command(
            &mut tx,
            "billfold payouts mark-paid",
            "payout.paid",
            ("payout", payout_id.to_string()),
            Some(serde_json::json!({"status": "paid", "reference": reference.trim()})),
        )
        .await?;
    }
    tx.commit().await?;
    match marked {
        MarkedPaid::Paid => println!("marked paid"),
        MarkedPaid::AlreadyPaid { reference } => {
            println!("already paid with reference {reference}")
        }
    }
    Ok(())
}

async fn payout_csv(db: &sqlx::PgPool, raw_id: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let payout_id = parse_payout_id(raw_id)?;
    let mut tx = db.begin().await?;
    let reseller_id = resellers::db::payout_reseller(&mut tx, payout_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no payout {payout_id}"))?;
    let payout = resellers::db::payout(&mut tx, reseller_id, payout_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no payout {payout_id}"))?;
    let lines = resellers::db::payout_lines(&mut tx, reseller_id, payout_id).await?;
    tx.commit().await?;
    let csv = resellers::db::payout_csv(&payout, &lines)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&csv)?;
    out.flush()?;
    Ok(())
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
    if config.stripe_mode() == StripeMode::Unconfigured {
        anyhow::bail!(
            "no Stripe configured: set STRIPE_SECRET_KEY (and STRIPE_WEBHOOK_SECRET) for Stripe, or STRIPE_SANDBOX=true to try billfold with its built-in sandbox"
        );
    }
    // Demo users (one of them staff, with a published password) only in sandbox mode:
    // a deployment with a real Stripe key never gets them.
    let sandbox = config.stripe_sandbox();
    let app = Application::build(config).await?;
    let seeded = sandbox && demo::seed(app.db(), &app.hasher()).await?;
    let base = app.base_url().to_owned();
    // The banner is printed once billfold is ready: in sandbox mode once the catalog is
    // on sale, so the first "Subscribe" a new user presses reaches Checkout.
    let banner = move || {
        println!();
        println!("  billfold is running at {base}");
        if seeded {
            println!("  demo data created. Sign in at {base}/login with:");
            demo::print_logins();
        } else if sandbox {
            println!("  sign in at {base}/login (demo logins, unless you changed them):");
            demo::print_logins();
        } else {
            println!("  create the first account at {base}/signup or with `billfold create-user`");
        }
        if sandbox {
            println!(
                "  Stripe: built-in sandbox, no real money moves (see README for real Stripe)"
            );
        } else {
            println!(
                "  Stripe: live API with STRIPE_SECRET_KEY; webhooks at {base}/webhooks/stripe"
            );
        }
        println!("  stop with Ctrl-C");
        println!();
    };
    app.run_until(startup::shutdown_signal(), banner).await
}
