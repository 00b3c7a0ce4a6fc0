//! The audit log page: who did what to which key and when, newest first, filtered by key,
//! actor, action and a range of UTC days, cursor-paginated; through the API's own function
//! (`audit::audit_page`), so a workspace session reads only its workspace's rows.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::page::{Nav, PageError, day_start, encode, render, when};
use super::session::Session;
use crate::http::audit::{ACTIONS, AuditQuery, Order, audit_page};
use crate::http::error::ApiError;
use crate::runtime::state::AppState;

/// Rows per page.
pub const PAGE_SIZE: i64 = 50;

/// The filter form (every field optional; empty means any).
#[derive(Debug, Default, Deserialize)]
pub struct AuditParams {
    /// A key id.
    #[serde(default)]
    pub key: String,
    /// `admin` or a key id.
    #[serde(default)]
    pub actor: String,
    /// An action.
    #[serde(default)]
    pub action: String,
    /// First day, `YYYY-MM-DD` (UTC).
    #[serde(default)]
    pub from: String,
    /// Last day, `YYYY-MM-DD` (UTC), included.
    #[serde(default)]
    pub to: String,
    /// The last row id of the previous page.
    #[serde(default)]
    pub cursor: String,
}

/// One row of the table.
#[derive(Debug)]
pub struct AuditRow {
    /// When.
    pub at: String,
    /// What.
    pub action: String,
    /// The key concerned, if any.
    pub key_id: Option<String>,
    /// Its name now (the id when the key is gone).
    pub key_name: String,
    /// The actor's id (a filter link).
    pub actor_id: String,
    /// The actor's name and display prefix.
    pub actor: String,
    /// The reason given, if any.
    pub reason: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    nav: Option<Nav>,
    rows: Vec<AuditRow>,
    actions: &'static [&'static str],
    p: AuditParams,
    filtered: bool,
    first_page: bool,
    next: Option<String>,
}

/// `GET /audit`.
pub async fn list(
    State(state): State<AppState>,
    session: Session,
    query: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Response, PageError> {
    let Query(mut p) = query.map_err(|r| ApiError::invalid(r.body_text()))?;
    for v in [
        &mut p.key,
        &mut p.actor,
        &mut p.action,
        &mut p.from,
        &mut p.to,
    ] {
        *v = v.trim().to_owned();
    }
    let some = |v: &str| (!v.is_empty()).then(|| v.to_owned());
    let from = match p.from.as_str() {
        "" => None,
        d => Some(day_start(d)?),
    };
    let to = match p.to.as_str() {
        "" => None,
        d => Some(day_start(d)? + 86_400),
    };
    let cursor = match p.cursor.as_str() {
        "" => None,
        c => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::invalid("malformed cursor"))?,
        ),
    };
    let page = audit_page(
        &state,
        &session.caller,
        AuditQuery {
            key_id: some(&p.key),
            actor: some(&p.actor),
            action: some(&p.action),
            from,
            to,
            order: Some(Order::Desc),
            cursor,
            limit: Some(PAGE_SIZE),
        },
    )
    .await?;
    let next = page.next_cursor.map(|c| {
        format!(
            "/audit?key={}&actor={}&action={}&from={}&to={}&cursor={c}",
            encode(&p.key),
            encode(&p.actor),
            encode(&p.action),
            encode(&p.from),
            encode(&p.to)
        )
    });
    let rows = page
        .items
        .into_iter()
        .map(|a| AuditRow {
            at: when(Some(a.at), "-"),
            action: a.action,
            key_name: a.key_name.or_else(|| a.key_id.clone()).unwrap_or_default(),
            key_id: a.key_id,
            actor: format!("{} ({})", a.actor.name, a.actor.display_prefix),
            actor_id: a.actor.id,
            reason: a.reason.unwrap_or_default(),
        })
        .collect();
    Ok(render(&AuditPage {
        nav: Some(session.nav()),
        rows,
        actions: &ACTIONS,
        filtered: [&p.key, &p.actor, &p.action, &p.from, &p.to]
            .iter()
            .any(|v| !v.is_empty()),
        first_page: cursor.is_none(),
        next,
        p,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_midnights() {
        assert_eq!(day_start("1970-01-02").unwrap(), 86_400);
        assert_eq!(day_start("2026-12-07").unwrap() % 86_400, 0);
        for bad in ["", "2026-13-01", "2026-02-30", "yesterday", "2026-1"] {
            assert!(day_start(bad).is_err(), "{bad}");
        }
    }
}
