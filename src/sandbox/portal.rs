//! The customer portal: `POST /v1/billing_portal/sessions` and the hosted page
//! (`GET /portal/{id}`) with its actions — switch plan (upgrade with prorations
//! charged now), cancel at period end, resume, update the test card — each emitting
//! the same events as the API and returning to the page.

use askama::Template;
use askama_web::WebTemplate;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};

use super::billing::{self, Proration, SubscriptionChange, TestCard};
use super::clock::format_time;
use super::error::{ApiError, SandboxError};
use super::objects::{self, EventRequest};
use super::params::{self, Param};
use super::{MOUNT_PATH, SandboxState, db};
use crate::money::Money;

const OBJECT_TYPE: &str = "billing_portal.session";

/// Prices the portal offers as plans: active, monthly, with this lookup key prefix.
const PLAN_LOOKUP_KEY_PREFIX: &str = "billfold_plan_";

pub(crate) async fn create_session(
    State(state): State<SandboxState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let form = params::parse(&body);
    let form = Param::root(&form);
    form.reject_unknown(
        &["customer", "return_url", "expand"],
        &[
            "configuration",
            "flow_data",
            "locale",
            "on_behalf_of",
            "customer_account",
        ],
    )?;
    let customer_param = form.get("customer");
    let customer = customer_param.required_string()?;
    let return_url = form.get("return_url").string()?;
    let mut conn = state.db.acquire().await?;
    if db::find_object(&mut conn, "customer", customer)
        .await?
        .is_none()
    {
        return Err(ApiError::invalid(
            Some("resource_missing"),
            customer_param.name(),
            format!("No such customer: '{customer}'"),
        ));
    }
    let id = objects::new_id("bps_", 24);
    let url = format!("{}{MOUNT_PATH}/portal/{id}", state.config.public_base_url);
    let session =
        objects::portal_session(&id, db::now(&mut conn).await?, customer, return_url, &url)?;
    db::insert_object(&mut conn, &id, OBJECT_TYPE, &session).await?;
    Ok(Json(session))
}

struct PlanOption {
    price_id: String,
    name: String,
    price: String,
    current: bool,
}

struct InvoiceRow {
    number: String,
    date: String,
    amount: String,
    status: String,
    url: String,
}

struct CurrentSubscription {
    plan: String,
    price: String,
    status: String,
    period_end: String,
    /// "cancels on …" date when canceling at period end.
    cancels_on: Option<String>,
    live: bool,
}

/// The hosted portal page.
#[derive(Template, WebTemplate)]
#[template(path = "sandbox/portal.html")]
struct PortalPage {
    action_base: String,
    return_url: Option<String>,
    email: String,
    subscription: Option<CurrentSubscription>,
    plans: Vec<PlanOption>,
    invoices: Vec<InvoiceRow>,
    card_fails: bool,
}

async fn product_name(
    conn: &mut sqlx::PgConnection,
    product: &str,
) -> Result<String, SandboxError> {
    Ok(db::find_object(conn, "product", product)
        .await?
        .and_then(|product| product["name"].as_str().map(str::to_owned))
        .unwrap_or_else(|| product.to_owned()))
}

/// The customer's newest subscription that is not canceled, else the newest one.
async fn current_subscription(
    conn: &mut sqlx::PgConnection,
    customer: &str,
) -> Result<Option<Value>, SandboxError> {
    let all = db::list_objects(
        conn,
        &db::ObjectQuery {
            object_type: billing::SUBSCRIPTION,
            matching: json!({ "customer": customer }),
            ids: None,
            lookup_keys: None,
            starting_after: None,
            limit: 100,
        },
    )
    .await?;
    Ok(all
        .iter()
        .find(|subscription| subscription["status"] != json!("canceled"))
        .or(all.first())
        .cloned())
}

