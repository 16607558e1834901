//! Products and prices in the Stripe sandbox, driven through the real async-stripe
//! client as `billfold stripe sync` drives Stripe: upsert by lookup key, never edit a
//! price in place, move the key to a new price and deactivate the old one.

#![cfg(feature = "sandbox")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use common::{SandboxApp, code, idempotent, stripe_error};
use futures_util::TryStreamExt;
use serde_json::Value;
use sqlx::PgPool;
use stripe::{StripeError, StripeRequest};
use stripe_product::price::{
    CreatePrice, CreatePriceRecurring, CreatePriceRecurringInterval, ListPrice, RetrievePrice,
    UpdatePrice,
};
use stripe_product::product::{CreateProduct, ListProduct, RetrieveProduct, UpdateProduct};
use stripe_product::{
    Price, PriceBillingScheme, PriceTaxBehavior, PriceType, ProductType, RecurringInterval,
    RecurringUsageType,
};
use stripe_webhook::EventObject;

impl SandboxApp {
    /// The payload of the next delivered event, waiting up to 5 s; billfold reads every
    /// event with async-stripe, so each must parse as the product or price it carries.
    async fn next_event(&mut self) -> Value {
        let delivery = self.next_delivery().await;
        let expected = match &delivery.event().data.object {
            EventObject::ProductCreated(p) | EventObject::ProductUpdated(p) => p.id.to_string(),
            EventObject::PriceCreated(p) | EventObject::PriceUpdated(p) => p.id.to_string(),
            other => panic!("unexpected event object {other:?}"),
        };
        let event = delivery.json();
        assert_eq!(event["data"]["object"]["id"], expected.as_str());
        event
    }

    /// The pro plan's product, `billfold_plan_pro`.
    async fn create_pro_product(&self) -> stripe_product::Product {
        CreateProduct::new("Pro")
            .id("billfold_plan_pro")
            .description("For growing teams")
            .metadata(HashMap::from([("plan".to_owned(), "pro".to_owned())]))
            .send(&self.stripe)
            .await
            .unwrap()
    }

    /// A monthly price of the pro product.
    async fn create_monthly_price(
        &self,
        amount: i64,
        lookup_key: &str,
        transfer: bool,
    ) -> Result<Price, StripeError> {
        monthly_price(amount, lookup_key, transfer)
            .send(&self.stripe)
            .await
    }

    async fn prices_with_key(&self, lookup_key: &str) -> Vec<Price> {
        ListPrice::new()
            .lookup_keys(vec![lookup_key.to_owned()])
            .send(&self.stripe)
            .await
            .unwrap()
            .data
    }
}

fn monthly_price(amount: i64, lookup_key: &str, transfer: bool) -> CreatePrice {
    let mut recurring = CreatePriceRecurring::new(CreatePriceRecurringInterval::Month);
    recurring.interval_count = Some(1);
    let price = CreatePrice::new("eur".parse::<stripe_types::Currency>().unwrap())
        .product("billfold_plan_pro")
        .unit_amount(amount)
        .recurring(recurring)
        .lookup_key(lookup_key)
        .nickname("Pro monthly")
        .metadata(HashMap::from([("plan".to_owned(), "pro".to_owned())]));
    if transfer {
        price.transfer_lookup_key(true)
    } else {
        price
    }
}

/// Every field of a price, for comparing prices (async-stripe's `Price` has no
/// `PartialEq`).
fn debug(price: &Price) -> String {
    format!("{price:?}")
}

fn debug_all(prices: &[Price]) -> Vec<String> {
    prices.iter().map(debug).collect()
}

