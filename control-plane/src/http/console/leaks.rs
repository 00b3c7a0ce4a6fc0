//! The leaks page: the most recent leaked-key reports (GitHub secret scanning, `key.leak`) and
//! canary hits (`key.canary_used`: path, client, user agent, who saw it), newest first; read from
//! the audit log through the API's own function (`audit::audit_page`), so a workspace session
//! sees only its workspace's.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::page::{Nav, PageError, render, when};
use super::session::Session;
use crate::domain::canary::{CANARY_ACTION, details};
use crate::domain::leaks::LEAK_ACTION;
use crate::http::audit::{AuditQuery, Order, audit_page};
use crate::runtime::state::AppState;

/// Rows shown per table.
pub const ROWS_SHOWN: i64 = 50;

/// A leak report's row.
#[derive(Debug)]
pub struct LeakRow {
    /// When.
    pub at: String,
    /// The key's id and name.
    pub key_id: String,
    /// Its name now.
    pub key_name: String,
    /// Where it was found (GitHub's URL and source).
    pub reason: String,
    /// The key's status after the report.
    pub status: String,
}

/// A canary hit's row.
#[derive(Debug)]
pub struct HitRow {
    /// When.
    pub at: String,
    /// The canary's id.
    pub key_id: String,
    /// Its name now.
    pub key_name: String,
    /// `edge` (and its id) or `control plane`.
    pub seen_by: String,
    /// The request's path.
    pub path: String,
    /// The client's address.
    pub client: String,
    /// The user agent.
    pub user_agent: String,
}

#[derive(Template)]
#[template(path = "console/leaks.html")]
struct LeaksPage {
    nav: Option<Nav>,
    leaks: Vec<LeakRow>,
    hits: Vec<HitRow>,
}

fn newest(action: &str) -> AuditQuery {
    AuditQuery {
        key_id: None,
        actor: None,
        action: Some(action.to_owned()),
        from: None,
        to: None,
        order: Some(Order::Desc),
        cursor: None,
        limit: Some(ROWS_SHOWN),
    }
}

/// `GET /leaks`.
pub async fn list(State(state): State<AppState>, session: Session) -> Result<Response, PageError> {
    let leaks = audit_page(&state, &session.caller, newest(LEAK_ACTION))
        .await?
        .items
        .into_iter()
        .map(|a| LeakRow {
            at: when(Some(a.at), "-"),
            key_name: a.key_name.or_else(|| a.key_id.clone()).unwrap_or_default(),
            key_id: a.key_id.unwrap_or_default(),
            reason: a.reason.unwrap_or_default(),
            status: a
                .after
                .as_ref()
                .and_then(|v| v["status"].as_str())
                .unwrap_or("-")
                .to_owned(),
        })
        .collect();
    let hits = audit_page(&state, &session.caller, newest(CANARY_ACTION))
        .await?
        .items
        .into_iter()
        .map(|a| {
            let d = details(a.reason.as_deref()).unwrap_or_default();
            let text = |k: &str| d[k].as_str().unwrap_or("").to_owned();
            HitRow {
                at: when(Some(a.at), "-"),
                key_name: a.key_name.or_else(|| a.key_id.clone()).unwrap_or_default(),
                key_id: a.key_id.unwrap_or_default(),
                seen_by: match (text("source").as_str(), d["edge_id"].as_str()) {
                    ("edge", Some(id)) => format!("edge {id}"),
                    ("edge", None) => "edge".to_owned(),
                    _ => "control plane".to_owned(),
                },
                path: text("path"),
                client: text("client"),
                user_agent: text("user_agent"),
            }
        })
        .collect();
    Ok(render(&LeaksPage {
        nav: Some(session.nav()),
        leaks,
        hits,
    }))
}
