//! Layers of the sandbox's `/v1` API, outermost first: the `Request-Id` header, the
//! secret-key check, and idempotency-key replay.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::{ApiError, ErrorType, SandboxError};
use super::objects::new_id;
use super::{SANDBOX_SECRET_KEY, SandboxState, db};

/// The largest request or response body the API buffers (Stripe's own limit is far
/// below this for form bodies).
const MAX_BODY_BYTES: usize = 1024 * 1024;

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The id of the API request being served, also returned as `Request-Id`.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub(crate) String);

/// Gives every API request a `req_...` id, as Stripe does.
pub(crate) async fn request_id(mut request: Request, next: Next) -> Response {
    let id = new_id("req_", 14);
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("request-id", value);
    }
    response
}

/// Refuses requests without `Authorization: Bearer <SANDBOX_SECRET_KEY>` with
/// Stripe's 401 reply.
pub(crate) async fn require_secret_key(request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok());
    let Some(header) = header else {
        return ApiError::unauthorized(
            "You did not provide an API key. You need to provide your API key in the \
             Authorization header, using Bearer auth (e.g. 'Authorization: Bearer \
             YOUR_SECRET_KEY')."
                .to_owned(),
        )
        .into_response();
    };
    if header.strip_prefix("Bearer ").map(str::trim) == Some(SANDBOX_SECRET_KEY) {
        next.run(request).await
    } else {
        // unlike Stripe, echo no part of the key: it may be a real one
        ApiError::unauthorized(format!(
            "Invalid API Key provided. The billfold Stripe sandbox accepts only \
             {SANDBOX_SECRET_KEY}."
        ))
        .into_response()
    }
}

/// Replays the saved response of a POST whose `Idempotency-Key` was seen before, as
/// Stripe does: same key and same parameters → the first response (marked
/// `Idempotent-Replayed: true`); other parameters → 400 `idempotency_error`; first
/// request still running → 409. Responses of requests that failed inside the sandbox
/// (5xx) are not kept, so a retry runs again.
pub(crate) async fn replay_idempotent(
    State(state): State<SandboxState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = request
        .headers()
        .get(&IDEMPOTENCY_KEY)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let (Some(key), true) = (key, request.method() == Method::POST) else {
        return Ok(next.run(request).await);
    };

    let (parts, body) = request.into_parts();
    let body = to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        ApiError::refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorType::InvalidRequest,
            None,
            "Request body is too large.".to_owned(),
        )
    })?;
    let path = parts.uri.path().to_owned();
    // Stripe compares the parameters, not the bytes: SDKs encode maps (metadata) in
    // any order, so hash the sorted pairs.
    let mut params: Vec<(String, String)> =
        url::form_urlencoded::parse(&body).into_owned().collect();
    params.sort();
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update(b" ");
    hasher.update(path.as_bytes());
    for (k, v) in &params {
        hasher.update(b"\n");
        hasher.update(k.as_bytes());
        hasher.update(b"=");
        hasher.update(v.as_bytes());
    }
    let request_hash = hex::encode(hasher.finalize());

    let claimed = db::claim_idempotency_key(
        &mut *state.db.acquire().await?,
        &key,
        parts.method.as_str(),
        &path,
        &request_hash,
    )
    .await?;
    if !claimed {
        return replay(&mut *state.db.acquire().await?, &key, &request_hash).await;
    }

    // Run the request in its own task: when the client hangs up, the request still
    // finishes and saves its response, so the key does not stay in use.
    let request = Request::from_parts(parts, Body::from(body));
    tokio::spawn(run_and_save(state.db.clone(), key, next, request))
        .await
        .map_err(|_| SandboxError::Unexpected("idempotent api request task failed"))?
}

/// Runs a keyed request and keeps its response for replays.
async fn run_and_save(
    db: sqlx::PgPool,
    key: String,
    next: Next,
    request: Request,
) -> Result<Response, ApiError> {
    let response = next.run(request).await;
    let mut conn = db.acquire().await?;
    if response.status().is_server_error() {
        db::release_idempotency_key(&mut conn, &key).await?;
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let body = to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| SandboxError::Unexpected("api response too large to keep"))?;
    db::save_idempotent_response(
        &mut conn,
        &key,
        parts.status.as_u16(),
        &String::from_utf8_lossy(&body),
    )
    .await?;
    Ok(Response::from_parts(parts, Body::from(body)))
}

async fn replay(
    conn: &mut sqlx::PgConnection,
    key: &str,
    request_hash: &str,
) -> Result<Response, ApiError> {
    let seen = db::find_idempotent_request(conn, key)
        .await?
        .ok_or_else(|| SandboxError::Corrupt(format!("idempotency key {key} vanished")))?;
    if seen.request_hash != request_hash {
        return Err(ApiError::refused(
            StatusCode::BAD_REQUEST,
            ErrorType::Idempotency,
            None,
            format!(
                "Keys for idempotent requests can only be used with the same parameters they \
                 were first used with. Try using a key other than '{key}' if you meant to \
                 execute a different request."
            ),
        ));
    }
    let (Some(status), Some(body)) = (seen.response_status, seen.response_body) else {
        return Err(ApiError::refused(
            StatusCode::CONFLICT,
            ErrorType::Idempotency,
            Some("idempotency_key_in_use"),
            format!(
                "There is currently another in-progress request using this Idempotent Key \
                 (that probably means you submitted twice, and the other request is still \
                 going through): {key}. Please try again later."
            ),
        ));
    };
    let status = u16::try_from(status)
        .ok()
        .and_then(|status| StatusCode::from_u16(status).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok((status, headers, body).into_response())
}
