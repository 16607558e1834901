//! Workspace settings (time zone) and the API key form's one-time key.

use reqwest::StatusCode;
use sqlx::PgPool;

use crate::helpers::{TestApp, attr, location, text};

#[sqlx::test]
async fn a_reloaded_or_double_clicked_key_form_creates_one_key(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.sign_up("once@example.com").await;
    let (_, html) = app.get_html("/settings/api-keys").await;
    let form_key = attr(&html, "input[name=form_key]", "value").unwrap();

    // Ten posts of the same form at once: one key, shown once; the others are told.
    let token = app.csrf().await;
    let mut posts = Vec::new();
    for _ in 0..10 {
        let (client, url, token, form_key) = (
            app.client.clone(),
            app.url("/settings/api-keys"),
            token.clone(),
            form_key.clone(),
        );
        posts.push(tokio::spawn(async move {
            client
                .post(url)
                .form(&[
                    ("name", "Backend"),
                    ("form_key", form_key.as_str()),
                    ("csrf_token", token.as_str()),
                ])
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut statuses = Vec::new();
    for p in posts {
        statuses.push(p.await.unwrap());
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::SEE_OTHER)
            .count(),
        9,
        "{statuses:?}"
    );
    assert_eq!(app.count("select count(*) from api_keys").await, 1);

    // A reload later (the Free plan's 2 keys reached or not) says the same.
    app.create_api_key("Second").await;
    let res = app
        .post_form(
            "/settings/api-keys",
            &[("name", "Backend"), ("form_key", &form_key)],
        )
        .await;
    assert_eq!(location(&res), "/settings/api-keys");
    let (_, html) = app.get_html("/settings/api-keys").await;
    assert!(
        text(&html, ".flash")
            .unwrap()
            .contains("already created that key")
    );
    assert_eq!(app.count("select count(*) from api_keys").await, 2);
}

#[sqlx::test]
async fn the_workspace_time_zone_sets_how_dates_and_days_read(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ws = app.sign_up("zone@example.com").await;
    let (_, html) = app.get_html("/settings").await;
    assert_eq!(
        attr(&html, "#time_zone option[selected]", "value").unwrap(),
        "UTC"
    );
    let (_, html) = app.get_html("/credits").await;
    assert!(text(&html, "#statement").unwrap().contains(" UTC"));

    // An unknown zone is refused with the form again; nothing changes.
    let res = app
        .post_form("/settings", &[("time_zone", "Mars/Olympus_Mons")])
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = scraper::Html::parse_document(&res.text().await.unwrap());
    assert!(text(&html, "#time-zone-error").is_some());
    let zone: String =
        sqlx::query_scalar("select time_zone from workspaces where workspace_id = $1")
            .bind(ws)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(zone, "UTC");

    let res = app
        .post_form("/settings", &[("time_zone", "Asia/Tokyo")])
        .await;
    assert_eq!(location(&res), "/settings");
    // Times now read in Tokyo (JST, UTC+9), in the one format of every page.
    let (_, html) = app.get_html("/credits").await;
    let statement = text(&html, "#statement").unwrap();
    assert!(statement.contains(" JST"), "{statement}");
    let (_, html) = app.get_html("/usage").await;
    assert!(
        text(&html, ".page-head")
            .unwrap()
            .contains("Days are in Asia/Tokyo")
    );

    // A member cannot change it.
    let member = app.visitor();
    member.sign_up("zone-member@example.com").await;
    sqlx::query(
        "insert into memberships (workspace_id, user_id, role, created_at)
         select $1, user_id, 'member', now() - interval '1 day' from users where email = 'zone-member@example.com'",
    )
    .bind(ws)
    .execute(&app.db)
    .await
    .unwrap();
    let res = member.post_form("/settings", &[("time_zone", "UTC")]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}
