//! `billfold stripe sync` against the sandbox: products and prices by lookup key,
//! idempotent, never editing a price in place.

use billfold::catalog::sync;
use billfold::stripe::StripeClient;
use billfold::stripe::catalog::PriceChange;
use secrecy::SecretString;
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::TestApp;

fn sandbox_client(app: &TestApp) -> StripeClient {
    let key = SecretString::from(billfold::sandbox::SANDBOX_SECRET_KEY);
    StripeClient::new(&key, Some(&format!("{}/sandbox/", app.base))).unwrap()
}

async fn sandbox_get(app: &TestApp, path: &str) -> Value {
    app.client
        .get(app.url(&format!("/sandbox/v1/{path}")))
        .bearer_auth(billfold::sandbox::SANDBOX_SECRET_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[sqlx::test]
async fn sync_creates_every_paid_plan_and_pack_once(pool: PgPool) {
    // In sandbox mode billfold is ready once it has put the catalog on sale.
    let app = TestApp::spawn(pool).await;
    let stripe = sandbox_client(&app);
    assert_eq!(
        app.count("select count(*) from plans where stripe_price_id is not null")
            .await,
        5,
        "five paid plans on sale at readiness; free is not sold"
    );

    let first = sync::sync(&app.db, &stripe).await.unwrap();
    assert_eq!(first.len(), 5 + 3, "five paid plans and three packs");
    assert!(
        first.iter().all(|l| l.change == PriceChange::Unchanged),
        "{first:?}"
    );

    let pro: (String, String) = sqlx::query_as(
        "select stripe_product_id, stripe_price_id from plans where plan_code = 'pro'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(pro.0, "billfold_plan_pro");
    let price = sandbox_get(&app, &format!("prices/{}", pro.1)).await;
    assert_eq!(price["unit_amount"], 4900);
    assert_eq!(price["currency"], "eur");
    assert_eq!(price["recurring"]["interval"], "month");
    assert_eq!(price["lookup_key"], "billfold_plan_pro_monthly");
    let pack = sandbox_get(&app, "prices?lookup_keys[]=billfold_pack_pack_500").await;
    assert_eq!(pack["data"][0]["unit_amount"], 4000);
    assert_eq!(pack["data"][0]["type"], "one_time");

    let again = sync::sync(&app.db, &stripe).await.unwrap();
    assert!(
        again.iter().all(|l| l.change == PriceChange::Unchanged),
        "{again:?}"
    );
    assert_eq!(
        first.iter().map(|l| &l.price_id).collect::<Vec<_>>(),
        again.iter().map(|l| &l.price_id).collect::<Vec<_>>()
    );
}

#[sqlx::test]
async fn a_changed_price_gets_a_new_stripe_price_and_the_old_one_is_retired(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let stripe = sandbox_client(&app);
    sync::sync(&app.db, &stripe).await.unwrap();
    let old: String =
        sqlx::query_scalar("select stripe_price_id from plans where plan_code = 'pro'")
            .fetch_one(&app.db)
            .await
            .unwrap();

    sqlx::query("update plans set monthly_price_minor = 5900 where plan_code = 'pro'")
        .execute(&app.db)
        .await
        .unwrap();
    let report = sync::sync(&app.db, &stripe).await.unwrap();
    let pro = report.iter().find(|l| l.subject == "plan pro").unwrap();
    assert_eq!(
        pro.change,
        PriceChange::Created {
            replaced: Some(old.clone())
        }
    );
    assert!(
        report
            .iter()
            .filter(|l| l.subject != "plan pro")
            .all(|l| l.change == PriceChange::Unchanged)
    );

    let old_price = sandbox_get(&app, &format!("prices/{old}")).await;
    assert_eq!(old_price["active"], false);
    assert_eq!(
        old_price["unit_amount"], 4900,
        "the old price was not edited"
    );
    assert_eq!(old_price["lookup_key"], Value::Null);
    let current = sandbox_get(&app, "prices?lookup_keys[]=billfold_plan_pro_monthly").await;
    assert_eq!(current["data"].as_array().unwrap().len(), 1);
    assert_eq!(current["data"][0]["unit_amount"], 5900);
    assert_eq!(
        current["data"][0]["id"],
        Value::String(pro.price_id.clone())
    );
}
