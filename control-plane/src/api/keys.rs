//! Key lifecycle endpoints: create, list, show, update, suspend, reactivate, revoke, rotate,
//! exchange and verify. Handlers validate, call the pure rules in [`crate::domain`], then
//! one store call that is one transaction.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use keygate_protocol::{Digest, key};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{Caller, SCOPE_KEYS_READ, SCOPE_KEYS_WRITE};
use crate::db::{Actor, AuditEntry, KeyFilter, KeyRecord, format_key_id, parse_key_id};
use crate::domain::{self, Action, Candidate, Grant, KeyKind, KeyStatus, VerifyCode};
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::state::{AppState, unix_now};
use crate::store::{Cascade, Plan};

/// Hash algorithm version of stored digests: 1 = SHA-256 of the whole key string.
pub const HASH_VERSION: i64 = 1;
/// Workspace used when the admin names none.
pub const DEFAULT_WORKSPACE: &str = "default";

/// A key as the API shows it: never the secret, never the digest.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    /// `key_<32 hex>`.
    pub id: String,
    /// Workspace.
    pub workspace_id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Kind.
    pub kind: KeyKind,
    /// Prefix plus the first 8 body characters.
    pub display_prefix: String,
    /// Hash algorithm version.
    pub hash_version: i64,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Resource allow-list (empty = any).
    pub resources: Vec<String>,
    /// Status.
    pub status: KeyStatus,
    /// Expiry, unix seconds.
    pub expires_at: Option<i64>,
    /// Creation, unix seconds.
    pub created_at: i64,
    /// Last change, unix seconds.
    pub updated_at: i64,
    /// Last use, unix seconds.
    pub last_used_at: Option<i64>,
    /// Uses reported.
    pub usage_count: i64,
    /// Revocation, unix seconds.
    pub revoked_at: Option<i64>,
    /// Who created it.
    pub created_by: ActorView,
    /// Owner (the caller's user or service).
    pub owner_id: String,
    /// Small JSON object.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Parent key of an exchanged child.
    pub parent_id: Option<String>,
    /// Subject recorded at exchange.
    pub subject: Option<String>,
}

/// Who did something.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ActorView {
    /// `admin` or a key id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Display prefix of the credential used.
    pub display_prefix: String,
}

impl From<&KeyRecord> for KeyView {
    fn from(k: &KeyRecord) -> Self {
        Self {
            id: format_key_id(k.id),
            workspace_id: k.workspace_id.clone(),
            name: k.name.clone(),
            description: k.description.clone(),
            kind: k.kind,
            display_prefix: k.display_prefix.clone(),
            hash_version: k.hash_version,
            scopes: k.scopes.clone(),
            resources: k.resources.clone(),
            status: k.status,
            expires_at: k.expires_at,
            created_at: k.created_at,
            updated_at: k.updated_at,
            last_used_at: k.last_used_at,
            usage_count: k.usage_count,
            revoked_at: k.revoked_at,
            created_by: ActorView {
                id: k.created_by.id.clone(),
                name: k.created_by.name.clone(),
                display_prefix: k.created_by.display_prefix.clone(),
            },
            owner_id: k.owner_id.clone(),
            metadata: k.metadata.clone(),
            parent_id: k.parent_id.map(format_key_id),
            subject: k.subject.clone(),
        }
    }
}

/// The audit-log form of a key (the API view: no secret, no digest; usage counters left out).
pub fn audit_view(k: &KeyRecord) -> serde_json::Value {
    let mut v = serde_json::to_value(KeyView::from(k)).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("usage_count");
        o.remove("last_used_at");
    }
    v
}

/// A new key's secret (shown once) and record.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IssuedKey {
    /// The full secret. It is not stored and cannot be shown again.
    pub secret: String,
    /// The record.
    pub key: KeyView,
}

/// `POST /v1/keys` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Name (1 to 128 bytes).
    pub name: String,
    /// Description (at most 1024 bytes).
    #[serde(default)]
    pub description: String,
    /// Kind; default `workspace`.
    #[serde(default)]
    pub kind: Option<KeyKind>,
    /// Scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Resource allow-list.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Lifetime in seconds.
    pub expires_in: Option<i64>,
    /// Expiry in unix seconds.
    pub expires_at: Option<i64>,
    /// Owner id; default the caller's.
    pub owner_id: Option<String>,
    /// Small JSON object.
    #[schema(value_type = Object)]
    pub metadata: Option<serde_json::Value>,
    /// Workspace (admin only; default `default`).
    pub workspace_id: Option<String>,
    /// Key prefix; default the server's.
    pub prefix: Option<String>,
}

