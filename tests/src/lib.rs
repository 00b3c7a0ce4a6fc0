//! End-to-end test support for Keygate: a real control plane (library, on port 0, fresh SQLite
//! file or a fresh PostgreSQL database) driven over real HTTP, and the real filter `.wasm` in the
//! host harness pointed at it.
//!
//! These are test helpers: on failure they panic with a message that says what went wrong.

pub mod api;
pub mod bench_envoy;
pub mod bench_shared_data;
pub mod cut_proxy;
pub mod echo;
pub mod envoy;
pub mod ext_authz;
pub mod fake_feed;
pub mod lds;
pub mod limits;
pub mod native;
pub mod proxies;
pub mod stack;
pub mod tls_front;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keygate_control_plane::http::keys::{IssuedKey as ApiIssuedKey, KeyView};
use keygate_control_plane::test_support::{Engine, InProcessServer};
use keygate_host_harness::{Cluster, Disposition, Harness, HarnessBuilder, Plugin, StreamOutcome};
use keygate_plugin_artifacts::KEYGATE_PLUGIN_WASM;
use serde_json::{Value, json};

pub use api::Api;
pub use reqwest;

pub use keygate_control_plane::test_support::ADMIN_TOKEN;
pub use keygate_testkit::poll::eventually;

/// The harness cluster name of the control plane in [`filter_config`].
pub const CLUSTER: &str = "keygate";

/// The filter routes used by the end-to-end tests: `/health` anonymous; `GET /repos/<org>/…`
/// needs `repo:read` and `<org>` on the allow-list; other methods on `/repos/` need `repo:write`.
pub const ROUTES: &str = r#"[
  {"path_prefix":"/health","anonymous":true},
  {"path_prefix":"/repos/","methods":["GET","HEAD"],"required_scopes":["repo:read"],"resource_from_path_segment":1},
  {"path_prefix":"/repos/","required_scopes":["repo:write"],"resource_from_path_segment":1}
]"#;

/// The compiled filter, loaded (and compiled by wasmtime) once per process.
pub fn plugin() -> Arc<Plugin> {
    static PLUGIN: OnceLock<Arc<Plugin>> = OnceLock::new();
    PLUGIN
        .get_or_init(|| {
            Arc::new(
                Plugin::load_file(KEYGATE_PLUGIN_WASM)
                    .unwrap_or_else(|e| panic!("loading {KEYGATE_PLUGIN_WASM}: {e}")),
            )
        })
        .clone()
}

/// Wall-clock time in nanoseconds since the epoch.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Wall-clock time in seconds since the epoch.
pub fn unix_secs() -> i64 {
    (unix_nanos() / 1_000_000_000) as i64
}

/// The filter's plugin configuration: cluster [`CLUSTER`], the given edge key, [`ROUTES`], and
/// `extra` JSON members (e.g. `"max_staleness_s":60`) appended.
pub fn filter_config(edge_key: &str, extra: &str) -> Vec<u8> {
    let sep = if extra.trim().is_empty() { "" } else { "," };
    format!(
        r#"{{"cluster":"{CLUSTER}","authority":"keygate.internal","edge_key":"{edge_key}","routes":{ROUTES}{sep}{extra}}}"#
    )
    .into_bytes()
}

/// A harness builder for the real filter with `workers` workers, its virtual clock started at
/// the wall-clock now (so expiries written by the control plane mean the same to the filter),
/// and the configuration from [`filter_config`]. Add the cluster(s), then build.
pub fn harness_builder(workers: usize, edge_key: &str, extra: &str) -> HarnessBuilder {
    Harness::builder_shared(plugin())
        .workers(workers)
        .virtual_start(unix_nanos())
        .plugin_configuration(filter_config(edge_key, extra))
}

/// A harness for the real filter whose [`CLUSTER`] is the control plane's real HTTP endpoint.
pub fn edge_harness(cp: &ControlPlane, workers: usize, extra: &str) -> Harness {
    harness_builder(workers, &cp.edge_key, extra)
        .cluster(CLUSTER, Cluster::http(cp.base.clone()))
        .build()
        .unwrap_or_else(|e| panic!("building the harness: {e}"))
}

/// `(status, code)` of a local reply; panics when the stream was not answered locally.
pub fn denial(o: &StreamOutcome) -> (u16, String) {
    assert_eq!(
        o.disposition,
        Disposition::LocalResponse,
        "expected a local reply: {o:?}"
    );
    let Some(lr) = o.local_response.as_ref() else {
        panic!("no local response in {o:?}");
    };
    let body: Value = serde_json::from_slice(&lr.body)
        .unwrap_or_else(|e| panic!("local reply body is not JSON ({e}): {:?}", lr.body));
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (lr.status, code)
}

/// A header of the local reply.
pub fn local_header<'a>(o: &'a StreamOutcome, name: &str) -> Option<&'a str> {
    o.local_response
        .as_ref()?
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_text())
}

/// A metric's value, 0 when absent.
pub fn metric(h: &Harness, name: &str) -> u64 {
    h.metric(name).map_or(0, |m| m.value)
}

