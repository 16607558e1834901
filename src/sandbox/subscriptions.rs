//! Subscriptions: `GET /v1/subscriptions/{id}`, `GET /v1/subscriptions?customer=`,
//! `POST /v1/subscriptions/{id}` (price change with proration, cancel at period end,
//! resume, metadata) and `DELETE /v1/subscriptions/{id}`. Subscriptions are created
//! by paying a `mode=subscription` checkout session; the logic lives in `billing`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde_json::{Map, Value, json};

use super::billing::{self, Proration, SubscriptionChange};
use super::error::{ApiError, ErrorType};
use super::middleware::RequestId;
use super::objects;
use super::params::{self, Param};
use super::{SandboxState, db, events, lists};

pub(crate) async fn retrieve_subscription(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut conn = state.db.acquire().await?;
    db::find_object(&mut conn, billing::SUBSCRIPTION, &id)
        .await?
        .map(|subscription| Json(objects::public_view(subscription, &[])))
        .ok_or_else(|| ApiError::no_such("subscription", &id))
}

/// `GET /v1/subscriptions` with `customer`, `status`, `price`, `limit` and
/// `starting_after`. As on Stripe, canceled subscriptions are listed only with
/// `status=canceled` or `status=all`.
pub(crate) async fn list_subscriptions(
    State(state): State<SandboxState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let query = params::parse(query.unwrap_or_default().as_bytes());
    let query = Param::root(&query);
    query.reject_unknown(
        &[
            "customer",
            "status",
            "price",
            "limit",
            "starting_after",
            "expand",
        ],
        &[
            "created",
            "ending_before",
            "collection_method",
            "current_period_end",
        ],
    )?;
    query.reject_expand()?;
    let mut matching = Map::new();
    if let Some(customer) = query.get("customer").string()? {
        matching.insert("customer".into(), json!(customer));
    }
    if let Some(price) = query.get("price").string()? {
        matching.insert("items".into(), json!({"data": [{"price": {"id": price}}]}));
    }
    let status = query.get("status").string()?;
    if let Some(status) = status.filter(|status| *status != "all") {
        matching.insert("status".into(), json!(status));
    }
    let mut conn = state.db.acquire().await?;
    let mut page = lists::page(
        &mut conn,
        &query,
        db::ObjectQuery {
            object_type: billing::SUBSCRIPTION,
            matching: Value::Object(matching),
            ids: None,
            lookup_keys: None,
            starting_after: None,
            limit: 0,
        },
        "/v1/subscriptions",
    )
    .await?;
    if status.is_none()
        && let Some(data) = page["data"].as_array_mut()
    {
        data.retain(|subscription| subscription["status"] != json!("canceled"));
    }
    Ok(Json(page))
}

/// `POST /v1/subscriptions/{id}`: `items[0][id]` + `items[0][price]` with
/// `proration_behavior`, `proration_date` and `payment_behavior` (`allow_incomplete`,
/// `pending_if_incomplete`), `cancel_at_period_end`, `metadata`.
pub(crate) async fn update_subscription(
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
            "items",
            "proration_behavior",
            "proration_date",
            "cancel_at_period_end",
            "metadata",
            "expand",
            "payment_behavior",
        ],
        &["cancel_at", "trial_end", "billing_cycle_anchor"],
    )?;
    form.reject_expand()?;
    let mut tx = state.db.begin().await?;
    let before = db::lock_object(&mut tx, billing::SUBSCRIPTION, &id)
        .await?
        .ok_or_else(|| ApiError::no_such("subscription", &id))?;
    if before["status"] == json!("canceled") {
        return Err(ApiError::refused(
            StatusCode::BAD_REQUEST,
            ErrorType::InvalidRequest,
            None,
            format!(
                "A canceled subscription can only update its cancellation_details and \
                 metadata. ({id})"
            ),
        ));
    }
    let change = read_change(&mut tx, &form, &before).await?;
    let request = events::api_request(request_id, &headers);
    let subscription = billing::update_subscription(
        &mut tx,
        &state.config.public_base_url,
        before,
        change,
        &request,
    )
    .await?;
    tx.commit().await?;
    state.new_event.notify_one();
    Ok(Json(objects::public_view(subscription, &[])))
}

