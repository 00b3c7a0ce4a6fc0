//! The Keygate dynamic module (`keygate-native-filter`, the native shell) in real Envoy 1.40:
//! its HTTP filter entries (synced from a control plane, or on a fixed snapshot), a bootstrap
//! with it in the proxy-wasm filter's place, and Envoy started where it can find the module.
//!
//! These are test helpers: on failure they panic with a message that says what went wrong.

use std::path::Path;
use std::time::Duration;

use keygate_gateway::envoy_bootstrap;
use keygate_native_filter_artifacts::{MODULE, envoy_env};
use keygate_testkit::envoy::{Envoy, EnvoyOptions};
use serde_json::{Value, json};

use crate::Reply;
use crate::echo::{EchoUpstream, send};

/// `envoy/envoy-module.yaml`: the deployment configuration of Keygate as a dynamic module.
pub const ENVOY_MODULE_YAML: &str = include_str!("../../envoy/envoy-module.yaml");

/// `envoy/envoy-module.yaml` made runnable here: the listener and the admin interface on
/// 127.0.0.1 port 0, the upstream cluster at `upstream` (`host:port`), the module's
/// `control_plane_url`, and its plugin configuration with `overrides` (a JSON object) merged
/// over it (`null` removes a member).
pub fn module_bootstrap(control_plane_url: &str, upstream: &str, overrides: &Value) -> Value {
    let mut b = envoy_bootstrap::parse(ENVOY_MODULE_YAML)
        .unwrap_or_else(|e| panic!("envoy/envoy-module.yaml: {e}"));
    let local = envoy_bootstrap::socket_address("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    b["static_resources"]["listeners"][0]["address"]["socket_address"] = local.clone();
    b["admin"]["address"]["socket_address"] = local;
    envoy_bootstrap::set_cluster_endpoint(&mut b, envoy_bootstrap::UPSTREAM_CLUSTER, upstream)
        .unwrap_or_else(|e| panic!("envoy/envoy-module.yaml: {e}"));
    let mut filter_config = module_filter_config(&b);
    filter_config["control_plane_url"] = json!(control_plane_url);
    let configuration = &mut filter_config["configuration"];
    for (k, v) in overrides.as_object().into_iter().flatten() {
        if v.is_null() {
            if let Some(c) = configuration.as_object_mut() {
                c.remove(k);
            }
        } else {
            configuration[k] = v.clone();
        }
    }
    *module_filter_config_value(&mut b) = json!(filter_config.to_string());
    b
}

/// The plugin configuration of a bootstrap made by [`module_bootstrap`].
pub fn module_configuration(bootstrap: &Value) -> Value {
    module_filter_config(bootstrap)["configuration"].clone()
}

/// The `filter_config` JSON of the first listener's Keygate module filter.
fn module_filter_config(bootstrap: &Value) -> Value {
    let mut b = bootstrap.clone();
    let text = module_filter_config_value(&mut b)
        .as_str()
        .unwrap_or_else(|| panic!("the module's filter_config is not a string"))
        .to_owned();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("the module's filter_config: {e}"))
}

fn module_filter_config_value(bootstrap: &mut Value) -> &mut Value {
    let filters = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"]
        .as_array_mut()
        .unwrap_or_else(|| panic!("no http_filters on the first listener"));
    let keygate = filters
        .iter_mut()
        .find(|f| f["name"] == envoy_bootstrap::FILTER)
        .unwrap_or_else(|| panic!("no `{}` HTTP filter", envoy_bootstrap::FILTER));
    assert_eq!(
        keygate["typed_config"]["dynamic_module_config"]["name"], MODULE,
        "the module's name in envoy/envoy-module.yaml"
    );
    &mut keygate["typed_config"]["filter_config"]["value"]
}

/// An HTTP filter entry running the module's filter `filter_name` (`keygate` or `noop`) with
/// `filter_config` (sent as a `google.protobuf.StringValue`).
pub fn filter(filter_name: &str, filter_config: &str) -> Value {
    json!({
        "name": format!("native_{filter_name}"),
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"name": MODULE},
            "filter_name": filter_name,
            "filter_config": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": filter_config
            }
        }
    })
}

/// Keygate's native filter: the proxy-wasm filter's plugin `configuration` (the same JSON) and
/// the key set read from `snapshot_file` (wire format) when Envoy creates the configuration.
pub fn keygate_filter(configuration: &Value, snapshot_file: &Path) -> Value {
    let filter_config = json!({
        "configuration": configuration,
        "snapshot_file": snapshot_file.to_str().unwrap_or_else(|| panic!("{} is not UTF-8", snapshot_file.display())),
    });
    filter("keygate", &filter_config.to_string())
}

/// Keygate's native filter synced from the control plane at `control_plane_url`
/// (`http://host:port`): the proxy-wasm filter's plugin `configuration` (the same JSON).
pub fn synced_filter(configuration: &Value, control_plane_url: &str) -> Value {
    synced_filter_trusting(configuration, control_plane_url, None)
}

