//! The audit log: `GET /v1/audit`, filtered by key, actor, action and time range,
//! cursor-paginated oldest or newest first, confined to the caller's workspace.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::auth::{Caller, SCOPE_KEYS_READ, SCOPE_KEYS_WRITE};
use crate::http::error::{ApiError, ApiQuery};
use crate::runtime::state::AppState;
use crate::storage::{AuditFilter, AuditRecord};

use super::keys::{page_limit, parse_id};

/// The actions the audit log records.
pub const ACTIONS: [&str; 16] = [
    "key.create",
    "key.exchange",
    "key.update",
    "key.suspend",
    "key.reactivate",
    "key.revoke",
    "key.rotate",
    crate::domain::leaks::LEAK_ACTION,
    crate::domain::credits::LIMITS_ACTION,
    crate::domain::credits::EXHAUSTED_ACTION,
    crate::domain::credits::REFILL_ACTION,
    crate::domain::credits::WORKSPACE_LIMITS_ACTION,
    "github.token.issue",
    "github.token.revoke",
    "github.repository.create",
    "github.repository.delete",
];

/// The order of an audit page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Oldest first (the default).
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

/// `GET /v1/audit` query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only rows about this key.
    pub key_id: Option<String>,
    /// Only rows by this actor: `admin` or a key id (`key_…`).
    pub actor: Option<String>,
    /// Only this action (`key.create`, `key.revoke`, …).
    pub action: Option<String>,
    /// Only rows at or after this time, unix seconds.
    pub from: Option<i64>,
    /// Only rows before this time, unix seconds.
    pub to: Option<i64>,
    /// `asc` (oldest first, default) or `desc` (newest first).
    #[param(inline)]
    pub order: Option<Order>,
    /// Cursor: the `next_cursor` of the previous page.
    pub cursor: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<i64>,
}

/// A page of audit rows.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Rows, in the order asked for.
    pub items: Vec<AuditRecord>,
    /// Cursor for the next page.
    pub next_cursor: Option<i64>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = crate::http::error::ErrorBody)),
    security(("bearer" = [])))]
/// The audit log, filterable by key, actor, action and time.
pub async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    audit_page(&state, &caller, q).await.map(Json)
}

/// A page of the audit rows `caller` may read (the rules of `GET /v1/audit`, shared with the
/// console's key and audit pages): confined to a workspace caller's workspace.
pub async fn audit_page(
    state: &AppState,
    caller: &Caller,
    q: AuditQuery,
) -> Result<AuditPage, ApiError> {
    caller
        .require_scope(SCOPE_KEYS_READ)
        .or_else(|_| caller.require_scope(SCOPE_KEYS_WRITE))?;
    let limit = page_limit(q.limit)?;
    let key = q.key_id.as_deref().map(parse_id).transpose()?;
    if q.cursor.is_some_and(|c| c < 0) {
        return Err(ApiError::invalid("malformed cursor"));
    }
    if let Some(a) = &q.actor
        && a != "admin"
        && crate::domain::key::parse_key_id(a).is_none()
    {
        return Err(ApiError::invalid(
            "actor: `admin` or a key id (key_<32 lowercase hex>)",
        ));
    }
    if let Some(a) = &q.action
        && !ACTIONS.contains(&a.as_str())
    {
        return Err(ApiError::invalid(format!(
            "action: one of {}",
            ACTIONS.join(", ")
        )));
    }
    if q.from.is_some_and(|t| t < 0) || q.to.is_some_and(|t| t < 0) {
        return Err(ApiError::invalid("from and to are unix seconds"));
    }
    if let (Some(f), Some(t)) = (q.from, q.to)
        && f >= t
    {
        return Err(ApiError::invalid("`from` must be before `to`"));
    }
    let items = state
        .db
        .list_audit(&AuditFilter {
            workspace: caller.workspace_filter(),
            key,
            actor: q.actor.as_deref(),
            action: q.action.as_deref(),
            from: q.from,
            to: q.to,
            newest_first: q.order == Some(Order::Desc),
            cursor: q.cursor,
            limit,
        })
        .await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|a| a.id))
        .flatten();
    Ok(AuditPage { items, next_cursor })
}
