//! Real Envoy end to end: `envoy/envoy.yaml` itself, with only its addresses, the `.wasm` path
//! and chosen plugin settings substituted, in front of the echo upstream, syncing from a real
//! `keygate serve` process. Everything over real HTTP on loopback.
//!
//! These are test helpers: on failure they panic with a message that says what went wrong.

use std::time::Duration;

use keygate_gateway::envoy_bootstrap;
use keygate_plugin_artifacts::KEYGATE_PLUGIN_WASM;
use keygate_testkit::envoy::{Envoy, EnvoyOptions};
use serde_json::{Value, json};

pub use crate::Reply;
use crate::echo::{EchoUpstream, send};
use crate::stack::{ServeProcess, wait_for};
use crate::{Api, IssuedKey};

/// The listener of `envoy/envoy.yaml`.
pub const LISTENER: &str = "ingress";

/// The VM environment variable of `envoy/envoy.yaml` that carries the edge key.
pub const EDGE_KEY_ENV: &str = "KEYGATE_EDGE_KEY";

/// `envoy/envoy.yaml` as a JSON value.
pub fn envoy_yaml() -> Value {
    envoy_bootstrap::parse(envoy_bootstrap::ENVOY_YAML)
        .unwrap_or_else(|e| panic!("envoy/envoy.yaml: {e}"))
}

/// The plugin configuration (the JSON in `configuration.value`) of a bootstrap.
pub fn plugin_configuration(bootstrap: &Value) -> Value {
    envoy_bootstrap::plugin_configuration(bootstrap)
        .unwrap_or_else(|e| panic!("plugin configuration: {e}"))
}

/// `envoy/envoy.yaml` for this machine: listener and admin on loopback port 0, the control-plane
/// cluster at `control_plane` (`host:port`), the upstream at `upstream`, the filter module from
/// this build, and the plugin configuration's `authority` set to the control plane, with
/// `overrides` (a JSON object) merged over the configuration (`null` removes a member).
/// Built by [`keygate_gateway::envoy_bootstrap`], as the quickstart's.
pub fn bootstrap(control_plane: &str, upstream: &str, overrides: &Value) -> Value {
    bootstrap_with_module(control_plane, upstream, overrides, KEYGATE_PLUGIN_WASM)
}

/// As [`bootstrap`], with the filter module at `module` (another build, for an A/B).
pub fn bootstrap_with_module(
    control_plane: &str,
    upstream: &str,
    overrides: &Value,
    module: &str,
) -> Value {
    let addresses = envoy_bootstrap::Addresses {
        listener: "127.0.0.1:0",
        admin: "127.0.0.1:0",
        control_plane,
        upstream,
    };
    envoy_bootstrap::runnable(envoy_yaml(), &addresses, module, overrides)
        .unwrap_or_else(|e| panic!("envoy/envoy.yaml: {e}"))
}

/// A real `keygate serve` process, the echo upstream and Envoy running `envoy/envoy.yaml` with
/// the filter, the edge key passed through the process environment as in production.
pub struct EnvoyStack {
    rt: tokio::runtime::Runtime,
    /// The control plane.
    pub control_plane: ServeProcess,
    /// The edge key Envoy was given.
    pub edge_key: String,
    envoy: Option<Envoy>,
    echo: EchoUpstream,
    upstream: String,
    /// `http://127.0.0.1:<port>` of Envoy's listener.
    pub url: String,
    /// The plugin configuration Envoy was given.
    pub configuration: Value,
    options: EnvoyOptions,
    overrides: Value,
    /// The filter module Envoy loads: this build's, unless [`EnvoyStack::use_module`] chose another.
    module: String,
    node: NodeOptions,
    /// The control plane's API.
    pub api: Api,
    /// The client of the proxy's listener.
    http: reqwest::Client,
}

/// Where an Envoy of a fleet reaches its control plane, and what it calls itself.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// `host:port` Envoy's control-plane cluster points at instead of the control plane's own
    /// address (a [`crate::cut_proxy::CutProxy`] in front of it).
    pub via: Option<String>,
    /// The bootstrap's `node.id` (the filter reports it; `node.cluster` is `keygate-e2e`).
    pub node_id: Option<String>,
}