#[sqlx::test]
async fn products_are_created_with_an_id_updated_and_listed(pool: PgPool) {
    let mut app = SandboxApp::spawn(pool).await;

    let product = app.create_pro_product().await;
    assert_eq!(product.id.as_str(), "billfold_plan_pro");
    assert_eq!(product.name, "Pro");
    assert_eq!(product.description.as_deref(), Some("For growing teams"));
    assert!(product.active);
    assert!(!product.livemode);
    assert_eq!(product.metadata["plan"], "pro");
    assert_eq!(product.type_, ProductType::Service);
    assert!(product.default_price.is_none());
    assert_eq!(product.created, product.updated);
    let event = app.next_event().await;
    assert_eq!(event["type"], "product.created");
    assert_eq!(event["data"]["object"]["id"], "billfold_plan_pro");

    let error = CreateProduct::new("Pro again")
        .id("billfold_plan_pro")
        .send(&app.stripe)
        .await
        .unwrap_err();
    let (error, status) = stripe_error(error);
    assert_eq!(status, 400);
    assert_eq!(code(&error).as_deref(), Some("resource_already_exists"));

    let updated = UpdateProduct::new("billfold_plan_pro")
        .name("Pro (2027)")
        .description("")
        .metadata(HashMap::from([
            ("plan".to_owned(), String::new()),
            ("tier".to_owned(), "2".to_owned()),
        ]))
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(updated.name, "Pro (2027)");
    assert_eq!(updated.description, None);
    assert_eq!(
        updated.metadata,
        HashMap::from([("tier".to_owned(), "2".to_owned())])
    );
    let event = app.next_event().await;
    assert_eq!(event["type"], "product.updated");
    assert_eq!(
        event["data"]["previous_attributes"]["name"], "Pro",
        "{event}"
    );
    assert_eq!(
        event["data"]["previous_attributes"]["metadata"],
        serde_json::json!({"plan": "pro", "tier": null})
    );

    let retrieved = RetrieveProduct::new("billfold_plan_pro")
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(retrieved.name, "Pro (2027)");

    let other = CreateProduct::new("Team").send(&app.stripe).await.unwrap();
    assert!(other.id.as_str().starts_with("prod_"), "{}", other.id);
    UpdateProduct::new(other.id.clone())
        .active(false)
        .send(&app.stripe)
        .await
        .unwrap();
    let all = ListProduct::new().send(&app.stripe).await.unwrap();
    assert_eq!(all.url, "/v1/products");
    assert!(!all.has_more);
    assert_eq!(
        all.data.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        [other.id.as_str(), "billfold_plan_pro"],
        "newest first"
    );
    let active = ListProduct::new()
        .active(true)
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(active.data.len(), 1);
    assert_eq!(active.data[0].id.as_str(), "billfold_plan_pro");
    let first = ListProduct::new().limit(1).send(&app.stripe).await.unwrap();
    assert_eq!((first.data.len(), first.has_more), (1, true));

    let error = RetrieveProduct::new("prod_missing")
        .send(&app.stripe)
        .await
        .unwrap_err();
    let (error, status) = stripe_error(error);
    assert_eq!(status, 404);
    assert_eq!(code(&error).as_deref(), Some("resource_missing"));
}

#[sqlx::test]
async fn a_monthly_price_reads_back_every_field(pool: PgPool) {
    let mut app = SandboxApp::spawn(pool).await;
    app.create_pro_product().await;
    app.next_event().await;

    let price = app
        .create_monthly_price(2900, "pro_monthly_eur", false)
        .await
        .unwrap();
    assert!(price.id.as_str().starts_with("price_"), "{}", price.id);
    assert!(price.active);
    assert_eq!(price.billing_scheme, PriceBillingScheme::PerUnit);
    assert_eq!(price.currency.to_string(), "eur");
    assert_eq!(price.unit_amount, Some(2900));
    assert_eq!(price.unit_amount_decimal.as_deref(), Some("2900"));
    assert_eq!(price.type_, PriceType::Recurring);
    let recurring = price.recurring.clone().unwrap();
    assert_eq!(recurring.interval, RecurringInterval::Month);
    assert_eq!(recurring.interval_count, 1);
    assert_eq!(recurring.usage_type, RecurringUsageType::Licensed);
    assert!(recurring.meter.is_none());
    assert_eq!(price.lookup_key.as_deref(), Some("pro_monthly_eur"));
    assert_eq!(price.nickname.as_deref(), Some("Pro monthly"));
    assert_eq!(price.metadata["plan"], "pro");
    assert_eq!(price.product.id().as_str(), "billfold_plan_pro");
    assert_eq!(price.tax_behavior, Some(PriceTaxBehavior::Unspecified));
    assert!(price.tiers_mode.is_none());
    assert!(price.transform_quantity.is_none());
    assert!(price.custom_unit_amount.is_none());
    assert!(!price.livemode);
    let event = app.next_event().await;
    assert_eq!(event["type"], "price.created");
    assert_eq!(event["data"]["object"]["id"], price.id.as_str());

    let retrieved = RetrievePrice::new(price.id.clone())
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(debug(&retrieved), debug(&price));

    let found = app.prices_with_key("pro_monthly_eur").await;
    assert_eq!(debug_all(&found), [debug(&price)]);
    assert!(app.prices_with_key("pro_yearly_eur").await.is_empty());

    // a one-time price of the same product
    let one_time = CreatePrice::new("eur".parse::<stripe_types::Currency>().unwrap())
        .product("billfold_plan_pro")
        .unit_amount(500)
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(one_time.type_, PriceType::OneTime);
    assert!(one_time.recurring.is_none());
    assert_eq!(one_time.lookup_key, None);
    let recurring_only = ListPrice::new()
        .type_(PriceType::Recurring)
        .product("billfold_plan_pro")
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(recurring_only.url, "/v1/prices");
    assert_eq!(debug_all(&recurring_only.data), [debug(&price)]);

    let error = CreatePrice::new("eur".parse::<stripe_types::Currency>().unwrap())
        .product("prod_missing")
        .unit_amount(500)
        .send(&app.stripe)
        .await
        .unwrap_err();
    let (error, status) = stripe_error(error);
    assert_eq!(status, 400);
    assert_eq!(code(&error).as_deref(), Some("resource_missing"));
    assert_eq!(error.param.as_deref(), Some("product"));

    let error = RetrievePrice::new("price_missing")
        .send(&app.stripe)
        .await
        .unwrap_err();
    assert_eq!(stripe_error(error).1, 404);
}

