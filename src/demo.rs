//! Demo data for a new user's first ten minutes, created only when the database has no
//! users (and only in sandbox mode: see the callers).
//!
//! - Three logins (customer, reseller, staff), each with a workspace on the free plan.
//! - The customer: welcome credits, an API key and two weeks of usage history, so the
//!   dashboard has something to show.
//! - The reseller: owner of "Acme Partners" (`/r/acme`, 20 %, 30-day hold), with eight
//!   referred customer workspaces (`ada@customers.test`, ...) attributed over the last
//!   four months, referral clicks over the same months, and four months of their
//!   payments with commissions in every state: the oldest approved and paid with a
//!   payout drafted the month before last or earlier, later ones approved and unpaid,
//!   recent ones pending, and a refund of a paid top-up whose reversal is a clawback
//!   for the next payout. So `/reseller` shows a living dashboard at first look.
//!
//! Money moves only through the paths the webhook uses (top-up rows, the ledger's
//! functions, [`commissions::record_payment`] and [`reversals`]), dated on Stripe's
//! clock (the sandbox clock), so balance = Σ ledger holds and the commissions are what
//! the app would have written. What is dated in the past: attributions, clicks,
//! payments (commissions' `earned_at`), the payout and its transfer. Ledger entries
//! and top-up rows carry the seed's time, as the ledger is append-only in time order.

use sqlx::{PgConnection, PgPool};
use time::{Duration, OffsetDateTime};

use crate::accounts::{self, password::PasswordHasher};
use crate::ids::{PlanCode, UserId, WorkspaceId};
use crate::ledger::{self, LedgerEntryKind};
use crate::resellers::commissions::{self, Payment, Source};
use crate::resellers::{self, AttributionChannel, BrandingForm, NewReseller, ResellerRole};
use crate::top_ups::{self, reversals};

/// Demo logins: (role, email, password).
pub const LOGINS: [(&str, &str, &str); 3] = [
    ("customer", "customer@billfold.test", "billfold-demo"),
    ("reseller", "reseller@billfold.test", "billfold-demo"),
    ("staff", "staff@billfold.test", "billfold-demo"),
];

/// Where each demo login lands: the page that shows what that role does.
fn landing(role: &str) -> &'static str {
    match role {
        "reseller" => "/reseller",
        "staff" => "/admin",
        _ => "/dashboard",
    }
}

/// Prints the demo logins, one per line, with the page each is for.
pub fn print_logins() {
    for (role, email, password) in LOGINS {
        println!(
            "    {role:<9} {email:<26} password: {password}   then {}",
            landing(role)
        );
    }
}

/// Seeds the demo users unless any user exists. Returns whether it created them.
pub async fn seed(db: &PgPool, hasher: &PasswordHasher) -> anyhow::Result<bool> {
    let mut tx = db.begin().await?;
    sqlx::query("select pg_advisory_xact_lock(7242100002)")
        .execute(&mut *tx)
        .await?;
    let any = accounts::db::any_user(&mut tx).await?;
    tx.commit().await?;
    if any {
        return Ok(false);
    }
    let (mut customer, mut reseller) = (None, None);
    for (role, email, password) in LOGINS {
        let user = match accounts::sign_up(db, hasher, email, password, role == "staff").await {
            Ok(user) => user,
            // Another process starting at the same time seeded first.
            Err(accounts::SignupError::EmailTaken) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        match role {
            "customer" => customer = Some(user),
            "reseller" => reseller = Some(user),
            _ => {}
        }
    }
    if let Some(customer) = customer {
        seed_customer(db, customer.user_id).await?;
    }
    if let Some(reseller) = reseller {
        seed_reseller(db, hasher, reseller.user_id).await?;
    }
    Ok(true)
}

/// The demo customer's credits, usage history and API key.
async fn seed_customer(db: &PgPool, user_id: UserId) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    let ws = accounts::db::primary_workspace(&mut tx, user_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("demo customer has no workspace"))?;
    let workspace_id = ws.workspace_id;
    ledger::grant_purchased(
        &mut tx,
        workspace_id,
        LedgerEntryKind::Adjustment,
        500,
        "Demo: welcome credits",
        "demo:welcome",
    )
    .await?;
    // Two weeks of usage, dated in the past, written through the ledger's one append
    // path with its usage events, so balance = Σ ledger holds.
    let features = [
        ("manager.process", 1_i64),
        ("graph.query", 3),
        ("risk.score", 2),
        ("validator.validate", 1),
    ];
    let now = OffsetDateTime::now_utc();
    for day in (1..=14_i64).rev() {
        let (feature, cost) = features[(day as usize) % features.len()];
        let quantity = 1 + (day * 7 % 5);
        let at = now - Duration::days(day) + Duration::minutes(day * 13 % 600);
        ledger::db::record_past_usage(
            &mut tx,
            workspace_id,
            feature,
            quantity,
            cost * quantity,
            &format!("demo-{day}"),
            at,
        )
        .await?;
    }
    crate::api_keys::create(&mut tx, workspace_id, Some(user_id), "Demo key", None).await?;
    tx.commit().await?;
    Ok(())
}

