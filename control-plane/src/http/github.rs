//! The broker's HTTP endpoints:
//!
//! - `POST /api/github/tokens`: the seed's internal API, unchanged (camelCase, authenticated
//!   by `KEYGATE_INTERNAL_API_KEY`, the seed's statuses), plus `expiresAt`;
//! - `POST /v1/github/tokens` and `DELETE /v1/github/tokens` for Keygate keys with the
//!   `github:tokens` scope;
//! - `POST /v1/repositories`, `GET /v1/repositories`, `DELETE /v1/repositories/{id}`: the
//!   registry (scope `github:repositories`).
//!
//! Every brokered token and registry change is an audit event carrying the token's SHA-256,
//! never the token.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use keygate_protocol::{Digest, scope};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::KeyKind;
use crate::domain::key::Actor;
use crate::github::client::RevokeOutcome;
use crate::github::{Brokered, GithubError, Permissions, Secret, TokenRequest};
use crate::http::auth::{Caller, CallerKind, write_audit};
use crate::http::error::{ApiError, ApiJson, ApiQuery};
use crate::runtime::clock::unix_now;
use crate::runtime::state::AppState;
use crate::storage::AuditEntry;
use crate::storage::github_repos::{self as store, Repository};

/// Scope a key needs to obtain GitHub tokens.
pub const SCOPE_GITHUB_TOKENS: &str = "github:tokens";
/// Scope a key needs, besides `github:tokens`, for `write` tokens.
pub const SCOPE_GITHUB_WRITE: &str = "github:write";
/// Scope a key needs to manage the repository registry.
pub const SCOPE_GITHUB_REPOSITORIES: &str = "github:repositories";
/// Longest token accepted for revocation, in bytes.
const MAX_TOKEN_LEN: usize = 8192;

/// The broker's routes, to merge into the service's router.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/github/tokens", post(seed_token))
        .route("/v1/github/tokens", post(mint_token).delete(revoke_token))
        .route(
            "/v1/repositories",
            post(create_repository).get(list_repositories),
        )
        .route("/v1/repositories/{id}", delete(delete_repository))
}

impl From<GithubError> for ApiError {
    fn from(e: GithubError) -> Self {
        let msg = e.to_string();
        match e {
            GithubError::NotInstalled { .. } => {
                Self::new(StatusCode::BAD_REQUEST, "GITHUB_APP_NOT_INSTALLED", msg)
            }
            GithubError::Unprocessable { message } => {
                Self::new(StatusCode::FORBIDDEN, "GITHUB_PERMISSION_DENIED", message)
            }
            GithubError::Forbidden { .. } => {
                Self::new(StatusCode::FORBIDDEN, "GITHUB_FORBIDDEN", msg)
            }
            GithubError::RateLimited { retry_after, .. } => {
                let mut err =
                    Self::new(StatusCode::SERVICE_UNAVAILABLE, "GITHUB_RATE_LIMITED", msg);
                err.retry_after = Some(retry_after.max(1));
                err
            }
            GithubError::Network(_) | GithubError::Upstream { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, "GITHUB_UNAVAILABLE", msg)
            }
            GithubError::AppAuth { .. }
            | GithubError::UnknownApp(_)
            | GithubError::NotConfigured
            | GithubError::Signing { .. } => {
                tracing::error!(error = %msg, "GitHub App configuration problem");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "GITHUB_CONFIGURATION",
                    msg,
                )
            }
        }
    }
}

fn sha256_hex(token: &Secret) -> String {
    Digest::of(token.expose()).to_hex()
}

/// Brokers a token for a registered repository and remembers the installation id.
async fn broker_for(
    state: &AppState,
    repo: &Repository,
    permissions: &Permissions,
) -> Result<Brokered, ApiError> {
    let hint = repo.installation_id.and_then(|i| u64::try_from(i).ok());
    let req = TokenRequest {
        app: Some(&repo.app),
        owner: &repo.organization,
        repo: &repo.repository,
        permissions,
        installation_hint: hint,
    };
    let brokered = state.github.token(req).await?;
    if hint != Some(brokered.installation_id)
        && let Ok(id) = i64::try_from(brokered.installation_id)
    {
        store::set_installation(&state.db, repo.id, id).await?;
    }
    Ok(brokered)
}