async fn read_change(
    conn: &mut sqlx::PgConnection,
    form: &Param<'_>,
    subscription: &Value,
) -> Result<SubscriptionChange, ApiError> {
    let mut change = SubscriptionChange::default();
    let items = form.get("items").list()?;
    if items.len() > 1 {
        return Err(ApiError::invalid(
            None,
            "items",
            "The billfold Stripe sandbox supports one subscription item.".to_owned(),
        ));
    }
    if let Some(item) = items.first() {
        item.reject_unknown(&["id", "price"], &["quantity", "price_data", "deleted"])?;
        let item_id = item.get("id");
        if let Some(given) = item_id.string()?
            && Some(given) != billing::item(subscription)["id"].as_str()
        {
            return Err(ApiError::invalid(
                Some("resource_missing"),
                item_id.name(),
                format!("No such subscription item: '{given}'"),
            ));
        }
        let price = item.get("price");
        if let Some(price_id) = price.string()? {
            let new_price = billing::recurring_price(conn, price.name(), price_id).await?;
            let (old, new) = (
                billing::item_terms(subscription)?,
                billing::PriceTerms::read(&new_price),
            );
            if let Some(new) = new
                && (new.currency != old.currency
                    || new.interval != old.interval
                    || new.interval_count != old.interval_count)
            {
                return Err(ApiError::invalid(
                    None,
                    price.name(),
                    "The billfold Stripe sandbox can switch only between prices with the \
                     same currency and interval."
                        .to_owned(),
                ));
            }
            change.price = Some(new_price);
        }
    }
    let proration = form.get("proration_behavior");
    if let Some(text) = proration.string()? {
        change.proration = Some(Proration::parse(text).ok_or_else(|| {
            ApiError::invalid(
                None,
                proration.name(),
                format!(
                    "Invalid proration_behavior: must be one of create_prorations, \
                     always_invoice, or none, not {text}"
                ),
            )
        })?);
    }
    let behavior = form.get("payment_behavior");
    change.pending_if_incomplete = match behavior.string()? {
        None | Some("allow_incomplete") => false,
        Some("pending_if_incomplete") => true,
        Some(other @ ("default_incomplete" | "error_if_incomplete")) => {
            return Err(ApiError::invalid(
                None,
                behavior.name(),
                format!(
                    "The billfold Stripe sandbox does not support payment_behavior={other} yet."
                ),
            ));
        }
        Some(other) => {
            return Err(ApiError::invalid(
                None,
                behavior.name(),
                format!(
                    "Invalid payment_behavior: must be one of allow_incomplete, \
                     default_incomplete, error_if_incomplete, or pending_if_incomplete, not {other}"
                ),
            ));
        }
    };
    change.proration_date = form.get("proration_date").integer()?;
    change.cancel_at_period_end = form.get("cancel_at_period_end").boolean()?;
    let metadata = form.get("metadata");
    if metadata.is_present() {
        let mut current = match &subscription["metadata"] {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        metadata.update_metadata(&mut current)?;
        change.metadata = Some(current);
    }
    Ok(change)
}

/// `DELETE /v1/subscriptions/{id}`: cancels at once (`customer.subscription.deleted`).
pub(crate) async fn cancel_subscription(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let mut tx = state.db.begin().await?;
    let subscription = db::lock_object(&mut tx, billing::SUBSCRIPTION, &id)
        .await?
        .ok_or_else(|| ApiError::no_such("subscription", &id))?;
    if subscription["status"] == json!("canceled") {
        return Err(ApiError::refused(
            StatusCode::NOT_FOUND,
            ErrorType::InvalidRequest,
            Some("resource_missing"),
            format!("No such subscription: '{id}'"),
        ));
    }
    let now = db::now(&mut tx).await?;
    let request = events::api_request(request_id, &headers);
    let subscription = billing::cancel_now(&mut tx, subscription, now, &request).await?;
    tx.commit().await?;
    state.new_event.notify_one();
    Ok(Json(objects::public_view(subscription, &[])))
}
