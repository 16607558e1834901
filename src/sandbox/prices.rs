//! Prices: `POST /v1/prices`, `GET /v1/prices/{id}`, `POST /v1/prices/{id}` and
//! `GET /v1/prices`, announced as `price.created` and `price.updated`.
//!
//! As on Stripe, a price's amount, currency and interval never change: a new price
//! replaces it and takes its lookup key over with `transfer_lookup_key=true`. At most
//! one price holds a lookup key (a unique index backs this up).
//!
//! Prices are stored whole in Stripe's shape (`sandbox_objects`, type `price`); what a
//! subscription needs is there: `product`, `currency`, `unit_amount`, `recurring`
//! (`interval`, `interval_count`), `lookup_key` and `active`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde_json::{Map, Value, json};
use sqlx::PgConnection;

use super::error::{ApiError, SandboxError};
use super::middleware::RequestId;
use super::objects::{self, EventRequest, NewPrice, NewRecurring};
use super::params::{self, Param};
use super::{SandboxState, db, events, lists, products};

pub(crate) const OBJECT_TYPE: &str = "price";

/// Parameters of `POST /v1/prices` Stripe takes that the sandbox does not.
const UNSUPPORTED_CREATE: &[&str] = &[
    "billing_scheme",
    "currency_options",
    "custom_unit_amount",
    "product_data",
    "tax_behavior",
    "tiers",
    "tiers_mode",
    "transform_quantity",
    "unit_amount_decimal",
];

/// Stripe's longest lookup key.
const MAX_LOOKUP_KEY_CHARS: usize = 200;

/// The longest billing period Stripe allows, per interval: three years.
const MAX_INTERVAL_COUNTS: [(&str, i64); 4] =
    [("day", 3 * 365), ("week", 156), ("month", 36), ("year", 3)];

pub(crate) async fn create_price(
    State(state): State<SandboxState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let form = params::parse(&body);
    let form = Param::root(&form);
    form.reject_unknown(
        &[
            "product",
            "currency",
            "unit_amount",
            "recurring",
            "lookup_key",
            "transfer_lookup_key",
            "nickname",
            "metadata",
            "active",
            "expand",
        ],
        UNSUPPORTED_CREATE,
    )?;
    form.reject_expand()?;
    let product = form.get("product");
    let currency = form.get("currency");
    let unit_amount = form.get("unit_amount");
    let lookup_key = lookup_key(&form.get("lookup_key"))?.flatten();
    let transfer = form.get("transfer_lookup_key").boolean()?.unwrap_or(false);
    let new = NewPrice {
        product: product.required_string()?.to_owned(),
        currency: currency
            .currency()?
            .ok_or_else(|| ApiError::missing_param(currency.name()))?,
        unit_amount: match unit_amount.integer()? {
            Some(amount) if amount >= 0 => amount,
            Some(_) => {
                return Err(ApiError::invalid(
                    None,
                    unit_amount.name(),
                    "Invalid unit_amount: must be at least 0".to_owned(),
                ));
            }
            None => return Err(ApiError::missing_param(unit_amount.name())),
        },
        recurring: recurring(&form.get("recurring"))?,
        lookup_key: lookup_key.clone(),
        nickname: form.get("nickname").string()?.map(str::to_owned),
        active: form.get("active").boolean()?.unwrap_or(true),
        metadata: form.get("metadata").metadata()?,
    };

    let mut tx = state.db.begin().await?;
    if db::find_object(&mut tx, products::OBJECT_TYPE, &new.product)
        .await?
        .is_none()
    {
        return Err(ApiError::invalid(
            Some("resource_missing"),
            product.name(),
            format!("No such product: '{}'", new.product),
        ));
    }
    let request = events::api_request(request_id, &headers);
    let id = objects::new_id("price_", 24);
    if let Some(key) = &lookup_key {
        take_lookup_key(&mut tx, key, &id, transfer, &request).await?;
    }
    let price = objects::price(&id, db::now(&mut tx).await?, new)?;
    db::insert_object(&mut tx, &id, OBJECT_TYPE, &price).await?;
    events::emit(&mut tx, "price.created", &price, request).await?;
    tx.commit().await?;
    state.new_event.notify_one();
    Ok(Json(price))
}

