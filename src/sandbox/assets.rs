//! The stylesheet of the sandbox's hosted pages (`static/sandbox.css`), compiled into
//! the sandbox so that a build without the `sandbox` feature carries none of it.
//! Served as `GET /assets/sandbox.css` under the sandbox's mount.

use axum::http::header;
use axum::response::IntoResponse;

use super::MOUNT_PATH;

const STYLESHEET: &str = include_str!("../../static/sandbox.css");

/// Where the hosted pages link the stylesheet.
pub(crate) fn stylesheet_href() -> String {
    format!("{MOUNT_PATH}/assets/sandbox.css")
}

/// `GET /assets/sandbox.css`, cacheable for an hour like the app's own assets.
pub(crate) async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
}