fn check_workspace_id(w: &str) -> Result<(), ApiError> {
    if w.is_empty()
        || w.len() > 64
        || !w
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(ApiError::invalid(
            "workspace_id must be 1 to 64 characters of [a-z0-9_-]",
        ));
    }
    Ok(())
}

fn new_key_id() -> Uuid {
    Uuid::now_v7()
}

/// `edge` keys read every workspace's key set from the feed, so only the admin may issue one
/// or change one (update, suspend, reactivate, revoke, rotate); a `workspace` key gets 403
/// `EDGE_KEY_ADMIN_ONLY`. Exchange only ever makes `repo` keys.
fn check_edge_admin(caller: &Caller, kind: KeyKind) -> Result<(), ApiError> {
    if kind == KeyKind::Edge && !caller.is_admin() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "EDGE_KEY_ADMIN_ONLY",
            "only the admin can issue or change `edge` keys (they read every workspace's key set)",
        ));
    }
    Ok(())
}

fn generate(prefix: &str) -> Result<key::SecretKey, ApiError> {
    key::generate(prefix).map_err(|e| ApiError::invalid(format!("prefix: {e}")))
}

#[utoipa::path(post, path = "/v1/keys", request_body = CreateKey, tag = "keys",
    responses((status = 201, body = IssuedKey), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
/// Issues a key; the secret is in this response only.
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<ApiJson<CreateKey>, ApiError>,
) -> Result<(StatusCode, Json<IssuedKey>), ApiError> {
    caller.require_scope(SCOPE_KEYS_WRITE)?;
    let ApiJson(req) = body?;
    check_edge_admin(&caller, req.kind.unwrap_or(KeyKind::Workspace))?;
    let now = unix_now();
    domain::check_name(&req.name)?;
    domain::check_text("description", &req.description, domain::MAX_DESCRIPTION_LEN)?;
    let scopes = domain::normalize_scopes(&req.scopes)?;
    let resources = domain::normalize_resources(&req.resources)?;
    let expires_at = domain::resolve_expiry(now, req.expires_in, req.expires_at)?;
    let owner_id = req.owner_id.unwrap_or_else(|| caller.owner_id.clone());
    domain::check_owner(&owner_id)?;
    let metadata = req.metadata.unwrap_or_else(|| serde_json::json!({}));
    domain::check_metadata(&metadata)?;
    let workspace_id = match (&caller.workspace_id, req.workspace_id) {
        (Some(own), Some(w)) if *own != w => {
            return Err(ApiError::forbidden(
                "a workspace key acts only in its own workspace",
            ));
        }
        (Some(own), _) => own.clone(),
        (None, Some(w)) => w,
        (None, None) => DEFAULT_WORKSPACE.to_owned(),
    };
    check_workspace_id(&workspace_id)?;
    domain::check_within(
        caller.grant().as_ref(),
        &Grant {
            scopes: scopes.clone(),
            resources: resources.clone(),
            expires_at,
        },
    )?;
    let prefix = req
        .prefix
        .unwrap_or_else(|| state.config.key_prefix.clone());
    key::validate_prefix(&prefix).map_err(|e| ApiError::invalid(format!("prefix: {e}")))?;
    if prefix == crate::state::ADMIN_KEY_PREFIX {
        return Err(ApiError::invalid("prefix is reserved"));
    }
    let secret = generate(&prefix)?;
    let record = KeyRecord {
        id: new_key_id(),
        workspace_id,
        name: req.name,
        description: req.description,
        kind: req.kind.unwrap_or(KeyKind::Workspace),
        display_prefix: secret.display_prefix(),
        digest: *secret.digest().as_bytes(),
        hash_version: HASH_VERSION,
        scopes,
        resources,
        status: KeyStatus::Active,
        suspended_by_parent: false,
        expires_at,
        created_at: now,
        updated_at: now,
        last_used_at: None,
        usage_count: 0,
        revoked_at: None,
        created_by: caller.actor.clone(),
        owner_id,
        metadata,
        parent_id: None,
        subject: None,
    };
    insert(&state, &caller.actor, record, "key.create", None, secret).await
}

