//! Sign-up, login, sessions and CSRF.

use reqwest::StatusCode;
use sqlx::PgPool;

use crate::helpers::{PASSWORD, TestApp, location, select, text};

#[sqlx::test]
async fn signing_up_creates_a_workspace_with_the_free_allowance(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("ada@example.com").await;

    let (status, html) = app.get_html("/dashboard").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text(&html, "#plan-name").unwrap(), "Free");
    assert_eq!(text(&html, "#balance-plan").unwrap(), "100");
    assert_eq!(text(&html, "#balance-purchased").unwrap(), "0");
    assert!(
        text(&html, "#recent-entries")
            .unwrap()
            .contains("Free plan: monthly allowance")
    );
    assert_eq!(app.assert_ledger_consistent(ws).await, (100, 0));
}

#[sqlx::test]
async fn bad_sign_ups_are_refused_with_a_message_and_write_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.sign_up("taken@example.com").await;
    let fresh = app.visitor();
    let cases = [
        ("not-an-email", PASSWORD, "#email-error", "valid email"),
        ("", PASSWORD, "#email-error", "valid email"),
        ("bob@example.com", "short", "#password-error", "12 to 128"),
        (
            "TAKEN@example.com",
            PASSWORD,
            "#email-error",
            "already exists",
        ),
    ];
    for (email, password, field, message) in cases {
        let res = fresh
            .post_form("/signup", &[("email", email), ("password", password)])
            .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{email:?}");
        let html = scraper::Html::parse_document(&res.text().await.unwrap());
        let shown = text(&html, field).unwrap_or_default();
        assert!(
            shown.contains(message),
            "{email:?}: expected {message:?} in {shown:?}"
        );
    }
    assert_eq!(fresh.count("select count(*) from users").await, 1);
    assert_eq!(fresh.count("select count(*) from workspaces").await, 1);
    assert_eq!(fresh.count("select count(*) from ledger_entries").await, 1);
}