#[sqlx::test]
async fn a_new_price_takes_the_lookup_key_only_when_transferred(pool: PgPool) {
    let mut app = SandboxApp::spawn(pool).await;
    app.create_pro_product().await;
    let old = app
        .create_monthly_price(2900, "pro_monthly_eur", false)
        .await
        .unwrap();

    let error = app
        .create_monthly_price(3400, "pro_monthly_eur", false)
        .await
        .unwrap_err();
    let (error, status) = stripe_error(error);
    assert_eq!(status, 400);
    assert_eq!(error.type_, stripe::ApiErrorsType::InvalidRequestError);
    assert_eq!(error.param.as_deref(), Some("lookup_key"));
    assert!(error.message.unwrap().contains(old.id.as_str()));

    let new = app
        .create_monthly_price(3400, "pro_monthly_eur", true)
        .await
        .unwrap();
    assert_eq!(new.lookup_key.as_deref(), Some("pro_monthly_eur"));
    assert_eq!(
        debug_all(&app.prices_with_key("pro_monthly_eur").await),
        [debug(&new)]
    );
    let old = RetrievePrice::new(old.id.clone())
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(old.lookup_key, None);
    assert_eq!(old.unit_amount, Some(2900));

    // events: product, old price, then the transfer (old price updated) and the new
    // price; like Stripe, the sandbox does not promise to deliver them in order
    let mut events: Vec<Value> = [
        app.next_event().await,
        app.next_event().await,
        app.next_event().await,
        app.next_event().await,
    ]
    .into_iter()
    .map(|event| {
        serde_json::json!([
            event["type"],
            event["data"]["object"]["id"],
            event["data"]["previous_attributes"]
        ])
    })
    .collect();
    events.sort_by_key(|event| event.to_string());
    let mut expected = [
        serde_json::json!(["product.created", "billfold_plan_pro", null]),
        serde_json::json!(["price.created", old.id.as_str(), null]),
        serde_json::json!([
            "price.updated",
            old.id.as_str(),
            {"lookup_key": "pro_monthly_eur"}
        ]),
        serde_json::json!(["price.created", new.id.as_str(), null]),
    ];
    expected.sort_by_key(|event| event.to_string());
    assert_eq!(events, expected);

    // the sync deactivates the replaced price
    let deactivated = UpdatePrice::new(old.id.clone())
        .active(false)
        .send(&app.stripe)
        .await
        .unwrap();
    assert!(!deactivated.active);
    let event = app.next_event().await;
    assert_eq!(event["type"], "price.updated");
    assert_eq!(
        event["data"]["previous_attributes"],
        serde_json::json!({"active": true})
    );
    let inactive = ListPrice::new()
        .active(false)
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(debug_all(&inactive.data), [debug(&deactivated)]);
    let active = ListPrice::new()
        .active(true)
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(debug_all(&active.data), [debug(&new)]);

    // the key moves back through an update, too
    let moved = UpdatePrice::new(old.id.clone())
        .lookup_key("pro_monthly_eur")
        .transfer_lookup_key(true)
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(moved.lookup_key.as_deref(), Some("pro_monthly_eur"));
    assert_eq!(
        debug_all(&app.prices_with_key("pro_monthly_eur").await),
        [debug(&moved)]
    );
    let error = UpdatePrice::new(new.id.clone())
        .lookup_key("pro_monthly_eur")
        .send(&app.stripe)
        .await
        .unwrap_err();
    assert_eq!(stripe_error(error).1, 400);
}

