//! The audit log: `GET /v1/audit`, filtered by key and cursor-paginated, confined to the
//! caller's workspace.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::auth::{Caller, SCOPE_KEYS_READ, SCOPE_KEYS_WRITE};
use crate::http::error::{ApiError, ApiQuery};
use crate::runtime::state::AppState;
use crate::storage::AuditRecord;

use super::keys::{page_limit, parse_id};

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
    pub items: Vec<AuditRecord>,
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
    audit_page(&state, &caller, q).await.map(Json)
}

/// A page of the audit rows `caller` may read (the rules of `GET /v1/audit`, shared with the
/// console's key page): confined to a workspace caller's workspace.
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
    let items = state
        .db
        .list_audit(caller.workspace_filter(), key, q.cursor, limit)
        .await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|a| a.id))
        .flatten();
    Ok(AuditPage { items, next_cursor })
}
