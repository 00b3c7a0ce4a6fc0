//! [`InProcessServer`]: the control plane served in the test's own process, on the test's
//! tokio runtime, driven over real HTTP.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{ADMIN_TOKEN, Engine, fresh_database};
use crate::http::keys::verify::VerifyResult;
use crate::http::keys::{IssuedKey, KeyView};
use crate::runtime::config::Config;
use crate::runtime::state::AppState;

/// The control plane in this process: [`crate::serve`] on 127.0.0.1 port 0 (a task of the
/// current tokio runtime), with the bootstrap admin token [`ADMIN_TOKEN`] and usage flushed
/// every 50 ms.
pub struct InProcessServer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// A client for the test's own requests.
    pub http: reqwest::Client,
    /// The server's state (database, caches), for checks below the API.
    pub state: AppState,
    /// The database URL it runs on.
    pub database_url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for InProcessServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessServer")
            .field("base", &self.base)
            .field("database_url", &self.database_url)
            .finish_non_exhaustive()
    }
}

impl InProcessServer {
    /// Starts on a fresh database of `engine`.
    pub async fn start(engine: Engine) -> Self {
        let (url, dir) = fresh_database(engine);
        let mut s = Self::start_on(&url, |_| {}).await;
        s._dir = dir;
        s
    }

    /// Starts on `database_url`; `tweak` changes the configuration first.
    pub async fn start_on(database_url: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::new(database_url, Some(ADMIN_TOKEN.to_owned()));
        config.usage_flush_ms = 50;
        tweak(&mut config);
        let (state, generated) = AppState::new(config)
            .await
            .unwrap_or_else(|e| panic!("control plane state on {database_url}: {e}"));
        assert!(generated.is_none(), "an admin token was configured");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(crate::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            state,
            database_url: database_url.to_owned(),
            shutdown: Some(tx),
            task: Some(task),
            _dir: None,
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops serving (graceful, bounded to 5 s) and waits for it; the port then refuses
    /// connections. Later calls do nothing.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// [`InProcessServer::shutdown`], consuming it.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    /// A JSON request, with a bearer token when given: `(status, body)` (see [`json_call`]).
    pub async fn call(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        json_call(&self.http, &self.url(path), token, method, body).await
    }

    /// A JSON request as the admin.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call(Some(ADMIN_TOKEN), method, path, body).await
    }

    /// `POST /v1/keys` as the admin; asserts 201.
    pub async fn create(&self, body: Value) -> IssuedKey {
        let (st, v) = self.admin(Method::POST, "/v1/keys", Some(body)).await;
        assert_eq!(st, StatusCode::CREATED, "create key: {v}");
        decode("create key", v)
    }

    /// `POST /v1/keys/verify` as the admin; asserts 200.
    pub async fn verify(&self, key: &str, scopes: &[&str], resource: Option<&str>) -> VerifyResult {
        let mut body = json!({"key": key, "scopes": scopes});
        if let Some(r) = resource {
            body["resource"] = json!(r);
        }
        let (st, v) = self
            .admin(Method::POST, "/v1/keys/verify", Some(body))
            .await;
        assert_eq!(st, StatusCode::OK, "verify: {v}");
        decode("verify", v)
    }

    /// `POST /v1/keys/{id}/<action>` (suspend, reactivate, revoke) as the admin; asserts 200.
    pub async fn key_action(&self, id: &str, action: &str) -> KeyView {
        let path = format!("/v1/keys/{id}/{action}");
        let (st, v) = self.admin(Method::POST, &path, Some(json!({}))).await;
        assert_eq!(st, StatusCode::OK, "{action} {id}: {v}");
        decode(action, v)
    }

    /// `POST /v1/keys/{id}/rotate` with a grace period (seconds) as the admin; asserts 200.
    pub async fn rotate(&self, id: &str, grace_period_s: i64) -> IssuedKey {
        let path = format!("/v1/keys/{id}/rotate");
        let body = json!({"grace_period": grace_period_s});
        let (st, v) = self.admin(Method::POST, &path, Some(body)).await;
        assert_eq!(st, StatusCode::OK, "rotate {id}: {v}");
        decode("rotate", v)
    }

    /// `GET /v1/keys/{id}` as the admin; asserts 200.
    pub async fn key(&self, id: &str) -> KeyView {
        let (st, v) = self
            .admin(Method::GET, &format!("/v1/keys/{id}"), None)
            .await;
        assert_eq!(st, StatusCode::OK, "show {id}: {v}");
        decode("show", v)
    }
}

/// A JSON request to `url`, with a bearer token when given: `(status, body)`, the body `Null`
/// when empty and a JSON string when it is not JSON. Panics when the request cannot be sent.
pub async fn json_call(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    method: Method,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = http.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status();
    let text = resp
        .text()
        .await
        .unwrap_or_else(|e| panic!("{url}: body: {e}"));
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, v)
}

/// `v` as a `T`; panics with the body when it is not one.
fn decode<T: DeserializeOwned>(what: &str, v: Value) -> T {
    serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{what}: the answer does not decode ({e}): {v}"))
}
