//! `POST /v1/keys/verify`: a service asks whether a key is valid for a scope and resource,
//! decided by [`crate::domain::decide`] on the cached key record.

use axum::Json;
use axum::extract::State;
use keygate_protocol::{Digest, key};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::key::format_key_id;
use crate::domain::{self, Candidate, VerifyCode};
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ApiJson};
use crate::runtime::clock::unix_now;
use crate::runtime::state::AppState;
use crate::storage::credits::Spend;

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
    /// Credits left after this verification (a key with credits; each valid verification
    /// takes one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits_remaining: Option<i64>,
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
    let (mut code, found) = match key::parse(&req.key) {
        Err(_) => (VerifyCode::Malformed, None),
        Ok(parsed) => {
            let digest: Digest = parsed.digest();
            let found = state
                .verify_cache
                .lookup(&state.db, digest.as_bytes())
                .await?;
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
    // A child is out of credits whenever its parent is (as in the key set).
    if code == VerifyCode::Valid
        && let Some(f) = &found
        && let Some(parent) = f.0.parent_id
        && state
            .db
            .get_key(parent)
            .await?
            .and_then(|p| p.credits)
            .is_some_and(|c| c.exhausted())
    {
        code = VerifyCode::CreditsExhausted;
    }
    // Credits are spent exactly: one per valid verification, in the database.
    let mut credits_remaining = None;
    if code == VerifyCode::Valid
        && let Some(f) = &found
        && f.0.credits.is_some()
    {
        match state.db.spend_credit(f.0.id, now).await? {
            Spend::Exhausted => code = VerifyCode::CreditsExhausted,
            Spend::Spent {
                remaining,
                revision,
            } => {
                credits_remaining = Some(remaining);
                if revision.is_some() {
                    state.metrics.credits_exhausted(1);
                }
            }
            Spend::Unlimited => {}
        }
    }
    state.metrics.verification(code);
    let code_str = serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    if code == VerifyCode::Valid
        && let Some(f) = found
    {
        if f.0.credits.is_some() {
            state.usage.record_charged(f.0.id, now);
        } else {
            state.usage.record(f.0.id, now);
        }
        return Ok(Json(VerifyResult {
            valid: true,
            code: code_str,
            key_id: Some(format_key_id(f.0.id)),
            owner_id: Some(f.0.owner_id.clone()),
            scopes: Some(f.0.scopes.clone()),
            expires_at: f.0.expires_at,
            credits_remaining,
        }));
    }
    Ok(Json(VerifyResult {
        valid: false,
        code: code_str,
        key_id: None,
        owner_id: None,
        scopes: None,
        expires_at: None,
        credits_remaining: None,
    }))
}