async fn insert(
    state: &AppState,
    actor: &Actor,
    record: KeyRecord,
    action: &str,
    reason: Option<&str>,
    secret: key::SecretKey,
) -> Result<(StatusCode, Json<IssuedKey>), ApiError> {
    let audit = AuditEntry {
        at: record.created_at,
        workspace_id: Some(&record.workspace_id),
        actor,
        action,
        key_id: Some(record.id),
        before: None,
        after: Some(audit_view(&record)),
        reason,
    };
    let rev = state.db.insert_key(&record, &audit).await?;
    state.index.advance(rev);
    state.metrics.key_created();
    Ok((
        StatusCode::CREATED,
        Json(IssuedKey {
            secret: secret.expose_secret().to_owned(),
            key: KeyView::from(&record),
        }),
    ))
}

/// `GET /v1/keys` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this status.
    pub status: Option<KeyStatus>,
    /// Only this kind.
    pub kind: Option<KeyKind>,
    /// Only this owner.
    pub owner_id: Option<String>,
    /// Only this workspace (admin).
    pub workspace_id: Option<String>,
    /// Cursor: the `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<i64>,
}

/// A page of keys.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyPage {
    /// Keys in creation order.
    pub items: Vec<KeyView>,
    /// Cursor for the next page, if there may be one.
    pub next_cursor: Option<String>,
}

fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(100),
        Some(l) if (1..=1000).contains(&l) => Ok(l),
        Some(_) => Err(ApiError::invalid("limit must be between 1 and 1000")),
    }
}

#[utoipa::path(get, path = "/v1/keys", params(ListQuery), tag = "keys",
    responses((status = 200, body = KeyPage), (status = 400, body = crate::error::ErrorBody)), security(("bearer" = [])))]
/// Lists keys with cursor pagination and filters.
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<KeyPage>, ApiError> {
    caller
        .require_scope(SCOPE_KEYS_READ)
        .or_else(|_| caller.require_scope(SCOPE_KEYS_WRITE))?;
    let limit = page_limit(q.limit)?;
    let after = match q.cursor.as_deref() {
        Some(c) => Some(parse_key_id(c).ok_or_else(|| ApiError::invalid("malformed cursor"))?),
        None => None,
    };
    let workspace_id = match caller.workspace_filter() {
        Some(w) => Some(w.to_owned()),
        None => q.workspace_id,
    };
    let keys = state
        .db
        .list_keys(&KeyFilter {
            workspace_id,
            status: q.status,
            kind: q.kind,
            owner_id: q.owner_id,
            after,
            limit,
        })
        .await?;
    let next_cursor = (keys.len() as i64 == limit)
        .then(|| keys.last().map(|k| format_key_id(k.id)))
        .flatten();
    Ok(Json(KeyPage {
        items: keys.iter().map(KeyView::from).collect(),
        next_cursor,
    }))
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    parse_key_id(id)
        .ok_or_else(|| ApiError::invalid("malformed key id (expected key_<32 lowercase hex>)"))
}

#[utoipa::path(get, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 200, body = KeyView), (status = 404, body = crate::error::ErrorBody)), security(("bearer" = [])))]
/// Shows one key.
pub async fn show_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    caller
        .require_scope(SCOPE_KEYS_READ)
        .or_else(|_| caller.require_scope(SCOPE_KEYS_WRITE))?;
    let id = parse_id(&id)?;
    match state.db.get_key(id).await? {
        Some(k)
            if caller
                .workspace_filter()
                .is_none_or(|w| w == k.workspace_id) =>
        {
            Ok(Json(KeyView::from(&k)))
        }
        _ => Err(ApiError::not_found("no such key")),
    }
}

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

#[utoipa::path(patch, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path)), request_body = UpdateKey,
    responses((status = 200, body = KeyView), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
/// Changes name, description, scopes, allow-list, expiry or metadata.
pub async fn update_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<ApiJson<UpdateKey>, ApiError>,
) -> Result<Json<KeyView>, ApiError> {
    caller.require_scope(SCOPE_KEYS_WRITE)?;
    let ApiJson(req) = body?;
    let id = parse_id(&id)?;
    let now = unix_now();
    if let Some(n) = &req.name {
        domain::check_name(n)?;
    }
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
    let (k, rev) = state
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
                if let Some(n) = req.name {
                    new.name = n;
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
                Ok(Plan {
                    new,
                    retire: None,
                    cascade: None,
                })
            },
        )
        .await?;
    state.index.advance(rev);
    Ok(Json(KeyView::from(&k)))
}

