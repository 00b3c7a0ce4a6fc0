//! The edges page: every proxy that syncs the key set (Envoy processes, gateways), which
//! revision each enforces, how far behind it is and whether it is live, lagging or gone;
//! through the API's own function (`edges::fleet`), so it is the admin's alone as
//! `GET /v1/edges` is.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::page::{Nav, PageError, render, when};
use super::session::Session;
use crate::http::edges::fleet;
use crate::runtime::state::AppState;

/// One row of the table.
#[derive(Debug)]
pub struct EdgeRow {
    /// The edge's id (one per proxy process).
    pub id: String,
    /// Envoy's node id and cluster, or `-`.
    pub node: String,
    /// `live`, `lagging` or `gone`.
    pub state: &'static str,
    /// The revision it enforces, or `-`.
    pub revision: String,
    /// How far behind (revisions, and for how long), or `up to date`.
    pub lag: String,
    /// Keys in its set, or `-`.
    pub keys: String,
    /// Its worker count and filter version.
    pub runtime: String,
    /// Its peer address, or `-`.
    pub address: String,
    /// Its last report.
    pub last_seen: String,
}

#[derive(Template)]
#[template(path = "console/edges.html")]
struct EdgesPage {
    nav: Option<Nav>,
    revision: i64,
    live: usize,
    lagging: usize,
    gone: usize,
    rows: Vec<EdgeRow>,
}

/// `GET /edges`.
pub async fn list(State(state): State<AppState>, session: Session) -> Result<Response, PageError> {
    let fleet = fleet(&state, &session.caller).await?;
    let count = |s: &str| fleet.items.iter().filter(|e| e.state.as_str() == s).count();
    let (live, lagging, gone) = (count("live"), count("lagging"), count("gone"));
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    let rows = fleet
        .items
        .iter()
        .map(|e| EdgeRow {
            id: e.edge_id.clone(),
            node: match (&e.node_id, &e.node_cluster) {
                (Some(id), Some(cluster)) => format!("{id} ({cluster})"),
                (Some(id), None) => id.clone(),
                _ => "-".to_owned(),
            },
            state: e.state.as_str(),
            revision: dash(e.applied_revision.map(|r| r.to_string())),
            lag: if e.lag_revisions == 0 {
                "up to date".to_owned()
            } else {
                format!("{} behind, for {} s", e.lag_revisions, e.lag_seconds)
            },
            keys: dash(e.key_count.map(|k| k.to_string())),
            runtime: format!(
                "{} workers, {}",
                dash(e.workers.map(|w| w.to_string())),
                dash(e.version.clone())
            ),
            address: dash(e.address.clone()),
            last_seen: when(Some(e.last_seen), "-"),
        })
        .collect();
    Ok(render(&EdgesPage {
        nav: Some(session.nav()),
        revision: fleet.revision,
        live,
        lagging,
        gone,
        rows,
    }))
}
