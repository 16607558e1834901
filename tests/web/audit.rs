//! The audit log (issue 8, first slice): authentication events recorded with their
//! address and request id; an append-only, hash-chained log whose `verify` finds an
//! edited, removed or out-of-order event; concurrent writers keep one chain.

use billfold::audit::{self, NewAuditEvent, Verified};
use reqwest::StatusCode;
use sqlx::PgPool;

use crate::helpers::{PASSWORD, TestApp};

async fn verify(app: &TestApp) -> Verified {
    audit::verify(&mut app.db.acquire().await.unwrap())
        .await
        .unwrap()
}

async fn actions(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("select action from audit_events order by seq")
        .fetch_all(&app.db)
        .await
        .unwrap()
}

#[sqlx::test]
async fn sign_up_sign_in_failures_and_sign_out_are_audited(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.sign_up("ada@example.com").await;
    let res = app.post_form("/logout", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let res = app
        .post_form(
            "/login",
            &[
                ("email", "ada@example.com"),
                ("password", "wrong password!"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // A guess at an account that does not exist stays in the logs, not the audit log.
    let res = app
        .post_form(
            "/login",
            &[
                ("email", "nobody@example.com"),
                ("password", "wrong password!"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = app
        .post_form(
            "/login",
            &[("email", "ada@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    assert_eq!(
        actions(&app).await,
        [
            "auth.sign_up",
            "auth.sign_out",
            "auth.sign_in_failed",
            "auth.sign_in"
        ]
    );
    let (email, subject, address, request_id): (String, String, String, String) = sqlx::query_as(
        "select actor_email, subject_type || ':' || subject_id, host(client_address), request_id
           from audit_events where action = 'auth.sign_in'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    let user: uuid::Uuid = sqlx::query_scalar("select user_id from users")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(email, "ada@example.com");
    assert_eq!(subject, format!("user:{user}"));
    assert_eq!(address, "127.0.0.1");
    assert_eq!(
        request_id.len(),
        36,
        "the request's x-request-id: {request_id}"
    );
    assert_eq!(verify(&app).await, Verified::Intact { events: 4 });
}

#[sqlx::test]
async fn fifty_concurrent_writers_keep_one_gap_free_chain(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let writers = (0..50).map(|i| {
        let db = app.app_db.clone();
        tokio::spawn(async move {
            let mut tx = db.begin().await.unwrap();
            audit::record(
                &mut tx,
                &NewAuditEvent {
                    action: "test.concurrent",
                    reason: Some(&format!("writer {i}")),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            // Some writers roll back: their place is given to the next.
            if i % 7 == 0 {
                tx.rollback().await.unwrap();
            } else {
                tx.commit().await.unwrap();
            }
        })
    });
    for w in futures_util::future::join_all(writers).await {
        w.unwrap();
    }
    let committed = (0..50).filter(|i| i % 7 != 0).count() as i64;
    assert_eq!(verify(&app).await, Verified::Intact { events: committed });
    assert_eq!(
        app.count("select max(seq) from audit_events").await,
        committed
    );
}

async fn three_events(app: &TestApp) {
    let mut conn = app.app_db.acquire().await.unwrap();
    for reason in ["first", "second", "third"] {
        audit::record(
            &mut conn,
            &NewAuditEvent {
                action: "workspace.credits_adjusted",
                subject: Some(("workspace", "w1".into())),
                before: Some(serde_json::json!({"purchased": 0})),
                after: Some(serde_json::json!({"purchased": 100})),
                reason: Some(reason),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
}

/// Runs `sql` as the database owner with the log's triggers off, as someone covering
/// their tracks would.
async fn tamper(app: &TestApp, sql: &str) {
    let mut tx = app.db.begin().await.unwrap();
    sqlx::query("alter table audit_events disable trigger user")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(sql).execute(&mut *tx).await.unwrap();
    sqlx::query("alter table audit_events enable trigger user")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

fn broken_at(verified: Verified) -> (i64, &'static str) {
    match verified {
        Verified::Broken { seq, reason, .. } => (seq, reason),
        intact => panic!("tampering not found: {intact:?}"),
    }
}

#[sqlx::test]
async fn the_log_refuses_changes_and_verify_finds_every_kind_of_tampering(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    three_events(&app).await;
    assert_eq!(verify(&app).await, Verified::Intact { events: 3 });

    // Even the owner cannot change it while its triggers are on; the app role cannot
    // switch them off.
    for sql in [
        "update audit_events set reason = 'nothing happened' where seq = 2",
        "delete from audit_events where seq = 2",
        "truncate audit_events",
    ] {
        let err = sqlx::query(sql).execute(&app.db).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert!(
        sqlx::query("alter table audit_events disable trigger user")
            .execute(&app.app_db)
            .await
            .is_err()
    );

    // Edited.
    tamper(
        &app,
        "update audit_events set reason = 'nothing happened' where seq = 2",
    )
    .await;
    let (seq, reason) = broken_at(verify(&app).await);
    assert_eq!(seq, 2);
    assert!(reason.contains("changed"), "{reason}");
    tamper(
        &app,
        "update audit_events set reason = 'second' where seq = 2",
    )
    .await;
    assert_eq!(verify(&app).await, Verified::Intact { events: 3 });

    // Edited with its hash recomputed: the next event no longer follows it.
    tamper(
        &app,
        "update audit_events e set reason = 'nothing happened' where seq = 2;
         ",
    )
    .await;
    tamper(
        &app,
        "update audit_events e set hash = sha256(e.prev_hash || audit_event_content(e)) where seq = 2",
    )
    .await;
    let (seq, reason) = broken_at(verify(&app).await);
    assert_eq!(seq, 3);
    assert!(reason.contains("does not follow"), "{reason}");
}

#[sqlx::test]
async fn verify_finds_a_removed_and_an_inserted_event(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    three_events(&app).await;
    tamper(&app, "delete from audit_events where seq = 2").await;
    let (seq, reason) = broken_at(verify(&app).await);
    assert_eq!(seq, 3);
    assert!(reason.contains("missing"), "{reason}");

    let app2 = app.visitor();
    tamper(&app2, "delete from audit_events").await;
    three_events(&app2).await;
    // An event slipped in at the end with a chain of its own making.
    tamper(
        &app2,
        "insert into audit_events (seq, action, prev_hash, hash)
         values (4, 'user.staff_granted', sha256('forged'), sha256('forged'))",
    )
    .await;
    let (seq, reason) = broken_at(verify(&app2).await);
    assert_eq!(seq, 4);
    assert!(reason.contains("does not follow"), "{reason}");
}
