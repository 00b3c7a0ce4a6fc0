//! [`Api`]: the control plane's HTTP API for synchronous tests and benches, the one blocking
//! client every stack (in-process, `keygate serve` behind Envoy, forward-auth) hands out.

use keygate_control_plane::http::keys::KeyView;
use keygate_control_plane::test_support::{ADMIN_TOKEN, ApiClient};
use reqwest::Method;
use serde_json::{Value, json};

use crate::IssuedKey;

/// The control plane's API at one address, called as the admin unless told otherwise, on a
/// runtime of its own; answers decode into the control plane's own types and the helpers assert
/// the status they expect.
pub struct Api {
    rt: tokio::runtime::Runtime,
    client: ApiClient,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.client.base)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// The API of the control plane at `base` (`http://host:port`).
    pub fn new(base: &str) -> Self {
        // A worker thread of its own: the connection pool's tasks run between calls, so a
        // connection the server closed (a control plane killed and restarted on its port) leaves
        // the pool before the next call instead of failing it.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
        Self {
            rt,
            client: ApiClient::new(base),
        }
    }

    /// `http://host:port`.
    pub fn base(&self) -> &str {
        &self.client.base
    }

    /// The async client underneath, for calls the helpers do not cover.
    pub fn client(&self) -> &ApiClient {
        &self.client
    }

    /// Runs `f` on this client's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// A JSON call with a bearer token: `(status, body)`, the body `Null` when empty and a JSON
    /// string when it is not JSON.
    pub fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (st, v) = self
            .rt
            .block_on(self.client.call(Some(token), method, path, body));
        (st.as_u16(), v)
    }

    /// A call as the admin.
    pub fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(ADMIN_TOKEN, method, path, body)
    }

    /// `POST /v1/keys`; asserts 201.
    pub fn create_key(&self, body: Value) -> IssuedKey {
        self.rt.block_on(self.client.create(body)).into()
    }

    /// `count` keys created concurrently, 32 at a time (`name` + `-<index>`), in order.
    pub fn create_keys(&self, count: usize, body: Value) -> Vec<IssuedKey> {
        let name = body["name"].as_str().unwrap_or("key").to_owned();
        self.rt.block_on(async {
            let mut out = Vec::with_capacity(count);
            let indexes: Vec<usize> = (0..count).collect();
            for chunk in indexes.chunks(32) {
                let calls: Vec<_> = chunk
                    .iter()
                    .map(|i| {
                        let mut b = body.clone();
                        b["name"] = json!(format!("{name}-{i}"));
                        let client = self.client.clone();
                        tokio::spawn(async move { client.create(b).await })
                    })
                    .collect();
                for call in calls {
                    let k = call.await.unwrap_or_else(|e| panic!("create key: {e}"));
                    out.push(k.into());
                }
            }
            out
        })
    }

    /// `POST /v1/keys/{id}/<action>` (suspend, reactivate, revoke); asserts 200.
    pub fn key_action(&self, id: &str, action: &str) -> KeyView {
        self.rt.block_on(self.client.key_action(id, action))
    }

    /// `POST /v1/keys/{id}/rotate` with a grace period (seconds); asserts 200, the new secret.
    pub fn rotate(&self, id: &str, grace_period_s: i64) -> IssuedKey {
        self.rt
            .block_on(self.client.rotate(id, grace_period_s))
            .into()
    }

    /// `GET /v1/keys/{id}`; asserts 200.
    pub fn key(&self, id: &str) -> KeyView {
        self.rt.block_on(self.client.key(id))
    }
}
