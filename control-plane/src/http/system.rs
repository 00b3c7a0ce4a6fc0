//! Health, readiness, metrics, and the OpenAPI document with its docs page (Swagger UI
//! served from assets vendored at build time, no CDN).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::{Modify, OpenApi, ToSchema};

use crate::runtime::clock::unix_now;
use crate::runtime::edges::render_metrics as render_edge_metrics;
use crate::runtime::state::AppState;

/// Health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, body = Health)))]
/// The process is up.
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[utoipa::path(get, path = "/readyz", tag = "system", responses((status = 200, body = Health), (status = 503, body = Health)))]
/// The database answers.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    match state.db.ping().await {
        Ok(()) => (StatusCode::OK, Json(Health { status: "ok" })),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "unavailable",
                }),
            )
        }
    }
}

#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, description = "Prometheus text format")))]
/// Prometheus metrics.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let mut body = state.metrics.render(state.db.known_revision());
            state.github.metrics().render(&mut body);
            if let Some(fa) = state.forward_auth() {
                fa.render_metrics(&mut body);
            }
            match state.edges.fleet(&state.db, unix_now()).await {
                Ok(fleet) => render_edge_metrics(&fleet, &mut body),
                Err(e) => tracing::warn!(error = %e, "edge registry read for metrics failed"),
            }
            body
        },
    )
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "x_api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
    }
}

/// The OpenAPI document, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(title = "Keygate control plane", description = "Key lifecycle, audit, key-set sync feed, usage intake and forward-auth."),
    paths(
        crate::http::keys::issue::create_key,
        crate::http::keys::read::list_keys,
        crate::http::keys::read::show_key,
        crate::http::keys::change::update_key,
        crate::http::keys::change::suspend_key,
        crate::http::keys::change::reactivate_key,
        crate::http::keys::change::revoke_key,
        crate::http::keys::change::delete_key,
        crate::http::keys::change::rotate_key,
        crate::http::keys::limits::change_limits,
        crate::http::keys::limits::get_workspace_limits,
        crate::http::keys::limits::put_workspace_limits,
        crate::http::keys::usage::key_usage,
        crate::http::keys::issue::exchange_key,
        crate::http::keys::possession::revoke_by_possession,
        crate::http::keys::verify::verify_key,
        crate::http::audit::list_audit,
        crate::http::secret_scanning::secret_scanning_alert,
        crate::http::webhooks::create_webhook,
        crate::http::webhooks::list_webhooks,
        crate::http::webhooks::delete_webhook,
        crate::http::webhooks::list_deliveries,
        crate::http::edges::list_edges,
        crate::http::edges::key_propagation,
        crate::http::keyset::get_keyset,
        crate::http::keyset::post_usage,
        crate::http::forward_auth::forward_auth,
        crate::http::forward_auth::forward_auth_ext_authz,
        healthz,
        readyz,
        metrics,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;
