//! A local fake of GitHub's App-authentication REST API, for tests (GitHub cannot be reached
//! from here). It behaves as GitHub documents for the eight operations in
//! `fake-github/spec/github-app-operations.json`:
//!
//! - App endpoints need `Authorization: Bearer <JWT>`: RS256, signed by one of the App's keys
//!   (verified with its *public* key), `iss` the App id or client id, `iat` not in the future
//!   (5 s tolerance), `exp` in the future, at most 10 minutes after `iat` and after the fake's now.
//!   Failures answer 401 with GitHub's messages, which clients match on for clock-skew retries.
//! - Every request needs `User-Agent` (403 otherwise, as GitHub), `Accept:
//!   application/vnd.github+json` (415) and `X-GitHub-Api-Version: 2022-11-28` (400) — the last
//!   two stricter than GitHub, so a client that forgets them fails here.
//! - Bodies follow GitHub's documented JSON shapes (checked by this crate's tests against the
//!   OpenAPI excerpt), errors carry `message` and `documentation_url`.
//! - It counts calls per operation and can simulate: an App not installed (404), permissions or
//!   repositories the installation lacks (422), primary (403) and secondary (403/429) rate limits
//!   with GitHub's headers, a skewed clock, slow answers, and stateless ~520-character `ghs_`
//!   tokens with dots (`X-GitHub-Stateless-S2S-Token: enabled|disabled` forces either form).
//! - `path_prefix: "/api/v3"` serves the routes as GitHub Enterprise Server does.

#![recursion_limit = "256"]

mod model;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::RngExt;
use serde::Deserialize;
use serde_json::{Value, json};

const DOCS: &str = "https://docs.github.com/rest";
const API_VERSION: &str = "2022-11-28";
/// How far in the future a JWT's `iat` may be, in seconds.
pub const IAT_TOLERANCE_SECS: i64 = 5;

/// Errors from setting up the fake.
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    /// A public key PEM could not be parsed.
    #[error("bad public key: {0}")]
    BadKey(#[from] jsonwebtoken::errors::Error),
    /// Binding the listener failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// An installation names an App the fake does not know.
    #[error("unknown app {0}")]
    UnknownApp(u64),
}

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
}

/// A rate limit the fake answers every App request with, until cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// Primary limit: 403 with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` this many
    /// seconds ahead.
    Primary {
        /// Seconds until the window resets.
        reset_in: u64,
    },
    /// Secondary limit: the given status (403 or 429) with `retry-after`.
    Secondary {
        /// 403 or 429.
        status: u16,
        /// Value of the `retry-after` header, in seconds.
        retry_after: u64,
    },
}

/// One request body the fake received on the access-token endpoint.
#[derive(Debug, Clone)]
pub struct RecordedTokenRequest {
    /// The installation in the path.
    pub installation_id: u64,
    /// The JSON body as sent (`Value::Null` when empty).
    pub body: Value,
    /// The `X-GitHub-Stateless-S2S-Token` header, if sent.
    pub stateless_header: Option<String>,
}

/// What the fake knows about a token it minted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The installation it belongs to.
    pub installation_id: u64,
    /// Expiry, unix seconds (on the fake's clock).
    pub expires_at: i64,
    /// Whether `DELETE /installation/token` revoked it.
    pub revoked: bool,
    /// Repository names it was scoped to (empty: all of the installation's).
    pub repositories: Vec<String>,
    /// Permissions it carries.
    pub permissions: BTreeMap<String, String>,
}

#[derive(Debug)]
struct App {
    id: u64,
    client_id: String,
    slug: String,
    keys: Vec<DecodingKey>,
}

#[derive(Debug, Clone)]
struct Installation {
    id: u64,
    app_id: u64,
    account: String,
    account_id: u64,
    account_type: String,
    repos: BTreeMap<String, u64>,
    permissions: BTreeMap<String, String>,
    suspended: bool,
}

#[derive(Debug, Default)]
struct Inner {
    apps: HashMap<u64, App>,
    installations: BTreeMap<u64, Installation>,
    tokens: HashMap<String, TokenRecord>,
    calls: HashMap<Operation, u64>,
    clock_offset: i64,
    delay: Duration,
    rate_limit: Option<RateLimit>,
    stateless_default: bool,
    token_ttl: i64,
    token_requests: Vec<RecordedTokenRequest>,
    next_id: u64,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    /// `http://127.0.0.1:PORT` plus the path prefix.
    api_base: String,
    web_base: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Start-up options.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `""` for api.github.com's layout, `"/api/v3"` for GitHub Enterprise Server's.
    pub path_prefix: String,
}

