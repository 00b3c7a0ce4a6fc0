//! Webhook endpoints: `POST /v1/webhooks` (its signing secret in this answer only),
//! `GET /v1/webhooks`, `DELETE /v1/webhooks/{id}` and `GET /v1/webhooks/{id}/deliveries` (the
//! delivery log, newest first). The admin's endpoints receive every workspace's events; a
//! workspace key's, its own workspace's (`keys:write` to change them, `keys:read` to read).

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::webhooks::EndpointSpec;
use crate::http::auth::{Caller, SCOPE_KEYS_READ, SCOPE_KEYS_WRITE};
use crate::http::error::{ApiError, ApiJson, ApiQuery};
use crate::http::keys::page_limit;
use crate::runtime::clock::unix_now;
use crate::runtime::state::AppState;
use crate::runtime::webhooks::sign::new_secret;
use crate::storage::webhooks::{Attempt, Endpoint};

/// The webhook routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks", post(create_webhook).get(list_webhooks))
        .route("/v1/webhooks/{id}", axum::routing::delete(delete_webhook))
        .route("/v1/webhooks/{id}/deliveries", get(list_deliveries))
}

/// `POST /v1/webhooks` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// Event types to receive: `key.created`, `key.updated`, `key.suspended`,
    /// `key.reactivated`, `key.revoked`, `key.rotated`.
    pub event_types: Vec<String>,
    /// Free text, at most 256 bytes.
    pub description: Option<String>,
}

/// A new endpoint with its signing secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// `whsec_<base64>`: verifies the `webhook-signature` header. Never shown again.
    pub secret: String,
}

/// Endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    /// Oldest first.
    pub items: Vec<Endpoint>,
}

/// A page of the delivery log.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    /// Attempts, newest first.
    pub items: Vec<Attempt>,
    /// Cursor for the next (older) page.
    pub next_cursor: Option<i64>,
}

/// `GET /v1/webhooks/{id}/deliveries` query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<i64>,
}

fn read_scope(caller: &Caller) -> Result<(), ApiError> {
    caller
        .require_scope(SCOPE_KEYS_READ)
        .or_else(|_| caller.require_scope(SCOPE_KEYS_WRITE))
}

fn check_id(id: &str) -> Result<(), ApiError> {
    let ok = id.strip_prefix("whep_").is_some_and(|h| {
        h.len() == 32
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    ok.then_some(())
        .ok_or_else(|| ApiError::invalid("malformed webhook id (expected whep_<32 lowercase hex>)"))
}

#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, body = CreatedWebhook), (status = 400, body = crate::http::error::ErrorBody)),
    security(("bearer" = [])))]
/// Registers an endpoint; the answer carries its signing secret, once.
pub async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    caller.require_scope(SCOPE_KEYS_WRITE)?;
    let spec = EndpointSpec::parse(&body.url, &body.event_types, body.description.as_deref())
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let endpoint = Endpoint {
        id: format!("whep_{}", uuid::Uuid::now_v7().simple()),
        workspace_id: caller.workspace_id.clone(),
        url: spec.url.clone(),
        event_types: spec.event_types.clone(),
        description: spec.description.clone(),
        created_at: unix_now(),
    };
    let secret = new_secret();
    state
        .db
        .insert_webhook_endpoint(&endpoint, &spec, &secret)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook { endpoint, secret }),
    ))
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = WebhookList)), security(("bearer" = [])))]
/// The endpoints the caller sees (no secrets).
pub async fn list_webhooks(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<WebhookList>, ApiError> {
    let items = endpoints(&state, &caller).await?;
    Ok(Json(WebhookList { items }))
}

/// The endpoints `caller` sees (the rules of `GET /v1/webhooks`, shared with the console).
pub async fn endpoints(state: &AppState, caller: &Caller) -> Result<Vec<Endpoint>, ApiError> {
    read_scope(caller)?;
    Ok(state
        .db
        .webhook_endpoints(caller.workspace_filter())
        .await?)
}

/// The newest `limit` attempts of endpoint `id`, one `caller` sees (the rules of
/// `GET /v1/webhooks/{id}/deliveries`' first page, shared with the console).
pub async fn recent_attempts(
    state: &AppState,
    caller: &Caller,
    id: &str,
    limit: i64,
) -> Result<Vec<Attempt>, ApiError> {
    read_scope(caller)?;
    check_id(id)?;
    if state
        .db
        .webhook_endpoint(id, caller.workspace_filter())
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("no such webhook endpoint"));
    }
    Ok(state.db.webhook_attempts(id, None, limit).await?)
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "whep_…")),
    responses((status = 204), (status = 404, body = crate::http::error::ErrorBody)),
    security(("bearer" = [])))]
/// Deletes an endpoint, its undelivered messages and its delivery log.
pub async fn delete_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_scope(SCOPE_KEYS_WRITE)?;
    check_id(&id)?;
    if state
        .db
        .delete_webhook_endpoint(&id, caller.workspace_filter())
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("no such webhook endpoint"))
    }
}

#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "whep_…"), DeliveryQuery),
    responses((status = 200, body = DeliveryPage), (status = 404, body = crate::http::error::ErrorBody)),
    security(("bearer" = [])))]
/// An endpoint's delivery log: one row per attempt, newest first.
pub async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    read_scope(&caller)?;
    check_id(&id)?;
    let limit = page_limit(q.limit)?;
    if q.cursor.is_some_and(|c| c < 0) {
        return Err(ApiError::invalid("malformed cursor"));
    }
    if state
        .db
        .webhook_endpoint(&id, caller.workspace_filter())
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("no such webhook endpoint"));
    }
    let items = state.db.webhook_attempts(&id, q.cursor, limit).await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|a| a.id))
        .flatten();
    Ok(Json(DeliveryPage { items, next_cursor }))
}
