//! Keygate control plane: key lifecycle service, sync feed, forward-auth and GitHub App token broker.
//!
//! A library with a thin `main`: build an [`AppState`] from a [`Config`], then [`serve`] it on
//! a pre-bound listener, or mount [`app`] yourself.

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod forward_auth;
pub mod github;
pub mod index;
pub mod metrics;
pub mod mirror;
pub mod oversize;
pub mod state;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

pub use auth::Caller;
pub use config::Config;
pub use db::Db;
pub use error::ApiError;
pub use state::AppState;

/// The service's router: every route, the body limit, the JSON 404, metrics and tracing.
pub fn app(state: AppState) -> Router {
    use api::{forward_auth, keys, keyset, system};
    let body_limit = state.config.body_limit;
    Router::new()
        .route("/v1/keys", post(keys::create_key).get(keys::list_keys))
        .route("/v1/keys/exchange", post(keys::exchange_key))
        .route("/v1/keys/verify", post(keys::verify_key))
        .route(
            "/v1/keys/{id}",
            get(keys::show_key)
                .patch(keys::update_key)
                .delete(keys::delete_key),
        )
        .route("/v1/keys/{id}/suspend", post(keys::suspend_key))
        .route("/v1/keys/{id}/reactivate", post(keys::reactivate_key))
        .route("/v1/keys/{id}/revoke", post(keys::revoke_key))
        .route("/v1/keys/{id}/rotate", post(keys::rotate_key))
        .route("/v1/audit", get(keys::list_audit))
        .route("/v1/keyset", get(keyset::get_keyset))
        // A full usage batch (keygate_protocol::usage) is larger than the general body limit.
        .route(
            "/v1/usage",
            post(keyset::post_usage).layer(DefaultBodyLimit::max(
                body_limit.max(keygate_protocol::usage::MAX_BODY_BYTES),
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
        .merge(github::routes::router())
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

/// Serves `state` on a pre-bound `listener` until `shutdown` completes, with the background
/// tasks (usage flush, change-log pruning, PostgreSQL LISTEN); flushes usage on the way out.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tasks = state.spawn_background();
    let index = state.index.clone();
    let shutdown = async move {
        shutdown.await;
        index.drain();
    };
    let result = axum::serve(
        listener,
        app(state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    for t in tasks {
        t.abort();
    }
    state.usage.flush(&state.db).await;
    result
}