pub(crate) async fn portal_page(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
) -> Result<Response, SandboxError> {
    let mut conn = state.db.acquire().await?;
    let Some(session) = db::find_object(&mut conn, OBJECT_TYPE, &id).await? else {
        return Ok((StatusCode::NOT_FOUND, "no such portal session").into_response());
    };
    let customer_id = session["customer"].as_str().unwrap_or_default().to_owned();
    let customer = db::find_object(&mut conn, "customer", &customer_id)
        .await?
        .unwrap_or(Value::Null);
    let subscription = current_subscription(&mut conn, &customer_id).await?;
    let current_price = subscription
        .as_ref()
        .and_then(|subscription| billing::item(subscription)["price"]["id"].as_str())
        .map(str::to_owned);

    let current = match &subscription {
        Some(subscription) => {
            let terms = billing::item_terms(subscription)?;
            let status = subscription["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            Some(CurrentSubscription {
                plan: product_name(&mut conn, &terms.product).await?,
                price: billing::price_label(&terms),
                live: status != "canceled",
                status,
                period_end: format_time(
                    billing::item(subscription)["current_period_end"]
                        .as_i64()
                        .unwrap_or_default(),
                ),
                cancels_on: subscription["cancel_at"].as_i64().map(format_time),
            })
        }
        None => None,
    };

    let prices = db::list_objects(
        &mut conn,
        &db::ObjectQuery {
            object_type: "price",
            matching: json!({"active": true, "type": "recurring",
                             "recurring": {"interval": "month", "interval_count": 1}}),
            ids: None,
            lookup_keys: None,
            starting_after: None,
            limit: 100,
        },
    )
    .await?;
    let mut plans = Vec::new();
    let mut plan_prices: Vec<billing::PriceTerms> = prices
        .iter()
        .filter(|price| {
            price["lookup_key"]
                .as_str()
                .is_some_and(|key| key.starts_with(PLAN_LOOKUP_KEY_PREFIX))
        })
        .filter_map(billing::PriceTerms::read)
        .collect();
    plan_prices.sort_by_key(|terms| terms.unit_amount);
    for terms in plan_prices {
        plans.push(PlanOption {
            name: product_name(&mut conn, &terms.product).await?,
            price: billing::price_label(&terms),
            current: current_price.as_deref() == Some(terms.id.as_str()),
            price_id: terms.id,
        });
    }

    let invoices = db::list_objects(
        &mut conn,
        &db::ObjectQuery {
            object_type: billing::INVOICE,
            matching: json!({ "customer": customer_id }),
            ids: None,
            lookup_keys: None,
            starting_after: None,
            limit: 100,
        },
    )
    .await?
    .iter()
    .map(|invoice| InvoiceRow {
        number: invoice["number"].as_str().unwrap_or("draft").to_owned(),
        date: format_time(invoice["created"].as_i64().unwrap_or_default()),
        amount: Money::new(
            invoice["total"].as_i64().unwrap_or_default(),
            invoice["currency"].as_str().unwrap_or("eur"),
        )
        .to_string(),
        status: invoice["status"].as_str().unwrap_or_default().to_owned(),
        url: invoice["hosted_invoice_url"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    })
    .collect();

    Ok(PortalPage {
        action_base: format!("{MOUNT_PATH}/portal/{id}"),
        return_url: session["return_url"].as_str().map(str::to_owned),
        email: customer["email"]
            .as_str()
            .unwrap_or(&customer_id)
            .to_owned(),
        subscription: current,
        plans,
        invoices,
        card_fails: customer["_sandbox_card_fails"] == json!(true),
    }
    .into_response())
}

