//! The HTTP surface: the eight operations and their routes (under an optional path prefix),
//! and what every request goes through — call counting, the simulated delay, the required
//! `User-Agent`, `Accept` and `X-GitHub-Api-Version` headers, and the `Date` stamp.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};

use crate::installations::{
    get_app, get_installation, get_org_installation, get_repo_installation, get_user_installation,
    list_installations,
};
use crate::responses::{Fail, error};
use crate::state::Shared;
use crate::tokens::{create_token, revoke_token};

const API_VERSION: &str = "2022-11-28";

/// The operations the fake serves, for call counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// `POST /app/installations/{installation_id}/access_tokens`
    CreateInstallationAccessToken,
    /// `GET /repos/{owner}/{repo}/installation`
    GetRepoInstallation,
    /// `GET /orgs/{org}/installation`
    GetOrgInstallation,
    /// `GET /users/{username}/installation`
    GetUserInstallation,
    /// `DELETE /installation/token`
    RevokeInstallationAccessToken,
    /// `GET /app/installations`
    ListInstallations,
    /// `GET /app`
    GetAuthenticated,
    /// `GET /app/installations/{installation_id}`
    GetInstallation,
    /// `GET /meta/public_keys/secret_scanning`
    GetSecretScanningPublicKeys,
}

/// The routes, behind the per-request checks, nested under `prefix` when it is not empty.
pub(crate) fn router(shared: Arc<Shared>, prefix: &str) -> Router {
    let routes = Router::new()
        .route("/app", get(get_app))
        .route("/app/installations", get(list_installations))
        .route(
            "/app/installations/{installation_id}",
            get(get_installation),
        )
        .route(
            "/app/installations/{installation_id}/access_tokens",
            post(create_token),
        )
        .route(
            "/repos/{owner}/{repo}/installation",
            get(get_repo_installation),
        )
        .route("/orgs/{org}/installation", get(get_org_installation))
        .route("/users/{username}/installation", get(get_user_installation))
        .route("/installation/token", delete(revoke_token))
        .route(
            "/meta/public_keys/secret_scanning",
            get(crate::secret_scanning::public_keys),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), common))
        .with_state(shared);
    if prefix.is_empty() {
        routes
    } else {
        Router::new().nest(prefix, routes)
    }
}

/// Checks the required headers, counts the call, applies the delay, stamps `Date`.
async fn common(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let op = operation(req.method(), req.uri().path());
    let (delay, offset) = {
        let mut g = shared.lock();
        if let Some(op) = op {
            *g.calls.entry(op).or_default() += 1;
        }
        (g.delay, g.clock_offset)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut resp = match check_headers(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(r) => *r,
    };
    let date = SystemTime::now()
        .checked_add(Duration::from_secs(offset.max(0) as u64))
        .and_then(|t| t.checked_sub(Duration::from_secs((-offset).max(0) as u64)))
        .unwrap_or_else(SystemTime::now);
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(date)) {
        resp.headers_mut().insert(header::DATE, v);
    }
    resp.headers_mut().insert(
        "x-github-api-version-selected",
        HeaderValue::from_static(API_VERSION),
    );
    resp
}

fn operation(method: &axum::http::Method, path: &str) -> Option<Operation> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let segs: &[&str] = match segs.as_slice() {
        ["api", "v3", rest @ ..] => rest,
        s => s,
    };
    use axum::http::Method as M;
    Some(match (method, segs) {
        (&M::POST, ["app", "installations", _, "access_tokens"]) => {
            Operation::CreateInstallationAccessToken
        }
        (&M::GET, ["repos", _, _, "installation"]) => Operation::GetRepoInstallation,
        (&M::GET, ["orgs", _, "installation"]) => Operation::GetOrgInstallation,
        (&M::GET, ["users", _, "installation"]) => Operation::GetUserInstallation,
        (&M::DELETE, ["installation", "token"]) => Operation::RevokeInstallationAccessToken,
        (&M::GET, ["app", "installations"]) => Operation::ListInstallations,
        (&M::GET, ["app"]) => Operation::GetAuthenticated,
        (&M::GET, ["app", "installations", _]) => Operation::GetInstallation,
        (&M::GET, ["meta", "public_keys", "secret_scanning"]) => {
            Operation::GetSecretScanningPublicKeys
        }
        _ => return None,
    })
}

fn check_headers(h: &HeaderMap) -> Result<(), Fail> {
    if h.get(header::USER_AGENT).is_none_or(|v| v.is_empty()) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required).",
        ));
    }
    let accept = h
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !accept
        .split(',')
        .any(|a| a.trim() == "application/vnd.github+json")
    {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported 'Accept' header: this fake requires 'application/vnd.github+json'",
        ));
    }
    match h.get("x-github-api-version").and_then(|v| v.to_str().ok()) {
        Some(API_VERSION) => Ok(()),
        Some(other) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("API version {other} is not supported."),
        )),
        None => Err(error(
            StatusCode::BAD_REQUEST,
            "Missing X-GitHub-Api-Version header (this fake requires it).",
        )),
    }
}

async fn not_found() -> Response {
    *error(StatusCode::NOT_FOUND, "Not Found")
}
