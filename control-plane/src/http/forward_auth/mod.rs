//! The forward-auth endpoint: `/v1/forward-auth` (nginx, Traefik, Caddy) and
//! `/v1/forward-auth/{path}` (Envoy `ext_authz` with `path_prefix: /v1/forward-auth`), every
//! method. The proxy is authenticated by its `edge` key (unless `--forward-auth-open`), then the
//! filter's decision answers (`crate::forward_auth`); an allowed key's use is counted into the
//! usage buffer, as the filter's usage reports are.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::http::auth::authenticate_proxy;
use crate::http::error::ApiError;
pub mod answer;
pub mod decide;
pub mod original;

use crate::runtime::clock::unix_now;
use crate::runtime::metrics::Limited;
use crate::runtime::state::AppState;
pub use original::BASE_PATH;

/// Longest a call waits for the key set to apply a change this process has seen committed.
pub const CATCH_UP: Duration = Duration::from_millis(100);

#[utoipa::path(get, path = "/v1/forward-auth", tag = "forward-auth",
    params(
        ("x-keygate-edge-key" = Option<String>, Header, description = "The proxy's `edge` key (not needed with --forward-auth-open)."),
        ("x-forwarded-uri" = Option<String>, Header, description = "The original path and query (Traefik, Caddy); or `x-original-uri` (nginx)."),
        ("x-forwarded-method" = Option<String>, Header, description = "The original method (Traefik, Caddy); or `x-original-method` (nginx). Default: this call's method."),
    ),
    responses(
        (status = 200, description = "Allowed: the identity headers to copy upstream (`x-keygate-key-id`, `x-keygate-owner`, `x-keygate-scopes` by default), and in `x-envoy-auth-headers-to-remove` the request headers to drop"),
        (status = 400, description = "`invalid_path` (the filter's), or the original request cannot be told", body = crate::http::error::ErrorBody),
        (status = 401, description = "The filter's 401 (`missing_key`, `malformed_key`, `prefix_not_accepted`, `unknown_key`, `expired_key`), or `PROXY_UNAUTHENTICATED`", body = crate::http::error::ErrorBody),
        (status = 403, description = "The filter's 403 (`insufficient_scope`, `resource_not_allowed`), or `PROXY_FORBIDDEN`", body = crate::http::error::ErrorBody),
        (status = 404, description = "`FORWARD_AUTH_DISABLED`: keygate serve runs without --forward-auth-config", body = crate::http::error::ErrorBody),
        (status = 503, description = "The filter's 503 (`keyset_unavailable`, `keyset_stale`)", body = crate::http::error::ErrorBody),
        (status = 429, description = "The filter's 429 (`credits_exhausted`, `rate_limited`)", body = crate::http::error::ErrorBody),
    ))]
/// Forward-auth for nginx `auth_request`, Traefik `ForwardAuth` and Caddy `forward_auth`: the
/// original request is named by `X-Forwarded-Uri`/`X-Forwarded-Method` or
/// `X-Original-URI`/`X-Original-Method`; its own headers carry the key. Any method. Envoy's
/// `ext_authz` calls `/v1/forward-auth/<original path>` instead. Decided exactly as the Keygate
/// filter decides, with the filter's configuration.
pub async fn forward_auth(State(state): State<AppState>, req: Request) -> Response {
    match authorize(&state, req).await {
        Ok(resp) | Err(resp) => resp,
    }
}

#[utoipa::path(get, path = "/v1/forward-auth/{path}", tag = "forward-auth",
    params(
        ("path" = String, Path, description = "The original path and query: Envoy's ext_authz appends them to `path_prefix: /v1/forward-auth`."),
        ("x-keygate-edge-key" = Option<String>, Header, description = "The proxy's `edge` key (ext_authz `authorization_request.headers_to_add`; not needed with --forward-auth-open)."),
    ),
    responses(
        (status = 200, description = "Allowed: the identity headers (list them in `allowed_upstream_headers`, with `cookie`), and in `x-envoy-auth-headers-to-remove` the request headers Envoy removes"),
        (status = 400, description = "`invalid_path` (the filter's)", body = crate::http::error::ErrorBody),
        (status = 401, description = "The filter's 401, or `PROXY_UNAUTHENTICATED`", body = crate::http::error::ErrorBody),
        (status = 403, description = "The filter's 403, or `PROXY_FORBIDDEN`", body = crate::http::error::ErrorBody),
        (status = 404, description = "`FORWARD_AUTH_DISABLED`", body = crate::http::error::ErrorBody),
        (status = 503, description = "The filter's 503 (Envoy answers its `status_on_error` to 5xx)", body = crate::http::error::ErrorBody),
    ))]
/// Forward-auth for Envoy's `ext_authz` HTTP service: the original method, the original path
/// appended to this prefix, the original headers. `X-Forwarded-*` and `X-Original-*` headers are
/// ignored here (Envoy passes the client's own on). Decided exactly as the Keygate filter decides.
pub async fn forward_auth_ext_authz(State(state): State<AppState>, req: Request) -> Response {
    forward_auth(State(state), req).await
}

async fn authorize(state: &AppState, req: Request) -> Result<Response, Response> {
    let (parts, _body) = req.into_parts();
    let Some(fa) = state.forward_auth.as_deref() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "FORWARD_AUTH_DISABLED",
            "forward-auth is off: start keygate serve with --forward-auth-config <the filter's \
             configuration JSON>",
        )
        .into_response());
    };
    if !fa.settings.open {
        authenticate_proxy(state, &parts)
            .await
            .map_err(IntoResponse::into_response)?;
    }
    // Read your writes: a change this process has seen committed (its own, or another
    // replica's announced one) is applied before the decision, so a key revoked through this
    // replica is refused as soon as the revoke call has answered. Only just after a write
    // does a call wait (for the follower's refresh, never on the database itself), and never
    // longer than CATCH_UP.
    let seen = u64::try_from(state.db.known_revision()).unwrap_or(0);
    if fa.mirror.revision().is_some_and(|held| held < seen) {
        fa.mirror.caught_up(seen, CATCH_UP).await;
    }
    let now = unix_now().max(0) as u64;
    let decided = decide::decide(fa, &parts, now).map_err(IntoResponse::into_response)?;
    state.metrics.forward_auth(decided.reason);
    if let Some((key, path)) = decided.canary {
        // The client as the proxy saw it: the first `X-Forwarded-For` hop, else the proxy.
        let here = crate::http::auth::seen_in(&parts);
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty());
        let seen = crate::runtime::canary::Seen::new(
            &path,
            forwarded.unwrap_or(&here.client),
            Some(&here.user_agent),
        );
        state
            .canaries
            .raise(&state.db, Uuid::from_bytes(*key.as_bytes()), seen);
    }
    if let Some(key) = decided.key_id {
        state
            .usage
            .record(Uuid::from_bytes(*key.as_bytes()), now as i64);
    }
    // Refusals by reason, in the metric and in the key's usage.
    if let Some((key, by)) = decided.refused {
        state.metrics.limited(Limited::ForwardAuth, by, 1);
        state
            .usage
            .record_refused(Uuid::from_bytes(*key.as_bytes()), by, now as i64);
    }
    Ok(decided.response)
}
