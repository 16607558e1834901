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
use crate::helpers::{TestApp, location, select, text};
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
}

/// A reseller whose owner is signed in on the returned client.
pub(crate) async fn reseller_with_owner(app: &TestApp, code: &str) -> (TestApp, ResellerId) {
    let id = reseller(app, code).await;
    let owner = app.visitor();
    let email = format!("owner@{code}.test");
    owner.sign_up(&email).await;
    let user: billfold::ids::UserId =
        sqlx::query_scalar("select user_id from users where email = $1")
            .bind(&email)
            .fetch_one(&app.db)
            .await
            .unwrap();
    let mut conn = app.db.acquire().await.unwrap();
    resellers::add_member(&mut conn, id, user, ResellerRole::Owner)
        .await
        .unwrap();
    (owner, id)
}

#[sqlx::test]
async fn a_referral_link_counts_the_click_and_attributes_the_sign_up(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (owner, partner) = reseller_with_owner(&app, "acme").await;
    let visitor = app.visitor();
    let res = visitor.get("/r/ACME").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/signup");
    let cookie = res
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("billfold_ref=acme;"), "{cookie}");
    assert!(
        cookie.contains("Max-Age=2592000") && cookie.contains("HttpOnly"),
        "{cookie}"
    );

    let ws = visitor.sign_up("grace@example.com").await;
    let (reseller_id, via): (Option<ResellerId>, Option<String>) = sqlx::query_as(
        "select reseller_id, attributed_via::text from workspaces where workspace_id = $1",
    )
    .bind(ws)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(reseller_id, Some(partner));
    assert_eq!(via.as_deref(), Some("referral_link"));

    // The customer sees who brought them; the reseller sees the click and the sign-up.
    let (_, html) = visitor.get_html("/dashboard").await;
    assert_eq!(
        text(&html, "#partner-brand strong").as_deref(),
        Some("Partner acme")
    );
    let (status, html) = owner.get_html("/reseller").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text(&html, "#clicks-all").as_deref(), Some("1"));
    assert_eq!(text(&html, "#signups-all").as_deref(), Some("1"));
    let (_, html) = owner.get_html("/reseller/customers").await;
    let rows = select(&html, "#customers tbody tr");
    assert_eq!(rows.len(), 1);
    let row = rows[0].text().collect::<String>();
    assert!(row.contains("g***@example.com"), "email masked: {row}");
    assert!(!row.contains("grace@"), "{row}");
}

#[sqlx::test]
async fn unknown_or_closed_codes_land_on_sign_up_without_attribution(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let closed = reseller(&app, "gone").await;
    sqlx::query("update resellers set status = 'closed' where reseller_id = $1")
        .bind(closed)
        .execute(&app.db)
        .await
        .unwrap();
    for path in ["/r/nobody", "/r/gone", "/r/%00%FF", "/r/a"] {
        let visitor = app.visitor();
        let res = visitor.get(path).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{path}");
        assert!(res.headers().get("set-cookie").is_none(), "{path}");
    }
    // A reseller closed after the click attributes nothing.
    let closing = reseller(&app, "closing").await;
    let visitor = app.visitor();
    assert_eq!(
        visitor.get("/r/closing").await.status(),
        StatusCode::SEE_OTHER
    );
    sqlx::query("update resellers set status = 'closed' where reseller_id = $1")
        .bind(closing)
        .execute(&app.db)
        .await
        .unwrap();
    visitor.sign_up("ada@example.com").await;
    assert_eq!(
        app.count("select count(*) from workspaces where reseller_id is not null")
            .await,
        0
    );
    assert_eq!(app.count("select count(*) from referral_clicks").await, 1);
}

