//! `POST /v1/keys/verify`: a service asks whether a key is valid for a scope and resource,
//! decided by [`crate::domain::decide`] on the cached key record, then held to the key's
//! resolved policy as the key set carries it: out of credits (its own or its parent's), its
//! rate limits counted exactly in the shared database and one credit spent, in one transaction
//! (`Db::verify_use`; docs/rate-limits.md).

use axum::Json;
use axum::extract::State;
use keygate_protocol::{Digest, key};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use keygate_protocol::policy::KeyState;

use crate::domain::key::format_key_id;
use crate::domain::verify_limits::{WindowCount, window_counts};
use crate::domain::{self, Candidate, VerifyCode, canary};
use crate::http::auth::Caller;
use crate::http::canary::SeenHere;
use crate::http::error::{ApiError, ApiJson};
use crate::runtime::clock::unix_now;
use crate::runtime::metrics::{Limited, LimitedBy};
use crate::runtime::state::AppState;
use crate::storage::credits::Spend;
use crate::storage::rate_windows::VerifyUse;

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
    /// The key's rate limits (a key with limits, its own, its workspace's or its parent's):
    /// on a valid answer each limit's requests left in its window; on `RATE_LIMITED` the limit
    /// that refused, with `remaining` 0 and `reset_s` until its window ends. Absent for a key
    /// without limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratelimits: Option<Vec<VerifyRateLimit>>,
}

/// One rate limit's state after a verification (as Unkey's verify reports `ratelimits`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VerifyRateLimit {
    /// The limit's name.
    pub name: String,
    /// Requests per window.
    pub limit: i64,
    /// The window, seconds (fixed windows aligned to the Unix epoch).
    pub window_s: i64,
    /// Requests left in the current window after this one (0 when refused).
    pub remaining: i64,
    /// Seconds until the current window ends (then `remaining` is `limit` again).
    pub reset_s: i64,
    /// Whether this limit refused the call.
    pub exceeded: bool,
}

fn limit_state(c: &WindowCount, remaining: i64, exceeded: bool) -> VerifyRateLimit {
    VerifyRateLimit {
        name: c.name.clone(),
        limit: c.quota,
        window_s: c.window_s,
        remaining,
        reset_s: c.reset_s,
        exceeded,
    }
}

#[utoipa::path(post, path = "/v1/keys/verify", tag = "keys", request_body = VerifyBody,
    responses((status = 200, body = VerifyResult)), security(("bearer" = [])))]
/// Checks a key for services not behind Envoy. Reads from an in-memory cache; usage is
/// written in batches.
pub async fn verify_key(
    State(state): State<AppState>,
    caller: Caller,
    seen: SeenHere,
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
            // A canary is not found, as an unknown key; its hit is raised in the background.
            if let Some(f) = found.as_ref().filter(|f| !canary::can_pass(f.key.kind)) {
                state.canaries.raise(&state.db, f.key.id, seen.0);
            }
            let found = found.filter(|f| canary::can_pass(f.key.kind)).filter(|f| {
                caller
                    .workspace_filter()
                    .is_none_or(|w| w == f.key.workspace_id)
            });
            let candidate = found.as_ref().map(|f| Candidate {
                status: f.key.status,
                expires_at: match (f.key.expires_at, f.grace_until) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
                scopes: f.key.scopes.clone(),
                resources: f.key.resources.clone(),
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
    // The key's policy as the key set carries it: out of credits when its balance or its
    // parent's is 0; its limits (own, the workspace's, bounded by the parent's) counted, and
    // one credit spent, exactly and in one transaction.
    let mut credits_remaining = None;
    let mut ratelimits = None;
    if code == VerifyCode::Valid
        && let Some(f) = &found
    {
        let charge = f.key.credits.is_some();
        if f.policy.state == KeyState::CreditsExhausted {
            code = VerifyCode::CreditsExhausted;
        } else if charge || !f.policy.limits.is_empty() {
            let counts = window_counts(&f.policy.limits, f.key.id, &f.key.owner_id, now);
            match state.db.verify_use(f.key.id, &counts, charge, now).await? {
                VerifyUse::Limited(i) => {
                    code = VerifyCode::RateLimited;
                    ratelimits = counts.get(i).map(|c| vec![limit_state(c, 0, true)]);
                }
                VerifyUse::Exhausted => code = VerifyCode::CreditsExhausted,
                VerifyUse::Allowed { remaining, spend } => {
                    if !counts.is_empty() {
                        let mut states: Vec<(usize, VerifyRateLimit)> = counts
                            .iter()
                            .zip(remaining)
                            .map(|(c, r)| (c.position, limit_state(c, r, false)))
                            .collect();
                        states.sort_by_key(|(p, _)| *p);
                        ratelimits = Some(states.into_iter().map(|(_, s)| s).collect());
                    }
                    if let Spend::Spent {
                        remaining,
                        revision,
                    } = spend
                    {
                        credits_remaining = Some(remaining);
                        if revision.is_some() {
                            state.metrics.credits_exhausted(1);
                        }
                    }
                }
            }
        }
    }
    state.metrics.verification(code);
    let code_str = serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    // Refusals by reason: kept per key and hour with the usage (`limited`, `credits_exhausted`).
    if let Some(f) = &found {
        let reason = match code {
            VerifyCode::RateLimited => Some(LimitedBy::RateLimit),
            VerifyCode::CreditsExhausted => Some(LimitedBy::Credits),
            _ => None,
        };
        if let Some(reason) = reason {
            state.usage.record_refused(f.key.id, reason, now);
            state.metrics.limited(Limited::Verify, reason, 1);
        }
    }
    if code == VerifyCode::Valid
        && let Some(f) = found
    {
        if f.key.credits.is_some() {
            state.usage.record_charged(f.key.id, now);
        } else {
            state.usage.record(f.key.id, now);
        }
        return Ok(Json(VerifyResult {
            valid: true,
            code: code_str,
            key_id: Some(format_key_id(f.key.id)),
            owner_id: Some(f.key.owner_id.clone()),
            scopes: Some(f.key.scopes.clone()),
            expires_at: f.key.expires_at,
            credits_remaining,
            ratelimits,
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
        ratelimits,
    }))
}
