//! The GitHub repositories page: the token broker's registry (which repositories, served by
//! which App, with which installation), read-only, cursor-paginated; through the API's own
//! function (`github::repository_page`), so it needs the `github:repositories` scope as
//! `GET /v1/repositories` does.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::page::{Nav, PageError, render, when};
use super::session::Session;
use crate::http::error::ApiError;
use crate::http::github::repository_page;
use crate::runtime::state::AppState;

/// Rows per page.
pub const PAGE_SIZE: i64 = 50;

/// The page's query.
#[derive(Debug, Default, Deserialize)]
pub struct RepoParams {
    /// The last repository id of the previous page.
    #[serde(default)]
    pub after: String,
}

/// One row of the table.
#[derive(Debug)]
pub struct RepoRow {
    /// Numeric id.
    pub id: i64,
    /// `organization/repository`.
    pub full_name: String,
    /// The App serving it.
    pub app: String,
    /// Installation id last seen, or `not yet seen`.
    pub installation: String,
    /// Registration time.
    pub created: String,
}

#[derive(Template)]
#[template(path = "console/github.html")]
struct GithubPage {
    nav: Option<Nav>,
    rows: Vec<RepoRow>,
    first_page: bool,
    next: Option<String>,
}

/// `GET /github`.
pub async fn list(
    State(state): State<AppState>,
    session: Session,
    query: Result<Query<RepoParams>, QueryRejection>,
) -> Result<Response, PageError> {
    let Query(p) = query.map_err(|r| ApiError::invalid(r.body_text()))?;
    let after = match p.after.as_str() {
        "" => None,
        a => Some(
            a.parse::<i64>()
                .map_err(|_| ApiError::invalid("malformed cursor"))?,
        ),
    };
    let (items, next) = repository_page(&state, &session.caller, after, Some(PAGE_SIZE)).await?;
    Ok(render(&GithubPage {
        nav: Some(session.nav()),
        rows: items
            .into_iter()
            .map(|r| RepoRow {
                id: r.id,
                full_name: r.full_name(),
                installation: r
                    .installation_id
                    .map_or_else(|| "not yet seen".to_owned(), |i| i.to_string()),
                app: r.app,
                created: when(Some(r.created_at), "-"),
            })
            .collect(),
        first_page: after.is_none(),
        next: next.map(|n| format!("/github?after={n}")),
    }))
}
