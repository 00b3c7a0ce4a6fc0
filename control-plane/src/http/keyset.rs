//! The edge's endpoints: the key-set sync feed (`GET /v1/keyset`, with long-poll) and the
//! usage intake (`POST /v1/usage`).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keygate_protocol::Digest;
use keygate_protocol::wire::{self, Delta, Snapshot};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::key::parse_key_id;
use crate::http::auth::Caller;
use crate::http::edges::{Peer, parse_report, record};
use crate::http::error::{ApiError, ApiJson, ApiQuery};
use crate::runtime::clock::unix_now;
use crate::runtime::metrics::{KeysetAnswer, Limited, LimitedBy};
use crate::runtime::state::AppState;
use crate::storage::keyset::{SetEntry, SetRead};
use crate::storage::usage::UsageRow;

/// Longest long-poll wait, seconds.
pub const MAX_WAIT_SECS: u64 = 30;
/// Response header carrying the revision.
pub const REVISION_HEADER: &str = "x-keygate-revision";

/// `GET /v1/keyset` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct KeysetQuery {
    /// The reader's revision; absent for a snapshot.
    pub since: Option<u64>,
    /// Long-poll: wait up to this many seconds (at most 30) for a change.
    pub wait: Option<u64>,
}

fn revision_header(resp: &mut Response, revision: u64) {
    if let Ok(v) = HeaderValue::from_str(&revision.to_string()) {
        resp.headers_mut().insert(REVISION_HEADER, v);
    }
}

#[utoipa::path(get, path = "/v1/keyset", tag = "edge", params(KeysetQuery),
    responses((status = 200, description = "application/vnd.keygate.keyset snapshot or delta", content_type = "application/vnd.keygate.keyset"),
              (status = 304, description = "long-poll timeout: no change"),
              (status = 403, body = crate::http::error::ErrorBody)),
    security(("bearer" = [])))]
/// The key-set feed: a delta from `since` (collapsed per digest), or a snapshot when `since`
/// is absent, older than the retained change log, or the delta would be bigger. With `wait`
/// it answers as soon as the revision moves past `since`, or 304 at the timeout. The
/// filter's `keygate-edge-*` headers (its id, node, applied revision…) go to the edge registry.
/// A reader whose `Accept` does not name `version=2` gets format version 1: no canaries, no
/// keys out of credits, no rate limits; one that names `version=2` but not `version=3` gets
/// version 2, its owner pools unscoped.
pub async fn get_keyset(
    State(state): State<AppState>,
    caller: Caller,
    peer: Peer,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<KeysetQuery>,
) -> Result<Response, ApiError> {
    caller.require_edge()?;
    let wait = q.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECS {
        return Err(ApiError::invalid(format!(
            "wait is at most {MAX_WAIT_SECS} seconds"
        )));
    }
    let since = q
        .since
        .map(|s| i64::try_from(s).map_err(|_| ApiError::invalid("since is too large")))
        .transpose()?;
    // The edge's report (who it is, what it holds): recorded as the call arrives, and again
    // when a long-poll ends (its last-seen time), within the registry's write bound.
    let report = parse_report(&headers, since, &caller, peer)?;
    if let Some(r) = &report {
        record(&state, r).await;
    }
    if let (Some(since), true) = (since, wait > 0) {
        let mut rx = state.db.subscribe_revisions();
        let mut draining = state.drain.subscribe();
        state.db.observe_revision(state.db.revision().await?);
        if *rx.borrow_and_update() <= since {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
            let moved = loop {
                tokio::select! {
                    changed = tokio::time::timeout_at(deadline, rx.changed()) => match changed {
                        Ok(Ok(())) if *rx.borrow_and_update() > since => break true,
                        Ok(Ok(())) => continue,
                        Ok(Err(_)) | Err(_) => break false,
                    },
                    // Shutting down: answer now (304 unless a change landed) so the graceful
                    // shutdown is not held up; the reader polls again, maybe another replica.
                    _ = draining.wait_for(|d| *d) => break false,
                }
            };
            if let Some(r) = &report {
                record(&state, r).await;
            }
            if !moved {
                // Re-check the database once: another replica's write may not have been
                // announced yet.
                if state.db.revision().await? <= since {
                    state.metrics.keyset(KeysetAnswer::NotModified);
                    let mut resp = StatusCode::NOT_MODIFIED.into_response();
                    revision_header(&mut resp, since as u64);
                    return Ok(resp);
                }
            }
        }
    }
    // A filter that does not say it reads version 2 (policies) gets what version 1 can hold, and
    // one that does not say it reads version 3 gets its owner pools unscoped, as it counted them
    // before (`keygate_protocol::wire::compat`): a set must never become unreadable for old edges.
    let reads = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(wire::accepted_version)
        .unwrap_or(1);
    let read = state.db.read_set(since, unix_now()).await?;
    // Nothing changed since the reader's revision: an empty delta (base == revision) cannot be
    // encoded, so answer as a long poll's timeout does.
    if let SetRead::Delta { base, revision, .. } = &read
        && base == revision
    {
        state.metrics.keyset(KeysetAnswer::NotModified);
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        revision_header(&mut resp, *revision as u64);
        return Ok(resp);
    }
    let (revision, body, kind) = match read {
        SetRead::Snapshot { revision, entries } => {
            let mut snap = Snapshot {
                revision: revision as u64,
                entries: entries.into_iter().map(SetEntry::into_wire).collect(),
            };
            // A version-1 reader loses every policy anyway: one pass, never two.
            if reads < 2 {
                snap = snap.for_v1_reader();
            } else if reads < 3 {
                snap = snap.for_v2_reader();
            }
            (revision, snap.encode(), KeysetAnswer::Snapshot)
        }
        SetRead::Delta {
            base,
            revision,
            upserts,
            removals,
        } => {
            let mut delta = Delta {
                base_revision: base as u64,
                revision: revision as u64,
                upserts: upserts.into_iter().map(SetEntry::into_wire).collect(),
                removals: removals.into_iter().map(Digest::from_bytes).collect(),
            };
            // A version-1 reader loses every policy anyway: one pass, never two.
            if reads < 2 {
                delta = delta.for_v1_reader();
            } else if reads < 3 {
                delta = delta.for_v2_reader();
            }
            (revision, delta.encode(), KeysetAnswer::Delta)
        }
    };
    let body = body.map_err(ApiError::internal)?;
    state.db.observe_revision(revision);
    state.metrics.keyset(kind);
    let mut resp = ([(header::CONTENT_TYPE, wire::CONTENT_TYPE)], body).into_response();
    revision_header(&mut resp, revision as u64);
    Ok(resp)
}