#[sqlx::test]
async fn a_sign_up_on_a_resellers_host_name_is_branded_and_attributed(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let partner = reseller(&app, "acme").await;
    sqlx::query(
        "update resellers set host_name = 'billing.acme.example', display_name = 'Acme Cloud',
                accent_color = '#0f766e' where reseller_id = $1",
    )
    .bind(partner)
    .execute(&app.db)
    .await
    .unwrap();
    let visitor = app.visitor();
    let res = visitor
        .client
        .get(visitor.url("/signup"))
        .header("host", "billing.acme.example")
        .send()
        .await
        .unwrap();
    let html = scraper::Html::parse_document(&res.text().await.unwrap());
    assert_eq!(
        text(&html, "#partner-brand strong").as_deref(),
        Some("Acme Cloud")
    );
    let theme = crate::helpers::attr(&html, "link[href^='/brand/']", "href").unwrap();
    let css = visitor.get(&theme).await.text().await.unwrap();
    assert!(css.contains("--brand: #0f766e"), "{css}");

    let token = crate::helpers::attr(&html, "input[name=csrf_token]", "value").unwrap();
    let res = visitor
        .client
        .post(visitor.url("/signup"))
        .header("host", "billing.acme.example")
        .form(&[
            ("email", "ada@example.com"),
            ("password", crate::helpers::PASSWORD),
            ("csrf_token", token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let via: Option<String> = sqlx::query_scalar(
        "select attributed_via::text from workspaces w join memberships using (workspace_id)
           join users u using (user_id) where u.email = 'ada@example.com'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(via.as_deref(), Some("host"));
}

#[sqlx::test]
async fn the_reseller_pages_are_for_reseller_users_only(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let res = app.visitor().get("/reseller").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(location(&res).starts_with("/login?next="));
    app.sign_up("ada@example.com").await;
    for path in [
        "/reseller",
        "/reseller/customers",
        "/reseller/payouts",
        "/reseller/settings",
    ] {
        assert_eq!(
            app.get(path).await.status(),
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    let res = app.post_form("/reseller/api-keys", &[("name", "x")]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

/// Everything reseller B has, for A to try.
struct Owned {
    customer: WorkspaceId,
    payout: billfold::ids::PayoutId,
    key_id: String,
}

async fn customer_with_payout(app: &TestApp, partner: ResellerId, email: &str) -> Owned {
    let customer = app.visitor();
    let ws = customer.sign_up(email).await;
    attribute(app, ws, partner).await;
    for i in 1..=4 {
        buy(
            &customer,
            ws,
            &[("credit_pack", "pack_1000")],
            100 + i * 1_000,
        )
        .await;
    }
    run_jobs_at(app, 31).await;
    let payout = sqlx::query_scalar("select payout_id from payouts where reseller_id = $1")
        .bind(partner)
        .fetch_one(&app.db)
        .await
        .unwrap();
    let key_id = sqlx::query_scalar::<_, uuid::Uuid>(
        "insert into reseller_api_keys (reseller_id, name, key_prefix, key_hash)
         values ($1, 'k', 'bfr_x', $2) returning reseller_api_key_id",
    )
    .bind(partner)
    .bind(uuid::Uuid::new_v4().as_bytes().to_vec())
    .fetch_one(&app.db)
    .await
    .unwrap()
    .to_string();
    Owned {
        customer: ws,
        payout,
        key_id,
    }
}

async fn reseller_key(owner: &TestApp) -> String {
    let res = owner
        .post_form("/reseller/api-keys", &[("name", "CRM sync")])
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let html = scraper::Html::parse_document(&res.text().await.unwrap());
    text(&html, "#new-key-value").expect("key shown once")
}

async fn api(app: &TestApp, key: &str, path: &str) -> (StatusCode, Value) {
    let res = app
        .client
        .get(app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (res.status(), res.json().await.unwrap())
}

#[sqlx::test]
async fn every_reseller_route_answers_404_for_another_resellers_ids(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (a_owner, a) = reseller_with_owner(&app, "alpha").await;
    let (_b_owner, b) = reseller_with_owner(&app, "bravo").await;
    let mine = customer_with_payout(&app, a, "mine@example.com").await;
    let theirs = customer_with_payout(&app, b, "theirs@example.com").await;

    // Pages and the CSV: mine answer, B's are 404.
    for (path, ok) in [
        (format!("/reseller/customers/{}", mine.customer), true),
        (format!("/reseller/payouts/{}", mine.payout), true),
        (format!("/reseller/payouts/{}/csv", mine.payout), true),
        (format!("/reseller/customers/{}", theirs.customer), false),
        (format!("/reseller/payouts/{}", theirs.payout), false),
        (format!("/reseller/payouts/{}/csv", theirs.payout), false),
        ("/reseller/customers/not-a-uuid".to_owned(), false),
    ] {
        let status = a_owner.get(&path).await.status();
        let expected = if ok {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(status, expected, "{path}");
    }
    let res = a_owner
        .post_form(&format!("/reseller/api-keys/{}/revoke", theirs.key_id), &[])
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        app.count("select count(*) from reseller_api_keys where revoked_at is not null")
            .await,
        0
    );
    // Lists hold only A's.
    for path in [
        "/reseller/customers",
        "/reseller/commissions",
        "/reseller/payouts",
        "/reseller",
    ] {
        let body = a_owner.get(path).await.text().await.unwrap();
        assert!(!body.contains(&theirs.customer.to_string()), "{path}");
        assert!(!body.contains(&theirs.payout.to_string()), "{path}");
        assert!(!body.contains("t***@example.com"), "{path}");
    }

    // The API, with A's key.
    let key = reseller_key(&a_owner).await;
    for (path, ok) in [
        (
            format!("/api/v1/reseller/customers/{}", mine.customer),
            true,
        ),
        (format!("/api/v1/reseller/payouts/{}", mine.payout), true),
        (
            format!("/api/v1/reseller/customers/{}", theirs.customer),
            false,
        ),
        (format!("/api/v1/reseller/payouts/{}", theirs.payout), false),
    ] {
        let (status, body) = api(&app, &key, &path).await;
        if ok {
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
        } else {
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(body["error"]["code"], "not_found");
        }
    }
    for path in [
        "/api/v1/reseller/customers".to_owned(),
        "/api/v1/reseller/commissions".to_owned(),
        "/api/v1/reseller/payouts".to_owned(),
        format!("/api/v1/reseller/commissions?customer={}", theirs.customer),
    ] {
        let (status, body) = api(&app, &key, &path).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            !body.to_string().contains("t***@example.com"),
            "{path}: {body}"
        );
        assert!(
            !body.to_string().contains(&theirs.customer.to_string()),
            "{path}"
        );
    }
}

#[sqlx::test]
async fn the_reseller_api_pages_with_cursors_and_refuses_bad_input_and_keys(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (owner, partner) = reseller_with_owner(&app, "acme").await;
    for i in 0..5 {
        let ws = app.visitor().sign_up(&format!("c{i}@example.com")).await;
        attribute(&app, ws, partner).await;
    }
    let key = reseller_key(&owner).await;
    let mut seen = Vec::new();
    let mut path = "/api/v1/reseller/customers?limit=2".to_owned();
    loop {
        let (status, body) = api(&app, &key, &path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let data = body["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(data.iter().map(|c| c["id"].as_str().unwrap().to_owned()));
        match body["next_cursor"].as_str() {
            Some(next) => path = format!("/api/v1/reseller/customers?limit=2&after={next}"),
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5, "every customer once");

    for bad in [
        "/api/v1/reseller/customers?limit=0",
        "/api/v1/reseller/customers?after=garbage",
        "/api/v1/reseller/commissions?status=void",
        "/api/v1/reseller/commissions?month=2026-13",
        "/api/v1/reseller/commissions?customer=x",
        "/api/v1/reseller/payouts?unknown=1",
        "/api/v1/reseller/customers?q=a%00b",
    ] {
        let (status, body) = api(&app, &key, bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{bad}");
    }
    // A metering key, a revoked key and no key are all 401.
    app.sign_up("backend@example.com").await;
    let metering = app.create_api_key("Backend").await;
    for key in [metering.as_str(), "bfr_0000", ""] {
        let (status, body) = api(&app, key, "/api/v1/reseller/customers").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{key}");
        assert_eq!(body["error"]["code"], "invalid_api_key");
    }
}

#[sqlx::test]
async fn branding_is_validated_and_shown_to_referred_customers(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (owner, partner) = reseller_with_owner(&app, "acme").await;
    for (fields, message) in [
        (vec![("accent_color", "#facc15")], "contrast"),
        (vec![("accent_color", "red")], "hex colour"),
        (vec![("host_name", "https://x.example/")], "host name"),
        (vec![("display_name", &*"x".repeat(61))], "display name"),
    ] {
        let res = owner.post_form("/reseller/settings", &fields).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = res.text().await.unwrap();
        assert!(body.contains(message), "{message}");
    }
    assert_eq!(
        app.count(
            "select count(*) from resellers where accent_color is not null or host_name is not null"
        )
        .await,
        0,
        "nothing saved"
    );
    let res = owner
        .post_form(
            "/reseller/settings",
            &[("display_name", "Acme Cloud"), ("accent_color", "#0F766E")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    // A logo: an SVG with a script is refused, a PNG is stored and served.
    let upload = |name: &'static str, bytes: Vec<u8>| {
        let owner = &owner;
        async move {
            let token = owner.csrf().await;
            let form = reqwest::multipart::Form::new()
                .text("csrf_token", token)
                .part(
                    "logo",
                    reqwest::multipart::Part::bytes(bytes).file_name(name),
                );
            owner
                .client
                .post(owner.url("/reseller/settings/logo"))
                .multipart(form)
                .send()
                .await
                .unwrap()
        }
    };
    let res = upload("x.svg", b"<svg onload=\"alert(1)\"></svg>".to_vec()).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\0\x40\0\0\0\x40".to_vec();
    png.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    let res = upload("logo.png", png.clone()).await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "{}",
        res.text().await.unwrap()
    );
    // Without the CSRF token the upload is refused.
    let form = reqwest::multipart::Form::new().part(
        "logo",
        reqwest::multipart::Part::bytes(png.clone()).file_name("l.png"),
    );
    let res = owner
        .client
        .post(owner.url("/reseller/settings/logo"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    let customer = app.visitor();
    let ws = customer.sign_up("ada@example.com").await;
    attribute(&app, ws, partner).await;
    let (_, html) = customer.get_html("/dashboard").await;
    assert_eq!(
        text(&html, "#partner-brand strong").as_deref(),
        Some("Acme Cloud")
    );
    let logo = crate::helpers::attr(&html, "#partner-brand img", "src").unwrap();
    let res = customer.get(&logo).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "image/png");
    assert!(
        res.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("sandbox")
    );
    assert_eq!(res.bytes().await.unwrap().to_vec(), png);

    // The customer chooses to share their email; the reseller then sees it.
    let res = customer
        .post_form("/settings/reseller-sharing", &[("share", "1")])
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, html) = owner.get_html("/reseller/customers").await;
    assert!(
        text(&html, "#customers")
            .unwrap()
            .contains("ada@example.com")
    );
}

#[sqlx::test]
async fn a_payout_csv_lists_every_line_and_neutralises_formulas(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (owner, partner) = reseller_with_owner(&app, "acme").await;
    let owned = customer_with_payout(&app, partner, "ada@example.com").await;
    sqlx::query(
        "update workspaces set name = '=HYPERLINK(\"http://evil\")' where workspace_id = $1",
    )
    .bind(owned.customer)
    .execute(&app.db)
    .await
    .unwrap();
    let res = owner
        .get(&format!("/reseller/payouts/{}/csv", owned.payout))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    let body = res.text().await.unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert!(lines[0].starts_with("commission_id,kind,customer,source,source_id,earned_at"));
    assert_eq!(
        lines.len(),
        1 + 4 + 1,
        "header, four commissions, total: {body}"
    );
    assert!(lines[1].contains("'=HYPERLINK"), "{}", lines[1]);
    assert!(
        lines.last().unwrap().starts_with("total,") && lines.last().unwrap().contains(",5600,eur,")
    );
}

#[sqlx::test]
async fn a_reseller_member_signs_in_to_the_dashboard_and_reads_but_cannot_change_it(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let partner = reseller(&app, "acme").await;
    let member = app.visitor();
    member.sign_up("member@acme.test").await;
    let user: billfold::ids::UserId =
        sqlx::query_scalar("select user_id from users where email = 'member@acme.test'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    let mut conn = app.db.acquire().await.unwrap();
    resellers::add_member(&mut conn, partner, user, ResellerRole::Member)
        .await
        .unwrap();
    drop(conn);

    // Signing in (without a `next`) lands on the reseller dashboard.
    let fresh = app.visitor();
    let res = fresh
        .post_form(
            "/login",
            &[
                ("email", "member@acme.test"),
                ("password", crate::helpers::PASSWORD),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/reseller");

    let (status, html) = member.get_html("/reseller/settings").await;
    assert_eq!(status, StatusCode::OK);
    assert!(select(&html, "form[action='/reseller/settings']").is_empty());
    assert!(select(&html, "form[action='/reseller/api-keys']").is_empty());
    for (path, fields) in [
        ("/reseller/settings", vec![("display_name", "Mine now")]),
        ("/reseller/api-keys", vec![("name", "sneaky")]),
        ("/reseller/settings/logo/remove", vec![]),
    ] {
        let res = member.post_form(path, &fields).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(
        app.count("select count(*) from resellers where display_name is not null")
            .await
            + app.count("select count(*) from reseller_api_keys").await,
        0
    );
}

#[sqlx::test]
async fn a_refunded_subscription_invoice_takes_its_commission_back(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let partner = reseller(&app, "acme").await;
    let ws = app.sign_up("ada@example.com").await;
    attribute(&app, ws, partner).await;
    subscribe(&app, ws, "pro", 2_000).await;
    app.settle().await;
    // `invoice_payment.paid` named the invoice's payment intent.
    let pi: Option<String> = sqlx::query_scalar(
        "select payment_intent_id from commissions where reseller_id = $1 and source = 'invoice'",
    )
    .bind(partner)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let pi = pi.expect("the invoice commission knows its payment");
    let earned = net(&app, partner).await;
    assert_eq!(earned, 980, "20 % of €49.00");

    // A partial refund through Stripe's API, then the rest.
    for amount in [Some("2450"), None] {
        let mut form = vec![("payment_intent", pi.as_str())];
        if let Some(amount) = amount {
            form.push(("amount", amount));
        }
        let res = app
            .client
            .post(app.url("/sandbox/v1/refunds"))
            .bearer_auth(billfold::sandbox::SANDBOX_SECRET_KEY)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{}", res.text().await.unwrap());
        app.settle().await;
    }
    assert_eq!(net(&app, partner).await, 0, "refunded in full nets to zero");
    assert_eq!(
        app.count("select count(*) from commissions where kind = 'reversal'")
            .await,
        2
    );
    // Credits are not touched by an invoice refund (README: plan credits reset anyway).
    assert_eq!(app.balance(ws).await.plan, 2_000);
}

/// Applies what `invoice_payment.paid` applies (as `stripe_events::apply` does).
async fn link(tx: &mut sqlx::PgConnection, invoice: &str, pi: &str, event: &str) {
    resellers::commissions::link_invoice_payment(tx, invoice, pi)
        .await
        .unwrap();
    billfold::top_ups::db::lock_payment(tx, pi).await.unwrap();
    billfold::top_ups::reversals::follow_commission(tx, pi, event, OffsetDateTime::now_utc())
        .await
        .unwrap();
}

async fn invoice_commission(tx: &mut sqlx::PgConnection, ws: WorkspaceId, invoice: &str) {
    resellers::commissions::record_payment(
        tx,
        &resellers::commissions::Payment {
            source: resellers::commissions::Source::Invoice,
            source_id: invoice,
            payment_intent_id: None,
            workspace_id: ws,
            amount_paid: 4_900,
            tax: 0,
            currency: "eur",
            paid_at: OffsetDateTime::now_utc(),
        },
    )
    .await
    .unwrap();
}

async fn refund_all(tx: &mut sqlx::PgConnection, pi: &str, event: &str) {
    billfold::top_ups::reversals::apply_refund(
        tx,
        &billfold::stripe::payments::ChargeInfo {
            id: format!("ch_{pi}"),
            payment_intent_id: Some(pi.to_owned()),
            amount: 4_900,
            amount_refunded: 4_900,
            currency: "eur".into(),
        },
        event,
    )
    .await
    .unwrap();
}

#[sqlx::test]
async fn an_invoice_refund_reaches_its_commission_whatever_order_the_events_come_in(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let partner = reseller(&app, "acme").await;
    let ws = app.sign_up("ada@example.com").await;
    attribute(&app, ws, partner).await;
    let mut tx = app.app_db.begin().await.unwrap();
    // invoice.paid, charge.refunded, invoice_payment.paid
    invoice_commission(&mut tx, ws, "in_a").await;
    refund_all(&mut tx, "pi_a", "evt_a1").await;
    link(&mut tx, "in_a", "pi_a", "evt_a2").await;
    // charge.refunded, invoice_payment.paid, invoice.paid (through apply_invoice's path)
    refund_all(&mut tx, "pi_b", "evt_b1").await;
    link(&mut tx, "in_b", "pi_b", "evt_b2").await;
    invoice_commission(&mut tx, ws, "in_b").await;
    let pi = resellers::commissions::payment_intent_of(&mut tx, "in_b")
        .await
        .unwrap()
        .expect("linked at creation");
    billfold::top_ups::reversals::follow_commission(
        &mut tx,
        &pi,
        "in_b:paid",
        OffsetDateTime::now_utc(),
    )
    .await
    .unwrap();
    // Redelivered: nothing more.
    link(&mut tx, "in_a", "pi_a", "evt_a2").await;
    refund_all(&mut tx, "pi_b", "evt_b1").await;
    tx.commit().await.unwrap();
    let rows = commissions_of(&app, partner).await;
    assert_eq!(net(&app, partner).await, 0, "{rows:?}");
    assert_eq!(rows.len(), 4, "two commissions, two reversals: {rows:?}");
}
