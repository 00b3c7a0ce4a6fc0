//! The edge fleet over HTTP: `GET /v1/edges` (admin: every edge, its lag and state),
//! `GET /v1/keys/{id}/propagation` (which edges enforce a key's current state), the `?wait=`
//! of key writes (answer once every edge not `gone` has applied the write's revision, or at
//! the deadline, with each edge's status), and the parsing of the edge report the filter's
//! key-set calls carry (`keygate_protocol::edge`'s headers).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use keygate_protocol::edge;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::key::KeyView;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::keys::read::find_key;
use crate::runtime::clock::unix_now;
use crate::runtime::edges::{Fleet, Propagation};
use crate::runtime::state::AppState;
use crate::storage::edges::EdgeReport;

/// Longest `?wait=` of a key write, seconds.
pub const MAX_WRITE_WAIT_SECS: u64 = 60;

/// The `?wait=` of a key write.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Wait up to this many seconds (at most 60) until every edge not `gone` has applied the
    /// write; the answer then carries `propagation`. `0` reports without waiting.
    pub wait: Option<u64>,
}

/// A key write's answer: the key, the key-set revision the write produced, and with `?wait=`
/// its propagation to the edges.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyWrite {
    /// The key after the write.
    #[serde(flatten)]
    pub key: KeyView,
    /// The key-set revision this write produced.
    pub revision: i64,
    /// With `?wait=`: which edges have applied `revision`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub propagation: Option<Propagation>,
}

/// With `wait` (seconds), waits for every edge not `gone` to apply `revision`; `None` without.
/// The answer names the edges only to the admin ([`as_seen_by`]).
pub async fn propagation(
    state: &AppState,
    caller: &Caller,
    revision: i64,
    wait: Option<u64>,
) -> Result<Option<Propagation>, ApiError> {
    let Some(wait) = wait else {
        return Ok(None);
    };
    let p = state
        .edges
        .wait_applied(&state.db, revision, Duration::from_secs(wait))
        .await?;
    Ok(Some(as_seen_by(p, caller)))
}

/// A propagation report as `caller` may see it. The fleet is the operator's: its edge ids and
/// Envoy node ids name the deployment, so only the admin sees them (as `GET /v1/edges` is
/// admin-only). Anyone else gets the same report with each edge called `edge-1`, `edge-2`, …
/// in this answer's order and no node id: how many edges enforce the change, and how many are
/// behind, but not which.
pub fn as_seen_by(mut p: Propagation, caller: &Caller) -> Propagation {
    if !caller.is_admin() {
        for (n, e) in p.edges.iter_mut().enumerate() {
            e.edge_id = format!("edge-{}", n + 1);
            e.node_id = None;
        }
    }
    p
}

/// Checks a `?wait=` before the write it belongs to, so a bad one changes nothing.
pub fn check_wait(q: &WaitQuery) -> Result<Option<u64>, ApiError> {
    match q.wait {
        Some(w) if w > MAX_WRITE_WAIT_SECS => Err(ApiError::invalid(format!(
            "wait is at most {MAX_WRITE_WAIT_SECS} seconds"
        ))),
        w => Ok(w),
    }
}

#[utoipa::path(get, path = "/v1/edges", tag = "edges",
    responses((status = 200, body = Fleet), (status = 403, body = crate::http::error::ErrorBody)),
    security(("bearer" = [])))]
/// Every edge that reported to any replica: identity, address, edge key, applied revision,
/// lag in revisions and seconds, and state (`live`, `lagging`, `gone`). Admin only.
pub async fn list_edges(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Fleet>, ApiError> {
    Ok(Json(fleet(&state, &caller).await?))
}

/// The fleet as `caller` may see it (the admin only): `GET /v1/edges`' rules, for the API and
/// the console's edges page.
pub async fn fleet(state: &AppState, caller: &Caller) -> Result<Fleet, ApiError> {
    if !caller.is_admin() {
        return Err(ApiError::forbidden("only the admin can list edges"));
    }
    Ok(state.edges.fleet(&state.db, unix_now()).await?)
}

/// `GET /v1/keys/{id}/propagation` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyPropagation {
    /// The key now.
    pub key: KeyView,
    /// Which edges enforce its current state (have applied the revision that set it).
    pub propagation: Propagation,
}

#[utoipa::path(get, path = "/v1/keys/{id}/propagation", tag = "edges", params(("id" = String, Path)),
    responses((status = 200, body = KeyPropagation), (status = 404, body = crate::http::error::ErrorBody)),
    security(("bearer" = [])))]
/// Which edges (not `gone`) enforce the key's current state: those that applied the revision
/// of the key's last change. Edge and node ids are the admin's to see; others get `edge-N`.
pub async fn key_propagation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<KeyPropagation>, ApiError> {
    let key = find_key(&state, &caller, &id).await?;
    let uuid = crate::domain::key::parse_key_id(&key.id)
        .ok_or_else(|| ApiError::internal("stored key id"))?;
    let revision = state.db.key_revision(uuid).await?;
    let propagation = state
        .edges
        .propagation(&state.db, revision, unix_now())
        .await?;
    Ok(Json(KeyPropagation {
        key,
        propagation: as_seen_by(propagation, &caller),
    }))
}

/// The peer address of the connection, when the server knows it.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => {
            let v = v
                .to_str()
                .ok()
                .filter(|v| v.len() <= edge::MAX_VALUE_BYTES)
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "`{name}` must be visible ASCII of at most {} bytes",
                        edge::MAX_VALUE_BYTES
                    ))
                })?;
            Ok(Some(v))
        }
    }
}

fn number(headers: &HeaderMap, name: &str) -> Result<Option<i64>, ApiError> {
    header(headers, name)?
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::invalid(format!("`{name}` must be a whole number")))
        })
        .transpose()
}

/// The edge report of a key-set call: `None` when it carries no edge id (an older filter, a
/// script); a malformed header is refused.
pub fn parse_report(
    headers: &HeaderMap,
    since: Option<i64>,
    caller: &Caller,
    peer: Peer,
) -> Result<Option<EdgeReport>, ApiError> {
    let Some(id) = header(headers, edge::ID_HEADER)? else {
        return Ok(None);
    };
    if !edge::is_edge_id(id) {
        return Err(ApiError::invalid(format!(
            "`{}` must be {} lowercase hex digits",
            edge::ID_HEADER,
            edge::ID_LEN
        )));
    }
    let text = |name| -> Result<Option<String>, ApiError> {
        Ok(header(headers, name)?
            .map(edge::clean)
            .filter(|v| !v.is_empty()))
    };
    Ok(Some(EdgeReport {
        edge_id: id.to_owned(),
        node_id: text(edge::NODE_HEADER)?,
        node_cluster: text(edge::CLUSTER_HEADER)?,
        address: peer.0.map(|ip| ip.to_string()),
        edge_key_id: caller.key_id,
        applied_revision: number(headers, edge::REVISION_HEADER)?.or(since),
        key_count: number(headers, edge::KEYS_HEADER)?,
        staleness_ms: number(headers, edge::STALENESS_HEADER)?,
        workers: number(headers, edge::WORKERS_HEADER)?,
        version: text(edge::VERSION_HEADER)?,
    }))
}

/// Records a key-set call's edge report; a failed write is logged, never the call's failure.
pub async fn record(state: &AppState, report: &EdgeReport) {
    match state
        .edges
        .observe(&state.db, report.clone(), unix_now())
        .await
    {
        Ok(true) => state.metrics.edge_write(),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, edge = %report.edge_id, "edge registry write failed");
        }
    }
}
