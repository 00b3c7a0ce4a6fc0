//! The webhooks page (read-only): the endpoints the session sees, each with its event types and
//! its most recent delivery attempts (event, attempt number, status or error, time); through the
//! API's own functions (`webhooks::{endpoints, recent_attempts}`), so a workspace session sees
//! only its workspace's endpoints. Endpoints are added and removed with the API or
//! `keygate webhooks`.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::page::{Nav, PageError, render, when};
use super::session::Session;
use crate::http::webhooks::{endpoints, recent_attempts};
use crate::runtime::state::AppState;

/// Attempts shown per endpoint.
pub const ATTEMPTS_SHOWN: i64 = 20;

/// One attempt's row.
#[derive(Debug)]
pub struct AttemptRow {
    /// When.
    pub at: String,
    /// The event id.
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// 1 for the first attempt.
    pub attempt: i64,
    /// `delivered` or `failed`.
    pub outcome: &'static str,
    /// The receiver's status, or the error.
    pub detail: String,
    /// Milliseconds.
    pub duration_ms: i64,
}

/// One endpoint and its attempts.
#[derive(Debug)]
pub struct EndpointBlock {
    /// `whep_…`.
    pub id: String,
    /// Where events go.
    pub url: String,
    /// Its event types, comma-separated.
    pub events: String,
    /// Its description.
    pub description: String,
    /// `admin` (every workspace) or the workspace.
    pub scope: String,
    /// Newest first.
    pub attempts: Vec<AttemptRow>,
}

#[derive(Template)]
#[template(path = "console/webhooks.html")]
struct WebhooksPage {
    nav: Option<Nav>,
    endpoints: Vec<EndpointBlock>,
}

/// `GET /webhooks`.
pub async fn list(State(state): State<AppState>, session: Session) -> Result<Response, PageError> {
    let mut blocks = Vec::new();
    for e in endpoints(&state, &session.caller).await? {
        let attempts = recent_attempts(&state, &session.caller, &e.id, ATTEMPTS_SHOWN)
            .await?
            .into_iter()
            .map(|a| AttemptRow {
                at: when(Some(a.at_ms / 1000), "-"),
                event_id: a.event_id,
                event_type: a.event_type,
                attempt: a.attempt,
                outcome: if a.delivered { "delivered" } else { "failed" },
                detail: match (a.status_code, a.error) {
                    (Some(s), None) => format!("HTTP {s}"),
                    (Some(s), Some(e)) => format!("HTTP {s}: {e}"),
                    (None, Some(e)) => e,
                    (None, None) => "-".to_owned(),
                },
                duration_ms: a.duration_ms,
            })
            .collect();
        blocks.push(EndpointBlock {
            id: e.id,
            url: e.url,
            events: e.event_types.join(", "),
            description: e.description,
            scope: e
                .workspace_id
                .unwrap_or_else(|| "admin (every workspace)".to_owned()),
            attempts,
        });
    }
    Ok(render(&WebhooksPage {
        nav: Some(session.nav()),
        endpoints: blocks,
    }))
}
