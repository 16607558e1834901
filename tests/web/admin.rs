//! The back office (issue 8): staff-only routes, credit adjustments through the ledger
//! with their audit event in the same transaction, sudo mode, four-eyes approval,
//! suspensions, bulk actions on 200 rows, the CSV of a filtered list, and forms that
//! ignore fields they do not name.

use billfold::ids::WorkspaceId;
use reqwest::StatusCode;
use scraper::Html;
use sqlx::PgPool;

use crate::helpers::{PASSWORD, TestApp, attr, test_config, text};
use crate::resellers::reseller_with_owner;

/// A signed-in staff member on `app`.
async fn staff(app: &TestApp, email: &str) -> TestApp {
    let s = app.visitor();
    s.sign_up(email).await;
    sqlx::query("update users set is_staff = true where email = $1")
        .bind(email)
        .execute(&app.db)
        .await
        .unwrap();
    s
}

/// The adjustment form's one-time token on the workspace page.
async fn nonce(staff: &TestApp, ws: WorkspaceId) -> String {
    let (status, html) = staff.get_html(&format!("/admin/workspaces/{ws}")).await;
    assert_eq!(status, StatusCode::OK);
    attr(&html, "#adjust-form input[name=nonce]", "value").expect("adjust form")
}

async fn adjust(
    staff: &TestApp,
    ws: WorkspaceId,
    credits: &str,
    reason: &str,
    password: Option<&str>,
) -> reqwest::Response {
    let nonce = nonce(staff, ws).await;
    let mut fields = vec![
        ("bucket", "purchased"),
        ("credits", credits),
        ("reason", reason),
        ("nonce", nonce.as_str()),
    ];
    if let Some(p) = password {
        fields.push(("sudo_password", p));
    }
    staff
        .post_form(&format!("/admin/workspaces/{ws}/credits"), &fields)
        .await
}

async fn adjustments(app: &TestApp, ws: WorkspaceId) -> Vec<(i64, String)> {
    sqlx::query_as(
        "select purchased_delta + plan_delta, description from ledger_entries
          where workspace_id = $1 and kind = 'adjustment' order by ledger_entry_id",
    )
    .bind(ws)
    .fetch_all(&app.db)
    .await
    .unwrap()
}

async fn audit_actions(app: &TestApp, prefix: &str) -> Vec<String> {
    sqlx::query_scalar("select action from audit_events where action like $1 order by seq")
        .bind(format!("{prefix}%"))
        .fetch_all(&app.db)
        .await
        .unwrap()
}

#[sqlx::test]
async fn every_admin_route_refuses_customers_resellers_and_anonymous_visitors(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let customer_ws = app.sign_up("customer@example.com").await;
    let (reseller, _) = reseller_with_owner(&app, "acme").await;
    let anonymous = app.visitor();
    let id = customer_ws.to_string();
    let user: uuid::Uuid =
        sqlx::query_scalar("select user_id from users where email = 'customer@example.com'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    let mut gets = vec![
        "/admin".to_owned(),
        "/admin/adjustments".to_owned(),
        "/admin/resellers/new".to_owned(),
    ];
    let mut posts = vec![
        "/admin/adjustments/1".to_owned(),
        "/admin/plans/sync".to_owned(),
        "/admin/payouts/draft".to_owned(),
        "/admin/resellers/new".to_owned(),
        "/admin/view-as/end".to_owned(),
        "/admin/plans/pro/edit".to_owned(),
        "/admin/credit-packs/pack_500/edit".to_owned(),
        format!("/admin/resellers/{id}/terms"),
        format!("/admin/resellers/{id}/members"),
        format!("/admin/resellers/{id}/branding"),
    ];
    for r in billfold::web::admin::resources::ALL {
        gets.push(format!("/admin/{}", r.slug));
        gets.push(format!("/admin/{}/export.csv", r.slug));
        gets.push(format!("/admin/{}/{id}", r.slug));
        posts.push(format!("/admin/{}/bulk", r.slug));
    }
    gets.push(format!("/admin/payouts/{id}/csv"));
    for action in [
        "credits", "suspend", "restore", "plan", "refund", "reseller", "view-as",
    ] {
        posts.push(format!("/admin/workspaces/{id}/{action}"));
    }
    for path in [
        &format!("users/{user}/staff"),
        &format!("users/{user}/suspend"),
    ] {
        posts.push(format!("/admin/{path}"));
    }
    for path in [
        "commissions/{id}/approve",
        "commissions/{id}/void",
        "payouts/{id}/mark-paid",
        "webhook-events/{id}/replay",
        "webhook-events/{id}/skip",
        "jobs/1/retry",
        "features/{id}/edit",
    ] {
        posts.push(format!("/admin/{}", path.replace("{id}", &id)));
    }
    for path in &gets {
        for (who, client) in [("customer", &app), ("reseller", &reseller)] {
            let res = client.get(path).await;
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "GET {path} as {who}");
        }
        let res = anonymous.get(path).await;
        assert_eq!(
            res.status(),
            StatusCode::SEE_OTHER,
            "GET {path} anonymously"
        );
        let to = res.headers()["location"].to_str().unwrap().to_owned();
        assert!(to.starts_with("/login?next="), "{path} → {to}");
    }
    // Fields that would make each action succeed for staff.
    let fields = [
        ("reason", "sneaky reason"),
        ("change", "grant"),
        ("sudo_password", PASSWORD),
        ("bucket", "purchased"),
        ("credits", "1000"),
        ("nonce", "6a1f3a4e-0000-4000-8000-000000000000"),
        ("is_staff", "true"),
    ];
    for path in &posts {
        for (who, client) in [("customer", &app), ("reseller", &reseller)] {
            let res = client.post_form(path, &fields).await;
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "POST {path} as {who}");
        }
        let res = anonymous.post_form(path, &fields).await;
        match res.status() {
            StatusCode::FORBIDDEN => {}
            StatusCode::SEE_OTHER => {
                let to = res.headers()["location"].to_str().unwrap();
                assert!(to.starts_with("/login"), "POST {path} anonymously → {to}");
            }
            other => panic!("POST {path} anonymously: {other}"),
        }
    }
    let staff_count: i64 = sqlx::query_scalar("select count(*) from users where is_staff")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(staff_count, 0);
    assert!(audit_actions(&app, "workspace.").await.is_empty());
}

