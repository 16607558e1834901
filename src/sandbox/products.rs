//! Products: `POST /v1/products`, `GET /v1/products/{id}`, `POST /v1/products/{id}` and
//! `GET /v1/products`, announced as `product.created` and `product.updated`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::middleware::RequestId;
use super::objects::{self, NewProduct};
use super::params::{self, Param};
use super::{SandboxState, db, events, lists};

pub(crate) const OBJECT_TYPE: &str = "product";

/// Parameters of `POST /v1/products` Stripe takes that the sandbox does not.
const UNSUPPORTED_CREATE: &[&str] = &[
    "default_price_data",
    "images",
    "marketing_features",
    "package_dimensions",
    "shippable",
    "statement_descriptor",
    "tax_code",
    "tax_details",
    "type",
    "unit_label",
    "url",
];

/// Parameters of `POST /v1/products/{id}` Stripe takes that the sandbox does not.
const UNSUPPORTED_UPDATE: &[&str] = &[
    "default_price",
    "images",
    "marketing_features",
    "package_dimensions",
    "shippable",
    "statement_descriptor",
    "tax_code",
    "tax_details",
    "unit_label",
    "url",
];

/// The longest product id the sandbox accepts.
const MAX_ID_CHARS: usize = 200;

pub(crate) async fn create_product(
    State(state): State<SandboxState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let form = params::parse(&body);
    let form = Param::root(&form);
    form.reject_unknown(
        &["name", "id", "description", "active", "metadata", "expand"],
        UNSUPPORTED_CREATE,
    )?;
    form.reject_expand()?;
    let new = NewProduct {
        name: form.get("name").required_string()?.to_owned(),
        description: form.get("description").string()?.map(str::to_owned),
        active: form.get("active").boolean()?.unwrap_or(true),
        metadata: form.get("metadata").metadata()?,
    };
    let id = match form.get("id").string()? {
        Some(id) => valid_id(id)?.to_owned(),
        None => objects::new_id("prod_", 14),
    };

    let mut tx = state.db.begin().await?;
    let product = objects::product(&id, db::now(&mut tx).await?, new)?;
    if !db::insert_object_if_absent(&mut tx, &id, OBJECT_TYPE, &product).await? {
        return Err(ApiError::invalid(
            Some("resource_already_exists"),
            "id",
            "Product already exists.".to_owned(),
        ));
    }
    let request = events::api_request(request_id, &headers);
    events::emit(&mut tx, "product.created", &product, request).await?;
    tx.commit().await?;
    state.new_event.notify_one();
    Ok(Json(product))
}

/// A caller-chosen product id: letters, digits, `_` and `-`, so it is safe in a path.
fn valid_id(id: &str) -> Result<&str, ApiError> {
    let valid = id.chars().count() <= MAX_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(id)
    } else {
        Err(ApiError::invalid(
            None,
            "id",
            format!(
                "Invalid id: the billfold Stripe sandbox accepts product ids of up to \
                 {MAX_ID_CHARS} letters, digits, '_' and '-'."
            ),
        ))
    }
}

pub(crate) async fn retrieve_product(
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
        .ok_or_else(|| ApiError::no_such("product", &id))
}

/// Updates `name`, `description`, `active` and `metadata`; emits `product.updated`
/// when anything changed.
pub(crate) async fn update_product(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let form = params::parse(&body);
    let form = Param::root(&form);
    form.reject_unknown(
        &["name", "description", "active", "metadata", "expand"],
        UNSUPPORTED_UPDATE,
    )?;
    form.reject_expand()?;
    let name = form.get("name").non_empty_string()?;
    let description = form.get("description").nullable_string()?;
    let active = form.get("active").boolean()?;

    let mut tx = state.db.begin().await?;
    let before = db::lock_object(&mut tx, OBJECT_TYPE, &id)
        .await?
        .ok_or_else(|| ApiError::no_such("product", &id))?;
    let mut product = before.clone();
    if let Some(name) = name {
        product["name"] = json!(name);
    }
    if let Some(description) = description {
        product["description"] = json!(description);
    }
    if let Some(active) = active {
        product["active"] = json!(active);
    }
    let mut metadata = match product.get("metadata") {
        Some(Value::Object(metadata)) => metadata.clone(),
        _ => Map::new(),
    };
    form.get("metadata").update_metadata(&mut metadata)?;
    product["metadata"] = Value::Object(metadata);
    if product == before {
        return Ok(Json(product));
    }
    product["updated"] = json!(db::now(&mut tx).await?);
    db::update_object(&mut tx, &id, &product).await?;
    let request = events::api_request(request_id, &headers);
    events::emit_updated(&mut tx, "product.updated", &before, &product, request).await?;
    tx.commit().await?;
    state.new_event.notify_one();
    Ok(Json(product))
}

/// `GET /v1/products` with the `active`, `ids[]`, `limit` and `starting_after`
/// filters, newest first.
pub(crate) async fn list_products(
    State(state): State<SandboxState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let query = params::parse(query.unwrap_or_default().as_bytes());
    let query = Param::root(&query);
    query.reject_unknown(
        &["active", "ids", "limit", "starting_after", "expand"],
        &["created", "ending_before", "shippable", "type", "url"],
    )?;
    query.reject_expand()?;
    let mut matching = Map::new();
    if let Some(active) = query.get("active").boolean()? {
        matching.insert("active".into(), json!(active));
    }
    let ids = query.get("ids").string_list()?;
    let mut conn = state.db.acquire().await?;
    let page = lists::page(
        &mut conn,
        &query,
        db::ObjectQuery {
            object_type: OBJECT_TYPE,
            matching: Value::Object(matching),
            ids: ids.as_deref(),
            lookup_keys: None,
            starting_after: None,
            limit: 0,
        },
        "/v1/products",
    )
    .await?;
    Ok(Json(page))
}