#[sqlx::test]
async fn amount_currency_and_interval_cannot_be_updated(pool: PgPool) {
    let app = SandboxApp::spawn(pool).await;
    app.create_pro_product().await;
    let price = app
        .create_monthly_price(2900, "pro_monthly_eur", false)
        .await
        .unwrap();

    for (body, param) in [
        ("unit_amount=3400", "unit_amount"),
        ("currency=usd", "currency"),
        ("recurring[interval]=year", "recurring"),
    ] {
        let (status, reply) = app
            .api_post_form(&format!("/prices/{}", price.id), body)
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(reply["error"]["type"], "invalid_request_error");
        assert_eq!(reply["error"]["code"], "parameter_unknown", "{reply}");
        assert_eq!(reply["error"]["param"], param);
        assert_eq!(
            reply["error"]["message"],
            format!("Received unknown parameter: {param}")
        );
    }
    let unchanged = RetrievePrice::new(price.id.clone())
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(debug(&unchanged), debug(&price));

    let nickname = UpdatePrice::new(price.id.clone())
        .nickname("Pro, monthly")
        .metadata(HashMap::from([("synced".to_owned(), "yes".to_owned())]))
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(nickname.nickname.as_deref(), Some("Pro, monthly"));
    assert_eq!(nickname.metadata.len(), 2);
    assert_eq!(nickname.unit_amount, Some(2900));
}

#[sqlx::test]
async fn the_same_idempotency_key_returns_the_same_price(pool: PgPool) {
    let app = SandboxApp::spawn(pool.clone()).await;
    app.create_pro_product().await;
    let request = monthly_price(2900, "pro_monthly_eur", false);

    let first = request
        .customize()
        .request_strategy(idempotent("sync-pro-monthly-1"))
        .send(&app.stripe)
        .await
        .unwrap();
    let second = request
        .customize()
        .request_strategy(idempotent("sync-pro-monthly-1"))
        .send(&app.stripe)
        .await
        .unwrap();
    assert_eq!(debug(&first), debug(&second));
    let stored: i64 =
        sqlx::query_scalar("select count(*) from sandbox_objects where object_type = 'price'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored, 1);
}

#[sqlx::test]
async fn list_pages_follow_starting_after(pool: PgPool) {
    let app = SandboxApp::spawn(pool).await;
    app.create_pro_product().await;
    let mut created = Vec::new();
    for amount in [100, 200, 300] {
        let price = CreatePrice::new("eur".parse::<stripe_types::Currency>().unwrap())
            .product("billfold_plan_pro")
            .unit_amount(amount)
            .send(&app.stripe)
            .await
            .unwrap();
        created.push(price.id);
    }
    let listed: Vec<Price> = ListPrice::new()
        .limit(1)
        .paginate()
        .stream(&app.stripe)
        .try_collect()
        .await
        .unwrap();
    created.reverse();
    assert_eq!(
        listed.into_iter().map(|p| p.id).collect::<Vec<_>>(),
        created
    );
}

#[sqlx::test]
async fn bad_price_params_get_stripe_errors(pool: PgPool) {
    let app = SandboxApp::spawn(pool).await;
    app.create_pro_product().await;

    let base = "product=billfold_plan_pro&currency=eur";
    let cases = [
        ("currency=eur&unit_amount=1", "product"),
        ("product=billfold_plan_pro&unit_amount=1", "currency"),
        (base, "unit_amount"),
        (&format!("{base}&unit_amount=-1") as &str, "unit_amount"),
        (
            &format!("{base}&unit_amount=1&recurring[interval]=fortnight"),
            "recurring[interval]",
        ),
        (
            &format!("{base}&unit_amount=1&recurring[interval]=month&recurring[interval_count]=37"),
            "recurring[interval_count]",
        ),
        (
            &format!("{base}&unit_amount=1&tiers_mode=graduated"),
            "tiers_mode",
        ),
        (&format!("{base}&unit_amount=1&colour=blue"), "colour"),
        (&format!("{base}&unit_amount=1&active=maybe"), "active"),
    ];
    for (body, param) in cases {
        let (status, reply) = app.api_post_form("/prices", body).await;
        assert_eq!(status, 400, "{body}: {reply}");
        assert_eq!(reply["error"]["param"], param, "{body}: {reply}");
        assert_eq!(reply["error"]["type"], "invalid_request_error");
    }
}

#[sqlx::test]
async fn concurrent_transfers_leave_one_holder_of_the_key(pool: PgPool) {
    let app = SandboxApp::spawn(pool.clone()).await;
    app.create_pro_product().await;

    let creates = (0..6).map(|i| app.create_monthly_price(2900 + i, "pro_monthly_eur", true));
    let prices = futures_util::future::join_all(creates).await;
    assert!(prices.iter().all(Result::is_ok), "{prices:?}");
    let holders: Vec<String> = sqlx::query_scalar(
        "select object_id from sandbox_objects
         where object_type = 'price' and data->>'lookup_key' = 'pro_monthly_eur'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(holders.len(), 1);
    assert_eq!(
        app.prices_with_key("pro_monthly_eur").await[0].id.as_str(),
        holders[0]
    );
}
