//! The keys list: a page of the keys the session may read, searched by name and filtered by
//! status, kind, owner, scope, "expiring soon" and "never used" (the API's `GET /v1/keys`
//! rules, through `keys::read::list_page`), cursor-paginated.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::page::{Nav, PageError, encode, render, when};
use super::session::Session;
use crate::domain::key::KeyView;
use crate::domain::{KeyKind, KeyStatus};
use crate::http::error::ApiError;
use crate::http::keys::read::{ListQuery, list_page};
use crate::runtime::state::AppState;

/// Keys per page.
pub const PAGE_SIZE: i64 = 50;

/// The filter form (every field optional; empty means any).
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    /// `active`, `suspended` or `revoked`.
    #[serde(default)]
    pub status: String,
    /// `workspace`, `repo` or `edge`.
    #[serde(default)]
    pub kind: String,
    /// An owner id.
    #[serde(default)]
    pub owner: String,
    /// Text the name contains.
    #[serde(default)]
    pub q: String,
    /// A scope the key holds.
    #[serde(default)]
    pub scope: String,
    /// `7` or `30`: active keys expiring within that many days.
    #[serde(default)]
    pub expiring: String,
    /// `never`: keys never used.
    #[serde(default)]
    pub used: String,
    /// The last key id of the previous page.
    #[serde(default)]
    pub cursor: String,
}

/// One row of the table.
#[derive(Debug)]
pub struct Row {
    /// `key_…`.
    pub id: String,
    /// Name (escaped by the template).
    pub name: String,
    /// Owner id.
    pub owner: String,
    /// Kind.
    pub kind: &'static str,
    /// Status, also the badge's class.
    pub status: &'static str,
    /// Display prefix.
    pub prefix: String,
    /// Last use.
    pub last_used: String,
    /// Expiry.
    pub expires: String,
}

impl From<&KeyView> for Row {
    fn from(k: &KeyView) -> Self {
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            owner: k.owner_id.clone(),
            kind: k.kind.as_str(),
            status: k.status.as_str(),
            prefix: k.display_prefix.clone(),
            last_used: when(k.last_used_at, "never"),
            expires: when(k.expires_at, "never"),
        }
    }
}

#[derive(Template)]
#[template(path = "console/keys.html")]
struct KeysPage {
    nav: Option<Nav>,
    rows: Vec<Row>,
    status: String,
    kind: String,
    owner: String,
    q: String,
    scope: String,
    expiring: String,
    used: String,
    filtered: bool,
    first_page: bool,
    next: Option<String>,
}

/// `GET /keys`.
pub async fn list(
    State(state): State<AppState>,
    session: Session,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, PageError> {
    let Query(p) = query.map_err(|r| ApiError::invalid(r.body_text()))?;
    let status = match p.status.as_str() {
        "" => None,
        s => Some(KeyStatus::parse(s).ok_or_else(|| ApiError::invalid("unknown status"))?),
    };
    let kind = match p.kind.as_str() {
        "" => None,
        k => Some(KeyKind::parse(k).ok_or_else(|| ApiError::invalid("unknown kind"))?),
    };
    let owner = p.owner.trim().to_owned();
    let q = p.q.trim().to_owned();
    let scope = p.scope.trim().to_owned();
    let expiring_within = match p.expiring.as_str() {
        "" => None,
        "7" => Some(7 * 86_400),
        "30" => Some(30 * 86_400),
        _ => return Err(ApiError::invalid("expiring: 7 or 30 (days)").into()),
    };
    let never_used = match p.used.as_str() {
        "" => false,
        "never" => true,
        _ => return Err(ApiError::invalid("used: never").into()),
    };
    let page = list_page(
        &state,
        &session.caller,
        ListQuery {
            status,
            kind,
            owner_id: (!owner.is_empty()).then(|| owner.clone()),
            name: (!q.is_empty()).then(|| q.clone()),
            scope: (!scope.is_empty()).then(|| scope.clone()),
            expiring_within,
            never_used: never_used.then_some(true),
            cursor: (!p.cursor.is_empty()).then(|| p.cursor.clone()),
            limit: Some(PAGE_SIZE),
            ..ListQuery::default()
        },
    )
    .await?;
    let next = page.next_cursor.map(|c| {
        format!(
            "/keys?status={}&kind={}&owner={}&q={}&scope={}&expiring={}&used={}&cursor={}",
            encode(&p.status),
            encode(&p.kind),
            encode(&owner),
            encode(&q),
            encode(&scope),
            encode(&p.expiring),
            encode(&p.used),
            encode(&c)
        )
    });
    Ok(render(&KeysPage {
        nav: Some(session.nav()),
        rows: page.items.iter().map(Row::from).collect(),
        filtered: status.is_some()
            || kind.is_some()
            || !owner.is_empty()
            || !q.is_empty()
            || !scope.is_empty()
            || expiring_within.is_some()
            || never_used,
        status: p.status,
        kind: p.kind,
        owner,
        q,
        scope,
        expiring: p.expiring,
        used: p.used,
        first_page: p.cursor.is_empty(),
        next,
    }))
}