/// A running fake GitHub on `127.0.0.1:<random port>`; stops when dropped.
#[derive(Debug)]
pub struct FakeGithub {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGithub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

impl FakeGithub {
    /// Starts the fake with api.github.com's path layout.
    pub async fn start() -> Result<Self, FakeError> {
        Self::start_with(Options::default()).await
    }

    /// Starts the fake with the given options.
    pub async fn start_with(options: Options) -> Result<Self, FakeError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let prefix = options.path_prefix.trim_end_matches('/').to_owned();
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                token_ttl: 3600,
                next_id: 1000,
                ..Inner::default()
            }),
            api_base: format!("http://{addr}{prefix}"),
            web_base: format!("http://{addr}"),
        });
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
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(shared.clone(), common))
            .with_state(shared.clone());
        let router = if prefix.is_empty() {
            routes
        } else {
            Router::new().nest(&prefix, routes)
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// The API base URL a client should be configured with (no trailing slash).
    pub fn base_url(&self) -> String {
        self.shared.api_base.clone()
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Registers an App with its public keys (PEM, SubjectPublicKeyInfo or PKCS#1).
    pub fn add_app(
        &self,
        app_id: u64,
        client_id: &str,
        public_keys_pem: &[&str],
    ) -> Result<(), FakeError> {
        let keys = public_keys_pem
            .iter()
            .map(|pem| DecodingKey::from_rsa_pem(pem.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        self.shared.lock().apps.insert(
            app_id,
            App {
                id: app_id,
                client_id: client_id.to_owned(),
                slug: format!("keygate-test-{app_id}"),
                keys,
            },
        );
        Ok(())
    }

    /// Installs an App on an organization with the given repositories and permissions; returns
    /// the installation id.
    pub fn install(
        &self,
        app_id: u64,
        org: &str,
        repos: &[&str],
        permissions: &[(&str, &str)],
    ) -> Result<u64, FakeError> {
        let mut g = self.shared.lock();
        if !g.apps.contains_key(&app_id) {
            return Err(FakeError::UnknownApp(app_id));
        }
        g.next_id += 1;
        let id = g.next_id;
        let mut repo_ids = BTreeMap::new();
        for r in repos {
            g.next_id += 1;
            repo_ids.insert((*r).to_owned(), g.next_id);
        }
        let inst = Installation {
            id,
            app_id,
            account: org.to_owned(),
            account_id: id * 7,
            account_type: "Organization".to_owned(),
            repos: repo_ids,
            permissions: permissions
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            suspended: false,
        };
        g.installations.insert(id, inst);
        Ok(id)
    }

    /// Removes an installation (the App gets uninstalled).
    pub fn uninstall(&self, installation_id: u64) {
        self.shared.lock().installations.remove(&installation_id);
    }

    /// Calls received for an operation (every request, answered with success or not).
    pub fn calls(&self, op: Operation) -> u64 {
        self.shared.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// Calls received across all operations.
    pub fn total_calls(&self) -> u64 {
        self.shared.lock().calls.values().sum()
    }

    /// Sets how far the fake's clock is ahead of the host's (negative: behind), in seconds.
    pub fn set_clock_offset(&self, secs: i64) {
        self.shared.lock().clock_offset = secs;
    }

    /// Delays every answer by this long.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// Answers every App-authenticated request with this rate limit (or stops, with `None`).
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        self.shared.lock().rate_limit = limit;
    }

    /// Whether tokens are stateless (long, with dots) when the client does not ask.
    pub fn set_stateless_default(&self, on: bool) {
        self.shared.lock().stateless_default = on;
    }

    /// Lifetime of minted tokens, in seconds (GitHub: 3600).
    pub fn set_token_ttl(&self, secs: i64) {
        self.shared.lock().token_ttl = secs;
    }

    /// The access-token request bodies received so far.
    pub fn token_requests(&self) -> Vec<RecordedTokenRequest> {
        self.shared.lock().token_requests.clone()
    }

    /// What the fake knows of a token it minted.
    pub fn token(&self, token: &str) -> Option<TokenRecord> {
        self.shared.lock().tokens.get(token).cloned()
    }

    /// Tokens minted so far.
    pub fn tokens_minted(&self) -> usize {
        self.shared.lock().tokens.len()
    }
}

type Fail = Box<Response>;

fn error(status: StatusCode, message: &str) -> Fail {
    Box::new(
        (
            status,
            axum::Json(model::basic_error(message, DOCS, status.as_u16())),
        )
            .into_response(),
    )
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

#[derive(Deserialize)]
struct Claims {
    iat: Option<Value>,
    exp: Option<Value>,
    iss: Option<Value>,
}

/// Authenticates an App JWT as GitHub does; returns the App id.
fn authenticate_app(shared: &Shared, headers: &HeaderMap) -> Result<u64, Fail> {
    let g = shared.lock();
    if let Some(limit) = g.rate_limit {
        return Err(rate_limited(limit, g.clock_offset));
    }
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(error(StatusCode::UNAUTHORIZED, "Requires authentication"));
    };
    let jwt = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .unwrap_or("");
    let undecodable = || {
        error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        )
    };
    let head = jsonwebtoken::decode_header(jwt).map_err(|_| undecodable())?;
    if head.alg != Algorithm::RS256 {
        return Err(undecodable());
    }
    let claims: Claims = jsonwebtoken::dangerous::insecure_decode(jwt)
        .map_err(|_| undecodable())?
        .claims;
    let app = match &claims.iss {
        Some(Value::Number(n)) => n.as_u64().and_then(|id| g.apps.get(&id)),
        Some(Value::String(s)) => match s.parse::<u64>() {
            Ok(id) => g.apps.get(&id),
            Err(_) => g.apps.values().find(|a| a.client_id == *s),
        },
        _ => {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "'Issuer' claim ('iss') must be an Integer",
            ));
        }
    };
    let Some(app) = app else {
        return Err(error(StatusCode::NOT_FOUND, "Integration not found"));
    };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    if !app
        .keys
        .iter()
        .any(|k| jsonwebtoken::decode::<Value>(jwt, k, &validation).is_ok())
    {
        return Err(undecodable());
    }
    let now = unix_now() + g.clock_offset;
    let Some(iat) = claims.iat.as_ref().and_then(Value::as_i64) else {
        return Err(iat_error());
    };
    let Some(exp) = claims.exp.as_ref().and_then(Value::as_i64) else {
        return Err(exp_error());
    };
    if iat > now + IAT_TOLERANCE_SECS {
        return Err(iat_error());
    }
    if exp <= now {
        return Err(exp_error());
    }
    if exp - iat > 600 || exp > now + 600 {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "'Expiration time' claim ('exp') is too far in the future",
        ));
    }
    Ok(app.id)
}