/// Optional body of suspend, reactivate and revoke.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Why (kept in the audit log).
    pub reason: Option<String>,
}

/// Parses an optional JSON body: empty is the default, anything else must be JSON.
fn optional_json<T: serde::de::DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, ApiError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    let ct = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "expected request with `Content-Type: application/json`",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "MALFORMED_JSON",
                format!("malformed JSON: {e}"),
            )
        } else {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_REQUEST",
                format!("invalid body: {e}"),
            )
        }
    })
}

async fn status_change(
    state: &AppState,
    caller: &Caller,
    id: &str,
    action: Action,
    reason: Option<String>,
) -> Result<Json<KeyView>, ApiError> {
    caller.require_scope(SCOPE_KEYS_WRITE)?;
    let id = parse_id(id)?;
    if let Some(r) = &reason {
        domain::check_text("reason", r, domain::MAX_REASON_LEN)?;
    }
    let now = unix_now();
    let (k, rev) = state
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
                let to = domain::transition(old.status, action)?;
                let mut new = old.clone();
                new.status = to;
                new.updated_at = now;
                new.suspended_by_parent = false;
                let cascade = match action {
                    Action::Suspend => Some(Cascade::Suspend),
                    Action::Reactivate => Some(Cascade::Reactivate),
                    Action::Revoke => {
                        new.revoked_at = Some(now);
                        Some(Cascade::Revoke)
                    }
                    _ => None,
                };
                Ok(Plan {
                    new,
                    retire: None,
                    cascade,
                })
            },
        )
        .await?;
    state.index.advance(rev);
    Ok(Json(KeyView::from(&k)))
}

#[utoipa::path(post, path = "/v1/keys/{id}/suspend", tag = "keys", params(("id" = String, Path)), request_body(content = ReasonBody, description = "optional"),
    responses((status = 200, body = KeyView), (status = 409, body = crate::error::ErrorBody)), security(("bearer" = [])))]
/// Suspends an active key (and its exchanged children).
pub async fn suspend_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<KeyView>, ApiError> {
    let b: ReasonBody = optional_json(&headers, &body)?;
    status_change(&state, &caller, &id, Action::Suspend, b.reason).await
}

#[utoipa::path(post, path = "/v1/keys/{id}/reactivate", tag = "keys", params(("id" = String, Path)), request_body(content = ReasonBody, description = "optional"),
    responses((status = 200, body = KeyView), (status = 409, body = crate::error::ErrorBody)), security(("bearer" = [])))]
/// Reactivates a suspended key (and the children its suspension suspended).
pub async fn reactivate_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<KeyView>, ApiError> {
    let b: ReasonBody = optional_json(&headers, &body)?;
    status_change(&state, &caller, &id, Action::Reactivate, b.reason).await
}

#[utoipa::path(post, path = "/v1/keys/{id}/revoke", tag = "keys", params(("id" = String, Path)), request_body(content = ReasonBody, description = "optional"),
    responses((status = 200, body = KeyView), (status = 409, body = crate::error::ErrorBody)), security(("bearer" = [])))]
/// Revokes a key for good (and its children); the reason goes to the audit log.
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<KeyView>, ApiError> {
    let b: ReasonBody = optional_json(&headers, &body)?;
    status_change(&state, &caller, &id, Action::Revoke, b.reason).await
}

/// `DELETE /v1/keys/{id}` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Why (kept in the audit log).
    pub reason: Option<String>,
}

#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path), DeleteQuery),
    responses((status = 200, body = KeyView), (status = 409, body = crate::error::ErrorBody)), security(("bearer" = [])))]
/// Same as revoke.
pub async fn delete_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<Json<KeyView>, ApiError> {
    status_change(&state, &caller, &id, Action::Revoke, q.reason).await
}

/// `POST /v1/keys/{id}/rotate` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// Seconds the old secret keeps working (0 to 7 days; default 0).
    pub grace_period: Option<i64>,
}