/// [`synced_filter`] with an `https://` URL whose certificate must chain to the CA in the PEM
/// file `ca_file` (Mozilla's roots when `None`).
pub fn synced_filter_trusting(
    configuration: &Value,
    control_plane_url: &str,
    ca_file: Option<&Path>,
) -> Value {
    let mut filter_config = json!({
        "configuration": configuration,
        "control_plane_url": control_plane_url,
    });
    if let Some(path) = ca_file {
        filter_config["ca_file"] = json!(
            path.to_str()
                .unwrap_or_else(|| panic!("{} is not UTF-8", path.display()))
        );
    }
    filter("keygate", &filter_config.to_string())
}

/// The native filter that decides as Keygate does (same configuration and set as
/// [`keygate_filter`]) but then makes only [`host_calls_filter`]'s callbacks: a bench baseline
/// that tells the decision's cost in Envoy from that of the edits it asks for.
pub fn decide_only_filter(configuration: &Value, snapshot_file: &Path) -> Value {
    let mut f = keygate_filter(configuration, snapshot_file);
    f["name"] = json!("native_decide-only");
    f["typed_config"]["filter_name"] = json!("decide-only");
    f
}

/// The no-op native filter (the price of a dynamic module in Envoy).
pub fn noop_filter() -> Value {
    filter("noop", "")
}

/// The native filter that makes Keygate's callbacks of an allowed request and nothing else.
pub fn host_calls_filter() -> Value {
    filter("host-calls", "")
}

/// `bootstrap` (one made from `envoy/envoy.yaml`) with `native` in place of the proxy-wasm
/// Keygate filter.
pub fn replace_wasm_filter(bootstrap: &Value, native: Value) -> Value {
    let mut b = bootstrap.clone();
    let filters = b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"]
        .as_array_mut()
        .unwrap_or_else(|| panic!("no http_filters on the first listener"));
    let slot = filters
        .iter_mut()
        .find(|f| f["name"] == envoy_bootstrap::FILTER)
        .unwrap_or_else(|| panic!("no `{}` HTTP filter", envoy_bootstrap::FILTER));
    *slot = native;
    b
}

/// Envoy's options with the module's directory as its search path.
pub fn options(concurrency: usize) -> EnvoyOptions {
    EnvoyOptions {
        concurrency,
        env: vec![envoy_env()],
        ..EnvoyOptions::default()
    }
}

/// Envoy on `bootstrap` with the native module, an echo upstream of its own, and a client.
pub struct NativeEnvoy {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    echo: EchoUpstream,
    /// The running Envoy.
    pub envoy: Envoy,
    /// `http://127.0.0.1:<port>` of its listener.
    pub url: String,
}

impl std::fmt::Debug for NativeEnvoy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeEnvoy")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl NativeEnvoy {
    /// Starts an echo upstream, then Envoy on the bootstrap `make_bootstrap(upstream)` returns
    /// (`upstream` is the echo's `host:port`), listener `listener`.
    pub fn start(
        concurrency: usize,
        listener: &str,
        make_bootstrap: impl FnOnce(&str) -> Value,
    ) -> Self {
        Self::start_with_env(concurrency, listener, &[], make_bootstrap)
    }

    /// As [`NativeEnvoy::start`], with `env` added to Envoy's environment (the edge key).
    pub fn start_with_env(
        concurrency: usize,
        listener: &str,
        env: &[(&str, &str)],
        make_bootstrap: impl FnOnce(&str) -> Value,
    ) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
        let echo = EchoUpstream::start(&rt);
        let upstream = echo.addr().to_owned();
        let bootstrap = make_bootstrap(&upstream);
        let mut options = options(concurrency);
        options
            .env
            .extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let envoy = Envoy::start(&bootstrap.to_string(), &options)
            .unwrap_or_else(|e| panic!("starting Envoy with the native module: {e}"));
        let addr = envoy
            .listener_addr(listener)
            .unwrap_or_else(|e| panic!("Envoy's listener: {e}"));
        // A connection per request: Envoy spreads them over its workers.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap_or_else(|e| panic!("HTTP client: {e}"));
        Self {
            rt,
            http,
            echo,
            envoy,
            url: format!("http://{addr}"),
        }
    }

    /// A request through Envoy with `headers`.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let url = format!("{}{path}", self.url);
        self.rt.block_on(send(&self.http, method, &url, headers))
    }

    /// A request to the listener named `listener` (another than the one of [`NativeEnvoy::url`]).
    pub fn request_to(&self, listener: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let addr = self
            .envoy
            .listener_addr(listener)
            .unwrap_or_else(|e| panic!("Envoy's listener {listener}: {e}"));
        let url = format!("http://{addr}{path}");
        self.rt.block_on(send(&self.http, "GET", &url, headers))
    }

    /// A counter or gauge of Envoy's (`0` when absent).
    pub fn stat(&self, name: &str) -> u64 {
        self.envoy
            .stat(name)
            .unwrap_or_else(|e| panic!("Envoy stats: {e}"))
            .unwrap_or(0)
    }
}

impl Drop for NativeEnvoy {
    fn drop(&mut self) {
        self.envoy.stop();
        self.echo.stop();
    }
}
