//! A key's page (details, its usage over time as a chart drawn on the server, its children,
//! its history from the audit log; the secret once, right after creation or rotation) and its actions: suspend, reactivate, rotate with a grace period, and
//! revoke behind a confirmation page with a reason. Reads and changes go through the API's own
//! functions (`keys::read::find_key`, `audit::audit_page`, `keys::change::{status_change,
//! rotate}`), so a key of another workspace is "not found" here exactly as in the API, for pages
//! and replayed forms.

use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Form, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::chart::{bar_chart, count, range_links, range_query};
use super::keys_list::Row;
use super::page::{Nav, PageError, render, when};
use super::session::Session;
use super::sign_in::CsrfForm;
use crate::domain::Action;
use crate::domain::key::KeyView;
use crate::http::audit::{AuditQuery, audit_page};
use crate::http::error::ApiError;
use crate::http::keys::change::{rotate as rotate_key, status_change};
use crate::http::keys::parse_id;
use crate::http::keys::read::{ListQuery, find_key, list_page};
use crate::http::keys::usage::key_usage_series;
use crate::runtime::state::AppState;

/// A key as its page shows it.
#[derive(Debug)]
pub struct Details {
    /// The API view.
    pub key: KeyView,
    /// Creation time.
    pub created: String,
    /// Last use.
    pub last_used: String,
    /// Expiry.
    pub expires: String,
    /// Revocation time.
    pub revoked: String,
    /// Scopes, comma-separated (`none`).
    pub scopes: String,
    /// Resources, comma-separated (`any`).
    pub resources: String,
    /// Rate limits (`burst: 100 per 10 s`, …; the workspace's defaults when it has none).
    pub limits: String,
    /// Credits remaining (`unlimited`).
    pub credits: String,
    /// The next refill (`-` without one).
    pub next_refill: String,
}

impl From<KeyView> for Details {
    fn from(key: KeyView) -> Self {
        let join = |v: &[String], empty: &str| {
            if v.is_empty() {
                empty.to_owned()
            } else {
                v.join(", ")
            }
        };
        Self {
            created: when(Some(key.created_at), "-"),
            last_used: when(key.last_used_at, "never"),
            expires: when(key.expires_at, "never"),
            revoked: when(key.revoked_at, "-"),
            scopes: join(&key.scopes, "none"),
            resources: join(&key.resources, "any"),
            limits: match &key.limits {
                None => "the workspace's defaults".to_owned(),
                Some(l) if l.is_empty() => "none".to_owned(),
                Some(l) => l
                    .iter()
                    .map(|x| {
                        let pool = if x.pool == "owner" {
                            ", owner's pool"
                        } else {
                            ""
                        };
                        format!("{}: {} per {} s{pool}", x.name, x.limit, x.window_s)
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            },
            credits: match &key.credits {
                None => "unlimited".to_owned(),
                Some(c) => match (c.refill_amount, &c.refill_interval) {
                    (Some(a), Some(i)) => format!("{} remaining (refill to {a}, {i})", c.remaining),
                    _ => format!("{} remaining", c.remaining),
                },
            },
            next_refill: when(key.credits.as_ref().and_then(|c| c.next_refill_at), "-"),
            key,
        }
    }
}

/// One row of a key's history (its audit trail).
#[derive(Debug)]
pub struct Event {
    /// When.
    pub at: String,
    /// What, e.g. `key.revoke`.
    pub action: String,
    /// Who: a name and the credential's display prefix.
    pub actor: String,
    /// The reason given, if any.
    pub reason: String,
}

/// Events shown on a key's page (oldest first).
const HISTORY_ROWS: i64 = 100;

#[derive(Template)]
#[template(path = "console/key.html")]
struct KeyPage<'a> {
    nav: Option<Nav>,
    csrf: &'a str,
    k: Details,
    status: &'static str,
    kind: &'static str,
    secret: Option<String>,
    history: Vec<Event>,
    more_history: bool,
    chart: String,
    total: String,
    ranges: Vec<(&'static str, &'static str, bool)>,
    children: Vec<Row>,
    more_children: bool,
}

/// Children shown on a key's page.
const CHILD_ROWS: i64 = 50;

/// The key page's query: which period its chart shows.
#[derive(Debug, Default, Deserialize)]
pub struct KeyParams {
    /// `24h` (default), `7d` or `30d`.
    #[serde(default)]
    pub range: String,
}

/// `GET /keys/{id}`: the key, and its secret if this session just created it (taken once).
pub async fn show(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    query: Result<Query<KeyParams>, QueryRejection>,
) -> Result<Response, PageError> {
    let Query(params) = query.map_err(|r| ApiError::invalid(r.body_text()))?;
    let key = find_key(&state, &session.caller, &id).await?;
    let usage = key_usage_series(
        &state,
        &session.caller,
        &key.id,
        &range_query(&params.range)?,
    )
    .await?;
    let title = if usage.bucket == crate::http::keys::usage::Bucket::Day {
        "Requests per day (UTC)"
    } else {
        "Requests per hour (UTC)"
    };
    let children = list_page(
        &state,
        &session.caller,
        ListQuery {
            parent_id: Some(key.id.clone()),
            limit: Some(CHILD_ROWS),
            ..ListQuery::default()
        },
    )
    .await?;
    let audit = audit_page(
        &state,
        &session.caller,
        AuditQuery {
            key_id: Some(key.id.clone()),
            limit: Some(HISTORY_ROWS),
            ..AuditQuery::default()
        },
    )
    .await?;
    let history = audit
        .items
        .iter()
        .map(|a| Event {
            at: when(Some(a.at), "-"),
            action: a.action.clone(),
            actor: format!("{} ({})", a.actor.name, a.actor.display_prefix),
            reason: a.reason.clone().unwrap_or_default(),
        })
        .collect();
    let secret = session.take_flash(&state, parse_id(&id)?).await?;
    Ok(render(&KeyPage {
        chart: bar_chart("usage-chart", title, &usage),
        total: count(usage.total),
        ranges: range_links(&params.range),
        children: children.items.iter().map(Row::from).collect(),
        more_children: children.next_cursor.is_some(),
        history,
        more_history: audit.next_cursor.is_some(),
        nav: Some(session.nav()),
        csrf: &session.csrf,
        status: key.status.as_str(),
        kind: key.kind.as_str(),
        k: Details::from(key),
        secret,
    }))
}

#[derive(Template)]
#[template(path = "console/revoke.html")]
struct RevokePage<'a> {
    nav: Option<Nav>,
    csrf: &'a str,
    k: Details,
}

