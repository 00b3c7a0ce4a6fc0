//! `POST /v1/canary-hits`: an edge reports canary keys presented to it, at once (not in a usage
//! batch). Each hit on a canary writes `key.canary_used` (audit row and webhook event) once per
//! hit id; a hit on a key that is not a canary is ignored.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::KeyKind;
use crate::domain::canary::{Hit, HitSource, RawReport};
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ApiJson};
use crate::runtime::canary::{Recorded, Seen};
use crate::runtime::clock::unix_now;
use crate::runtime::state::AppState;
use crate::storage::canary::Witness;

/// The route.
pub const PATH: &str = "/v1/canary-hits";

/// What became of a report's hits.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct HitsAck {
    /// Hits written (audit row and event).
    pub written: u32,
    /// Hits whose id was written before (a retried report).
    pub duplicate: u32,
    /// Hits on keys that are not canaries (or no longer exist).
    pub ignored: u32,
}

#[utoipa::path(post, path = "/v1/canary-hits", tag = "edge", request_body = RawReport,
    responses((status = 200, body = HitsAck), (status = 400, body = crate::http::error::ErrorBody),
              (status = 403, body = crate::http::error::ErrorBody)),
    security(("bearer" = [])))]
/// An edge's canary hits (`keygate_protocol::canary`), each raising `key.canary_used` with its
/// path, client, user agent and the edge's id (`keygate-edge-id`); idempotent per hit id.
pub async fn post_canary_hits(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<ApiJson<RawReport>, ApiError>,
) -> Result<Json<HitsAck>, ApiError> {
    caller.require_edge()?;
    let header = keygate_protocol::edge::ID_HEADER;
    let edge_id = match headers.get(header).map(|v| v.to_str()) {
        None => None,
        Some(Ok(id)) if keygate_protocol::edge::is_edge_id(id) => Some(id),
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "{header} must be {} lowercase hex digits",
                keygate_protocol::edge::ID_LEN
            )));
        }
    };
    let ApiJson(report) = body?;
    let now = unix_now();
    let hits = Hit::parse_report(report, now).map_err(|e| ApiError::invalid(e.to_string()))?;
    let witness = Witness {
        source: HitSource::Edge,
        edge_id,
        actor: &caller.actor,
    };
    let mut ack = HitsAck::default();
    for hit in &hits {
        let r = match state.db.get_key(hit.key_id).await? {
            Some(k) if k.kind == KeyKind::Canary => {
                match state.db.record_canary_hit(hit, &k, &witness, now).await {
                    Ok(true) => {
                        tracing::warn!(key = %crate::domain::key::format_key_id(k.id), path = %hit.path, client = %hit.client, edge = ?edge_id, "canary key presented at an edge");
                        Recorded::Written(HitSource::Edge)
                    }
                    Ok(false) => Recorded::Duplicate,
                    Err(e) => {
                        state.canaries.count(Recorded::Failed);
                        return Err(e.into());
                    }
                }
            }
            _ => Recorded::Ignored,
        };
        state.canaries.count(r);
        match r {
            Recorded::Written(_) => ack.written += 1,
            Recorded::Duplicate => ack.duplicate += 1,
            _ => ack.ignored += 1,
        }
    }
    Ok(Json(ack))
}

/// Where the current request was made (path without query, client address, user agent): the
/// facts of a canary hit the control plane sees itself.
#[derive(Debug, Clone)]
pub struct SeenHere(pub Seen);

impl<S: Send + Sync> FromRequestParts<S> for SeenHere {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(crate::http::auth::seen_in(parts)))
    }
}
