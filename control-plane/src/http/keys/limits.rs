//! A key's rate limits and credits (issue 27): parsed from the API's input at issuance and by
//! `PATCH /v1/keys/{id}/limits` (one `Db::change_key`, audited `key.limits`), a child's bounded
//! by its parent's, and a workspace's default limits (`GET`/`PUT /v1/workspaces/{id}/limits`).

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::domain::credits::{Credits, CreditsSpec, LIMITS_ACTION, child_credits};
use crate::domain::key::{KeyRecord, KeyView};
use crate::domain::lifecycle::Plan;
use crate::domain::limits::{LimitSpec, LimitView, Limits, effective_limits};
use crate::domain::names::WorkspaceId;
use crate::domain::{self, Action, RuleError};
use crate::http::auth::{Caller, SCOPE_KEYS_WRITE};
use crate::http::edges::{KeyWrite, WaitQuery, check_wait, propagation};
use crate::http::error::{ApiError, ApiJson, ApiQuery};
use crate::runtime::clock::unix_now;
use crate::runtime::state::AppState;

use super::{check_edge_admin, parse_id};

/// Reads a field that may be absent (unchanged), `null` (cleared) or a value.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `PATCH /v1/keys/{id}/limits` body; an absent field is unchanged, `null` removes it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsChange {
    /// The key's own rate limits (they replace its workspace's defaults); `null`: inherit
    /// the workspace's defaults again; `[]`: no limits, whatever the defaults.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<LimitSpec>>)]
    pub limits: Option<Option<Vec<LimitSpec>>>,
    /// The key's credits; `null`: unlimited.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<CreditsSpec>)]
    pub credits: Option<Option<CreditsSpec>>,
}

/// Parses optional limits input.
pub fn parse_limits(specs: Option<&[LimitSpec]>) -> Result<Option<Limits>, ApiError> {
    Ok(specs
        .map(Limits::parse)
        .transpose()
        .map_err(RuleError::from)?)
}

/// Parses optional credits input at `now`.
pub fn parse_credits(spec: Option<&CreditsSpec>, now: i64) -> Result<Option<Credits>, ApiError> {
    Ok(spec
        .map(|s| Credits::parse(s, now))
        .transpose()
        .map_err(RuleError::from)?)
}

/// What a parent holds: its limits (own or its workspace's defaults) and its credits.
pub struct ParentBound {
    limits: Limits,
    credits: Option<Credits>,
}

/// Reads what bounds the children of `parent` (read before the child's write; the key set
/// bounds a child by its parent's current limits whatever changed since, and the child's
/// exhaustion follows its parent's).
pub async fn parent_bound(state: &AppState, parent: &KeyRecord) -> Result<ParentBound, ApiError> {
    let ws = state.db.workspace_limits(&parent.workspace_id).await?;
    let limits = effective_limits(parent.limits.as_ref(), ws.as_ref());
    Ok(ParentBound {
        limits,
        credits: parent.credits,
    })
}

/// A child's limits and credits within its parent's: requested ones are checked, absent
/// ones are the parent's (limits) and the parent's remaining balance (credits).
pub fn bound_child(
    limits: Option<Limits>,
    credits: Option<Credits>,
    parent: &ParentBound,
) -> Result<(Option<Limits>, Option<Credits>), ApiError> {
    let limits = match limits {
        Some(l) => {
            l.check_within(&parent.limits).map_err(RuleError::from)?;
            Some(l)
        }
        None if parent.limits.as_slice().is_empty() => None,
        None => Some(parent.limits.clone()),
    };
    let credits = child_credits(credits, parent.credits.as_ref()).map_err(RuleError::from)?;
    Ok((limits, credits))
}

#[utoipa::path(patch, path = "/v1/keys/{id}/limits", tag = "keys", params(("id" = String, Path), WaitQuery),
    request_body = LimitsChange,
    responses((status = 200, body = KeyWrite), (status = 400, body = crate::http::error::ErrorBody),
              (status = 403, body = crate::http::error::ErrorBody), (status = 404, body = crate::http::error::ErrorBody)),
    security(("bearer" = [])))]
/// Changes a key's rate limits and credits (audited `key.limits`; the key set carries the
/// key's new policy, and its children's).
pub async fn change_limits(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(w): ApiQuery<WaitQuery>,
    body: Result<ApiJson<LimitsChange>, ApiError>,
) -> Result<Json<KeyWrite>, ApiError> {
    caller.require_scope(SCOPE_KEYS_WRITE)?;
    let wait = check_wait(&w)?;
    let ApiJson(req) = body?;
    let (k, revision) = limits_change(&state, &caller, &id, req).await?;
    Ok(Json(KeyWrite {
        key: KeyView::from(&k),
        revision,
        propagation: propagation(&state, &caller, revision, wait).await?,
    }))
}