/// `recurring[interval]` and `recurring[interval_count]`, for licensed usage only.
fn recurring(param: &Param<'_>) -> Result<Option<NewRecurring>, ApiError> {
    if !param.is_present() {
        return Ok(None);
    }
    param.reject_unknown(
        &["interval", "interval_count", "usage_type"],
        &["meter", "trial_period_days"],
    )?;
    let usage_type = param.get("usage_type");
    if let Some(usage) = usage_type.string()?
        && usage != "licensed"
    {
        return Err(ApiError::invalid(
            None,
            usage_type.name(),
            format!(
                "The billfold Stripe sandbox supports only {}=licensed.",
                usage_type.name()
            ),
        ));
    }
    let interval_param = param.get("interval");
    let interval = interval_param.required_string()?;
    let Some((_, max_count)) = MAX_INTERVAL_COUNTS
        .iter()
        .find(|(name, _)| *name == interval)
    else {
        return Err(ApiError::invalid(
            None,
            interval_param.name(),
            format!(
                "Invalid {}: must be one of day, week, month, or year",
                interval_param.name()
            ),
        ));
    };
    let count_param = param.get("interval_count");
    let interval_count = count_param.integer()?.unwrap_or(1);
    if !(1..=*max_count).contains(&interval_count) {
        return Err(ApiError::invalid(
            None,
            count_param.name(),
            "Invalid interval_count: the billing period must be between 1 interval and 3 \
             years (3 years, 36 months, 156 weeks or 1095 days)."
                .to_owned(),
        ));
    }
    Ok(Some(NewRecurring {
        interval: interval.to_owned(),
        interval_count,
    }))
}

/// A `lookup_key` parameter: absent is `None`, empty (unset) is `Some(None)`.
fn lookup_key(param: &Param<'_>) -> Result<Option<Option<String>>, ApiError> {
    let key = param.nullable_string()?;
    if let Some(Some(key)) = key
        && key.chars().count() > MAX_LOOKUP_KEY_CHARS
    {
        return Err(ApiError::invalid(
            None,
            param.name(),
            format!(
                "Invalid {}: must be at most {MAX_LOOKUP_KEY_CHARS} characters",
                param.name()
            ),
        ));
    }
    Ok(key.map(|key| key.map(str::to_owned)))
}

/// Makes `key` free for price `price_id`: refuses when another price holds it, unless
/// `transfer`, which takes it from that price (emitting its `price.updated`). Holds
/// the key's lock until the transaction ends.
async fn take_lookup_key(
    tx: &mut PgConnection,
    key: &str,
    price_id: &str,
    transfer: bool,
    request: &EventRequest,
) -> Result<(), ApiError> {
    db::lock_lookup_key(tx, key).await?;
    let Some(holder) = db::lock_price_by_lookup_key(tx, key).await? else {
        return Ok(());
    };
    let holder_id = holder["id"]
        .as_str()
        .ok_or_else(|| SandboxError::Corrupt(format!("price with lookup key {key}")))?
        .to_owned();
    if holder_id == price_id {
        return Ok(());
    }
    if !transfer {
        return Err(ApiError::invalid(
            None,
            "lookup_key",
            format!(
                "A price (`{holder_id}`) already uses that lookup key. Pass \
                 transfer_lookup_key=true to move the lookup key to this price."
            ),
        ));
    }
    let mut released = holder.clone();
    released["lookup_key"] = Value::Null;
    db::update_object(tx, &holder_id, &released).await?;
    events::emit_updated(tx, "price.updated", &holder, &released, request.clone()).await?;
    Ok(())
}

pub(crate) async fn retrieve_price(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let query = params::parse(query.unwrap_or_default().as_bytes());
    Param::root(&query).reject_expand()?;
    let mut conn = state.db.acquire().await?;
    db::find_object(&mut conn, OBJECT_TYPE, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::no_such("price", &id))
}