impl std::fmt::Debug for EnvoyStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvoyStack")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl EnvoyStack {
    /// Starts a control plane on a fresh SQLite file, issues an edge key, starts the echo
    /// upstream and Envoy with `concurrency` workers and the configuration `overrides`, and waits
    /// until Envoy is ready (its admin `/ready` is `LIVE`; the filter may not have synced yet).
    pub fn start(concurrency: usize, overrides: Value) -> Self {
        let control_plane = ServeProcess::start_sqlite(&[]);
        Self::start_with(control_plane, concurrency, overrides)
    }

    /// As [`EnvoyStack::start`], with a control plane already running.
    pub fn start_with(control_plane: ServeProcess, concurrency: usize, overrides: Value) -> Self {
        Self::start_node(
            control_plane,
            NodeOptions::default(),
            concurrency,
            overrides,
        )
    }

    /// As [`EnvoyStack::start_with`], reaching the control plane as `node` says.
    pub fn start_node(
        control_plane: ServeProcess,
        node: NodeOptions,
        concurrency: usize,
        overrides: Value,
    ) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
        let echo = EchoUpstream::start(&rt);
        let upstream = echo.addr().to_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|e| panic!("HTTP client: {e}"));
        let api = Api::new(&control_plane.url());
        let edge_key = api
            .create_key(json!({"name": "envoy edge", "kind": "edge"}))
            .secret;
        let mut stack = Self {
            rt,
            control_plane,
            edge_key,
            envoy: None,
            echo,
            upstream,
            url: String::new(),
            configuration: Value::Null,
            options: EnvoyOptions {
                concurrency,
                ..EnvoyOptions::default()
            },
            overrides,
            module: KEYGATE_PLUGIN_WASM.to_owned(),
            node,
            api,
            http,
        };
        stack.start_envoy();
        stack
    }

    /// The filter module the next [`EnvoyStack::start_envoy`] loads (another build, for an A/B).
    pub fn use_module(&mut self, module: &str) {
        module.clone_into(&mut self.module);
    }

    /// Starts (or starts again, after [`EnvoyStack::stop_envoy`]) Envoy on a fresh bootstrap.
    pub fn start_envoy(&mut self) {
        let control_plane = self
            .node
            .via
            .clone()
            .unwrap_or_else(|| self.control_plane.addr().to_string());
        let mut bootstrap = bootstrap_with_module(
            &control_plane,
            &self.upstream,
            &self.overrides,
            &self.module,
        );
        if let Some(id) = &self.node.node_id {
            bootstrap["node"] = json!({"id": id, "cluster": "keygate-e2e"});
        }
        self.configuration = plugin_configuration(&bootstrap);
        let mut options = self.options.clone();
        options
            .env
            .push((EDGE_KEY_ENV.to_owned(), self.edge_key.clone()));
        let envoy = Envoy::start(&bootstrap.to_string(), &options)
            .unwrap_or_else(|e| panic!("starting Envoy: {e}"));
        let addr = envoy
            .listener_addr(LISTENER)
            .unwrap_or_else(|e| panic!("Envoy's listener: {e}"));
        self.url = format!("http://{addr}");
        self.envoy = Some(envoy);
    }

    /// Stops Envoy (graceful, then killed).
    pub fn stop_envoy(&mut self) {
        if let Some(mut e) = self.envoy.take() {
            e.stop();
        }
    }

    /// The running Envoy.
    pub fn envoy(&self) -> &Envoy {
        self.envoy
            .as_ref()
            .unwrap_or_else(|| panic!("Envoy is not running"))
    }

    /// A counter or gauge of Envoy's (`0` when absent).
    pub fn stat(&self, name: &str) -> u64 {
        self.envoy()
            .stat(name)
            .unwrap_or_else(|e| panic!("Envoy stats: {e}"))
            .unwrap_or(0)
    }

    /// Envoy's log so far.
    pub fn envoy_logs(&self) -> String {
        self.envoy.as_ref().map(Envoy::logs).unwrap_or_default()
    }

    /// A request through Envoy with `headers`.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let url = format!("{}{path}", self.url);
        self.rt.block_on(send(&self.http, method, &url, headers))
    }

    /// `GET <path>` with `x-api-key: <key>` when given.
    pub fn get(&self, path: &str, key: Option<&str>) -> Reply {
        match key {
            Some(k) => self.request("GET", path, &[("x-api-key", k)]),
            None => self.request("GET", path, &[]),
        }
    }

    /// Waits until `GET <path>` with `key` answers `status` `times` times in a row (Envoy spreads
    /// connections over its workers; with one connection per request each lands on a worker of
    /// the kernel's choosing). Returns the last reply.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        path: &str,
        key: &str,
        status: u16,
    ) -> Reply {
        let times = self.options.concurrency.max(1) * 3;
        wait_for(what, timeout, || {
            let mut last = None;
            for _ in 0..times {
                let r = self.get(path, Some(key));
                if r.status != status {
                    return Err(format!("{} {}", r.status, r.text));
                }
                last = Some(r);
            }
            last.ok_or_else(|| "no request".to_owned())
        })
    }

    /// Issues a key (`POST /v1/keys` with `body`) and waits until Envoy lets it through on
    /// `path` on every worker: the filter has synced it.
    pub fn synced_key(&self, body: Value, path: &str) -> IssuedKey {
        let k = self.api.create_key(body);
        self.wait_status(
            "the key synced",
            Duration::from_secs(15),
            path,
            &k.secret,
            200,
        );
        k
    }

    /// Envoy, the echo upstream and the control plane, stopped.
    pub fn shutdown(&mut self) {
        self.stop_envoy();
        self.echo.stop();
        self.control_plane.kill();
    }
}

impl Drop for EnvoyStack {
    fn drop(&mut self) {
        self.shutdown();
    }
}