#[sqlx::test]
async fn an_adjustment_asks_for_the_password_writes_the_ledger_and_the_audit_log_and_shows_on_the_statement(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("customer@example.com").await;
    let admin = staff(&app, "staff@example.com").await;

    // No password yet: asked for it, nothing changes.
    let res = adjust(&admin, ws, "250", "Goodwill for the outage", None).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = Html::parse_document(&res.text().await.unwrap());
    assert!(text(&html, "#form-error").unwrap().contains("password"));
    let res = adjust(&admin, ws, "250", "Goodwill", Some("not my password")).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(adjustments(&app, ws).await.is_empty());

    // Bad input: a clear message, nothing changes.
    for (credits, reason, message) in [
        ("0", "Goodwill", "other than 0"),
        ("ten", "Goodwill", "other than 0"),
        ("10", "", "reason"),
        ("-500", "Take back", "only"),
        ("-999999999", "Take back", "at most"),
    ] {
        let res = adjust(&admin, ws, credits, reason, Some(PASSWORD)).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{credits}");
        let html = Html::parse_document(&res.text().await.unwrap());
        let error = text(&html, "#form-error").unwrap();
        assert!(error.contains(message), "{credits}: {error}");
    }

    let res = adjust(&admin, ws, "250", "Goodwill for the outage", Some(PASSWORD)).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        adjustments(&app, ws).await,
        [(250, "Adjustment: Goodwill for the outage".to_owned())]
    );
    app.assert_ledger_consistent(ws).await;
    // Within 15 minutes the password is not asked again.
    let res = adjust(&admin, ws, "-50", "Correction", None).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(adjustments(&app, ws).await.len(), 2);

    let (reason, before, after): (String, serde_json::Value, serde_json::Value) = sqlx::query_as(
        "select reason, before, after from audit_events
          where action = 'workspace.credits_adjusted' order by seq limit 1",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(reason, "Goodwill for the outage");
    assert_eq!(
        after["purchased_credits"].as_i64().unwrap()
            - before["purchased_credits"].as_i64().unwrap(),
        250
    );
    assert_eq!(
        audit_actions(&app, "auth.sudo").await,
        ["auth.sudo_failed", "auth.sudo"],
        "the wrong password, then one confirmation"
    );

    // The customer sees it on their statement.
    let (_, html) = app.get_html("/credits").await;
    assert!(html.html().contains("Goodwill for the outage"));

    // Staff finds it in the audit log, filtered by action.
    let (status, html) = admin
        .get_html("/admin/audit-log?f.action=credits_adjusted")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.html().contains("Goodwill for the outage"));
    assert!(!html.html().contains("auth.sign_up"));
}

