//! The overview page: requests per hour over the last 24 hours or 7 days for every key the
//! session may read (a chart drawn on the server), the most used keys of that period, active
//! keys never used, and active keys expiring in the next 7 days. Everything through the API's
//! own functions (`keys::usage::{total_usage_series, top_keys}`, `keys::read::list_page`), so
//! a workspace session sees only its workspace.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::chart::{bar_chart, count, range_query};
use super::keys_list::Row;
use super::page::{Nav, PageError, render, when};
use super::session::Session;
use crate::domain::KeyStatus;
use crate::domain::key::format_key_id;
use crate::http::error::ApiError;
use crate::http::keys::read::{ListQuery, list_page};
use crate::http::keys::usage::{top_keys, total_usage_series};
use crate::runtime::state::AppState;

/// Rows in each of the overview's lists.
const LIST_ROWS: i64 = 10;

/// Keys read to find the soonest to expire (the API's largest page): exact up to that many
/// expiring keys; beyond, the list links to the full one.
const EXPIRING_READ: i64 = 1000;

/// Seconds in the "expiring soon" window.
const EXPIRING_WITHIN: i64 = 7 * 86_400;

/// The overview's query.
#[derive(Debug, Default, Deserialize)]
pub struct OverviewParams {
    /// `24h` (default) or `7d`.
    #[serde(default)]
    pub range: String,
}

/// One of the most used keys.
#[derive(Debug)]
pub struct TopRow {
    /// `key_…`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Display prefix.
    pub prefix: String,
    /// Requests in the period, formatted.
    pub total: String,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    nav: Option<Nav>,
    chart: String,
    total: String,
    ranges: Vec<(&'static str, &'static str, bool)>,
    top: Vec<TopRow>,
    never_used: Vec<Row>,
    more_never_used: bool,
    expiring: Vec<Row>,
    more_expiring: bool,
}

/// `GET /overview`.
pub async fn show(
    State(state): State<AppState>,
    session: Session,
    query: Result<Query<OverviewParams>, QueryRejection>,
) -> Result<Response, PageError> {
    let Query(p) = query.map_err(|r| ApiError::invalid(r.body_text()))?;
    if !matches!(p.range.as_str(), "" | "24h" | "7d") {
        return Err(ApiError::invalid("range: 24h or 7d").into());
    }
    let q = range_query(&p.range)?;
    let usage = total_usage_series(&state, &session.caller, &q).await?;
    let top = top_keys(&state, &session.caller, &q, LIST_ROWS).await?;
    let never_used = list_page(
        &state,
        &session.caller,
        ListQuery {
            status: Some(KeyStatus::Active),
            never_used: Some(true),
            limit: Some(LIST_ROWS),
            ..ListQuery::default()
        },
    )
    .await?;
    // The list is in id order: read a full page (the API's largest), then show the soonest.
    let mut expiring = list_page(
        &state,
        &session.caller,
        ListQuery {
            expiring_within: Some(EXPIRING_WITHIN),
            limit: Some(EXPIRING_READ),
            ..ListQuery::default()
        },
    )
    .await?;
    expiring.items.sort_by_key(|k| k.expires_at);
    let more_expiring = expiring.next_cursor.is_some() || expiring.items.len() > LIST_ROWS as usize;
    expiring.items.truncate(LIST_ROWS as usize);
    let current = if p.range.is_empty() { "24h" } else { &p.range };
    Ok(render(&OverviewPage {
        nav: Some(session.nav()),
        chart: bar_chart(
            "overview-chart",
            "Requests per hour (UTC), every key",
            &usage,
        ),
        total: count(usage.total),
        ranges: [("24h", "24 hours"), ("7d", "7 days")]
            .into_iter()
            .map(|(v, l)| (v, l, v == current))
            .collect(),
        top: top
            .into_iter()
            .map(|t| TopRow {
                id: format_key_id(t.id),
                name: t.name,
                prefix: t.display_prefix,
                total: count(t.total),
            })
            .collect(),
        more_never_used: never_used.next_cursor.is_some(),
        never_used: never_used.items.iter().map(Row::from).collect(),
        more_expiring,
        expiring: expiring
            .items
            .iter()
            .map(|k| Row {
                expires: when(k.expires_at, "never"),
                ..Row::from(k)
            })
            .collect(),
    }))
}
