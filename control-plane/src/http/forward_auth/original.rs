//! The original request a forward-auth call asks about: its method and its path with query.
//!
//! Two conventions, told apart by the path called, never mixed:
//! - **Envoy `ext_authz` (HTTP service)** calls `<path_prefix><original path>` with the
//!   original method: a call to `/v1/forward-auth/…` is about `/…` (query included), and the
//!   `X-Forwarded-*` and `X-Original-*` headers are ignored. Envoy hands the client's own
//!   headers to the authorization service, a client-sent `X-Forwarded-Uri` among them, so a
//!   header must never be able to move the request to another route.
//! - **Forward-auth proxies** (Traefik `ForwardAuth`, Caddy `forward_auth`: `X-Forwarded-Uri` and
//!   `X-Forwarded-Method`; nginx `auth_request`, by convention: `X-Original-URI` and
//!   `X-Original-Method`) call `/v1/forward-auth` itself. The URI header is required; the method
//!   header is optional (the call's own method otherwise). These proxies pass the client's
//!   headers on too and set only their own convention's, so when both conventions (or several
//!   values of one) are present and disagree, the call is refused (400
//!   `AMBIGUOUS_ORIGINAL_REQUEST`) rather than one of them trusted.

use axum::http::{HeaderMap, Method, Uri};

use crate::http::error::ApiError;

/// The endpoint; Envoy's `http_service.path_prefix`.
pub const BASE_PATH: &str = "/v1/forward-auth";

/// Headers carrying the original URI (path and query), either convention.
pub const URI_HEADERS: [&str; 2] = ["x-forwarded-uri", "x-original-uri"];

/// Headers carrying the original method, either convention.
pub const METHOD_HEADERS: [&str; 2] = ["x-forwarded-method", "x-original-method"];

/// The request being authorized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    /// Its method, upper case as sent.
    pub method: String,
    /// Its path with the query string.
    pub path: String,
}

/// The original request of a call to `uri` with `method` and `headers`.
///
/// # Errors
/// 400 `ORIGINAL_URI_MISSING` (a call to the bare endpoint without a URI header),
/// `AMBIGUOUS_ORIGINAL_REQUEST` (headers that disagree) or `INVALID_ORIGINAL_REQUEST` (a URI
/// that is not a path, a method that is not a token).
pub fn read(method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<Original, ApiError> {
    let called = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let rest = called.strip_prefix(BASE_PATH).unwrap_or_default();
    if rest.starts_with('/') {
        return Ok(Original {
            method: method.as_str().to_owned(),
            path: rest.to_owned(),
        });
    }
    let Some(path) = agreed(headers, &URI_HEADERS)? else {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "ORIGINAL_URI_MISSING",
            "a call to /v1/forward-auth names the original request in X-Forwarded-Uri (Traefik, \
             Caddy) or X-Original-URI (nginx); Envoy's ext_authz calls /v1/forward-auth<path> \
             (http_service.path_prefix: /v1/forward-auth)",
        ));
    };
    if !path.starts_with('/') {
        return Err(invalid(
            "the original URI must be the request's path and query (origin form, starting with /)",
        ));
    }
    let method = match agreed(headers, &METHOD_HEADERS)? {
        Some(m) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic()) => m.to_owned(),
        Some(_) => return Err(invalid("the original method is not an HTTP method")),
        None => method.as_str().to_owned(),
    };
    Ok(Original {
        method,
        path: path.to_owned(),
    })
}