/// Changes key `id`'s limits and credits for `caller` (the API's rules, shared with the
/// console): input parsed, a child's bounded by its parent's, one `change_key`.
pub async fn limits_change(
    state: &AppState,
    caller: &Caller,
    id: &str,
    req: LimitsChange,
) -> Result<(KeyRecord, i64), ApiError> {
    caller.require_scope(SCOPE_KEYS_WRITE)?;
    let id = parse_id(id)?;
    if caller.key_id == Some(id) {
        return Err(ApiError::forbidden(
            "a key cannot change its own limits or credits",
        ));
    }
    let now = unix_now();
    let limits = req.limits.map(|l| parse_limits(l.as_deref())).transpose()?;
    let credits = req
        .credits
        .map(|c| parse_credits(c.as_ref(), now))
        .transpose()?;
    let current = state
        .db
        .get_key(id)
        .await?
        .filter(|k| {
            caller
                .workspace_filter()
                .is_none_or(|w| w == k.workspace_id)
        })
        .ok_or_else(|| ApiError::not_found("no such key"))?;
    let bound = match current.parent_id {
        Some(p) => match state.db.get_key(p).await? {
            Some(parent) => Some(parent_bound(state, &parent).await?),
            None => None,
        },
        None => None,
    };
    state
        .db
        .change_key(
            id,
            caller.workspace_filter(),
            &caller.actor,
            LIMITS_ACTION,
            None,
            now,
            |old| {
                check_edge_admin(caller, old.kind)?;
                domain::transition(old.status, Action::Update)?;
                let mut new = old.clone();
                if let Some(l) = limits {
                    new.limits = l;
                }
                if let Some(c) = credits {
                    new.credits = c;
                }
                if let Some(b) = &bound {
                    let (l, c) = bound_child(new.limits.take(), new.credits, b)?;
                    new.limits = l;
                    new.credits = c;
                }
                new.updated_at = now;
                Ok::<_, ApiError>(Plan {
                    new,
                    retire: None,
                    cascade: None,
                })
            },
        )
        .await
}

/// A workspace's default rate limits.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceLimits {
    /// The workspace.
    pub workspace_id: String,
    /// The limits every key of the workspace without limits of its own holds; `null`: none.
    pub default_limits: Option<Vec<LimitView>>,
    /// The key-set revision of the change (on `PUT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
}

/// `PUT /v1/workspaces/{id}/limits` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetWorkspaceLimits {
    /// The defaults; `null` or `[]` removes them.
    pub default_limits: Option<Vec<LimitSpec>>,
}

fn workspace_for(caller: &Caller, id: String) -> Result<String, ApiError> {
    let id = WorkspaceId::parse(id)?.into_string();
    if caller.workspace_filter().is_some_and(|w| w != id) {
        return Err(ApiError::forbidden(
            "a workspace key acts only in its own workspace",
        ));
    }
    Ok(id)
}

#[utoipa::path(get, path = "/v1/workspaces/{id}/limits", tag = "keys", params(("id" = String, Path)),
    responses((status = 200, body = WorkspaceLimits), (status = 403, body = crate::http::error::ErrorBody)),
    security(("bearer" = [])))]
/// A workspace's default rate limits.
pub async fn get_workspace_limits(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WorkspaceLimits>, ApiError> {
    caller.require_management()?;
    let id = workspace_for(&caller, id)?;
    let limits = state.db.workspace_limits(&id).await?;
    Ok(Json(WorkspaceLimits {
        workspace_id: id,
        default_limits: limits.as_ref().map(Limits::views),
        revision: None,
    }))
}

#[utoipa::path(put, path = "/v1/workspaces/{id}/limits", tag = "keys", params(("id" = String, Path)),
    request_body = SetWorkspaceLimits,
    responses((status = 200, body = WorkspaceLimits), (status = 400, body = crate::http::error::ErrorBody),
              (status = 403, body = crate::http::error::ErrorBody)),
    security(("bearer" = [])))]
/// Sets a workspace's default rate limits (audited `workspace.limits`; every key inheriting
/// them changes in the key set).
pub async fn put_workspace_limits(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<ApiJson<SetWorkspaceLimits>, ApiError>,
) -> Result<Json<WorkspaceLimits>, ApiError> {
    caller.require_scope(SCOPE_KEYS_WRITE)?;
    let id = workspace_for(&caller, id)?;
    let ApiJson(req) = body?;
    let limits = parse_limits(req.default_limits.as_deref())?.filter(|l| !l.as_slice().is_empty());
    let (_, revision) = state
        .db
        .set_workspace_limits(&id, limits.as_ref(), &caller.actor, unix_now())
        .await?;
    Ok(Json(WorkspaceLimits {
        workspace_id: id,
        default_limits: limits.as_ref().map(Limits::views),
        revision: Some(revision),
    }))
}