#[utoipa::path(post, path = "/v1/keys/{id}/rotate", tag = "keys", params(("id" = String, Path)), request_body(content = RotateBody, description = "optional"),
    responses((status = 200, body = IssuedKey), (status = 409, body = crate::error::ErrorBody)), security(("bearer" = [])))]
/// Gives an active key a new secret; the old one works until the grace period ends.
pub async fn rotate_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<IssuedKey>, ApiError> {
    caller.require_scope(SCOPE_KEYS_WRITE)?;
    let b: RotateBody = optional_json(&headers, &body)?;
    let id = parse_id(&id)?;
    let grace = b.grace_period.unwrap_or(0);
    domain::check_grace(grace)?;
    let now = unix_now();
    let mut secret_out = None;
    let (k, rev) = state
        .db
        .change_key(
            id,
            caller.workspace_filter(),
            &caller.actor,
            Action::Rotate.as_str(),
            None,
            now,
            |old| {
                check_edge_admin(&caller, old.kind)?;
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
                Ok(Plan {
                    new,
                    retire,
                    cascade: None,
                })
            },
        )
        .await?;
    state.index.advance(rev);
    let secret = secret_out.ok_or_else(|| ApiError::internal("rotation produced no secret"))?;
    Ok(Json(IssuedKey {
        secret: secret.expose_secret().to_owned(),
        key: KeyView::from(&k),
    }))
}

/// `POST /v1/keys/exchange` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExchangeBody {
    /// Who or what the child is for (recorded for audit), 1 to 512 bytes.
    pub subject: String,
    /// Name of the child; default `exchanged`.
    pub name: Option<String>,
    /// Scopes (default and maximum: the parent's).
    pub scopes: Option<Vec<String>>,
    /// Allow-list (within the parent's).
    pub resources: Option<Vec<String>>,
    /// Lifetime in seconds (default 3600, at most 86400, never beyond the parent).
    pub expires_in: Option<i64>,
}

#[utoipa::path(post, path = "/v1/keys/exchange", tag = "keys", request_body = ExchangeBody,
    responses((status = 201, body = IssuedKey), (status = 403, body = crate::error::ErrorBody)), security(("bearer" = [])))]
/// A `workspace` key trades itself for a short-lived child `repo` key.
pub async fn exchange_key(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<ApiJson<ExchangeBody>, ApiError>,
) -> Result<(StatusCode, Json<IssuedKey>), ApiError> {
    if caller.kind != crate::auth::CallerKind::Key(KeyKind::Workspace) {
        return Err(ApiError::forbidden("only a workspace key can be exchanged"));
    }
    let (Some(parent_id), Some(workspace_id)) = (caller.key_id, caller.workspace_id.clone()) else {
        return Err(ApiError::forbidden("only a workspace key can be exchanged"));
    };
    let ApiJson(req) = body?;
    if req.subject.is_empty() {
        return Err(ApiError::invalid("subject must not be empty"));
    }
    domain::check_text("subject", &req.subject, domain::MAX_REASON_LEN)?;
    let name = req.name.unwrap_or_else(|| "exchanged".into());
    domain::check_name(&name)?;
    let now = unix_now();
    let scopes = domain::normalize_scopes(req.scopes.as_deref().unwrap_or(&caller.scopes))?;
    let resources =
        domain::normalize_resources(req.resources.as_deref().unwrap_or(&caller.resources))?;
    let expires_at = domain::child_expiry(now, req.expires_in, caller.expires_at)?;
    domain::check_within(
        caller.grant().as_ref(),
        &Grant {
            scopes: scopes.clone(),
            resources: resources.clone(),
            expires_at: Some(expires_at),
        },
    )?;
    let prefix = caller
        .actor
        .display_prefix
        .rsplit_once('_')
        .map(|(p, _)| p.to_owned())
        .unwrap_or_else(|| state.config.key_prefix.clone());
    let secret = generate(&prefix)?;
    let record = KeyRecord {
        id: new_key_id(),
        workspace_id,
        name,
        description: String::new(),
        kind: KeyKind::Repo,
        display_prefix: secret.display_prefix(),
        digest: *secret.digest().as_bytes(),
        hash_version: HASH_VERSION,
        scopes,
        resources,
        status: KeyStatus::Active,
        suspended_by_parent: false,
        expires_at: Some(expires_at),
        created_at: now,
        updated_at: now,
        last_used_at: None,
        usage_count: 0,
        revoked_at: None,
        created_by: caller.actor.clone(),
        owner_id: caller.owner_id.clone(),
        metadata: serde_json::json!({}),
        parent_id: Some(parent_id),
        subject: Some(req.subject.clone()),
    };
    insert(
        &state,
        &caller.actor,
        record,
        "key.exchange",
        Some(&req.subject),
        secret,
    )
    .await
}

