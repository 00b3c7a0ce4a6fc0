//! [`ApiClient`]: the control plane's HTTP API as a test calls it, with the answers decoded into
//! the crate's own types; the one client behind the in-process server, the child process and
//! the end-to-end stacks.

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::ADMIN_TOKEN;
use crate::http::keys::verify::VerifyResult;
use crate::http::keys::{IssuedKey, KeyView};

/// A client of the control plane at `base`, calling as the admin unless told otherwise.
#[derive(Debug, Clone)]
pub struct ApiClient {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The HTTP client, for requests the helpers below do not cover.
    pub http: reqwest::Client,
}

impl ApiClient {
    /// A client of the control plane at `base` (`http://host:port`); a request that takes over
    /// a minute fails (no test waits that long on one answer, and a hung test says where).
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap_or_else(|e| panic!("HTTP client: {e}"));
        Self {
            base: base.to_owned(),
            http,
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
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
