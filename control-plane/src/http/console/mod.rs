//! The operator console: HTML pages under `/` (the API stays under `/v1`), rendered on the
//! server from askama templates compiled into the binary (`control-plane/templates/console/`),
//! with their stylesheet and one small script embedded ([`assets`]). Every action is a plain
//! form POST, so the console works without JavaScript; the script only adds a copy button.
//! Pages: [`overview`] (usage of every key, most used, never used, expiring soon),
//! [`keys_list`], [`key_create`], [`key_page`] (details, usage chart, children, history,
//! actions), [`audit_log`], [`edges`], [`github_repos`], [`webhooks`] (endpoints and their recent
//! deliveries, read-only), [`leaks`] (leaked-key reports and canary hits); usage charts are SVG
//! drawn by [`chart`].
//!
//! The pages call the same functions as the API's handlers (`keys::issue::issue_key`,
//! `keys::read::{list_page, find_key}`, `keys::change::{status_change, rotate}`,
//! `keys::usage::{key_usage_series, total_usage_series, top_keys}`, `audit::audit_page`,
//! `edges::fleet`, `github::repository_page`, `webhooks::{endpoints, recent_attempts}`,
//! `auth::authenticate`): the console has no rules of
//! its own.
//! Sign-in, sessions and CSRF are [`session`]'s; every answer here carries the headers of
//! [`security_headers`].

pub mod assets;
pub mod audit_log;
pub mod chart;
pub mod edges;
pub mod github_repos;
pub mod key_create;
pub mod key_page;
pub mod keys_list;
pub mod leaks;
pub mod overview;
pub mod page;
pub mod session;
pub mod sign_in;
pub mod webhooks;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::middleware;
use axum::response::{Redirect, Response};
use axum::routing::{get, post};

use crate::runtime::state::AppState;

/// The console's `Content-Security-Policy`: only this origin's stylesheet and script, no inline
/// script or style, forms post only here, never framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes; merged into [`crate::http::app`].
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/keys") }))
        .route("/sign-in", get(sign_in::form).post(sign_in::submit))
        .route("/sign-out", post(sign_in::sign_out))
        .route("/overview", get(overview::show))
        .route("/audit", get(audit_log::list))
        .route("/edges", get(edges::list))
        .route("/github", get(github_repos::list))
        .route("/webhooks", get(webhooks::list))
        .route("/leaks", get(leaks::list))
        .route("/keys", get(keys_list::list).post(key_create::create))
        .route("/keys/new", get(key_create::form))
        .route("/keys/{id}", get(key_page::show))
        .route(
            "/keys/{id}/revoke",
            get(key_page::confirm_revoke).post(key_page::revoke),
        )
        .route("/keys/{id}/suspend", post(key_page::suspend))
        .route("/keys/{id}/reactivate", post(key_page::reactivate))
        .route("/keys/{id}/rotate", post(key_page::rotate))
        .route(assets::CSS_PATH, get(assets::css))
        .route(assets::JS_PATH, get(assets::js))
        .layer(middleware::map_response(security_headers))
}

/// Headers on every console answer: the strict CSP, no framing, no sniffing, no referrer to other sites, and
/// `Cache-Control: no-store` unless the handler chose a policy (the embedded assets): pages
/// show key data, and the key page a secret once.
pub async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `same-origin`, not `no-referrer`: under `no-referrer` browsers send `Origin: null` on the
    // console's own form posts, which the cross-origin check refuses.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