/// Updates `active`, `nickname`, `metadata` and `lookup_key` (with
/// `transfer_lookup_key`); amount, currency and interval are not parameters of this
/// endpoint, as on Stripe. Emits `price.updated` when anything changed.
pub(crate) async fn update_price(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let form = params::parse(&body);
    let form = Param::root(&form);
    form.reject_unknown(
        &[
            "active",
            "nickname",
            "metadata",
            "lookup_key",
            "transfer_lookup_key",
            "expand",
        ],
        &["currency_options", "tax_behavior"],
    )?;
    form.reject_expand()?;
    let active = form.get("active").boolean()?;
    let nickname = form.get("nickname").nullable_string()?;
    let lookup_key = lookup_key(&form.get("lookup_key"))?;
    let transfer = form.get("transfer_lookup_key").boolean()?.unwrap_or(false);

    let mut tx = state.db.begin().await?;
    let request = events::api_request(request_id, &headers);
    if let Some(Some(key)) = &lookup_key {
        // take the key's lock before the price's, as create does
        take_lookup_key(&mut tx, key, &id, transfer, &request).await?;
    }
    let before = db::lock_object(&mut tx, OBJECT_TYPE, &id)
        .await?
        .ok_or_else(|| ApiError::no_such("price", &id))?;
    let mut price = before.clone();
    if let Some(active) = active {
        price["active"] = json!(active);
    }
    if let Some(nickname) = nickname {
        price["nickname"] = json!(nickname);
    }
    if let Some(key) = lookup_key {
        price["lookup_key"] = json!(key);
    }
    let mut metadata = match price.get("metadata") {
        Some(Value::Object(metadata)) => metadata.clone(),
        _ => Map::new(),
    };
    form.get("metadata").update_metadata(&mut metadata)?;
    price["metadata"] = Value::Object(metadata);
    if price == before {
        return Ok(Json(price));
    }
    db::update_object(&mut tx, &id, &price).await?;
    events::emit_updated(&mut tx, "price.updated", &before, &price, request).await?;
    tx.commit().await?;
    state.new_event.notify_one();
    Ok(Json(price))
}

/// `GET /v1/prices` with the `active`, `currency`, `lookup_keys[]`, `product`, `type`,
/// `limit` and `starting_after` filters, newest first.
pub(crate) async fn list_prices(
    State(state): State<SandboxState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let query = params::parse(query.unwrap_or_default().as_bytes());
    let query = Param::root(&query);
    query.reject_unknown(
        &[
            "active",
            "currency",
            "lookup_keys",
            "product",
            "type",
            "limit",
            "starting_after",
            "expand",
        ],
        &["created", "ending_before", "recurring"],
    )?;
    query.reject_expand()?;
    let mut matching = Map::new();
    if let Some(active) = query.get("active").boolean()? {
        matching.insert("active".into(), json!(active));
    }
    if let Some(currency) = query.get("currency").currency()? {
        matching.insert("currency".into(), json!(currency));
    }
    if let Some(product) = query.get("product").string()? {
        matching.insert("product".into(), json!(product));
    }
    let type_param = query.get("type");
    match type_param.string()? {
        None => {}
        Some(price_type @ ("one_time" | "recurring")) => {
            matching.insert("type".into(), json!(price_type));
        }
        Some(other) => {
            return Err(ApiError::invalid(
                None,
                type_param.name(),
                format!("Invalid type: must be one of one_time or recurring, not {other}"),
            ));
        }
    }
    let lookup_keys = query.get("lookup_keys").string_list()?;
    let mut conn = state.db.acquire().await?;
    let page = lists::page(
        &mut conn,
        &query,
        db::ObjectQuery {
            object_type: OBJECT_TYPE,
            matching: Value::Object(matching),
            ids: None,
            lookup_keys: lookup_keys.as_deref(),
            starting_after: None,
            limit: 0,
        },
        "/v1/prices",
    )
    .await?;
    Ok(Json(page))
}