#[sqlx::test]
async fn login_cycles_the_session_and_refuses_wrong_passwords(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.sign_up("ada@example.com").await;
    let visitor = app.visitor();

    let res = visitor
        .post_form(
            "/login",
            &[
                ("email", "ada@example.com"),
                ("password", "wrong password!!"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = scraper::Html::parse_document(&res.text().await.unwrap());
    assert!(
        text(&html, ".form-error")
            .unwrap()
            .contains("email or password")
    );

    // Overlong values no account can match: the same 422, nothing else happens.
    let long_email = format!("{}@example.com", "a".repeat(1_000));
    let long_password = "p".repeat(10_000);
    for (email, password) in [
        (long_email.as_str(), PASSWORD),
        ("ada@example.com", long_password.as_str()),
    ] {
        let res = visitor
            .post_form("/login", &[("email", email), ("password", password)])
            .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }

    let before = session_cookie(&visitor).await;
    let res = visitor
        .post_form(
            "/login",
            &[
                ("email", "ADA@example.com"),
                ("password", PASSWORD),
                ("next", "//evil.example"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/dashboard", "an off-site next is ignored");
    let set_cookie = res
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );
    assert_ne!(
        Some(cookie_value(&set_cookie)),
        before,
        "session id must change on login"
    );
    assert_eq!(visitor.get("/dashboard").await.status(), StatusCode::OK);

    let res = visitor.post_form("/logout", &[]).await;
    assert_eq!(location(&res), "/login");
    let res = visitor.get("/dashboard").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}

async fn session_cookie(app: &TestApp) -> Option<String> {
    let res = app.get("/login").await;
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("billfold.sid="))
        .map(cookie_value)
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or_default().to_owned()
}

#[sqlx::test]
async fn pages_need_a_session_and_send_visitors_to_login(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for path in [
        "/dashboard",
        "/credits",
        "/billing/top-up",
        "/settings/api-keys",
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{path}");
        assert!(location(&res).starts_with("/login?next=%2F"), "{path}");
    }
    let (status, html) = app.get_html("/no-such-page").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(text(&html, "h1").unwrap(), "Page not found");
    assert!(!select(&html, "code").is_empty(), "request id shown");
}

#[sqlx::test]
async fn unsafe_requests_without_the_csrf_token_are_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.sign_up("ada@example.com").await;
    let res = app
        .client
        .post(app.url("/settings/api-keys"))
        .form(&[("name", "sneaky")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = app
        .client
        .post(app.url("/settings/api-keys"))
        .header("x-csrf-token", "0".repeat(64))
        .form(&[("name", "sneaky")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.count("select count(*) from api_keys").await, 0);
    // The htmx header form works.
    let token = app.csrf().await;
    let res = app
        .client
        .post(app.url("/settings/api-keys"))
        .header("x-csrf-token", token)
        .form(&[("name", "via htmx")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[sqlx::test]
async fn api_keys_are_shown_once_listed_and_revocable(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.sign_up("ada@example.com").await;
    let key = app.create_api_key("Backend").await;
    assert!(key.starts_with("bf_") && key.len() == 43, "{key}");

    let (_, html) = app.get_html("/settings/api-keys").await;
    let table = text(&html, "#api-keys").unwrap();
    assert!(table.contains("Backend") && table.contains("Active") && table.contains("never"));
    assert!(!html.html().contains(&key), "the key is never shown again");

    let (status, _) = app
        .consume(&key, serde_json::json!({"feature": "manager.process"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, html) = app.get_html("/settings/api-keys").await;
    assert!(
        !text(&html, "#api-keys").unwrap().contains("never"),
        "last used is shown"
    );

    let res = app
        .post_form("/settings/api-keys", &[("name", "   ")])
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.text().await.unwrap().contains("give the key a name"));

    let id: uuid::Uuid = sqlx::query_scalar("select api_key_id from api_keys")
        .fetch_one(&app.db)
        .await
        .unwrap();
    // Revoking asks first; the key works until confirmed.
    let res = app
        .post_form(&format!("/settings/api-keys/{id}/revoke"), &[])
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let html = scraper::Html::parse_document(&res.text().await.unwrap());
    assert!(
        text(&html, "#confirm-h")
            .unwrap()
            .starts_with("Revoke the key")
    );
    assert_eq!(
        crate::helpers::attr(&html, "#confirm input[name=confirm]", "value").unwrap(),
        "yes"
    );
    let (status, _) = app
        .consume(&key, serde_json::json!({"feature": "manager.process"}))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "not revoked before the confirmation"
    );
    let res = app
        .post_form(
            &format!("/settings/api-keys/{id}/revoke"),
            &[("confirm", "yes")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (status, body) = app
        .consume(&key, serde_json::json!({"feature": "manager.process"}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "invalid_api_key");
    // Revoking again, or another workspace's key, is a 404.
    for fields in [&[][..], &[("confirm", "yes")][..]] {
        let res = app
            .post_form(&format!("/settings/api-keys/{id}/revoke"), fields)
            .await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
}

#[sqlx::test]
async fn login_attempts_are_rate_limited_per_email(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.sign_up("ada@example.com").await;
    let visitor = app.visitor();
    for _ in 0..billfold::web::limits::LOGIN_PER_ACCOUNT_AND_ADDRESS_PER_MINUTE {
        let res = visitor
            .post_form(
                "/login",
                &[
                    ("email", "ada@example.com"),
                    ("password", "guess guess guess"),
                ],
            )
            .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    // Now even the right password waits: the guesser cannot tell it was right.
    let res = visitor
        .post_form(
            "/login",
            &[("email", "ADA@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "60");
    let html = scraper::Html::parse_document(&res.text().await.unwrap());
    assert!(
        text(&html, ".form-error")
            .unwrap()
            .contains("Too many sign-in attempts")
    );
    // Another email is not affected.
    let res = visitor
        .post_form(
            "/login",
            &[
                ("email", "bob@example.com"),
                ("password", "whatever whatever"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

/// The session row's idle expiry: it moves only when the session is written back.
async fn session_expiries(app: &TestApp) -> Vec<time::OffsetDateTime> {
    sqlx::query_scalar("select expiry_date from tower_sessions.session order by id")
        .fetch_all(&app.db)
        .await
        .unwrap()
}

#[sqlx::test]
async fn reading_pages_does_not_write_the_session_back(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.sign_up("reader@example.com").await;
    // The first page shows (and so takes out of the session) the welcome message.
    app.get("/dashboard").await;
    let before = session_expiries(&app).await;
    assert_eq!(before.len(), 1, "one signed-in session");
    for path in ["/dashboard", "/credits", "/billing", "/settings/api-keys"] {
        for _ in 0..3 {
            assert_eq!(app.get(path).await.status(), StatusCode::OK, "{path}");
        }
    }
    assert_eq!(
        session_expiries(&app).await,
        before,
        "page views must not write the session (its expiry would move)"
    );

    // A flash message still shows once, and taking it is a write.
    app.create_api_key("flash check").await;
    let key_id: uuid::Uuid = sqlx::query_scalar("select api_key_id from api_keys")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let res = app
        .post_form(
            &format!("/settings/api-keys/{key_id}/revoke"),
            &[("confirm", "yes")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, html) = app.get_html(&location(&res)).await;
    assert!(text(&html, "[role=status]").is_some(), "the flash shows");
    let (_, html) = app.get_html(&location(&res)).await;
    assert!(text(&html, "[role=status]").is_none(), "and only once");
}
