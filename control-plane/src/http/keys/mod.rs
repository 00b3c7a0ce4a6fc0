//! Key endpoints (`/v1/keys…`): issuance ([`issue`]: create, exchange), reads ([`read`]: list,
//! show), lifecycle changes ([`change`]: update, suspend, reactivate, revoke, delete, rotate)
//! and verification ([`verify`]); here, what they share. Handlers validate, call the pure
//! rules in [`crate::domain`], then one store call that is one transaction.

pub mod change;
pub mod issue;
pub mod limits;
pub mod possession;
pub mod read;
pub mod usage;
pub mod verify;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use keygate_protocol::key;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::KeyKind;
use crate::domain::key::{Actor, KeyRecord, audit_view, parse_key_id};
pub use crate::domain::key::{ActorView, KeyView};
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::runtime::state::AppState;
use crate::storage::AuditEntry;

/// Hash algorithm version of stored digests: 1 = SHA-256 of the whole key string.
pub const HASH_VERSION: i64 = 1;

/// Workspace used when the admin names none.
pub const DEFAULT_WORKSPACE: &str = "default";

/// A new key's secret (shown once) and record.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IssuedKey {
    /// The full secret. It is not stored and cannot be shown again.
    pub secret: String,
    /// The record.
    pub key: KeyView,
    /// The key-set revision this write produced.
    #[serde(default)]
    pub revision: i64,
    /// With `?wait=`: which edges have applied `revision`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub propagation: Option<crate::runtime::edges::Propagation>,
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

async fn insert(
    state: &AppState,
    actor: &Actor,
    record: KeyRecord,
    action: &str,
    reason: Option<&str>,
    secret: key::SecretKey,
) -> Result<IssuedKey, ApiError> {
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
    let revision = state.db.insert_key(&record, &audit).await?;
    state.metrics.key_created();
    Ok(IssuedKey {
        secret: secret.expose_secret().to_owned(),
        key: KeyView::from(&record),
        revision,
        propagation: None,
    })
}

/// A list's page size: default 100, 1 to 1000.
pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(100),
        Some(l) if (1..=1000).contains(&l) => Ok(l),
        Some(_) => Err(ApiError::invalid("limit must be between 1 and 1000")),
    }
}

/// Parses a key id from a path (`key_<32 lowercase hex>`).
pub fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    parse_key_id(id)
        .ok_or_else(|| ApiError::invalid("malformed key id (expected key_<32 lowercase hex>)"))
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
