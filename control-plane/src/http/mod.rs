//! HTTP: a router per resource (`edges`: the fleet and key writes' propagation), the operator console's pages ([`console`]), the
//! [`auth::Caller`] extractor, the one [`error::ApiError`], and the middleware (body limits, the
//! oversize drain, response counting). Handlers parse, call the domain rules and the store, and
//! answer; nothing below this layer knows HTTP.

pub mod audit;
pub mod auth;
pub mod console;
pub mod edges;
pub mod error;
pub mod forward_auth;
pub mod github;
pub mod keys;
pub mod keyset;
pub mod oversize;
pub mod secret_scanning;
pub mod system;
pub mod webhooks;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, patch, post};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use crate::runtime::state::AppState;

/// The service's router: every route, the body limit, the JSON 404, metrics and tracing.
pub fn app(state: AppState) -> Router {
    let body_limit = state.config.body_limit;
    Router::new()
        .route(
            "/v1/keys",
            post(keys::issue::create_key).get(keys::read::list_keys),
        )
        .route("/v1/keys/exchange", post(keys::issue::exchange_key))
        .route(
            "/v1/keys/revoke-by-possession",
            post(keys::possession::revoke_by_possession).layer(DefaultBodyLimit::max(
                body_limit.max(keys::possession::BODY_LIMIT),
            )),
        )
        .route("/v1/keys/verify", post(keys::verify::verify_key))
        .route(
            "/v1/keys/{id}",
            get(keys::read::show_key)
                .patch(keys::change::update_key)
                .delete(keys::change::delete_key),
        )
        .route("/v1/keys/{id}/suspend", post(keys::change::suspend_key))
        .route(
            "/v1/keys/{id}/reactivate",
            post(keys::change::reactivate_key),
        )
        .route("/v1/keys/{id}/revoke", post(keys::change::revoke_key))
        .route("/v1/keys/{id}/rotate", post(keys::change::rotate_key))
        .route("/v1/keys/{id}/limits", patch(keys::limits::change_limits))
        .route(
            "/v1/workspaces/{id}/limits",
            get(keys::limits::get_workspace_limits).put(keys::limits::put_workspace_limits),
        )
        .route("/v1/keys/{id}/propagation", get(edges::key_propagation))
        .route("/v1/edges", get(edges::list_edges))
        .route("/v1/keys/{id}/usage", get(keys::usage::key_usage))
        .route("/v1/audit", get(audit::list_audit))
        .route("/v1/keyset", get(keyset::get_keyset))
        // A full usage batch (keygate_protocol::usage) is larger than the general body limit.
        .route(
            "/v1/usage",
            post(keyset::post_usage).layer(DefaultBodyLimit::max(
                body_limit.max(keygate_protocol::usage::MAX_BODY_BYTES),
            )),
        )
        // GitHub batches matches: a larger body than the general limit.
        .route(
            secret_scanning::PATH,
            post(secret_scanning::secret_scanning_alert).layer(DefaultBodyLimit::max(
                body_limit.max(secret_scanning::BODY_LIMIT),
            )),
        )
        // Every method: the method is the original request's (ext_authz, nginx).
        .route(forward_auth::BASE_PATH, any(forward_auth::forward_auth))
        .route(
            &format!("{}/", forward_auth::BASE_PATH),
            any(forward_auth::forward_auth_ext_authz),
        )
        .route(
            &format!("{}/{{*path}}", forward_auth::BASE_PATH),
            any(forward_auth::forward_auth_ext_authz),
        )
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .merge(
            utoipa_swagger_ui::SwaggerUi::new("/docs")
                .url("/openapi.json", system::ApiDoc::openapi()),
        )
        .merge(github::router())
        .merge(webhooks::router())
        .merge(console::router())
        .fallback(error::route_not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::map_response(error::json_payload_too_large))
        .layer(middleware::from_fn(oversize::drain_after_payload_too_large))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_responses,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn count_responses(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    state.metrics.http(resp.status().as_u16());
    resp
}
