//! The console's stylesheet and script, embedded in the binary (nothing is fetched at run time).

use axum::http::header;
use axum::response::IntoResponse;

/// Where the stylesheet is served.
pub const CSS_PATH: &str = "/console/console.css";
/// Where the script is served.
pub const JS_PATH: &str = "/console/console.js";

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// `GET /console/console.css`.
pub async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        CSS,
    )
}

/// `GET /console/console.js`: the copy button (the pages work without it).
pub async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        JS,
    )
}
