//! List endpoints (`GET /v1/products`, `GET /v1/prices`): Stripe's `limit` and
//! `starting_after` paging over the object store, newest first, in the list envelope.

use serde_json::Value;
use sqlx::PgConnection;

use super::db;
use super::error::ApiError;
use super::objects;
use super::params::Param;

/// Runs a list request: reads `limit` and `starting_after` from `query` into
/// `object_query`, fetches one object more than asked to fill `has_more`, and wraps
/// the page in Stripe's list envelope for `url` (e.g. `/v1/prices`).
pub(crate) async fn page(
    conn: &mut PgConnection,
    query: &Param<'_>,
    mut object_query: db::ObjectQuery<'_>,
    url: &str,
) -> Result<Value, ApiError> {
    let limit = query.get("limit").limit()?;
    let starting_after = query.get("starting_after");
    let cursor = starting_after.string()?;
    if let Some(cursor) = cursor
        && db::find_object(conn, object_query.object_type, cursor)
            .await?
            .is_none()
    {
        return Err(ApiError::invalid(
            Some("resource_missing"),
            starting_after.name(),
            format!("No such {}: '{cursor}'", object_query.object_type),
        ));
    }
    object_query.starting_after = cursor;
    object_query.limit = limit + 1;
    let mut data = db::list_objects(conn, &object_query).await?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let has_more = data.len() > limit;
    data.truncate(limit);
    let data = data
        .into_iter()
        .map(|object| objects::public_view(object, &[]))
        .collect();
    Ok(objects::list(url, data, has_more))
}
