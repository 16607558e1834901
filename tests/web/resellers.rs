//! Resellers (issue 7): attribution, commissions that follow every payment and refund,
//! approval, payouts and clawbacks, through the sandbox, signed events and the inbox;
//! the reseller dashboard, API and branding through the real router; isolation.

use billfold::ids::{ResellerId, WorkspaceId};
use billfold::resellers::{self, AttributionChannel, NewReseller, ResellerRole};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::billing::subscribe;
use crate::helpers::{TestApp, text};
use crate::refunds::{buy, control, refund};

/// A reseller at 20 % with a 30-day hold and a €50 minimum.
pub(crate) async fn reseller(app: &TestApp, code: &str) -> ResellerId {
    let mut conn = app.db.acquire().await.unwrap();
    resellers::create(
        &mut conn,
        &NewReseller {
            name: &format!("Partner {code}"),
            referral_code: code,
            commission_rate_bps: 2_000,
            hold_days: 30,
        },
    )
    .await
    .unwrap()
}

async fn attribute(app: &TestApp, ws: WorkspaceId, reseller: ResellerId) {
    let mut conn = app.db.acquire().await.unwrap();
    assert!(
        resellers::attribute(&mut conn, ws, reseller, AttributionChannel::Admin)
            .await
            .unwrap()
    );
}

/// (kind, amount, status) of every commission row of the reseller, oldest first.
async fn commissions_of(app: &TestApp, reseller: ResellerId) -> Vec<(String, i64, String)> {
    sqlx::query_as(
        "select kind::text, amount_minor, status::text from commissions
          where reseller_id = $1 order by created_at, commission_id",
    )
    .bind(reseller)
    .fetch_all(&app.db)
    .await
    .unwrap()
}