/// `POST /v1/keys/verify` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    /// The key to check.
    pub key: String,
    /// Scopes the key must hold.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Resource the key must be allowed.
    pub resource: Option<String>,
}

/// Verification result.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VerifyResult {
    /// Whether the key passes.
    pub valid: bool,
    /// Outcome code.
    #[schema(value_type = String)]
    pub code: String,
    /// Key id (when valid).
    pub key_id: Option<String>,
    /// Owner (when valid).
    pub owner_id: Option<String>,
    /// Scopes (when valid).
    pub scopes: Option<Vec<String>>,
    /// Expiry (when valid).
    pub expires_at: Option<i64>,
}

#[utoipa::path(post, path = "/v1/keys/verify", tag = "keys", request_body = VerifyBody,
    responses((status = 200, body = VerifyResult)), security(("bearer" = [])))]
/// Checks a key for services not behind Envoy. Reads from an in-memory cache; usage is
/// written in batches.
pub async fn verify_key(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<ApiJson<VerifyBody>, ApiError>,
) -> Result<Json<VerifyResult>, ApiError> {
    caller.require_management()?;
    let ApiJson(req) = body?;
    if req.scopes.len() > keygate_protocol::scope::MAX_SCOPES_PER_KEY {
        return Err(ApiError::invalid("too many scopes"));
    }
    let now = unix_now();
    let (code, found) = match key::parse(&req.key) {
        Err(_) => (VerifyCode::Malformed, None),
        Ok(parsed) => {
            let digest: Digest = parsed.digest();
            let found = state.index.lookup(&state.db, digest.as_bytes()).await?;
            let found = found.filter(|f| {
                caller
                    .workspace_filter()
                    .is_none_or(|w| w == f.0.workspace_id)
            });
            let candidate = found.as_ref().map(|f| Candidate {
                status: f.0.status,
                expires_at: match (f.0.expires_at, f.1) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
                scopes: f.0.scopes.clone(),
                resources: f.0.resources.clone(),
            });
            (
                domain::decide(
                    candidate.as_ref(),
                    now,
                    &req.scopes,
                    req.resource.as_deref(),
                ),
                found,
            )
        }
    };
    state.metrics.verification(code);
    let code_str = serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    if code == VerifyCode::Valid
        && let Some(f) = found
    {
        state.usage.record(f.0.id, now);
        return Ok(Json(VerifyResult {
            valid: true,
            code: code_str,
            key_id: Some(format_key_id(f.0.id)),
            owner_id: Some(f.0.owner_id.clone()),
            scopes: Some(f.0.scopes.clone()),
            expires_at: f.0.expires_at,
        }));
    }
    Ok(Json(VerifyResult {
        valid: false,
        code: code_str,
        key_id: None,
        owner_id: None,
        scopes: None,
        expires_at: None,
    }))
}

/// `GET /v1/audit` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only rows about this key.
    pub key_id: Option<String>,
    /// Cursor: the `next_cursor` of the previous page.
    pub cursor: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<i64>,
}

/// A page of audit rows.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Rows, oldest first.
    pub items: Vec<crate::db::AuditRecord>,
    /// Cursor for the next page.
    pub next_cursor: Option<i64>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage)), security(("bearer" = [])))]
/// The audit log, oldest first, filterable by key.
pub async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    caller
        .require_scope(SCOPE_KEYS_READ)
        .or_else(|_| caller.require_scope(SCOPE_KEYS_WRITE))?;
    let limit = page_limit(q.limit)?;
    let key = q.key_id.as_deref().map(parse_id).transpose()?;
    if q.cursor.is_some_and(|c| c < 0) {
        return Err(ApiError::invalid("malformed cursor"));
    }
    let items = state
        .db
        .list_audit(caller.workspace_filter(), key, q.cursor, limit)
        .await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|a| a.id))
        .flatten();
    Ok(Json(AuditPage { items, next_cursor }))
}
