//! Issuing keys: `POST /v1/keys` (create) and `POST /v1/keys/exchange` (a workspace key
//! exchanged for a short-lived child `repo` key). The secret is in the answer only.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use keygate_protocol::key;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::domain::credits::CreditsSpec;
use crate::domain::key::KeyRecord;
use crate::domain::limits::LimitSpec;
use crate::domain::names::{KeyName, OwnerId, WorkspaceId};
use crate::domain::{self, Grant, KeyKind, KeyStatus};
use crate::http::auth::{Caller, SCOPE_KEYS_WRITE};
use crate::http::edges::{WaitQuery, check_wait, propagation};
use crate::http::error::{ApiError, ApiJson, ApiQuery};
use crate::runtime::clock::unix_now;
use crate::runtime::state::AppState;

use super::limits::{bound_child, parent_bound, parse_credits, parse_limits};
use super::{
    DEFAULT_WORKSPACE, HASH_VERSION, IssuedKey, check_edge_admin, generate, insert, new_key_id,
};

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
    /// Its own rate limits (replacing its workspace's defaults; `[]`: none); default: the
    /// workspace's defaults.
    #[serde(default)]
    pub limits: Option<Vec<LimitSpec>>,
    /// Its credits; default: unlimited.
    #[serde(default)]
    pub credits: Option<CreditsSpec>,
}

#[utoipa::path(post, path = "/v1/keys", request_body = CreateKey, tag = "keys", params(WaitQuery),
    responses((status = 201, body = IssuedKey), (status = 400, body = crate::http::error::ErrorBody),
              (status = 401, body = crate::http::error::ErrorBody), (status = 403, body = crate::http::error::ErrorBody)),
    security(("bearer" = [])))]
/// Issues a key; the secret is in this response only.
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(w): ApiQuery<WaitQuery>,
    body: Result<ApiJson<CreateKey>, ApiError>,
) -> Result<(StatusCode, Json<IssuedKey>), ApiError> {
    caller.require_scope(SCOPE_KEYS_WRITE)?;
    let wait = check_wait(&w)?;
    let ApiJson(req) = body?;
    let mut issued = issue_key(&state, &caller, req).await?;
    issued.propagation = propagation(&state, &caller, issued.revision, wait).await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

/// Issues a key for `caller` (the rules of `POST /v1/keys`, shared with the console's create
/// form): scope, edge-admin, input, workspace and non-escalation checks, then one insert.
pub async fn issue_key(
    state: &AppState,
    caller: &Caller,
    req: CreateKey,
) -> Result<IssuedKey, ApiError> {
    caller.require_scope(SCOPE_KEYS_WRITE)?;
    check_edge_admin(caller, req.kind.unwrap_or(KeyKind::Workspace))?;
    let now = unix_now();
    let name = KeyName::parse(req.name)?;
    domain::check_text("description", &req.description, domain::MAX_DESCRIPTION_LEN)?;
    let scopes = domain::normalize_scopes(&req.scopes)?;
    let resources = domain::normalize_resources(&req.resources)?;
    let expires_at = domain::resolve_expiry(now, req.expires_in, req.expires_at)?;
    let owner_id = OwnerId::parse(req.owner_id.unwrap_or_else(|| caller.owner_id.clone()))?;
    let metadata = req.metadata.unwrap_or_else(|| serde_json::json!({}));
    domain::check_metadata(&metadata)?;
    let limits = parse_limits(req.limits.as_deref())?;
    let credits = parse_credits(req.credits.as_ref(), now)?;
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
    let workspace_id = WorkspaceId::parse(workspace_id)?;
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
    if prefix == crate::runtime::state::ADMIN_KEY_PREFIX {
        return Err(ApiError::invalid("prefix is reserved"));
    }
    let secret = generate(&prefix)?;
    let record = KeyRecord {
        id: new_key_id(),
        workspace_id: workspace_id.into_string(),
        name: name.into_string(),
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
        owner_id: owner_id.into_string(),
        metadata,
        parent_id: None,
        subject: None,
        limits,
        credits,
    };
    insert(state, &caller.actor, record, "key.create", None, secret).await
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
    /// Rate limits: each of the parent's, at no higher rate (default: the parent's).
    #[serde(default)]
    pub limits: Option<Vec<LimitSpec>>,
    /// Credits: at most the parent's remaining balance (default: that balance, when the
    /// parent has one).
    #[serde(default)]
    pub credits: Option<CreditsSpec>,
}

#[utoipa::path(post, path = "/v1/keys/exchange", tag = "keys", request_body = ExchangeBody,
    responses((status = 201, body = IssuedKey), (status = 403, body = crate::http::error::ErrorBody)), security(("bearer" = [])))]
/// A `workspace` key trades itself for a short-lived child `repo` key.
pub async fn exchange_key(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<ApiJson<ExchangeBody>, ApiError>,
) -> Result<(StatusCode, Json<IssuedKey>), ApiError> {
    if caller.kind != crate::http::auth::CallerKind::Key(KeyKind::Workspace) {
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
    let name = KeyName::parse(req.name.unwrap_or_else(|| "exchanged".into()))?;
    let now = unix_now();
    let scopes = domain::normalize_scopes(req.scopes.as_deref().unwrap_or(&caller.scopes))?;
    let resources =
        domain::normalize_resources(req.resources.as_deref().unwrap_or(&caller.resources))?;
    let expires_at = domain::child_expiry(now, req.expires_in, caller.expires_at)?;
    let parent = state
        .db
        .get_key(parent_id)
        .await?
        .ok_or_else(|| ApiError::forbidden("only a workspace key can be exchanged"))?;
    let (limits, credits) = bound_child(
        parse_limits(req.limits.as_deref())?,
        parse_credits(req.credits.as_ref(), now)?,
        &parent_bound(&state, &parent).await?,
    )?;
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
        name: name.into_string(),
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
        limits,
        credits,
    };
    let issued = insert(
        &state,
        &caller.actor,
        record,
        "key.exchange",
        Some(&req.subject),
        secret,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(issued)))
}
