//! `POST /v1/customers` and `GET /v1/customers/{id}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::Value;

use super::error::ApiError;
use super::objects::{self, NewCustomer};
use super::params::{self, Param};
use super::{SandboxState, db};

pub(crate) async fn create_customer(
    State(state): State<SandboxState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let form = params::parse(&body);
    let form = Param::root(&form);
    let new = NewCustomer {
        email: form.get("email").string()?.map(str::to_owned),
        name: form.get("name").string()?.map(str::to_owned),
        description: form.get("description").string()?.map(str::to_owned),
        phone: form.get("phone").string()?.map(str::to_owned),
        metadata: form.get("metadata").metadata()?,
    };
    let mut conn = state.db.acquire().await?;
    let id = objects::new_id("cus_", 14);
    let customer = objects::customer(&id, db::now(&mut conn).await?, new)?;
    db::insert_object(&mut conn, &id, "customer", &customer).await?;
    Ok(Json(customer))
}

pub(crate) async fn retrieve_customer(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut conn = state.db.acquire().await?;
    db::find_object(&mut conn, "customer", &id)
        .await?
        .map(|customer| Json(objects::public_view(customer, &[])))
        .ok_or_else(|| ApiError::no_such("customer", &id))
}