#[sqlx::test]
async fn a_failing_audit_write_leaves_no_ledger_entry(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("customer@example.com").await;
    let admin = staff(&app, "staff@example.com").await;
    let res = adjust(&admin, ws, "1", "Warm up sudo", Some(PASSWORD)).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    // The audit log refuses this one action: the adjustment in its transaction must go.
    sqlx::raw_sql(
        "create function refuse_adjustment_audit() returns trigger language plpgsql as $$
         begin
             if new.action = 'workspace.credits_adjusted' then raise exception 'forced'; end if;
             return new;
         end $$;
         create trigger refuse_adjustment_audit before insert on audit_events
             for each row execute function refuse_adjustment_audit();",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let res = adjust(&admin, ws, "500", "Should not stick", None).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(adjustments(&app, ws).await.len(), 1, "only the warm-up");
    app.assert_ledger_consistent(ws).await;
}

#[sqlx::test]
async fn sudo_mode_lapses(pool: PgPool) {
    let mut config = test_config();
    config.sudo_window = std::time::Duration::from_secs(1);
    let app = TestApp::spawn_with(pool, config).await;
    let ws = app.sign_up("customer@example.com").await;
    let admin = staff(&app, "staff@example.com").await;
    let res = adjust(&admin, ws, "5", "First", Some(PASSWORD)).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let res = adjust(&admin, ws, "5", "Second", None).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(adjustments(&app, ws).await.len(), 1);
}

#[sqlx::test]
async fn a_large_adjustment_waits_for_a_second_staff_member(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("customer@example.com").await;
    let alice = staff(&app, "alice@example.com").await;
    let bob = staff(&app, "bob@example.com").await;

    let form = nonce(&alice, ws).await;
    for _ in 0..2 {
        let res = alice
            .post_form(
                &format!("/admin/workspaces/{ws}/credits"),
                &[
                    ("bucket", "purchased"),
                    ("credits", "20000"),
                    ("reason", "Enterprise migration"),
                    ("nonce", &form),
                    ("sudo_password", PASSWORD),
                ],
            )
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
    }
    assert!(
        adjustments(&app, ws).await.is_empty(),
        "nothing applied yet"
    );
    let requests: i64 = sqlx::query_scalar("select count(*) from credit_adjustment_requests")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(requests, 1, "a resubmitted form queues one request");
    let request: i64 =
        sqlx::query_scalar("select adjustment_request_id from credit_adjustment_requests")
            .fetch_one(&app.db)
            .await
            .unwrap();

    // Alice cannot approve her own request.
    let (_, html) = alice.get_html("/admin/adjustments").await;
    assert!(html.html().contains("Your request"));
    let res = alice
        .post_form(
            &format!("/admin/adjustments/{request}"),
            &[("decision", "approve")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(adjustments(&app, ws).await.is_empty());

    // Bob sees it pending, confirms his password and approves it.
    let (_, html) = bob.get_html("/admin").await;
    assert!(
        text(&html, "#pending-approvals")
            .unwrap()
            .contains("1 credit adjustment")
    );
    let res = bob
        .post_form(
            &format!("/admin/adjustments/{request}"),
            &[("decision", "approve"), ("sudo_password", PASSWORD)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        adjustments(&app, ws).await,
        [(20_000, "Adjustment: Enterprise migration".to_owned())]
    );
    // A second approval (a double click) changes nothing.
    let res = bob
        .post_form(
            &format!("/admin/adjustments/{request}"),
            &[("decision", "approve")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(adjustments(&app, ws).await.len(), 1);
    assert_eq!(
        audit_actions(&app, "credit_adjustment.").await,
        ["credit_adjustment.requested", "credit_adjustment.approved"]
    );
    app.assert_ledger_consistent(ws).await;
}

/// Posts the adjustment form once per nonce in `nonces`, all at once.
async fn adjust_in_parallel(admin: &TestApp, ws: WorkspaceId, nonces: &[String], credits: &str) {
    let token = admin.csrf().await;
    let mut tasks = Vec::new();
    for nonce in nonces {
        let (client, url, token, nonce, credits) = (
            admin.client.clone(),
            admin.url(&format!("/admin/workspaces/{ws}/credits")),
            token.clone(),
            nonce.clone(),
            credits.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .form(&[
                    ("bucket", "purchased"),
                    ("credits", credits.as_str()),
                    ("reason", "Parallel"),
                    ("nonce", nonce.as_str()),
                    ("csrf_token", token.as_str()),
                ])
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        let status = t.await.unwrap();
        assert!(
            matches!(
                status,
                StatusCode::SEE_OTHER | StatusCode::UNPROCESSABLE_ENTITY
            ),
            "{status}"
        );
    }
}

#[sqlx::test]
async fn parallel_adjustments_apply_each_form_once_and_never_go_negative(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("customer@example.com").await;
    let admin = staff(&app, "staff@example.com").await;
    let res = adjust(&admin, ws, "1000", "Start", Some(PASSWORD)).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let mut forms = Vec::new();
    for _ in 0..10 {
        forms.push(nonce(&admin, ws).await);
    }
    // Ten forms, each sent four times at once: ten removals, not forty.
    let resent: Vec<String> = forms.iter().flat_map(|n| vec![n.clone(); 4]).collect();
    adjust_in_parallel(&admin, ws, &resent, "-30").await;
    assert_eq!(adjustments(&app, ws).await.len(), 1 + 10);
    assert_eq!(app.assert_ledger_consistent(ws).await.1, 700);

    // Forty removals of 30 from 700: 23 fit, the rest are refused, none goes negative.
    let mut forms = Vec::new();
    for _ in 0..40 {
        forms.push(nonce(&admin, ws).await);
    }
    adjust_in_parallel(&admin, ws, &forms, "-30").await;
    let (_, purchased) = app.assert_ledger_consistent(ws).await;
    assert_eq!(adjustments(&app, ws).await.len(), 1 + 10 + 23);
    assert_eq!(purchased, 700 - 30 * 23);
}

#[sqlx::test]
async fn a_suspended_workspace_is_refused_by_the_api_until_restored(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("customer@example.com").await;
    let key = app.create_api_key("prod").await;
    let admin = staff(&app, "staff@example.com").await;
    let res = admin
        .post_form(
            &format!("/admin/workspaces/{ws}/suspend"),
            &[("reason", "Card testing"), ("sudo_password", PASSWORD)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let body = serde_json::json!({"feature": "graph.query", "quantity": 1, "idempotency_key": "a"});
    let (status, json) = app.consume(&key, body.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(json["error"]["code"], "workspace_suspended");
    let res = app
        .client
        .get(app.url("/api/v1/balance"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = admin
        .post_form(
            &format!("/admin/workspaces/{ws}/restore"),
            &[("reason", "Cleared by support")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (status, _) = app.consume(&key, body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        audit_actions(&app, "workspace.").await,
        ["workspace.suspended", "workspace.restored"]
    );
}

#[sqlx::test]
async fn suspending_a_user_ends_their_sessions_and_sign_ins(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.sign_up("customer@example.com").await;
    let user: uuid::Uuid =
        sqlx::query_scalar("select user_id from users where email = 'customer@example.com'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    let admin = staff(&app, "staff@example.com").await;
    let res = admin
        .post_form(
            &format!("/admin/users/{user}/suspend"),
            &[
                ("change", "suspend"),
                ("reason", "Abuse"),
                ("sudo_password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let res = app.get("/dashboard").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "the session ended");
    let again = app.visitor();
    let res = again
        .post_form(
            "/login",
            &[("email", "customer@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Staff cannot lock themselves out.
    let me: uuid::Uuid =
        sqlx::query_scalar("select user_id from users where email = 'staff@example.com'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    let res = admin
        .post_form(
            &format!("/admin/users/{me}/staff"),
            &[("change", "revoke"), ("reason", "Oops")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[sqlx::test]
async fn forms_ignore_fields_they_do_not_name(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let victim = app.sign_up("victim@example.com").await;
    let attacker = app.visitor();
    let res = attacker
        .post_form(
            "/signup",
            &[
                ("email", "attacker@example.com"),
                ("password", PASSWORD),
                ("is_staff", "true"),
                ("workspace_id", &victim.to_string()),
                ("credits", "1000000"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (is_staff,): (bool,) =
        sqlx::query_as("select is_staff from users where email = 'attacker@example.com'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(!is_staff);
    assert_eq!(attacker.get("/admin").await.status(), StatusCode::FORBIDDEN);
    // A staff adjustment posted with another workspace's id changes only the one in
    // the address.
    let other = attacker.workspace_of("attacker@example.com").await;
    let admin = staff(&app, "staff@example.com").await;
    let nonce = nonce(&admin, victim).await;
    let res = admin
        .post_form(
            &format!("/admin/workspaces/{victim}/credits"),
            &[
                ("bucket", "purchased"),
                ("credits", "10"),
                ("reason", "Scoped"),
                ("nonce", &nonce),
                ("workspace_id", &other.to_string()),
                ("sudo_password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(adjustments(&app, victim).await.len(), 1);
    assert!(adjustments(&app, other).await.is_empty());
}

/// A reseller with `n` pending commissions on one customer.
async fn pending_commissions(app: &TestApp, n: i64) -> Vec<String> {
    let (_, reseller) = reseller_with_owner(app, "bulk").await;
    let ws = app.visitor().sign_up("buyer@example.com").await;
    sqlx::query_scalar(
        "insert into commissions (reseller_id, workspace_id, kind, source, source_id, base_minor,
                                  rate_bps, amount_minor, currency, status, earned_at,
                                  approve_after, paid_minor)
         select $1, $2, 'commission', 'top_up', 'cs_bulk_' || i, 1000, 2000, 200, 'eur', 'pending',
                now(), now() + interval '30 days', 1000
           from generate_series(1, $3) i
         returning commission_id::text",
    )
    .bind(reseller)
    .bind(ws)
    .bind(n)
    .fetch_all(&app.db)
    .await
    .unwrap()
}

#[sqlx::test]
async fn bulk_approval_of_200_commissions_asks_to_confirm_then_moves_each_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ids = pending_commissions(&app, 200).await;
    let admin = staff(&app, "staff@example.com").await;
    let mut fields: Vec<(&str, &str)> = ids.iter().map(|id| ("id", id.as_str())).collect();
    fields.push(("action", "approve"));
    let res = admin.post_form("/admin/commissions/bulk", &fields).await;
    assert_eq!(res.status(), StatusCode::OK);
    let html = Html::parse_document(&res.text().await.unwrap());
    assert!(text(&html, "#confirm-summary").unwrap().contains("200"));
    let approved = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from commissions where status = 'approved'")
            .fetch_one(&app.db)
            .await
            .unwrap()
    };
    assert_eq!(approved().await, 0, "nothing before confirming");
    fields.push(("confirm", "yes"));
    let res = admin.post_form("/admin/commissions/bulk", &fields).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(approved().await, 200);
    let res = admin.post_form("/admin/commissions/bulk", &fields).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        audit_actions(&app, "commissions.").await,
        ["commissions.approved"],
        "the repeat moved nothing"
    );
    // The payout is drafted from them and paid with a reference.
    let res = admin.post_form("/admin/payouts/draft", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let payout: String = sqlx::query_scalar("select payout_id::text from payouts")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let res = admin
        .post_form(
            &format!("/admin/payouts/{payout}/mark-paid"),
            &[("reference", "SEPA-2026-12-001")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let paid: i64 = sqlx::query_scalar("select count(*) from commissions where status = 'paid'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(paid, 200);
    let csv = admin
        .get(&format!("/admin/payouts/{payout}/csv"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(csv.lines().count(), 200 + 2, "header, lines and total");
}

#[sqlx::test]
async fn lists_search_filter_sort_page_and_export_what_they_show(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for i in 0..60 {
        app.visitor()
            .sign_up(&format!(
                "user{i:02}@{}.example",
                if i % 3 == 0 { "acme" } else { "other" }
            ))
            .await;
    }
    let admin = staff(&app, "staff@example.com").await;
    let (status, html) = admin
        .get_html("/admin/users?q=acme&sort=email&dir=asc")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(text(&html, "#result-count").unwrap().starts_with("20 "));
    let first = text(&html, "#rows tbody tr td a").unwrap();
    assert_eq!(first, "user00@acme.example");

    // Keyset pages: 61 users, 50 a page, nobody twice, nobody missed.
    let (_, page1) = admin.get_html("/admin/users?sort=email&dir=asc").await;
    let next = attr(&page1, "a[rel=next]", "href").expect("a second page");
    let (_, page2) = admin.get_html(&next).await;
    let emails = |h: &Html| -> Vec<String> {
        h.select(&scraper::Selector::parse("#rows tbody tr td a").unwrap())
            .map(|a| a.text().collect())
            .collect()
    };
    let (a, b) = (emails(&page1), emails(&page2));
    assert_eq!((a.len(), b.len()), (50, 11));
    assert!(a.last().unwrap() < b.first().unwrap());

    let res = admin
        .get("/admin/users/export.csv?q=acme&sort=email&dir=asc")
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = res.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 21, "header and the 20 matching users");
    assert!(lines[1].starts_with("user00@acme.example,"));
    assert!(lines.iter().skip(1).all(|l| l.contains("@acme.example")));

    // Hostile query values stay values.
    let (status, _) = admin
        .get_html("/admin/users?sort=email;drop%20table%20users&q=%25'&f.staff=maybe&after=abc%7Cx")
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[sqlx::test]
async fn a_feature_edit_is_validated_and_audited(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = staff(&app, "staff@example.com").await;
    let res = admin
        .post_form(
            "/admin/features/planner.create_plan/edit",
            &[("description", "Create a plan"), ("credit_cost", "-3")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = admin
        .post_form(
            "/admin/features/planner.create_plan/edit",
            &[("description", "Create a plan"), ("credit_cost", "7")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cost: i64 = sqlx::query_scalar(
        "select credit_cost from features where feature_code = 'planner.create_plan'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(cost, 7);
    assert_eq!(audit_actions(&app, "feature.").await, ["feature.updated"]);
    // A NUL in an address is an unknown record, not a database error.
    for path in [
        "/admin/features/a%00b/edit",
        "/admin/webhook-events/evt%00x/replay",
        "/admin/plans/pro%00/edit",
    ] {
        let res = admin
            .post_form(
                path,
                &[("description", "x"), ("credit_cost", "1"), ("name", "x")],
            )
            .await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let (status, _) = admin.get_html("/admin/features/a%00b").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[sqlx::test]
async fn viewing_as_a_customer_is_read_only_and_audited(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("customer@example.com").await;
    let admin = staff(&app, "staff@example.com").await;
    let res = admin
        .post_form(&format!("/admin/workspaces/{ws}/view-as"), &[])
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (status, html) = admin.get_html("/dashboard").await;
    assert_eq!(status, StatusCode::OK);
    let banner = text(&html, "#view-as-banner").unwrap();
    assert!(banner.contains("customer's workspace"), "{banner}");
    let (status, html) = admin.get_html("/credits").await;
    assert_eq!(status, StatusCode::OK);
    assert!(text(&html, "#view-as-banner").is_some());

    // Every write is refused, whatever the route.
    for (path, fields) in [
        ("/settings/api-keys", vec![("name", "sneaky")]),
        ("/billing/top-up", vec![("pack", "pack_500")]),
        ("/billing/portal", vec![]),
        ("/billing/cancel", vec![]),
        (
            &*format!("/admin/workspaces/{ws}/suspend"),
            vec![("reason", "while viewing"), ("sudo_password", PASSWORD)],
        ),
    ] {
        let res = admin.post_form(path, &fields).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "POST {path}");
    }
    let keys: i64 = sqlx::query_scalar("select count(*) from api_keys")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(keys, 0);
    let suspended: bool = sqlx::query_scalar(
        "select suspended_at is not null from workspaces where workspace_id = $1",
    )
    .bind(ws)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(!suspended);

    let res = admin.post_form("/admin/view-as/end", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, html) = admin.get_html("/dashboard").await;
    assert!(text(&html, "#view-as-banner").is_none());
    assert!(html.html().contains("staff's workspace"));
    assert_eq!(
        audit_actions(&app, "workspace.view_as").await,
        ["workspace.view_as_started", "workspace.view_as_ended"]
    );
}

#[sqlx::test]
async fn staff_create_a_reseller_set_its_terms_and_add_its_users(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.sign_up("partner@example.com").await;
    let admin = staff(&app, "staff@example.com").await;
    let (status, _) = admin.get_html("/admin/resellers/new").await;
    assert_eq!(status, StatusCode::OK);
    for (code, rate, email, message) in [
        ("X", "20", "", "referral code"),
        ("globex", "120", "", "0 to 100"),
        ("globex", "20", "nobody@example.com", "sign up first"),
    ] {
        let res = admin
            .post_form(
                "/admin/resellers/new",
                &[
                    ("name", "Globex"),
                    ("referral_code", code),
                    ("rate", rate),
                    ("hold_days", "30"),
                    ("owner_email", email),
                ],
            )
            .await;
        assert_eq!(
            res.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{code} {rate}"
        );
        let html = Html::parse_document(&res.text().await.unwrap());
        let error = text(&html, "#form-error").unwrap();
        assert!(error.contains(message), "{error}");
        // The form keeps what was typed.
        assert_eq!(attr(&html, "#referral_code", "value").unwrap(), code);
    }
    let res = admin
        .post_form(
            "/admin/resellers/new",
            &[
                ("name", "Globex"),
                ("referral_code", "globex"),
                ("rate", "12.5"),
                ("hold_days", "14"),
                ("owner_email", "partner@example.com"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let id: uuid::Uuid =
        sqlx::query_scalar("select reseller_id from resellers where referral_code = 'globex'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    let (rate, hold): (i32, i32) = sqlx::query_as(
        "select commission_rate_bps, hold_days from resellers where reseller_id = $1",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((rate, hold), (1250, 14));
    // The owner now has the reseller dashboard.
    assert_eq!(app.get("/reseller").await.status(), StatusCode::OK);

    let res = admin
        .post_form(
            &format!("/admin/resellers/{id}/terms"),
            &[
                ("rate", "abc"),
                ("hold_days", "30"),
                ("minimum_payout", "50"),
                ("status", "active"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = admin
        .post_form(
            &format!("/admin/resellers/{id}/terms"),
            &[
                ("rate", "25"),
                ("hold_days", "0"),
                ("minimum_payout", "100.00"),
                ("status", "paused"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (rate, hold, minimum, status): (i32, i32, i64, String) = sqlx::query_as(
        "select commission_rate_bps, hold_days, minimum_payout_minor, status::text
           from resellers where reseller_id = $1",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        (rate, hold, minimum, status.as_str()),
        (2500, 0, 10_000, "paused")
    );
    let (_, html) = admin.get_html(&format!("/admin/resellers/{id}")).await;
    assert!(
        text(&html, "#reseller-members")
            .unwrap()
            .contains("partner@example.com (owner)")
    );
    assert_eq!(
        audit_actions(&app, "reseller.").await,
        ["reseller.created", "reseller.terms_updated"]
    );
}

#[sqlx::test]
async fn plans_and_credit_packs_are_edited_with_validation_and_audited(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = staff(&app, "staff@example.com").await;
    let res = admin
        .post_form(
            "/admin/plans/pro/edit",
            &[
                ("name", "Pro"),
                ("monthly_credits", "lots"),
                ("rate_limit_per_min", ""),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = admin
        .post_form(
            "/admin/plans/pro/edit",
            &[
                ("name", "Pro+"),
                ("monthly_credits", "25,000"),
                ("rate_limit_per_min", "600"),
                ("max_members", ""),
                ("max_api_keys", "20"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (name, credits, members): (String, Option<i64>, Option<i32>) = sqlx::query_as(
        "select name, monthly_credits, max_members from plans where plan_code = 'pro'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        (name.as_str(), credits, members),
        ("Pro+", Some(25_000), None)
    );

    let pack: String =
        sqlx::query_scalar("select credit_pack_code from credit_packs order by sort_order limit 1")
            .fetch_one(&app.db)
            .await
            .unwrap();
    let res = admin
        .post_form(
            &format!("/admin/credit-packs/{pack}/edit"),
            &[("name", "Small"), ("credits", "500"), ("price", "12.345")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = admin
        .post_form(
            &format!("/admin/credit-packs/{pack}/edit"),
            &[
                ("name", "Small"),
                ("credits", "600"),
                ("price", "45.50"),
                ("active", "on"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (credits, price): (i64, i64) =
        sqlx::query_as("select credits, price_minor from credit_packs where credit_pack_code = $1")
            .bind(&pack)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((credits, price), (600, 4550));
    assert_eq!(audit_actions(&app, "plan.").await, ["plan.updated"]);
    assert_eq!(
        audit_actions(&app, "credit_pack.").await,
        ["credit_pack.updated"]
    );
}

#[sqlx::test]
async fn a_workspace_is_attributed_to_a_reseller_and_detached(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("customer@example.com").await;
    let (_, partner) = reseller_with_owner(&app, "acme").await;
    let admin = staff(&app, "staff@example.com").await;
    let path = format!("/admin/workspaces/{ws}/reseller");
    let res = admin
        .post_form(
            &path,
            &[("referral_code", "nope"), ("reason", "Signed via phone")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = admin
        .post_form(
            &path,
            &[("referral_code", "acme"), ("reason", "Signed via phone")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let attributed: Option<uuid::Uuid> =
        sqlx::query_scalar("select reseller_id from workspaces where workspace_id = $1")
            .bind(ws)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(attributed, Some(partner.0));
    let res = admin
        .post_form(&path, &[("referral_code", "acme"), ("reason", "Twice")])
        .await;
    assert_eq!(
        res.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "detach first"
    );
    let res = admin.post_form(&path, &[("reason", "Wrong partner")]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        audit_actions(&app, "workspace.").await,
        ["workspace.attributed", "workspace.detached"]
    );
}

#[sqlx::test]
async fn a_top_up_refunded_from_the_back_office_takes_its_credits_back(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("customer@example.com").await;
    let before = app.assert_ledger_consistent(ws).await;
    let session = crate::refunds::buy(
        &app,
        ws,
        &[("credit_pack", "pack_500")],
        before.0 + before.1 + 500,
    )
    .await;
    let admin = staff(&app, "staff@example.com").await;
    let (_, html) = admin.get_html(&format!("/admin/workspaces/{ws}")).await;
    assert!(text(&html, "#top-ups").unwrap().contains("500"));
    let res = admin
        .post_form(
            &format!("/admin/workspaces/{ws}/refund"),
            &[
                ("session", &session),
                ("reason", "Bought by mistake"),
                ("sudo_password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    crate::helpers::eventually("the refund to take the credits back", || async {
        app.assert_ledger_consistent(ws).await.1 == 0
    })
    .await;
    // Another workspace's top-up cannot be refunded through this one's page.
    let other = app.visitor().sign_up("other@example.com").await;
    let res = admin
        .post_form(
            &format!("/admin/workspaces/{other}/refund"),
            &[("session", &session), ("reason", "Wrong page")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        audit_actions(&app, "top_up.").await,
        ["top_up.refund_requested"]
    );
}

#[sqlx::test]
async fn commissions_are_voided_events_skipped_plans_given_and_the_catalog_synced(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ids = pending_commissions(&app, 1).await;
    let admin = staff(&app, "staff@example.com").await;
    let res = admin
        .post_form(
            &format!("/admin/commissions/{}/void", ids[0]),
            &[("reason", "Self-referral"), ("sudo_password", PASSWORD)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let net: i64 = sqlx::query_scalar("select sum(amount_minor)::bigint from commissions")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(net, 0, "the reversal cancels the commission");
    let res = admin
        .post_form(
            &format!("/admin/commissions/{}/void", ids[0]),
            &[("reason", "Again")],
        )
        .await;
    assert_eq!(
        res.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "nothing left to void"
    );

    sqlx::query(
        "insert into stripe_events (stripe_event_id, event_type, livemode, payload)
         values ('evt_admin_skip', 'customer.updated', false, '{}')",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let res = admin
        .post_form(
            "/admin/webhook-events/evt_admin_skip/skip",
            &[("reason", "x")],
        )
        .await;
    assert_eq!(
        res.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "a reason is needed"
    );
    let res = admin
        .post_form(
            "/admin/webhook-events/evt_admin_skip/skip",
            &[("reason", "Test event")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let skipped: bool = sqlx::query_scalar(
        "select skipped_at is not null from stripe_events where stripe_event_id = 'evt_admin_skip'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(skipped);

    // A complimentary plan, kept when a subscription event would move the plan.
    let ws = app.sign_up("vip@example.com").await;
    let res = admin
        .post_form(
            &format!("/admin/workspaces/{ws}/plan"),
            &[("plan_code", "pro"), ("reason", "Design partner")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let mut conn = app.db.acquire().await.unwrap();
    billfold::accounts::db::set_workspace_plan(
        &mut conn,
        ws,
        &billfold::ids::PlanCode("free".into()),
    )
    .await
    .unwrap();
    let plan: String =
        sqlx::query_scalar("select plan_code from workspaces where workspace_id = $1")
            .bind(ws)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(plan, "pro");
    let res = admin
        .post_form(
            &format!("/admin/workspaces/{ws}/plan"),
            &[("plan_code", ""), ("reason", "Partnership ended")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let plan: String =
        sqlx::query_scalar("select plan_code from workspaces where workspace_id = $1")
            .bind(ws)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(plan, "free", "back on the billed plan");

    let res = admin.post_form("/admin/plans/sync", &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    let html = Html::parse_document(&res.text().await.unwrap());
    assert!(text(&html, "#sync-report").unwrap().contains("plan pro"));
    assert_eq!(
        audit_actions(&app, "workspace.plan").await,
        ["workspace.plan_overridden", "workspace.plan_override_ended"]
    );
}

#[sqlx::test]
async fn a_voided_commission_stays_voided_whatever_refund_follows(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ids = pending_commissions(&app, 1).await;
    sqlx::query("update commissions set payment_intent_id = 'pi_voided'")
        .execute(&app.db)
        .await
        .unwrap();
    let admin = staff(&app, "staff@example.com").await;
    let res = admin
        .post_form(
            &format!("/admin/commissions/{}/void", ids[0]),
            &[("reason", "Self-referral"), ("sudo_password", PASSWORD)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let mut conn = app.db.acquire().await.unwrap();
    let now = time::OffsetDateTime::now_utc();
    for (withdrawn, event) in [(400, "evt_refund_half"), (0, "evt_dispute_won")] {
        let moved = billfold::resellers::commissions::follow_withdrawal(
            &mut conn,
            "pi_voided",
            withdrawn,
            event,
            now,
        )
        .await
        .unwrap();
        assert_eq!(
            moved, 0,
            "{event} must not bring the voided commission back"
        );
    }
    let net: i64 = sqlx::query_scalar("select sum(amount_minor)::bigint from commissions")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(net, 0);
}

#[sqlx::test]
async fn staff_set_a_resellers_branding_with_the_owners_checks(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, partner) = reseller_with_owner(&app, "acme").await;
    let admin = staff(&app, "staff@example.com").await;
    let path = format!("/admin/resellers/{partner}/branding");
    let res = admin
        .post_form(
            &path,
            &[("display_name", "Acme"), ("accent_color", "#ffff00")],
        )
        .await;
    assert_eq!(
        res.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "too light for white text"
    );
    let res = admin
        .post_form(
            &path,
            &[
                ("display_name", "Acme Partners"),
                ("accent_color", "#0F766E"),
                ("host_name", ""),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (name, accent): (Option<String>, Option<String>) =
        sqlx::query_as("select display_name, accent_color from resellers where reseller_id = $1")
            .bind(partner)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(name.as_deref(), Some("Acme Partners"));
    assert_eq!(accent.as_deref(), Some("#0f766e"));
    assert_eq!(
        audit_actions(&app, "reseller.branding").await,
        ["reseller.branding_updated"]
    );
}

#[sqlx::test]
async fn a_void_and_a_refund_racing_never_reverse_more_than_the_commission(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ids = pending_commissions(&app, 20).await;
    sqlx::query("update commissions set payment_intent_id = 'pi_race_' || source_id")
        .execute(&app.db)
        .await
        .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let mut tasks = Vec::new();
    for id in &ids {
        let pi: String = sqlx::query_scalar(
            "select payment_intent_id from commissions where commission_id::text = $1",
        )
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
        let commission = billfold::ids::CommissionId(uuid::Uuid::parse_str(id).unwrap());
        let (db1, db2) = (app.db.clone(), app.db.clone());
        tasks.push(tokio::spawn(async move {
            let mut tx = db1.begin().await.unwrap();
            billfold::resellers::commissions::void(&mut tx, commission, "void:race", now)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }));
        tasks.push(tokio::spawn(async move {
            let mut tx = db2.begin().await.unwrap();
            billfold::resellers::commissions::follow_withdrawal(&mut tx, &pi, 500, "evt_half", now)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Each commission (200) is reversed exactly once in full, whichever came first.
    let nets: Vec<i64> = sqlx::query_scalar(
        "select coalesce(sum(amount_minor), 0)::bigint from commissions
          group by coalesce(reverses, commission_id)",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(nets.len(), 20);
    assert!(nets.iter().all(|n| *n == 0), "{nets:?}");
}
