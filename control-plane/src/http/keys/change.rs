//! Changing a key: update, suspend, reactivate, revoke, delete (revoke by `DELETE`) and
//! rotate. Each is one `Db::change_key` call whose `Plan` the handler decides from the key's
//! current state inside the transaction.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::domain::key::KeyView;
use crate::domain::lifecycle::{Plan, status_plan};
use crate::domain::names::KeyName;
use crate::domain::{self, Action, Grant};
use crate::http::auth::{Caller, SCOPE_KEYS_WRITE};
use crate::http::edges::{KeyWrite, WaitQuery, check_wait, propagation};
use crate::http::error::{ApiError, ApiJson, ApiQuery};
use crate::runtime::clock::unix_now;
use crate::runtime::state::AppState;

use super::{IssuedKey, check_edge_admin, generate, optional_json, parse_id};

/// `PATCH /v1/keys/{id}` body; absent fields are unchanged.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New scopes.
    pub scopes: Option<Vec<String>>,
    /// New allow-list.
    pub resources: Option<Vec<String>>,
    /// New lifetime from now, seconds.
    pub expires_in: Option<i64>,
    /// New expiry, unix seconds.
    pub expires_at: Option<i64>,
    /// New metadata.
    #[schema(value_type = Object)]
    pub metadata: Option<serde_json::Value>,
}

#[utoipa::path(patch, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path), WaitQuery), request_body = UpdateKey,
    responses((status = 200, body = KeyWrite), (status = 400, body = crate::http::error::ErrorBody), (status = 404, body = crate::http::error::ErrorBody)),
    security(("bearer" = [])))]
/// Changes name, description, scopes, allow-list, expiry or metadata.
pub async fn update_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(w): ApiQuery<WaitQuery>,
    body: Result<ApiJson<UpdateKey>, ApiError>,
) -> Result<Json<KeyWrite>, ApiError> {
    caller.require_scope(SCOPE_KEYS_WRITE)?;
    let wait = check_wait(&w)?;
    let ApiJson(req) = body?;
    let id = parse_id(&id)?;
    let now = unix_now();
    let name = req.name.map(KeyName::parse).transpose()?;
    if let Some(d) = &req.description {
        domain::check_text("description", d, domain::MAX_DESCRIPTION_LEN)?;
    }
    let scopes = req
        .scopes
        .as_deref()
        .map(domain::normalize_scopes)
        .transpose()?;
    let resources = req
        .resources
        .as_deref()
        .map(domain::normalize_resources)
        .transpose()?;
    let expires_at = domain::resolve_expiry(now, req.expires_in, req.expires_at)?;
    if let Some(m) = &req.metadata {
        domain::check_metadata(m)?;
    }
    let grant = caller.grant();
    let (k, revision) = state
        .db
        .change_key(
            id,
            caller.workspace_filter(),
            &caller.actor,
            Action::Update.as_str(),
            None,
            now,
            |old| {
                check_edge_admin(&caller, old.kind)?;
                domain::transition(old.status, Action::Update)?;
                let mut new = old.clone();
                if let Some(n) = name {
                    new.name = n.into_string();
                }
                if let Some(d) = req.description {
                    new.description = d;
                }
                if let Some(s) = scopes {
                    new.scopes = s;
                }
                if let Some(r) = resources {
                    new.resources = r;
                }
                if expires_at.is_some() {
                    new.expires_at = expires_at;
                }
                if let Some(m) = req.metadata {
                    new.metadata = m;
                }
                new.updated_at = now;
                domain::check_within(
                    grant.as_ref(),
                    &Grant {
                        scopes: new.scopes.clone(),
                        resources: new.resources.clone(),
                        expires_at: new.expires_at,
                    },
                )?;
                Ok::<_, ApiError>(Plan {
                    new,
                    retire: None,
                    cascade: None,
                })
            },
        )
        .await?;
    Ok(Json(KeyWrite {
        key: KeyView::from(&k),
        revision,
        propagation: propagation(&state, &caller, revision, wait).await?,
    }))
}

/// Optional body of suspend, reactivate and revoke.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Why (kept in the audit log).
    pub reason: Option<String>,
}

/// Suspends, reactivates or revokes a key for `caller` (the rules of the status endpoints,
/// shared with the console's buttons): scope, reason, edge-admin and transition checks, the
/// cascade to children, in one `change_key`. A key outside the caller's workspace is not found.
/// Returns the key and the key-set revision the change produced.
pub async fn status_change(
    state: &AppState,
    caller: &Caller,
    id: &str,
    action: Action,
    reason: Option<String>,
) -> Result<(KeyView, i64), ApiError> {
    caller.require_scope(SCOPE_KEYS_WRITE)?;
    let id = parse_id(id)?;
    if let Some(r) = &reason {
        domain::check_text("reason", r, domain::MAX_REASON_LEN)?;
    }
    let now = unix_now();
    let (k, revision) = state
        .db
        .change_key(
            id,
            caller.workspace_filter(),
            &caller.actor,
            action.as_str(),
            reason.as_deref(),
            now,
            |old| {
                check_edge_admin(caller, old.kind)?;
                Ok::<_, ApiError>(status_plan(old, action, now)?)
            },
        )
        .await?;
    Ok((KeyView::from(&k), revision))
}

#[utoipa::path(post, path = "/v1/keys/{id}/suspend", tag = "keys", params(("id" = String, Path), WaitQuery), request_body(content = ReasonBody, description = "optional"),
    responses((status = 200, body = KeyWrite), (status = 409, body = crate::http::error::ErrorBody)), security(("bearer" = [])))]
/// Suspends an active key (and its exchanged children).
pub async fn suspend_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(w): ApiQuery<WaitQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<KeyWrite>, ApiError> {
    status_write(&state, &caller, &id, &w, &headers, &body, Action::Suspend).await
}