async fn net(app: &TestApp, reseller: ResellerId) -> i64 {
    sqlx::query_scalar(
        "select coalesce(sum(amount_minor), 0)::bigint from commissions where reseller_id = $1",
    )
    .bind(reseller)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

/// Runs the approval and payout jobs as of `days` from now.
async fn run_jobs_at(app: &TestApp, days: i64) -> Vec<billfold::ids::PayoutId> {
    let at = OffsetDateTime::now_utc() + time::Duration::days(days);
    let mut tx = app.app_db.begin().await.unwrap();
    resellers::commissions::approve_due(&mut tx, at)
        .await
        .unwrap();
    let drafted = resellers::commissions::draft_payouts(&mut tx, at)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    drafted
}

#[sqlx::test]
async fn a_top_up_earns_one_commission_and_its_refund_reverses_it(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let partner = reseller(&app, "acme").await;
    let ws = app.sign_up("ada@example.com").await;
    attribute(&app, ws, partner).await;

    let session = buy(&app, ws, &[("credit_pack", "pack_1000")], 1_100).await;
    // 20 % of €70.00.
    assert_eq!(
        commissions_of(&app, partner).await,
        vec![("commission".into(), 1_400, "pending".into())]
    );

    refund(&app, &session, Some(3_500)).await;
    assert_eq!(
        net(&app, partner).await,
        700,
        "half refunded: half the commission"
    );
    refund(&app, &session, None).await;
    assert_eq!(net(&app, partner).await, 0, "refunded in full nets to zero");
    let rows = commissions_of(&app, partner).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(
        rows[1..]
            .iter()
            .all(|(kind, amount, status)| kind == "reversal"
                && *amount == -700
                && status == "pending"),
        "reversals of a pending commission wait with it: {rows:?}"
    );
}

#[sqlx::test]
async fn an_unattributed_workspace_earns_nobody_anything(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    reseller(&app, "acme").await;
    let ws = app.sign_up("ada@example.com").await;
    buy(&app, ws, &[("credit_pack", "pack_500")], 600).await;
    assert_eq!(app.count("select count(*) from commissions").await, 0);
}

#[sqlx::test]
async fn a_subscription_invoice_earns_a_commission_at_the_rate_of_its_payment(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let partner = reseller(&app, "acme").await;
    let ws = app.sign_up("ada@example.com").await;
    attribute(&app, ws, partner).await;
    subscribe(&app, ws, "pro", 2_000).await;
    app.settle().await;
    let (source, base, rate, amount): (String, i64, i32, i64) = sqlx::query_as(
        "select source::text, base_minor, rate_bps, amount_minor from commissions where reseller_id = $1",
    )
    .bind(partner)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let price: i64 =
        sqlx::query_scalar("select monthly_price_minor from plans where plan_code = 'pro'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((source.as_str(), base, rate), ("invoice", price, 2_000));
    assert_eq!(amount, price * 2_000 / 10_000);

    // A later rate applies to later payments only.
    sqlx::query("update resellers set commission_rate_bps = 500 where reseller_id = $1")
        .bind(partner)
        .execute(&app.db)
        .await
        .unwrap();
    buy(&app, ws, &[("credit_pack", "pack_500")], 2_500).await;
    let rates: Vec<i32> = sqlx::query_scalar(
        "select rate_bps from commissions where reseller_id = $1 order by created_at",
    )
    .bind(partner)
    .fetch_all(&app.db)
    .await
    .unwrap();
    let times: Vec<(String, OffsetDateTime, OffsetDateTime)> = sqlx::query_as(
        "select source::text, earned_at, created_at from commissions order by created_at",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(rates, vec![2_000, 500], "{times:?}");
    assert!(
        times
            .iter()
            .all(|(_, earned, created)| (*created - *earned).abs() < time::Duration::seconds(5)),
        "earned when paid: {times:?}"
    );
}

#[sqlx::test]
async fn one_payment_delivered_twenty_times_at_once_earns_one_commission(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let partner = reseller(&app, "acme").await;
    let ws = app.sign_up("ada@example.com").await;
    attribute(&app, ws, partner).await;
    buy(&app, ws, &[("credit_pack", "pack_500")], 600).await;
    let event: Value = sqlx::query_scalar(
        "select payload from stripe_events where event_type = 'checkout.session.completed'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    let deliveries = (0..20).map(|i| {
        let mut event = event.clone();
        event["id"] = json!(format!("evt_again_{i}"));
        app.deliver_signed(event.to_string())
    });
    for status in futures_util::future::join_all(deliveries).await {
        assert_eq!(status, StatusCode::OK);
    }
    app.settle().await;
    assert_eq!(
        commissions_of(&app, partner).await,
        vec![("commission".into(), 800, "pending".into())]
    );
}

#[sqlx::test]
async fn a_dispute_takes_the_commission_back_and_winning_it_restores_it(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let partner = reseller(&app, "acme").await;
    let ws = app.sign_up("ada@example.com").await;
    attribute(&app, ws, partner).await;
    let session = buy(&app, ws, &[("credit_pack", "pack_1000")], 1_100).await;
    let dispute = control(&app, "disputes", json!({"payment": session})).await;
    app.settle().await;
    assert_eq!(net(&app, partner).await, 0, "disputed: nothing earned");
    let id = dispute["id"].as_str().unwrap();
    control(
        &app,
        &format!("disputes/{id}/close"),
        json!({"outcome": "won"}),
    )
    .await;
    app.settle().await;
    assert_eq!(net(&app, partner).await, 1_400, "won: restored");
}

#[sqlx::test]
async fn approval_and_payouts_run_in_two_processes_at_once_and_move_each_commission_once(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    let partner = reseller(&app, "acme").await;
    sqlx::query("update resellers set minimum_payout_minor = 1000")
        .execute(&app.db)
        .await
        .unwrap();
    let ws = app.sign_up("ada@example.com").await;
    attribute(&app, ws, partner).await;
    for pack in ["pack_1000", "pack_1000", "pack_500"] {
        let before = app.balance(ws).await.total();
        let credits = if pack == "pack_500" { 500 } else { 1_000 };
        buy(&app, ws, &[("credit_pack", pack)], before + credits).await;
    }
    // Nothing is approved inside the hold period.
    assert!(run_jobs_at(&app, 29).await.is_empty());
    assert_eq!(
        app.count("select count(*) from commissions where status = 'approved'")
            .await,
        0
    );

    // Two workers approve and draft at once, on separate connections.
    let at = OffsetDateTime::now_utc() + time::Duration::days(31);
    let runs = (0..8).map(|_| {
        let db = app.app_db.clone();
        tokio::spawn(async move {
            let mut tx = db.begin().await.unwrap();
            let approved = resellers::commissions::approve_due(&mut tx, at)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            let mut tx = db.begin().await.unwrap();
            let drafted = resellers::commissions::draft_payouts(&mut tx, at)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            (approved, drafted.len())
        })
    });
    let results: Vec<(u64, usize)> = futures_util::future::join_all(runs)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(results.iter().map(|r| r.0).sum::<u64>(), 3, "{results:?}");
    assert_eq!(results.iter().map(|r| r.1).sum::<usize>(), 1, "{results:?}");
    let (payout, amount): (billfold::ids::PayoutId, i64) =
        sqlx::query_as("select payout_id, amount_minor from payouts")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(amount, 1_400 + 1_400 + 800);

    // Marking paid is idempotent and pays its commissions.
    let mut conn = app.app_db.acquire().await.unwrap();
    use resellers::commissions::{MarkedPaid, mark_paid};
    assert_eq!(
        mark_paid(&mut conn, payout, "SEPA-0001").await.unwrap(),
        MarkedPaid::Paid
    );
    assert_eq!(
        mark_paid(&mut conn, payout, "SEPA-other").await.unwrap(),
        MarkedPaid::AlreadyPaid {
            reference: "SEPA-0001".into()
        }
    );
    assert_eq!(
        app.count("select count(*) from commissions where status = 'paid'")
            .await,
        3
    );
    drop(conn);

    // A refund of a paid commission's payment is clawed back from the next payout.
    let first: String = sqlx::query_scalar(
        "select source_id from commissions where amount_minor = 1400 order by earned_at limit 1",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    refund(&app, &first, None).await;
    assert_eq!(
        commissions_of(&app, partner).await.last().unwrap(),
        &("reversal".to_owned(), -1_400, "approved".to_owned()),
        "a reversal of a paid commission is approved at once"
    );
    let after = app.balance(ws).await.total();
    buy(&app, ws, &[("credit_pack", "pack_1000")], after + 1_000).await;
    buy(&app, ws, &[("credit_pack", "pack_1000")], after + 2_000).await;
    buy(&app, ws, &[("credit_pack", "pack_1000")], after + 3_000).await;
    // Next month, after the new commissions' hold.
    let drafted = run_jobs_at(&app, 62).await;
    assert_eq!(drafted.len(), 1);
    let amount: i64 = sqlx::query_scalar("select amount_minor from payouts where payout_id = $1")
        .bind(drafted[0])
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(amount, 3 * 1_400 - 1_400, "the clawback reduces the payout");
    assert_eq!(net(&app, partner).await, 1_400 + 800 + 3 * 1_400);
}

#[sqlx::test]
async fn a_payout_waits_for_its_minimum(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let partner = reseller(&app, "acme").await;
    let ws = app.sign_up("ada@example.com").await;
    attribute(&app, ws, partner).await;
    buy(&app, ws, &[("credit_pack", "pack_500")], 600).await;
    // €8.00 approved is below the default €50.00 minimum.
    assert!(run_jobs_at(&app, 31).await.is_empty());
    sqlx::query(
        "insert into reseller_payout_minimums (reseller_id, currency, minimum_minor) values ($1, 'eur', 500)",
    )
    .bind(partner)
    .execute(&app.db)
    .await
    .unwrap();
    assert_eq!(run_jobs_at(&app, 31).await.len(), 1);
    let _ = text;
    let _ = ResellerRole::Owner;
}