/// A portal action on the session's current subscription, then back to the page.
async fn act_on_subscription(
    state: &SandboxState,
    id: &str,
    change: impl FnOnce(&Value) -> Option<SubscriptionChange>,
    lookup_price: Option<&str>,
) -> Result<Response, SandboxError> {
    let mut tx = state.db.begin().await?;
    let Some(session) = db::find_object(&mut tx, OBJECT_TYPE, id).await? else {
        return Ok((StatusCode::NOT_FOUND, "no such portal session").into_response());
    };
    let customer = session["customer"].as_str().unwrap_or_default().to_owned();
    let back = Redirect::to(&format!("{MOUNT_PATH}/portal/{id}")).into_response();
    let Some(current) = current_subscription(&mut tx, &customer).await? else {
        return Ok(back);
    };
    let sub_id = current["id"].as_str().unwrap_or_default().to_owned();
    let Some(subscription) = db::lock_object(&mut tx, billing::SUBSCRIPTION, &sub_id).await? else {
        return Ok(back);
    };
    if subscription["status"] == json!("canceled") {
        return Ok(back);
    }
    let Some(mut change) = change(&subscription) else {
        return Ok(back);
    };
    if let Some(price_id) = lookup_price {
        let Some(price) = db::find_object(&mut tx, "price", price_id).await? else {
            return Ok(back);
        };
        let eligible = price["active"] == json!(true)
            && price["lookup_key"]
                .as_str()
                .is_some_and(|key| key.starts_with(PLAN_LOOKUP_KEY_PREFIX))
            && billing::PriceTerms::read(&price).is_some_and(|terms| {
                billing::item_terms(&subscription).is_ok_and(|old| {
                    old.currency == terms.currency
                        && old.interval == terms.interval
                        && old.interval_count == terms.interval_count
                })
            });
        if !eligible {
            return Ok(back);
        }
        // Like Stripe's portal configured as billfold's README says: a switch up is
        // charged at once and applied only if paid; a switch down refunds nothing (it
        // is not prorated), so credits granted for a plan are never kept while its
        // money goes back.
        let down = billing::PriceTerms::read(&price).is_some_and(|new| {
            billing::item_terms(&subscription).is_ok_and(|old| new.unit_amount < old.unit_amount)
        });
        if down {
            change.proration = Some(Proration::None);
        } else {
            change.pending_if_incomplete = true;
        }
        change.price = Some(price);
    }
    billing::update_subscription(
        &mut tx,
        &state.config.public_base_url,
        subscription,
        change,
        &EventRequest::default(),
    )
    .await?;
    tx.commit().await?;
    state.new_event.notify_one();
    Ok(back)
}

/// Switches plan now: up is invoiced at once (applied only if paid), down is not
/// prorated.
pub(crate) async fn switch_plan(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, SandboxError> {
    let form = params::parse(&body);
    let price = Param::root(&form)
        .get("price")
        .string()
        .ok()
        .flatten()
        .unwrap_or_default()
        .to_owned();
    act_on_subscription(
        &state,
        &id,
        |_| {
            Some(SubscriptionChange {
                proration: Some(Proration::AlwaysInvoice),
                ..SubscriptionChange::default()
            })
        },
        Some(&price),
    )
    .await
}

pub(crate) async fn cancel(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
) -> Result<Response, SandboxError> {
    let change = |_: &Value| {
        Some(SubscriptionChange {
            cancel_at_period_end: Some(true),
            ..SubscriptionChange::default()
        })
    };
    act_on_subscription(&state, &id, change, None).await
}

pub(crate) async fn resume(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
) -> Result<Response, SandboxError> {
    let change = |_: &Value| {
        Some(SubscriptionChange {
            cancel_at_period_end: Some(false),
            ..SubscriptionChange::default()
        })
    };
    act_on_subscription(&state, &id, change, None).await
}

/// Sets the customer's test card (`card=succeeding|declining`); a working card pays
/// open invoices at once.
pub(crate) async fn update_card(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, SandboxError> {
    let form = params::parse(&body);
    let card = match Param::root(&form).get("card").string().ok().flatten() {
        Some("declining") => TestCard::Declining,
        _ => TestCard::Succeeding,
    };
    let mut tx = state.db.begin().await?;
    let Some(session) = db::find_object(&mut tx, OBJECT_TYPE, &id).await? else {
        return Ok((StatusCode::NOT_FOUND, "no such portal session").into_response());
    };
    let customer = session["customer"].as_str().unwrap_or_default().to_owned();
    billing::set_test_card(&mut tx, &customer, card, &EventRequest::default()).await?;
    tx.commit().await?;
    state.new_event.notify_one();
    Ok(Redirect::to(&format!("{MOUNT_PATH}/portal/{id}")).into_response())
}

/// Test hook: `POST /test/customers/{id}/card` with `card=succeeding|declining`, as
/// the portal's "update card" does; 204, or 404 for an unknown customer.
pub(crate) async fn set_customer_card(
    State(state): State<SandboxState>,
    Path(customer): Path<String>,
    body: Bytes,
) -> Result<StatusCode, SandboxError> {
    let form = params::parse(&body);
    let card = match Param::root(&form).get("card").string().ok().flatten() {
        Some("declining") => TestCard::Declining,
        _ => TestCard::Succeeding,
    };
    let mut tx = state.db.begin().await?;
    let found = billing::set_test_card(&mut tx, &customer, card, &EventRequest::default()).await?;
    tx.commit().await?;
    state.new_event.notify_one();
    Ok(if found {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    })
}