/// The demo reseller's referral code: its link is `/r/acme`.
pub const RESELLER_CODE: &str = "acme";

/// The demo reseller's referred customers: (email, days since they were attributed,
/// how, whether they share their email with the reseller). Their password is the demo
/// password.
const REFERRED: [(&str, i64, AttributionChannel, bool); 8] = [
    (
        "ada@customers.test",
        118,
        AttributionChannel::ReferralLink,
        true,
    ),
    (
        "grace@customers.test",
        110,
        AttributionChannel::ReferralLink,
        false,
    ),
    (
        "linus@customers.test",
        96,
        AttributionChannel::ReferralLink,
        false,
    ),
    (
        "margaret@customers.test",
        82,
        AttributionChannel::Admin,
        true,
    ),
    (
        "alan@customers.test",
        63,
        AttributionChannel::ReferralLink,
        false,
    ),
    (
        "barbara@customers.test",
        46,
        AttributionChannel::Admin,
        false,
    ),
    (
        "edsger@customers.test",
        26,
        AttributionChannel::ReferralLink,
        false,
    ),
    (
        "katherine@customers.test",
        10,
        AttributionChannel::ReferralLink,
        false,
    ),
];

/// What a referred customer paid.
#[derive(Debug, Clone, Copy)]
enum Paid {
    /// A top-up of this credit pack.
    TopUp(&'static str),
    /// A month of this plan: a subscription invoice.
    Invoice(&'static str),
}

/// The referred customers' payments: (index in [`REFERRED`], days ago, what). With a
/// 30-day hold, those of 65 days ago and more were approved and paid by the payout run
/// [`PAYOUT_RUN_DAYS_AGO`] days ago (€97 of commission); those of 30 to 65 days ago are
/// approved and unpaid; the rest are pending.
const PAYMENTS: [(usize, i64, Paid); 23] = [
    (0, 117, Paid::Invoice("pro")),
    (1, 109, Paid::Invoice("business")),
    (1, 104, Paid::TopUp("pack_1000")),
    (0, 100, Paid::TopUp("pack_500")),
    (2, 95, Paid::TopUp("pack_100")),
    (0, 87, Paid::Invoice("pro")),
    (3, 81, Paid::Invoice("starter")),
    (1, 79, Paid::Invoice("business")),
    (2, 70, Paid::TopUp("pack_500")),
    (4, 62, Paid::Invoice("pro")),
    (0, 57, Paid::Invoice("pro")),
    (3, 51, Paid::Invoice("starter")),
    (1, 49, Paid::Invoice("business")),
    (5, 45, Paid::TopUp("pack_500")),
    (4, 32, Paid::Invoice("pro")),
    (0, 27, Paid::Invoice("pro")),
    (6, 25, Paid::TopUp("pack_100")),
    (3, 21, Paid::Invoice("starter")),
    (1, 19, Paid::Invoice("business")),
    (5, 15, Paid::TopUp("pack_100")),
    (6, 12, Paid::TopUp("pack_500")),
    (7, 9, Paid::TopUp("pack_1000")),
    (2, 3, Paid::TopUp("pack_500")),
];

/// The past payout run: approval and drafting as the jobs would have run them then.
const PAYOUT_RUN_DAYS_AGO: i64 = 35;
/// The top-up refunded in full (index in [`PAYMENTS`]), after its commission was paid.
const REFUNDED_PAYMENT: usize = 8;
/// When it was refunded.
const REFUND_DAYS_AGO: i64 = 20;

/// A time `days` before `now`, at a time of day that varies with `salt`.
fn days_ago(now: OffsetDateTime, days: i64, salt: i64) -> OffsetDateTime {
    now - Duration::days(days) - Duration::minutes(salt * 97 % 600)
}

/// The demo reseller's dashboard: "Acme Partners" owned by the demo reseller user, its
/// referred customers, clicks, payments, a paid payout and a refund (see the module
/// header). Sign-ups commit on their own (as a sign-up does); the rest is one
/// transaction.
async fn seed_reseller(db: &PgPool, hasher: &PasswordHasher, owner: UserId) -> anyhow::Result<()> {
    let password = LOGINS[1].2;
    let mut customers: Vec<(UserId, WorkspaceId)> = Vec::with_capacity(REFERRED.len());
    for (email, ..) in REFERRED {
        let user = accounts::sign_up(db, hasher, email, password, false).await?;
        let ws = accounts::db::primary_workspace(&mut *db.acquire().await?, user.user_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("demo customer {email} has no workspace"))?;
        customers.push((user.user_id, ws.workspace_id));
    }

    let mut tx = db.begin().await?;
    // The seed runs in sandbox mode only: Stripe's clock is the sandbox clock.
    let now = crate::database::stripe_now(&mut tx, cfg!(feature = "sandbox")).await?;
    let reseller_id = resellers::create(
        &mut tx,
        &NewReseller {
            name: "Acme Partners",
            referral_code: RESELLER_CODE,
            commission_rate_bps: 2_000,
            hold_days: 30,
        },
    )
    .await?;
    resellers::update_branding(
        &mut tx,
        reseller_id,
        &BrandingForm {
            display_name: "Acme Partners".to_owned(),
            accent_color: "#0f766e".to_owned(),
            host_name: String::new(),
        },
    )
    .await
    .map_err(anyhow::Error::from)?;
    resellers::add_member(&mut tx, reseller_id, owner, ResellerRole::Owner).await?;

    for (i, ((_, days, via, share), (_, workspace_id))) in
        REFERRED.iter().zip(&customers).enumerate()
    {
        anyhow::ensure!(
            resellers::attribute(&mut tx, *workspace_id, reseller_id, *via).await?,
            "demo customer {i} was not attributed"
        );
        // `attribute` stamps now(); these customers came over the last four months.
        sqlx::query("update workspaces set attributed_at = $2 where workspace_id = $1")
            .bind(workspace_id)
            .bind(days_ago(now, *days, i as i64))
            .execute(&mut *tx)
            .await?;
        resellers::set_share_email(&mut tx, *workspace_id, *share).await?;
    }
    record_past_clicks(&mut tx, reseller_id, now).await?;

    for (n, (who, days, paid)) in PAYMENTS.iter().enumerate() {
        let (email, ..) = REFERRED[*who];
        let name = email.split('@').next().unwrap_or("customer");
        let (user_id, workspace_id) = customers[*who];
        let at = days_ago(now, *days, n as i64);
        match paid {
            Paid::TopUp(pack) => {
                let payment = DemoTopUp {
                    workspace_id,
                    user_id,
                    pack,
                    session_id: &format!("cs_demo_{name}_{n:02}"),
                    payment_intent_id: &format!("pi_demo_{name}_{n:02}"),
                    paid_at: at,
                };
                pay_top_up(&mut tx, &payment).await?;
            }
            Paid::Invoice(plan) => {
                // The demo does not mirror Stripe subscriptions for these customers (no
                // subscription or invoice rows; their workspaces stay on the free plan):
                // only the reseller's commissions on the invoices are written, as
                // `subscriptions` writes them when an invoice is paid.
                let plan = crate::catalog::db::plan(&mut tx, &PlanCode((*plan).to_owned()))
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("the catalog has no plan {plan}"))?;
                let invoice_id = format!("in_demo_{name}_{n:02}");
                let earned = commissions::record_payment(
                    &mut tx,
                    &Payment {
                        source: Source::Invoice,
                        source_id: &invoice_id,
                        payment_intent_id: None,
                        workspace_id,
                        amount_paid: plan.monthly_price_minor,
                        tax: 0,
                        currency: &plan.currency,
                        paid_at: at,
                    },
                )
                .await?;
                anyhow::ensure!(earned.is_some(), "{invoice_id} earned no commission");
            }
        }
    }

    // The payout run of an earlier month, and the bank transfer three days later.
    let run = now - Duration::days(PAYOUT_RUN_DAYS_AGO);
    commissions::approve_due(&mut tx, run).await?;
    let drafted = commissions::draft_payouts(&mut tx, run).await?;
    anyhow::ensure!(
        drafted.len() == 1,
        "the demo payout run drafted {} payouts",
        drafted.len()
    );
    for payout_id in drafted {
        let reference = format!("DEMO-SEPA-{}-{:02}", run.year(), u8::from(run.month()));
        commissions::mark_paid(&mut tx, payout_id, &reference)
            .await
            .map_err(anyhow::Error::from)?;
        // `mark_paid` stamps now(); the transfer was made back then.
        sqlx::query(
            "update payouts set paid_at = created_at + interval '3 days' where payout_id = $1",
        )
        .bind(payout_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "update commissions c set paid_at = p.paid_at from payouts p
              where p.payout_id = $1 and c.payout_id = p.payout_id",
        )
        .bind(payout_id)
        .execute(&mut *tx)
        .await?;
    }

    // A top-up refunded in full after its commission was paid: the customer's credits
    // and the commission follow it as `charge.refunded` would move them; the reversal
    // is approved at once, a clawback for the next payout.
    let (who, _, _) = PAYMENTS[REFUNDED_PAYMENT];
    let name = REFERRED[who].0.split('@').next().unwrap_or("customer");
    let session_id = format!("cs_demo_{name}_{REFUNDED_PAYMENT:02}");
    let pi = format!("pi_demo_{name}_{REFUNDED_PAYMENT:02}");
    let reference = format!("evt_demo_refund_{name}_{REFUNDED_PAYMENT:02}");
    top_ups::db::lock_payment(&mut tx, &pi).await?;
    let top_up = top_ups::db::lock_by_session(&mut tx, &session_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no demo top-up {session_id}"))?;
    top_ups::db::record_refund(
        &mut tx,
        &pi,
        top_up.amount_minor,
        top_up.amount_minor,
        &top_up.currency,
    )
    .await?;
    let taken_back =
        reversals::follow_commission(&mut tx, &pi, &reference, days_ago(now, REFUND_DAYS_AGO, 0))
            .await?;
    anyhow::ensure!(taken_back < 0, "the demo refund reversed no commission");
    reversals::settle(
        &mut tx,
        top_up.top_up_id,
        &reference,
        Some(reversals::Cause::Refund),
    )
    .await?;

    // Today's approval run: what passed its hold since the payout run.
    commissions::approve_due(&mut tx, now).await?;
    tx.commit().await?;
    Ok(())
}

/// A demo top-up, paid.
struct DemoTopUp<'a> {
    workspace_id: WorkspaceId,
    user_id: UserId,
    pack: &'a str,
    session_id: &'a str,
    payment_intent_id: &'a str,
    paid_at: OffsetDateTime,
}

/// Records a paid top-up as checkout and its webhook do: the `top_ups` row, its credits
/// through the ledger (once per session), the row marked paid with its payment intent,
/// and the reseller's commission dated when it was paid.
async fn pay_top_up(conn: &mut PgConnection, t: &DemoTopUp<'_>) -> anyhow::Result<()> {
    let pack = crate::catalog::db::any_credit_pack(conn, t.pack)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the catalog has no credit pack {}", t.pack))?;
    let price = pack.price();
    top_ups::db::insert(
        conn,
        &top_ups::db::NewTopUp {
            workspace_id: t.workspace_id,
            session_id: t.session_id,
            credit_pack_code: Some(t.pack),
            credits: pack.credits,
            price: &price,
            created_by: Some(t.user_id),
        },
    )
    .await?;
    top_ups::db::lock_payment(conn, t.payment_intent_id).await?;
    let top_up = top_ups::db::lock_by_session(conn, t.session_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no demo top-up {}", t.session_id))?;
    ledger::grant_purchased(
        conn,
        t.workspace_id,
        LedgerEntryKind::TopUp,
        top_up.credits,
        &format!(
            "Top-up: {} credits",
            crate::money::format_credits(top_up.credits)
        ),
        t.session_id,
    )
    .await?;
    top_ups::db::mark_paid(conn, top_up.top_up_id, Some(t.payment_intent_id)).await?;
    let earned = commissions::record_payment(
        conn,
        &Payment {
            source: Source::TopUp,
            source_id: t.session_id,
            payment_intent_id: Some(t.payment_intent_id),
            workspace_id: t.workspace_id,
            amount_paid: top_up.amount_minor,
            tax: 0,
            currency: &top_up.currency,
            paid_at: t.paid_at,
        },
    )
    .await?;
    anyhow::ensure!(earned.is_some(), "{} earned no commission", t.session_id);
    Ok(())
}

/// Referral clicks over the last 17 weeks, more of them lately (a partner growing):
/// 79 in all, against eight sign-ups. `record_click` stamps now(), so the history is
/// written dated.
async fn record_past_clicks(
    conn: &mut PgConnection,
    reseller_id: crate::ids::ResellerId,
    now: OffsetDateTime,
) -> anyhow::Result<()> {
    let mut clicks = Vec::new();
    for week in 0..17_i64 {
        for i in 0..2 + (17 - week) / 3 {
            clicks.push(now - Duration::weeks(week) - Duration::hours((i * 37 + week * 11) % 168));
        }
    }
    sqlx::query(
        "insert into referral_clicks (reseller_id, clicked_at)
         select $1, unnest($2::timestamptz[])",
    )
    .bind(reseller_id)
    .bind(&clicks)
    .execute(conn)
    .await?;
    Ok(())
}
