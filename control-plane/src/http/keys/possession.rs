//! `POST /v1/keys/revoke-by-possession`: anyone who found keys (in a paste, a log, a public
//! repository) may hand in up to 1,000 of them, unauthenticated, like GitHub's credential
//! revocation API. Every well-formed key that is live here (active or suspended) is revoked
//! with its exchanged children, audited (actor `revoke-by-possession`, the reporter's address in
//! the reason). The answer is the same whatever existed: `202 {"received": n}`, sent once the
//! revocations are committed, so an accepted batch survives a crash (with the database down the
//! answer is a 503, and the finder hands the keys in again). Its timing can tell a live key from another only to
//! whoever holds that key, who learns as much by using it. Rate limited per client address
//! (`--possession-revocations-per-minute`).

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use keygate_protocol::{Digest, key};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::key::Actor;
use crate::domain::lifecycle::status_plan;
use crate::domain::{Action, KeyStatus, RuleError};
use crate::http::error::{ApiError, ApiJson};
use crate::runtime::clock::unix_now;
use crate::runtime::state::AppState;
use crate::storage::StoreError;

/// Keys per request, at most.
pub const MAX_KEYS: usize = 1000;

/// Largest body: 1,000 keys of at most 256 bytes, quoted, with room to spare.
pub const BODY_LIMIT: usize = 320 * 1024;

/// `POST /v1/keys/revoke-by-possession` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PossessionBody {
    /// The keys found, 1 to 1,000.
    pub keys: Vec<String>,
}

/// The answer, whatever the keys were.
#[derive(Debug, Serialize, ToSchema)]
pub struct PossessionReceipt {
    /// How many keys were handed in.
    pub received: usize,
}

#[utoipa::path(post, path = "/v1/keys/revoke-by-possession", tag = "keys", request_body = PossessionBody,
    responses((status = 202, body = PossessionReceipt), (status = 400, body = crate::http::error::ErrorBody), (status = 429, body = crate::http::error::ErrorBody)))]
/// Revokes the live keys among those handed in; answers the same whatever existed.
pub async fn revoke_by_possession(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<std::net::SocketAddr>,
    ApiJson(body): ApiJson<PossessionBody>,
) -> Result<(StatusCode, Json<PossessionReceipt>), ApiError> {
    let ip = addr.ip();
    if let Some(wait) = state.possession_limiter.blocked(ip) {
        state.metrics.rate_limited();
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            "too many revoke-by-possession requests from this address",
        );
        e.retry_after = Some(wait.as_secs().max(1));
        return Err(e);
    }
    if body.keys.is_empty() || body.keys.len() > MAX_KEYS {
        return Err(ApiError::invalid(format!("keys: 1 to {MAX_KEYS} keys")));
    }
    state.possession_limiter.fail(ip);
    let received = body.keys.len();
    let reporter = ip.to_string();
    // Before the answer: an accepted batch is never lost to a crash. A failure is the store's
    // answer (503 when the database is unreachable); handing the same keys in again is harmless,
    // as a revoked key is no longer live.
    for k in &body.keys {
        revoke_one(&state, k, &reporter).await?;
    }
    Ok((StatusCode::ACCEPTED, Json(PossessionReceipt { received })))
}

/// Revokes `k` if it is a live key here; anything else is ignored.
async fn revoke_one(state: &AppState, k: &str, reporter: &str) -> Result<(), StoreError> {
    if key::parse(k).is_err() {
        return Ok(());
    }
    let Some((found, _)) = state.db.find_by_digest(Digest::of(k).as_bytes()).await? else {
        return Ok(());
    };
    if found.status == KeyStatus::Revoked {
        return Ok(());
    }
    let actor = Actor {
        id: "revoke-by-possession".into(),
        name: "revoke by possession".into(),
        display_prefix: String::new(),
    };
    let reason = format!("revoked by possession: handed in from {reporter}");
    let now = unix_now();
    match state
        .db
        .change_key(
            found.id,
            None,
            &actor,
            Action::Revoke.as_str(),
            Some(&reason),
            now,
            |old| status_plan(old, Action::Revoke, now).map_err(StoreError::Rule),
        )
        .await
    {
        Ok(_) | Err(StoreError::Rule(RuleError::InvalidTransition { .. })) => Ok(()),
        Err(e) => Err(e),
    }
}