/// The one value every header named in `names` carries, `None` when none is present.
fn agreed<'h>(headers: &'h HeaderMap, names: &[&str]) -> Result<Option<&'h str>, ApiError> {
    let mut found: Option<&str> = None;
    for name in names {
        for v in headers.get_all(*name) {
            let v = v
                .to_str()
                .map_err(|_| invalid(format!("{name} is not visible ASCII")))?
                .trim();
            match found {
                Some(f) if f != v => {
                    return Err(ApiError::new(
                        axum::http::StatusCode::BAD_REQUEST,
                        "AMBIGUOUS_ORIGINAL_REQUEST",
                        format!(
                            "{} disagree: the proxy sets one convention, and a client may have \
                             sent another",
                            names.join(" and ")
                        ),
                    ));
                }
                _ => found = Some(v),
            }
        }
    }
    Ok(found)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::BAD_REQUEST,
        "INVALID_ORIGINAL_REQUEST",
        message,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method: &str, uri: &str, headers: &[(&str, &str)]) -> Result<Original, ApiError> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        read(
            &Method::from_bytes(method.as_bytes()).unwrap(),
            &uri.parse().unwrap(),
            &h,
        )
    }

    fn ok(method: &str, path: &str) -> Original {
        Original {
            method: method.into(),
            path: path.into(),
        }
    }

    #[test]
    fn ext_authz_style_takes_the_suffix_and_ignores_the_headers() {
        assert_eq!(
            call("POST", "/v1/forward-auth/repos/acme/x?a=1", &[]).unwrap(),
            ok("POST", "/repos/acme/x?a=1")
        );
        assert_eq!(
            call("GET", "/v1/forward-auth/", &[]).unwrap(),
            ok("GET", "/")
        );
        // A client-sent header cannot move an ext_authz call to another route.
        let spoofed = [("x-forwarded-uri", "/health"), ("x-original-method", "GET")];
        assert_eq!(
            call("DELETE", "/v1/forward-auth/admin", &spoofed).unwrap(),
            ok("DELETE", "/admin")
        );
        // Not normalized here: the decision refuses dot segments itself.
        assert_eq!(
            call("GET", "/v1/forward-auth//a/../b", &[]).unwrap(),
            ok("GET", "//a/../b")
        );
    }

    #[test]
    fn forward_auth_proxies_name_it_in_headers() {
        let traefik = [
            ("x-forwarded-method", "PUT"),
            ("x-forwarded-uri", "/repos/acme/x?y"),
        ];
        assert_eq!(
            call("GET", "/v1/forward-auth", &traefik).unwrap(),
            ok("PUT", "/repos/acme/x?y")
        );
        let nginx = [("x-original-uri", "/a"), ("x-original-method", "DELETE")];
        assert_eq!(
            call("GET", "/v1/forward-auth", &nginx).unwrap(),
            ok("DELETE", "/a")
        );
        // Without a method header: the call's own method (nginx subrequests keep it).
        assert_eq!(
            call("POST", "/v1/forward-auth?x=1", &[("x-original-uri", "/a")]).unwrap(),
            ok("POST", "/a")
        );
        // Both conventions agreeing is fine.
        let both = [("x-forwarded-uri", "/a"), ("x-original-uri", "/a")];
        assert_eq!(
            call("GET", "/v1/forward-auth", &both).unwrap(),
            ok("GET", "/a")
        );
    }

    #[test]
    fn missing_disagreeing_and_malformed_headers_are_refused() {
        let code = |r: Result<Original, ApiError>| r.unwrap_err().code;
        assert_eq!(
            code(call("GET", "/v1/forward-auth", &[])),
            "ORIGINAL_URI_MISSING"
        );
        // The proxy sets one convention, the client sent the other.
        assert_eq!(
            code(call(
                "GET",
                "/v1/forward-auth",
                &[("x-forwarded-uri", "/admin"), ("x-original-uri", "/health")]
            )),
            "AMBIGUOUS_ORIGINAL_REQUEST"
        );
        assert_eq!(
            code(call(
                "GET",
                "/v1/forward-auth",
                &[
                    ("x-forwarded-uri", "/admin"),
                    ("x-forwarded-uri", "/health")
                ]
            )),
            "AMBIGUOUS_ORIGINAL_REQUEST"
        );
        assert_eq!(
            code(call(
                "GET",
                "/v1/forward-auth",
                &[
                    ("x-forwarded-uri", "/a"),
                    ("x-forwarded-method", "GET"),
                    ("x-original-method", "POST")
                ]
            )),
            "AMBIGUOUS_ORIGINAL_REQUEST"
        );
        assert_eq!(
            code(call(
                "GET",
                "/v1/forward-auth",
                &[("x-forwarded-uri", "http://h/a")]
            )),
            "INVALID_ORIGINAL_REQUEST"
        );
        assert_eq!(
            code(call(
                "GET",
                "/v1/forward-auth",
                &[("x-forwarded-uri", "/a"), ("x-forwarded-method", "G T")]
            )),
            "INVALID_ORIGINAL_REQUEST"
        );
    }
}