/// `GET /keys/{id}/revoke`: the confirmation step, with a reason.
pub async fn confirm_revoke(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let key = find_key(&state, &session.caller, &id).await?;
    Ok(render(&RevokePage {
        nav: Some(session.nav()),
        csrf: &session.csrf,
        k: Details::from(key),
    }))
}

/// The revoke form.
#[derive(Debug, Default, Deserialize)]
pub struct RevokeForm {
    /// The session's CSRF token.
    #[serde(default)]
    pub csrf: String,
    /// Why (kept in the audit log).
    #[serde(default)]
    pub reason: String,
}

async fn change(
    state: &AppState,
    session: &Session,
    id: &str,
    action: Action,
    reason: Option<String>,
) -> Result<Response, PageError> {
    let (key, _revision) = status_change(state, &session.caller, id, action, reason).await?;
    Ok(Redirect::to(&format!("/keys/{}", key.id)).into_response())
}

/// `POST /keys/{id}/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Result<Form<RevokeForm>, FormRejection>,
) -> Result<Response, PageError> {
    let f = form.map(|Form(f)| f).unwrap_or_default();
    session.check_post(&headers, &f.csrf)?;
    let reason = f.reason.trim();
    let reason = (!reason.is_empty()).then(|| reason.to_owned());
    change(&state, &session, &id, Action::Revoke, reason).await
}

/// `POST /keys/{id}/suspend`.
pub async fn suspend(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, PageError> {
    csrf_change(&state, &session, &id, &headers, form, Action::Suspend).await
}

/// `POST /keys/{id}/reactivate`.
pub async fn reactivate(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, PageError> {
    csrf_change(&state, &session, &id, &headers, form, Action::Reactivate).await
}

/// A change whose form carries only the CSRF token: checked, then made.
async fn csrf_change(
    state: &AppState,
    session: &Session,
    id: &str,
    headers: &HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
    action: Action,
) -> Result<Response, PageError> {
    let csrf = form.map(|Form(f)| f.csrf).unwrap_or_default();
    session.check_post(headers, &csrf)?;
    change(state, session, id, action, None).await
}

/// The rotate form.
#[derive(Debug, Default, Deserialize)]
pub struct RotateForm {
    /// The session's CSRF token.
    #[serde(default)]
    pub csrf: String,
    /// Seconds the old secret keeps working (the form offers 0, 1 hour, 1 day, 7 days).
    #[serde(default)]
    pub grace: i64,
}

/// `POST /keys/{id}/rotate`: a new secret, shown once on the key's page (as after a create).
pub async fn rotate(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Result<Form<RotateForm>, FormRejection>,
) -> Result<Response, PageError> {
    let f = form.map(|Form(f)| f).unwrap_or_default();
    session.check_post(&headers, &f.csrf)?;
    let issued = rotate_key(&state, &session.caller, &id, f.grace).await?;
    let key_id = parse_id(&issued.key.id)?;
    session.set_flash(&state, key_id, &issued.secret).await?;
    Ok(Redirect::to(&format!("/keys/{}", issued.key.id)).into_response())
}
