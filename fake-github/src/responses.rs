//! Turning bodies into answers: GitHub's error responses (`message`, `documentation_url`,
//! `status`) and JSON successes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::model;

/// Where GitHub's generic errors point.
pub(crate) const DOCS: &str = "https://docs.github.com/rest";

/// A request refused: the error response to send.
pub(crate) type Fail = Box<Response>;

/// GitHub's "Basic Error" answer with the given status and message.
pub(crate) fn error(status: StatusCode, message: &str) -> Fail {
    Box::new(
        (
            status,
            axum::Json(model::basic_error(message, DOCS, status.as_u16())),
        )
            .into_response(),
    )
}

pub(crate) fn ok_json(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

pub(crate) fn not_found_body() -> Response {
    *error(StatusCode::NOT_FOUND, "Not Found")
}