async fn audit_token(
    state: &AppState,
    actor: &Actor,
    caller: Option<&Caller>,
    repo: &Repository,
    b: &Brokered,
) -> Result<(), ApiError> {
    let after = json!({
        "repository": repo.full_name(),
        "repository_id": repo.id,
        "app": b.app,
        "installation_id": b.installation_id,
        "permissions": b.token.permissions,
        "expires_at": b.token.expires_at,
        "token_sha256": sha256_hex(&b.token.token),
        "cached": b.cache_hit,
    });
    write_audit(
        state,
        &AuditEntry {
            at: unix_now(),
            workspace_id: caller.and_then(|c| c.workspace_id.as_deref()),
            actor,
            action: "github.token.issue",
            key_id: caller.and_then(|c| c.key_id),
            before: None,
            after: Some(after),
            reason: None,
        },
    )
    .await
}

/// The seed's error statuses, in the API's error shape.
fn seed_error(status: StatusCode, code: &'static str, message: &str) -> ApiError {
    ApiError::new(status, code, message)
}

/// `POST /api/github/tokens`: the seed's internal endpoint.
async fn seed_token(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let v: Value = serde_json::from_slice(&body).map_err(|e| {
        seed_error(
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
            &format!("body is not JSON: {e}"),
        )
    })?;
    let Some(expected) = state.github.config().internal_api_key.as_deref() else {
        return Err(seed_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "CONFIGURATION",
            "the internal API key is not configured (KEYGATE_INTERNAL_API_KEY)",
        ));
    };
    let given = v
        .get("internalApiKey")
        .and_then(Value::as_str)
        .unwrap_or("");
    // Digests have a fixed length, and their comparison is constant-time.
    if given.is_empty() || Digest::of(given) != Digest::of(expected) {
        return Err(seed_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "invalid internal API key",
        ));
    }
    let repository_id = match v.get("repositoryId") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_i64().ok_or_else(|| {
            seed_error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "repositoryId must be an integer",
            )
        })?),
        Some(Value::String(s)) => Some(s.trim().parse::<i64>().map_err(|_| {
            seed_error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "repositoryId must be an integer",
            )
        })?),
        Some(_) => {
            return Err(seed_error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "repositoryId must be an integer",
            ));
        }
    };
    let name = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let repo = match (
        repository_id,
        name("organizationName"),
        name("repositoryName"),
    ) {
        (Some(id), _, _) => store::get(&state.db, id).await?,
        (None, Some(org), Some(repo)) => store::find(&state.db, org, repo).await?,
        _ => {
            return Err(seed_error(
                StatusCode::BAD_REQUEST,
                "MISSING_PARAMETERS",
                "give repositoryId, or both organizationName and repositoryName",
            ));
        }
    };
    let Some(repo) = repo else {
        return Err(seed_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "repository not found",
        ));
    };
    let permissions = state.github.config().internal_permissions.clone();
    let brokered = broker_for(&state, &repo, &permissions).await?;
    let app_jwt = state.github.app_jwt(Some(&repo.app))?;
    let actor = Actor {
        id: "internal-api".into(),
        name: "internal API key".into(),
        display_prefix: String::new(),
    };
    audit_token(&state, &actor, None, &repo, &brokered).await?;
    Ok(Json(json!({
        "githubAppToken": app_jwt.expose(),
        "installationToken": brokered.token.token.expose(),
        "organizationName": repo.organization,
        "repositoryName": repo.repository,
        "expiresAt": brokered.token.expires_at_text,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MintBody {
    /// `organization/repository`.
    repository: Option<String>,
    /// Registry id.
    repository_id: Option<i64>,
    /// `read` (default) or `write`.
    permission: Option<String>,
}

/// Allows the admin, and `workspace` or `repo` keys holding `github:tokens`.
fn require_tokens_scope(caller: &Caller) -> Result<(), ApiError> {
    match caller.kind {
        CallerKind::Admin => Ok(()),
        CallerKind::Key(KeyKind::Workspace | KeyKind::Repo)
            if caller.has_scope(SCOPE_GITHUB_TOKENS) =>
        {
            Ok(())
        }
        CallerKind::Key(KeyKind::Edge) => Err(ApiError::forbidden(
            "an `edge` key cannot obtain GitHub tokens",
        )),
        CallerKind::Key(_) => Err(ApiError::forbidden(format!(
            "this key lacks the `{SCOPE_GITHUB_TOKENS}` scope"
        ))),
    }
}

fn allowed(caller: &Caller, full_name: &str) -> bool {
    if caller.is_admin() {
        return true;
    }
    let lc: Vec<String> = caller
        .resources
        .iter()
        .map(|r| r.to_ascii_lowercase())
        .collect();
    let on_list = !lc.is_empty() && scope::resource_allowed(&lc, &full_name.to_ascii_lowercase());
    match caller.kind {
        // A repo key reaches only what its allow-list names; an empty list names nothing.
        CallerKind::Key(KeyKind::Repo) => on_list,
        _ => lc.is_empty() || on_list,
    }
}

/// `POST /v1/github/tokens`: an installation token for a registered repository.
async fn mint_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<MintBody>,
) -> Result<Response, ApiError> {
    require_tokens_scope(&caller)?;
    let write = match body.permission.as_deref().unwrap_or("read") {
        "read" => false,
        "write" => true,
        other => {
            return Err(ApiError::invalid(format!(
                "permission `{other}` must be read or write"
            )));
        }
    };
    if write && !caller.has_scope(SCOPE_GITHUB_WRITE) {
        return Err(ApiError::forbidden(format!(
            "`write` tokens need the `{SCOPE_GITHUB_WRITE}` scope"
        )));
    }
    let repo = match (body.repository_id, body.repository.as_deref()) {
        (Some(id), None) => store::get(&state.db, id).await?,
        (None, Some(full)) => {
            let (org, name) = full
                .split_once('/')
                .filter(|(o, n)| store::valid_name(o) && store::valid_name(n))
                .ok_or_else(|| ApiError::invalid("repository must be `organization/name`"))?;
            store::find(&state.db, org, name).await?
        }
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of repository or repository_id",
            ));
        }
    };
    let Some(repo) = repo else {
        return Err(ApiError::not_found("repository not registered"));
    };
    if !allowed(&caller, &repo.full_name()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "RESOURCE_NOT_ALLOWED",
            format!("{} is not on this key's allow-list", repo.full_name()),
        ));
    }
    let cfg = state.github.config();
    let permissions = if write {
        cfg.write_permissions.clone()
    } else {
        cfg.read_permissions.clone()
    };
    let brokered = broker_for(&state, &repo, &permissions).await?;
    audit_token(&state, &caller.actor, Some(&caller), &repo, &brokered).await?;
    let mut out = json!({
        "token": brokered.token.token.expose(),
        "expires_at": brokered.token.expires_at_text,
        "permissions": brokered.token.permissions,
        "repository": repo.full_name(),
        "repository_id": repo.id,
        "installation_id": brokered.installation_id,
        "app": brokered.app,
    });
    if cfg.expose_app_jwt {
        out["app_jwt"] = json!(state.github.app_jwt(Some(&repo.app))?.expose());
    }
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    token: String,
    /// The App whose GitHub serves the token (default: the first).
    app: Option<String>,
}