/// A decision counter (`keygate.decision.…`) after one timer tick: the filter counts its
/// decisions in its own memory and adds them to the host's counters on the tick (100 ms is at
/// least one tick of every configuration).
pub fn decision_count(h: &mut Harness, name: &str) -> u64 {
    h.advance(Duration::from_millis(100));
    metric(h, name)
}

/// The key-set calls (`GET /v1/keyset…`) the filter has made so far, in order.
pub fn keyset_callouts(h: &Harness) -> Vec<keygate_host_harness::CalloutRecord> {
    h.callouts()
        .into_iter()
        .filter(|c| {
            c.request
                .header(":path")
                .is_some_and(|p| p.starts_with("/v1/keyset"))
        })
        .collect()
}

/// Number of key-set calls the filter has made so far.
pub fn keyset_calls(h: &Harness) -> usize {
    keyset_callouts(h).len()
}

/// What a proxy (Envoy or the gateway) answered.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers (lowercase names, in order).
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub text: String,
    /// The body as JSON (`Value::String` when it is not JSON): the echo's view of the request on
    /// a pass, the filter's local reply on a denial.
    pub body: Value,
}

impl Reply {
    /// Reads a response whole.
    pub async fn read(resp: reqwest::Response) -> Self {
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
        Self {
            status,
            headers,
            text,
            body,
        }
    }

    /// The filter's error code of a local reply (`""` when none).
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    /// A header the upstream received (from the echo), if the request passed.
    pub fn upstream_header(&self, name: &str) -> Option<&str> {
        self.body["headers"][name].as_str()
    }

    /// The path (with query) the upstream received.
    pub fn upstream_path(&self) -> Option<&str> {
        self.body["path"].as_str()
    }

    /// A response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A key issued through the API: the crate's [`IssuedKey`](ApiIssuedKey) with its id at hand.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    /// The secret, shown once.
    pub secret: String,
    /// `key_<hex>`.
    pub id: String,
    /// The key record as returned.
    pub record: KeyView,
}

impl From<ApiIssuedKey> for IssuedKey {
    fn from(k: ApiIssuedKey) -> Self {
        Self {
            secret: k.secret,
            id: k.key.id.clone(),
            record: k.key,
        }
    }
}

/// The control plane in this process ([`InProcessServer`]: the real library's
/// [`serve`](keygate_control_plane::serve) on 127.0.0.1 port 0) on a tokio runtime of its own,
/// so that synchronous tests can drive it through [`Api`], with an `edge` key for the filter.
/// Derefs to the server (`base`, `database_url`, `url`, `state`).
pub struct ControlPlane {
    server: Option<InProcessServer>,
    /// The secret of an `edge` key, for the filter's configuration.
    pub edge_key: String,
    /// Its API, for the test's calls.
    pub api: Api,
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for ControlPlane {
    type Target = InProcessServer;

    fn deref(&self) -> &InProcessServer {
        self.server
            .as_ref()
            .unwrap_or_else(|| panic!("the control plane was dropped"))
    }
}

impl ControlPlane {
    /// Starts on a fresh SQLite file in a temporary directory.
    pub fn start_sqlite() -> Self {
        Self::start_with(|| InProcessServer::start(Engine::Sqlite))
    }

    /// Starts on a fresh database of the shared throwaway PostgreSQL cluster.
    pub fn start_postgres() -> Self {
        Self::start_with(|| InProcessServer::start(Engine::Postgres))
    }

    /// Starts on `database_url`.
    pub fn start_on(database_url: &str) -> Self {
        Self::start_with(|| InProcessServer::start_on(database_url, |_| {}))
    }

    /// Starts the server `start` makes on a runtime of its own and issues an `edge` key.
    fn start_with<F: Future<Output = InProcessServer>>(start: impl FnOnce() -> F) -> Self {
        // The control plane's warnings and errors, in the test's captured output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
        let server = rt.block_on(start());
        let api = Api::new(&server.base);
        let edge_key = api
            .create_key(json!({"name": "e2e edge", "kind": "edge"}))
            .secret;
        Self {
            server: Some(server),
            edge_key,
            api,
            rt,
        }
    }

    /// A handle on the control plane's runtime (to run async code from in-process handlers).
    pub fn runtime(&self) -> tokio::runtime::Handle {
        self.rt.handle().clone()
    }

    /// Stops serving (graceful, bounded to 5 s); the port then refuses connections.
    pub fn stop(&mut self) {
        if let Some(s) = self.server.as_mut() {
            self.rt.block_on(s.shutdown());
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
        // Its state (database pool) goes inside the runtime that made it.
        let _inside = self.rt.enter();
        drop(self.server.take());
    }
}

/// The issued key of a `POST /v1/keys` or rotation answer.
pub fn issued(v: &Value) -> IssuedKey {
    serde_json::from_value::<ApiIssuedKey>(v.clone())
        .unwrap_or_else(|e| panic!("not an issued key ({e}): {v}"))
        .into()
}
