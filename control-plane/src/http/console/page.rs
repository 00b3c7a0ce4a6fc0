//! What every console page shares: the navigation bar's data ([`Nav`]), rendering a template
//! ([`render`]), the error page ([`PageError`]: an [`ApiError`] shown as HTML with its status;
//! unauthenticated means back to sign-in), and the small formatters the templates use.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::http::error::ApiError;

/// The signed-in bar: who, and the token the sign-out form carries.
#[derive(Debug, Clone)]
pub struct Nav {
    /// The admin, or the key's name and workspace.
    pub who: String,
    /// The session's CSRF token.
    pub csrf: String,
}

/// Renders a page with status 200.
pub fn render<T: Template>(t: &T) -> Response {
    render_with(StatusCode::OK, t)
}

/// Renders a page with `status`.
pub fn render_with<T: Template>(status: StatusCode, t: &T) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => ApiError::internal(format_args!("template: {e}")).into_response(),
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    nav: Option<Nav>,
    status: u16,
    title: &'a str,
    message: &'a str,
}

/// A console failure: the API's error, shown as a page with the same status (401: a redirect
/// to the sign-in page instead).
#[derive(Debug)]
pub struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<sqlx::Error> for PageError {
    fn from(e: sqlx::Error) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let e = self.0;
        if e.status == StatusCode::UNAUTHORIZED {
            return Redirect::to("/sign-in").into_response();
        }
        let title = e.status.canonical_reason().unwrap_or("Error");
        let mut resp = render_with(
            e.status,
            &ErrorPage {
                nav: None,
                status: e.status.as_u16(),
                title,
                message: &e.message,
            },
        );
        if let Some(secs) = e.retry_after
            && let Ok(v) = secs.to_string().parse()
        {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, v);
        }
        resp
    }
}

/// A time as `2026-12-07 15:04 UTC`; `dash` when absent.
pub fn when(t: Option<i64>, dash: &str) -> String {
    let Some(t) = t else { return dash.to_owned() };
    let Ok(dt) = time::OffsetDateTime::from_unix_timestamp(t) else {
        return t.to_string();
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute()
    )
}

/// Percent-encodes a query-string value (everything but the unreserved characters).
pub fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `YYYY-MM-DD` as the unix time of that day's start (UTC).
pub fn day_start(s: &str) -> Result<i64, ApiError> {
    let bad = || ApiError::invalid(format!("not a date (YYYY-MM-DD): {s}"));
    let mut parts = s.splitn(3, '-');
    let mut next = || {
        parts
            .next()
            .and_then(|p| p.parse::<i32>().ok())
            .ok_or_else(bad)
    };
    let (y, m, d) = (next()?, next()?, next()?);
    let month = u8::try_from(m)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .ok_or_else(bad)?;
    let day = u8::try_from(d).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(y, month, day).map_err(|_| bad())?;
    Ok(date.midnight().assume_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_and_encodes_values() {
        assert_eq!(when(None, "never"), "never");
        assert_eq!(when(Some(0), "-"), "1970-01-01 00:00 UTC");
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