#[utoipa::path(post, path = "/v1/keys/{id}/reactivate", tag = "keys", params(("id" = String, Path), WaitQuery), request_body(content = ReasonBody, description = "optional"),
    responses((status = 200, body = KeyWrite), (status = 409, body = crate::http::error::ErrorBody)), security(("bearer" = [])))]
/// Reactivates a suspended key (and the children its suspension suspended).
pub async fn reactivate_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(w): ApiQuery<WaitQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<KeyWrite>, ApiError> {
    status_write(
        &state,
        &caller,
        &id,
        &w,
        &headers,
        &body,
        Action::Reactivate,
    )
    .await
}

#[utoipa::path(post, path = "/v1/keys/{id}/revoke", tag = "keys", params(("id" = String, Path), WaitQuery), request_body(content = ReasonBody, description = "optional"),
    responses((status = 200, body = KeyWrite), (status = 409, body = crate::http::error::ErrorBody)), security(("bearer" = [])))]
/// Revokes a key for good (and its children); the reason goes to the audit log.
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(w): ApiQuery<WaitQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<KeyWrite>, ApiError> {
    status_write(&state, &caller, &id, &w, &headers, &body, Action::Revoke).await
}

/// A status change with an optional JSON reason body, answered with the key, the revision and
/// (with `?wait=`) its propagation: the suspend, reactivate and revoke routes.
async fn status_write(
    state: &AppState,
    caller: &Caller,
    id: &str,
    w: &WaitQuery,
    headers: &HeaderMap,
    body: &Bytes,
    action: Action,
) -> Result<Json<KeyWrite>, ApiError> {
    let wait = check_wait(w)?;
    let b: ReasonBody = optional_json(headers, body)?;
    let (key, revision) = status_change(state, caller, id, action, b.reason).await?;
    let propagation = propagation(state, caller, revision, wait).await?;
    Ok(Json(KeyWrite {
        key,
        revision,
        propagation,
    }))
}

/// `DELETE /v1/keys/{id}` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Why (kept in the audit log).
    pub reason: Option<String>,
    /// As the other writes' `?wait=`.
    pub wait: Option<u64>,
}

#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path), DeleteQuery),
    responses((status = 200, body = KeyWrite), (status = 409, body = crate::http::error::ErrorBody)), security(("bearer" = [])))]
/// Same as revoke.
pub async fn delete_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<Json<KeyWrite>, ApiError> {
    let wait = check_wait(&WaitQuery { wait: q.wait })?;
    let (key, revision) = status_change(&state, &caller, &id, Action::Revoke, q.reason).await?;
    let propagation = propagation(&state, &caller, revision, wait).await?;
    Ok(Json(KeyWrite {
        key,
        revision,
        propagation,
    }))
}

/// `POST /v1/keys/{id}/rotate` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// Seconds the old secret keeps working (0 to 7 days; default 0).
    pub grace_period: Option<i64>,
}

#[utoipa::path(post, path = "/v1/keys/{id}/rotate", tag = "keys", params(("id" = String, Path), WaitQuery), request_body(content = RotateBody, description = "optional"),
    responses((status = 200, body = IssuedKey), (status = 409, body = crate::http::error::ErrorBody)), security(("bearer" = [])))]
/// Gives an active key a new secret; the old one works until the grace period ends.
pub async fn rotate_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(w): ApiQuery<WaitQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<IssuedKey>, ApiError> {
    caller.require_scope(SCOPE_KEYS_WRITE)?;
    let wait = check_wait(&w)?;
    let b: RotateBody = optional_json(&headers, &body)?;
    let mut issued = rotate(&state, &caller, &id, b.grace_period.unwrap_or(0)).await?;
    issued.propagation = propagation(&state, &caller, issued.revision, wait).await?;
    Ok(Json(issued))
}

/// Gives a key a new secret for `caller` (the rules of the rotate endpoint, shared with the
/// console's rotate form): scope, grace bounds, edge-admin and transition checks; the old
/// secret keeps working for `grace` seconds. A key outside the caller's workspace is not found.
pub async fn rotate(
    state: &AppState,
    caller: &Caller,
    id: &str,
    grace: i64,
) -> Result<IssuedKey, ApiError> {
    caller.require_scope(SCOPE_KEYS_WRITE)?;
    let id = parse_id(id)?;
    domain::check_grace(grace)?;
    let now = unix_now();
    let mut secret_out = None;
    let (k, revision) = state
        .db
        .change_key(
            id,
            caller.workspace_filter(),
            &caller.actor,
            Action::Rotate.as_str(),
            None,
            now,
            |old| {
                check_edge_admin(caller, old.kind)?;
                domain::canary::check_action(old.kind, Action::Rotate)?;
                domain::transition(old.status, Action::Rotate)?;
                let prefix = old
                    .display_prefix
                    .rsplit_once('_')
                    .map(|(p, _)| p.to_owned())
                    .unwrap_or_default();
                let secret = generate(&prefix)?;
                let mut new = old.clone();
                new.digest = *secret.digest().as_bytes();
                new.display_prefix = secret.display_prefix();
                new.updated_at = now;
                secret_out = Some(secret);
                let retire = (grace > 0).then_some((old.digest, now + grace));
                Ok::<_, ApiError>(Plan {
                    new,
                    retire,
                    cascade: None,
                })
            },
        )
        .await?;
    let secret = secret_out.ok_or_else(|| ApiError::internal("rotation produced no secret"))?;
    Ok(IssuedKey {
        secret: secret.expose_secret().to_owned(),
        key: KeyView::from(&k),
        revision,
        propagation: None,
    })
}