fn iat_error() -> Fail {
    error(
        StatusCode::UNAUTHORIZED,
        "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
    )
}

fn exp_error() -> Fail {
    error(
        StatusCode::UNAUTHORIZED,
        "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
    )
}

fn rate_limited(limit: RateLimit, offset: i64) -> Fail {
    let mut resp;
    match limit {
        RateLimit::Primary { reset_in } => {
            resp = (
                StatusCode::FORBIDDEN,
                axum::Json(model::basic_error(
                    "API rate limit exceeded for app. Check out the documentation for more details.",
                    "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting",
                    403,
                )),
            )
                .into_response();
            let h = resp.headers_mut();
            let reset = unix_now() + offset + reset_in as i64;
            h.insert("x-ratelimit-limit", HeaderValue::from_static("5000"));
            h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
            h.insert("x-ratelimit-used", HeaderValue::from_static("5000"));
            h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
            if let Ok(v) = HeaderValue::from_str(&reset.to_string()) {
                h.insert("x-ratelimit-reset", v);
            }
        }
        RateLimit::Secondary {
            status,
            retry_after,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
            resp = (
                status,
                axum::Json(model::basic_error(
                    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                    "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
                    status.as_u16(),
                )),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
    }
    Box::new(resp)
}

fn installation_json(shared: &Shared, g: &Inner, inst: &Installation) -> Value {
    let api = &shared.api_base;
    let web = &shared.web_base;
    let slug = g
        .apps
        .get(&inst.app_id)
        .map(|a| a.slug.clone())
        .unwrap_or_default();
    let client_id = g
        .apps
        .get(&inst.app_id)
        .map(|a| a.client_id.clone())
        .unwrap_or_default();
    json!({
        "id": inst.id,
        "account": account_json(api, web, inst),
        "repository_selection": "selected",
        "access_tokens_url": format!("{api}/app/installations/{}/access_tokens", inst.id),
        "repositories_url": format!("{api}/installation/repositories"),
        "html_url": format!("{web}/organizations/{}/settings/installations/{}", inst.account, inst.id),
        "app_id": inst.app_id,
        "client_id": client_id,
        "app_slug": slug,
        "target_id": inst.account_id,
        "target_type": inst.account_type,
        "permissions": inst.permissions,
        "events": [],
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "single_file_name": null,
        "has_multiple_single_files": false,
        "single_file_paths": [],
        "suspended_by": null,
        "suspended_at": if inst.suspended { json!("2026-01-02T00:00:00Z") } else { Value::Null }
    })
}

/// An installation's account. GitHub's description of `GET /app/installations` types it as
/// `allOf: [Simple User, Enterprise]`, so it carries both shapes' required fields.
fn account_json(api: &str, web: &str, inst: &Installation) -> Value {
    let mut account =
        model::simple_user(api, web, &inst.account, inst.account_id, &inst.account_type);
    account["name"] = json!(inst.account);
    account["slug"] = json!(inst.account.to_ascii_lowercase());
    account["created_at"] = json!("2026-01-01T00:00:00Z");
    account["updated_at"] = json!("2026-01-01T00:00:00Z");
    account
}

fn ok_json(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

async fn get_app(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let app_id = match authenticate_app(&shared, &headers) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let g = shared.lock();
    let Some(app) = g.apps.get(&app_id) else {
        return not_found_body();
    };
    let owner = model::simple_user(
        &shared.api_base,
        &shared.web_base,
        "keygate-tests",
        1,
        "Organization",
    );
    ok_json(
        StatusCode::OK,
        json!({
            "id": app.id,
            "slug": app.slug,
            "client_id": app.client_id,
            "node_id": format!("MDM6QXBw{}", app.id),
            "owner": owner,
            "name": app.slug,
            "description": "Keygate test App",
            "external_url": "https://keygate.invalid",
            "html_url": format!("{}/apps/{}", shared.web_base, app.slug),
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
            "permissions": {"contents": "write", "metadata": "read"},
            "events": [],
            "installations_count": g.installations.values().filter(|i| i.app_id == app.id).count()
        }),
    )
}

fn not_found_body() -> Response {
    *error(StatusCode::NOT_FOUND, "Not Found")
}

async fn list_installations(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let app_id = match authenticate_app(&shared, &headers) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let g = shared.lock();
    let list: Vec<Value> = g
        .installations
        .values()
        .filter(|i| i.app_id == app_id)
        .map(|i| installation_json(&shared, &g, i))
        .collect();
    ok_json(StatusCode::OK, Value::Array(list))
}

async fn get_installation(
    State(shared): State<Arc<Shared>>,
    Path(installation_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let app_id = match authenticate_app(&shared, &headers) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let g = shared.lock();
    match installation_id
        .parse::<u64>()
        .ok()
        .and_then(|id| g.installations.get(&id))
    {
        Some(i) if i.app_id == app_id => ok_json(StatusCode::OK, installation_json(&shared, &g, i)),
        _ => not_found_body(),
    }
}

fn find_installation(
    shared: &Shared,
    headers: &HeaderMap,
    pred: impl Fn(&Installation) -> bool,
) -> Response {
    let app_id = match authenticate_app(shared, headers) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let g = shared.lock();
    match g
        .installations
        .values()
        .find(|i| i.app_id == app_id && pred(i))
    {
        Some(i) => ok_json(StatusCode::OK, installation_json(shared, &g, i)),
        None => not_found_body(),
    }
}

async fn get_repo_installation(
    State(shared): State<Arc<Shared>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    find_installation(&shared, &headers, |i| {
        i.account.eq_ignore_ascii_case(&owner)
            && i.repos.keys().any(|r| r.eq_ignore_ascii_case(&repo))
    })
}

async fn get_org_installation(
    State(shared): State<Arc<Shared>>,
    Path(org): Path<String>,
    headers: HeaderMap,
) -> Response {
    find_installation(&shared, &headers, |i| {
        i.account.eq_ignore_ascii_case(&org) && i.account_type == "Organization"
    })
}

async fn get_user_installation(
    State(shared): State<Arc<Shared>>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    find_installation(&shared, &headers, |i| i.account.eq_ignore_ascii_case(&user))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    repositories: Option<Vec<String>>,
    repository_ids: Option<Vec<u64>>,
    permissions: Option<BTreeMap<String, String>>,
}

fn level(v: &str) -> u8 {
    match v {
        "read" => 1,
        "write" => 2,
        "admin" => 3,
        _ => 0,
    }
}

fn random_chars(n: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const B64URL: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_";

async fn create_token(
    State(shared): State<Arc<Shared>>,
    Path(installation_id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let app_id = match authenticate_app(&shared, &headers) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let stateless_header = headers
        .get("x-github-stateless-s2s-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body_value: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return *error(StatusCode::BAD_REQUEST, "Problems parsing JSON"),
        }
    };
    let mut g = shared.lock();
    let Ok(installation_id) = installation_id.parse::<u64>() else {
        return not_found_body();
    };
    g.token_requests.push(RecordedTokenRequest {
        installation_id,
        body: body_value.clone(),
        stateless_header: stateless_header.clone(),
    });
    let req: TokenRequest = if body_value.is_null() {
        TokenRequest {
            repositories: None,
            repository_ids: None,
            permissions: None,
        }
    } else {
        match serde_json::from_value(body_value) {
            Ok(r) => r,
            Err(e) => {
                return ok_json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    model::validation_error(&format!("Invalid request.\n\n{e}"), DOCS),
                );
            }
        }
    };
    let inst = match g.installations.get(&installation_id) {
        Some(i) if i.app_id == app_id => i.clone(),
        _ => return not_found_body(),
    };
    if inst.suspended {
        return *error(
            StatusCode::FORBIDDEN,
            "This installation has been suspended",
        );
    }
    let mut names: Vec<String> = Vec::new();
    for r in req.repositories.iter().flatten() {
        match inst.repos.keys().find(|n| n.eq_ignore_ascii_case(r)) {
            Some(n) => names.push(n.clone()),
            None => return repo_not_accessible(),
        }
    }
    for id in req.repository_ids.iter().flatten() {
        match inst.repos.iter().find(|(_, v)| *v == id) {
            Some((n, _)) => names.push(n.clone()),
            None => return repo_not_accessible(),
        }
    }
    names.sort();
    names.dedup();
    let permissions = match &req.permissions {
        Some(p) => {
            for (k, v) in p {
                if level(v) == 0
                    || level(inst.permissions.get(k).map(String::as_str).unwrap_or("")) < level(v)
                {
                    return ok_json(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        model::validation_error(
                            "The permissions requested are not granted to this installation.",
                            "https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app",
                        ),
                    );
                }
            }
            p.clone()
        }
        None => inst.permissions.clone(),
    };
    let stateless = match stateless_header.as_deref() {
        Some("enabled") => true,
        Some("disabled") => false,
        _ => g.stateless_default,
    };
    let token = if stateless {
        format!(
            "ghs_{}.{}.{}",
            random_chars(36, B64URL),
            random_chars(400, B64URL),
            random_chars(78, B64URL)
        )
    } else {
        format!("ghs_{}", random_chars(36, ALNUM))
    };
    let expires_at = unix_now() + g.clock_offset + g.token_ttl;
    g.tokens.insert(
        token.clone(),
        TokenRecord {
            installation_id,
            expires_at,
            revoked: false,
            repositories: names.clone(),
            permissions: permissions.clone(),
        },
    );
    let owner = model::simple_user(
        &shared.api_base,
        &shared.web_base,
        &inst.account,
        inst.account_id,
        &inst.account_type,
    );
    let mut out = json!({
        "token": token,
        "expires_at": rfc3339(expires_at),
        "permissions": permissions,
        "repository_selection": if names.is_empty() { "all" } else { "selected" },
    });
    if !names.is_empty() {
        let repos: Vec<Value> = names
            .iter()
            .map(|n| {
                model::repository(
                    &shared.api_base,
                    &shared.web_base,
                    &owner,
                    &inst.account,
                    n,
                    inst.repos[n],
                )
            })
            .collect();
        out["repositories"] = Value::Array(repos);
    }
    ok_json(StatusCode::CREATED, out)
}

fn repo_not_accessible() -> Response {
    ok_json(
        StatusCode::UNPROCESSABLE_ENTITY,
        model::validation_error(
            "There is at least one repository that does not exist or is not accessible to the parent installation.",
            "https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app",
        ),
    )
}

async fn revoke_token(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("token "))
        .unwrap_or("");
    let mut g = shared.lock();
    let now = unix_now() + g.clock_offset;
    match g.tokens.get_mut(token) {
        Some(t) if !t.revoked && t.expires_at > now => {
            t.revoked = true;
            StatusCode::NO_CONTENT.into_response()
        }
        _ => *error(StatusCode::UNAUTHORIZED, "Bad credentials"),
    }
}

/// Path of a test-only key in this crate's `fixtures/` folder (see its README: these keys
/// protect nothing).
pub fn fixture_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Contents of a fixture file.
///
/// # Panics
/// If the file is missing (a broken checkout).
pub fn fixture(name: &str) -> String {
    let path = fixture_path(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}