/// `DELETE /v1/github/tokens`: revokes a brokered token at GitHub.
async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<RevokeBody>,
) -> Result<Response, ApiError> {
    require_tokens_scope(&caller)?;
    if body.token.is_empty()
        || body.token.len() > MAX_TOKEN_LEN
        || body.token.bytes().any(|b| !b.is_ascii_graphic())
    {
        return Err(ApiError::invalid(
            "token is empty, too long or has invalid characters",
        ));
    }
    let token = Secret::new(body.token);
    let outcome = state.github.revoke(body.app.as_deref(), &token).await?;
    let status = match outcome {
        RevokeOutcome::Revoked => "revoked",
        RevokeOutcome::AlreadyInvalid => "already_revoked",
    };
    write_audit(
        &state,
        &AuditEntry {
            at: unix_now(),
            workspace_id: caller.workspace_id.as_deref(),
            actor: &caller.actor,
            action: "github.token.revoke",
            key_id: caller.key_id,
            before: None,
            after: Some(json!({"token_sha256": sha256_hex(&token), "status": status})),
            reason: None,
        },
    )
    .await?;
    Ok(Json(json!({ "status": status })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRepositoryBody {
    organization: String,
    repository: String,
    app: Option<String>,
}

async fn audit_registry(
    state: &AppState,
    caller: &Caller,
    action: &str,
    before: Option<Value>,
    after: Option<Value>,
) -> Result<(), ApiError> {
    write_audit(
        state,
        &AuditEntry {
            at: unix_now(),
            workspace_id: caller.workspace_id.as_deref(),
            actor: &caller.actor,
            action,
            key_id: caller.key_id,
            before,
            after,
            reason: None,
        },
    )
    .await
}

/// `POST /v1/repositories`.
async fn create_repository(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateRepositoryBody>,
) -> Result<Response, ApiError> {
    caller.require_scope(SCOPE_GITHUB_REPOSITORIES)?;
    let org = body.organization.trim();
    let name = body.repository.trim();
    if !store::valid_name(org) || !store::valid_name(name) {
        return Err(ApiError::invalid(format!(
            "organization and repository must be 1-{} of [A-Za-z0-9-_.]",
            store::MAX_NAME_LEN
        )));
    }
    let app = state
        .github
        .app(body.app.as_deref())
        .map_err(|e| ApiError::invalid(e.to_string()))?
        .name
        .clone();
    let Some(repo) = store::insert(&state.db, org, name, &app, unix_now()).await? else {
        return Err(ApiError::conflict(format!(
            "{org}/{name} is already registered"
        )));
    };
    audit_registry(
        &state,
        &caller,
        "github.repository.create",
        None,
        Some(json!(repo)),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(repo)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    after: Option<i64>,
    limit: Option<i64>,
}

/// `GET /v1/repositories?after=<id>&limit=<n>`.
async fn list_repositories(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let (items, next) = repository_page(&state, &caller, q.after, q.limit).await?;
    Ok(Json(json!({ "items": items, "next_cursor": next })).into_response())
}

/// A page of registered repositories after the id `after`, and the next page's cursor (the
/// rules of `GET /v1/repositories`, shared with the console's GitHub page).
pub async fn repository_page(
    state: &AppState,
    caller: &Caller,
    after: Option<i64>,
    limit: Option<i64>,
) -> Result<(Vec<store::Repository>, Option<i64>), ApiError> {
    caller.require_scope(SCOPE_GITHUB_REPOSITORIES)?;
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be 1-1000"));
    }
    if after.is_some_and(|a| a < 0) {
        return Err(ApiError::invalid("malformed cursor"));
    }
    let items = store::list(&state.db, after.unwrap_or(0), limit).await?;
    let next = (items.len() as i64 == limit)
        .then(|| items.last().map(|r| r.id))
        .flatten();
    Ok((items, next))
}

/// `DELETE /v1/repositories/{id}`.
async fn delete_repository(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require_scope(SCOPE_GITHUB_REPOSITORIES)?;
    let id: i64 = id
        .parse()
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| ApiError::invalid("repository id must be a positive integer"))?;
    let Some(before) = store::get(&state.db, id).await? else {
        return Err(ApiError::not_found("repository not registered"));
    };
    if !store::delete(&state.db, id).await? {
        return Err(ApiError::not_found("repository not registered"));
    }
    audit_registry(
        &state,
        &caller,
        "github.repository.delete",
        Some(json!(before)),
        None,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
