//! GitHub's rate limits as the fake simulates them: the primary limit (403 with the
//! `x-ratelimit-*` headers) and secondary limits (403 or 429 with `retry-after`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;

use crate::model;
use crate::responses::Fail;
use crate::state::unix_now;

/// A rate limit the fake answers every App request with, until cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// Primary limit: 403 with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` this many
    /// seconds ahead.
    Primary {
        /// Seconds until the window resets.
        reset_in: u64,
    },
    /// Secondary limit: the given status (403 or 429) with `retry-after`.
    Secondary {
        /// 403 or 429.
        status: u16,
        /// Value of the `retry-after` header, in seconds.
        retry_after: u64,
    },
}

/// The answer to an App request while `limit` is set (`offset`: the fake clock's skew).
pub(crate) fn rate_limited(limit: RateLimit, offset: i64) -> Fail {
    let mut resp;
    match limit {
        RateLimit::Primary { reset_in } => {
            resp = (
                StatusCode::FORBIDDEN,
                axum::Json(model::basic_error(
                    "API rate limit exceeded for app. Check out the documentation for more details.",
                    "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting",
                    403,
                )),
            )
                .into_response();
            let h = resp.headers_mut();
            let reset = unix_now() + offset + reset_in as i64;
            h.insert("x-ratelimit-limit", HeaderValue::from_static("5000"));
            h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
            h.insert("x-ratelimit-used", HeaderValue::from_static("5000"));
            h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
            if let Ok(v) = HeaderValue::from_str(&reset.to_string()) {
                h.insert("x-ratelimit-reset", v);
            }
        }
        RateLimit::Secondary {
            status,
            retry_after,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
            resp = (
                status,
                axum::Json(model::basic_error(
                    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                    "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
                    status.as_u16(),
                )),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
    }
    Box::new(resp)
}
