//! The filter's decision as a forward-auth answer.
//!
//! - **Allow**: `200`, empty body, the identity headers (names from the configuration), and in
//!   [`REMOVE_HEADER`] the request headers the proxy must drop before forwarding: the
//!   credentials the filter hides, the client's spoofed `x-keygate-*` headers, and, when the
//!   answer carries no identity (anonymous route, fail-open), the identity header names. Envoy
//!   applies the answer's headers (`allowed_upstream_headers`) *before* the removals, so a name
//!   the answer sets is never also listed for removal: the set value replaces the client's.
//!   A key cookie is hidden by a `cookie` header holding the client's other cookies (or, when
//!   none is left, by removing `cookie`).
//! - **Deny**: the filter's local reply, byte for byte: its status (`401`, `403`; `400`
//!   `invalid_path`; `503` without a usable key set), its JSON body, `content-type`,
//!   `cache-control: no-store` and the RFC 6750 `www-authenticate` challenge.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use keygate_filter_core::config::IdentityHeaders;
use keygate_filter_core::decision::{self, Allow, Decision, Deny};

use crate::http::error::ApiError;

/// The answer header that lists, comma separated, the request headers Envoy's `ext_authz`
/// removes before forwarding (Envoy's own name; it never reaches the upstream or the client).
pub const REMOVE_HEADER: &str = "x-envoy-auth-headers-to-remove";

/// The answer to `decision`; `identity` are the configuration's identity header names, and
/// `cookies` the raw values of the original request's `cookie` headers (the bytes the client
/// sent, from which the filter rebuilds the header too).
///
/// # Errors
/// 500 when the decision asks for something an answer cannot carry (a rewritten path: the
/// settings refuse the configuration that would ask for it) or a value that is not a header.
pub fn answer<'v>(
    decision: &Decision<'_>,
    identity: &IdentityHeaders,
    cookies: impl IntoIterator<Item = &'v [u8]>,
) -> Result<Response, ApiError> {
    match decision {
        Decision::Allow(a) => allow(a, identity, cookies),
        Decision::Deny(d) => Ok(deny(d)),
    }
}

fn allow<'r, 'v>(
    a: &'r Allow<'_>,
    identity_names: &'r IdentityHeaders,
    cookies: impl IntoIterator<Item = &'v [u8]>,
) -> Result<Response, ApiError> {
    if !a.set.is_empty() {
        return Err(ApiError::internal(
            "forward-auth cannot rewrite the upstream request (a hidden query key)",
        ));
    }
    let mut headers = HeaderMap::new();
    let mut set: Vec<&str> = Vec::new();
    let mut remove: Vec<&str> = Vec::new();
    match &a.identity {
        Some(identity) => {
            for (name, value) in identity.headers() {
                headers.insert(header_name(name)?, header_value(value.as_bytes())?);
                set.push(name);
            }
        }
        None => {
            // Nothing to set: whatever the client sent under these names must go, listed even
            // when it sent none, so that a proxy never forwards one this answer did not make.
            remove.extend([
                identity_names.key_id.as_str(),
                identity_names.owner.as_str(),
                identity_names.scopes.as_str(),
            ]);
        }
    }
    for name in &a.remove {
        push_name(&mut remove, &set, name);
    }
    if !a.strip_cookies.is_empty() {
        match decision::cookies_without(cookies, &a.strip_cookies) {
            Some(rest) => {
                headers.insert(header::COOKIE, header_value(&rest)?);
            }
            None => push_name(&mut remove, &set, "cookie"),
        }
    }
    if !remove.is_empty() {
        headers.insert(
            HeaderName::from_static(REMOVE_HEADER),
            header_value(remove.join(", ").as_bytes())?,
        );
    }
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::OK;
    *resp.headers_mut() = headers;
    Ok(resp)
}

fn push_name<'r>(remove: &mut Vec<&'r str>, set: &[&str], name: &'r str) {
    let listed = |n: &&str| n.eq_ignore_ascii_case(name);
    if !set.iter().any(listed) && !remove.iter().any(listed) {
        remove.push(name);
    }
}

/// The filter's local reply for `d` with `fields` added (a 429's `Retry-After`,
/// `RateLimit-Policy` and `RateLimit`).
pub fn deny_with(d: &Deny, fields: &[(&'static str, String)]) -> Response {
    let mut resp = deny(d);
    add_fields(&mut resp, fields);
    resp
}

/// Adds rate-limit fields to an answer (values the filter made: ASCII, never a secret).
pub fn add_fields(resp: &mut Response, fields: &[(&'static str, String)]) {
    for (name, value) in fields {
        if let Ok(v) = HeaderValue::from_str(value) {
            resp.headers_mut().append(HeaderName::from_static(name), v);
        }
    }
}

/// The filter's local reply for `d`.
pub fn deny(d: &Deny) -> Response {
    let mut resp = Response::new(Body::from(d.body()));
    *resp.status_mut() =
        StatusCode::from_u16(d.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(w) = d.www_authenticate {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(w));
    }
    resp
}

fn header_name(name: &str) -> Result<HeaderName, ApiError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(ApiError::internal)
}

fn header_value(value: &[u8]) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_bytes(value).map_err(ApiError::internal)
}
