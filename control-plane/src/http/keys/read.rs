//! Reading keys: `GET /v1/keys` (filtered, cursor-paginated) and `GET /v1/keys/{id}`.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::key::KeyView;
use crate::domain::key::{format_key_id, parse_key_id};
use crate::domain::{KeyKind, KeyStatus};
use crate::http::auth::{Caller, SCOPE_KEYS_READ, SCOPE_KEYS_WRITE};
use crate::http::error::{ApiError, ApiQuery};
use crate::runtime::clock::unix_now;
use crate::runtime::state::AppState;
use crate::storage::KeyFilter;

use super::{page_limit, parse_id};

/// `GET /v1/keys` query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
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
    /// Only names containing this text (case-insensitive for ASCII; at most 128 bytes).
    pub name: Option<String>,
    /// Only keys holding this scope.
    pub scope: Option<String>,
    /// Only active keys expiring within this many seconds from now (1 to 366 days).
    pub expiring_within: Option<i64>,
    /// Only keys never used (`true`).
    pub never_used: Option<bool>,
    /// Only children of this key (`key_…`: the keys exchanged from it).
    pub parent_id: Option<String>,
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

#[utoipa::path(get, path = "/v1/keys", params(ListQuery), tag = "keys",
    responses((status = 200, body = KeyPage), (status = 400, body = crate::http::error::ErrorBody)), security(("bearer" = [])))]
/// Lists keys with cursor pagination and filters.
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<KeyPage>, ApiError> {
    list_page(&state, &caller, q).await.map(Json)
}

/// A page of the keys `caller` may read (the rules of `GET /v1/keys`, shared with the console's
/// list): a workspace caller sees only its workspace, whatever the query names.
pub async fn list_page(
    state: &AppState,
    caller: &Caller,
    q: ListQuery,
) -> Result<KeyPage, ApiError> {
    caller
        .require_scope(SCOPE_KEYS_READ)
        .or_else(|_| caller.require_scope(SCOPE_KEYS_WRITE))?;
    let limit = page_limit(q.limit)?;
    let after = match q.cursor.as_deref() {
        Some(c) => Some(parse_key_id(c).ok_or_else(|| ApiError::invalid("malformed cursor"))?),
        None => None,
    };
    let name_contains = q.name.filter(|n| !n.is_empty());
    if name_contains.as_ref().is_some_and(|n| n.len() > 128) {
        return Err(ApiError::invalid("name: at most 128 bytes"));
    }
    let scope = q.scope.filter(|n| !n.is_empty());
    if scope.as_ref().is_some_and(|n| n.len() > 128) {
        return Err(ApiError::invalid("scope: at most 128 bytes"));
    }
    let expiring = match q.expiring_within {
        None => None,
        Some(s) if (1..=366 * 86_400).contains(&s) => {
            let now = unix_now();
            Some((now, now + s))
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "expiring_within: seconds, 1 to 31622400 (366 days)",
            ));
        }
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
            name_contains,
            scope,
            expiring,
            never_used: q.never_used.unwrap_or(false),
            parent: q.parent_id.as_deref().map(parse_id).transpose()?,
            after,
            limit,
        })
        .await?;
    let next_cursor = (keys.len() as i64 == limit)
        .then(|| keys.last().map(|k| format_key_id(k.id)))
        .flatten();
    Ok(KeyPage {
        items: keys.iter().map(KeyView::from).collect(),
        next_cursor,
    })
}

#[utoipa::path(get, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 200, body = KeyView), (status = 404, body = crate::http::error::ErrorBody)), security(("bearer" = [])))]
/// Shows one key.
pub async fn show_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    find_key(&state, &caller, &id).await.map(Json)
}

/// One key `caller` may read (the rules of `GET /v1/keys/{id}`, shared with the console's key
/// page): a key in another workspace is not found, as a missing one.
pub async fn find_key(state: &AppState, caller: &Caller, id: &str) -> Result<KeyView, ApiError> {
    caller
        .require_scope(SCOPE_KEYS_READ)
        .or_else(|_| caller.require_scope(SCOPE_KEYS_WRITE))?;
    let id = parse_id(id)?;
    match state.db.get_key(id).await? {
        Some(k)
            if caller
                .workspace_filter()
                .is_none_or(|w| w == k.workspace_id) =>
        {
            Ok(KeyView::from(&k))
        }
        _ => Err(ApiError::not_found("no such key")),
    }
}
