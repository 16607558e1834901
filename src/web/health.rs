//! Liveness and readiness probes.

use axum::extract::State;
use axum::http::StatusCode;
use sqlx::PgPool;

/// `GET /healthz`: the process answers (200 "ok").
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 when the database answers `select 1`, else 503.
pub async fn readyz(State(db): State<PgPool>) -> (StatusCode, &'static str) {
    match sqlx::query("select 1").execute(&db).await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}