/// Largest usage batch, entries.
pub const MAX_USAGE_ENTRIES: usize = 10_000;

/// One key's usage in a batch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageEntry {
    /// `key_<32 hex>`.
    pub key_id: String,
    /// Uses since the last report.
    pub count: u64,
    /// Last use, unix seconds.
    pub last_used_at: u64,
    /// Requests the edge refused by a rate limit (`429 rate_limited`) since the last report;
    /// absent means 0. Kept per hour (`usage_hourly.limited`).
    #[serde(default)]
    pub limited: u64,
    /// Requests the edge refused because the key's credits were used up
    /// (`429 credits_exhausted`) since the last report; absent means 0 (edges built before it
    /// leave it out). Kept per hour (`usage_hourly.credits_exhausted`); `limited` keeps its
    /// meaning and never includes these.
    #[serde(default)]
    pub credits_exhausted: u64,
}

/// `POST /v1/usage` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageBatch {
    /// Unique per batch; a retried batch with the same id counts once.
    pub batch_id: String,
    /// Per-key counts.
    pub entries: Vec<UsageEntry>,
}

/// Result of a usage report.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageAck {
    /// False when this batch id was already applied.
    pub applied: bool,
}

#[utoipa::path(post, path = "/v1/usage", tag = "edge", request_body = UsageBatch,
    responses((status = 200, body = UsageAck), (status = 400, body = crate::http::error::ErrorBody)), security(("bearer" = [])))]
/// The filter's batched usage report; idempotent per `batch_id`.
pub async fn post_usage(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<ApiJson<UsageBatch>, ApiError>,
) -> Result<Json<UsageAck>, ApiError> {
    caller.require_edge()?;
    let ApiJson(b) = body?;
    if b.batch_id.is_empty() || b.batch_id.len() > 128 {
        return Err(ApiError::invalid("batch_id must be 1 to 128 bytes"));
    }
    if b.entries.len() > MAX_USAGE_ENTRIES {
        return Err(ApiError::invalid(format!(
            "at most {MAX_USAGE_ENTRIES} entries per batch"
        )));
    }
    let now = unix_now();
    let mut rows = Vec::with_capacity(b.entries.len());
    for e in &b.entries {
        let id = parse_key_id(&e.key_id).ok_or_else(|| {
            ApiError::invalid(format!(
                "malformed key_id `{}`",
                e.key_id.chars().take(40).collect::<String>()
            ))
        })?;
        let count = i64::try_from(e.count)
            .ok()
            .filter(|c| *c <= 1_000_000_000)
            .ok_or_else(|| ApiError::invalid("count is too large"))?;
        let last = i64::try_from(e.last_used_at)
            .ok()
            .filter(|t| *t <= now + 300)
            .ok_or_else(|| ApiError::invalid("last_used_at is in the future"))?;
        let limited = i64::try_from(e.limited)
            .ok()
            .filter(|c| *c <= 1_000_000_000)
            .ok_or_else(|| ApiError::invalid("limited is too large"))?;
        let credits_exhausted = i64::try_from(e.credits_exhausted)
            .ok()
            .filter(|c| *c <= 1_000_000_000)
            .ok_or_else(|| ApiError::invalid("credits_exhausted is too large"))?;
        rows.push(UsageRow {
            key_id: id,
            count,
            last_used_at: last,
            limited,
            credits_exhausted,
            charge: count,
        });
    }
    let every = state.config.rate_limited_event_every_s;
    let done = state
        .db
        .record_usage_batch(&b.batch_id, &rows, every, now)
        .await?;
    state.metrics.usage_batch(done.applied);
    if done.applied {
        state.metrics.credits_exhausted(done.exhausted.len());
        let limited: u64 = rows.iter().map(|r| r.limited.unsigned_abs()).sum();
        let exhausted: u64 = rows
            .iter()
            .map(|r| r.credits_exhausted.unsigned_abs())
            .sum();
        state.metrics.limited_reported(limited);
        state
            .metrics
            .limited(Limited::Edge, LimitedBy::RateLimit, limited);
        state
            .metrics
            .limited(Limited::Edge, LimitedBy::Credits, exhausted);
    }
    Ok(Json(UsageAck {
        applied: done.applied,
    }))
}
