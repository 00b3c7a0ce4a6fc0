//! Real Envoy with `ext_authz` (HTTP service) asking Keygate's forward-auth endpoint:
//! `envoy/ext-authz.yaml` itself, with only its addresses substituted, in front of the echo
//! upstream, and a real `keygate serve --forward-auth-config <the filter's configuration>`
//! process. No Wasm anywhere: the remote baseline beside the filter's [`crate::envoy::EnvoyStack`].
//!
//! [`bootstrap`] is public for the benchmarks: it makes the deployed file runnable on this
//! machine, nothing else. These are test helpers: on failure they panic with a message that says
//! what went wrong.

use std::time::Duration;

use keygate_gateway::envoy_bootstrap::{self, Addresses};
use keygate_testkit::envoy::{Envoy, EnvoyOptions};
use serde_json::{Value, json};

use crate::Api;
use crate::echo::{EchoUpstream, send};
use crate::envoy::Reply;
use crate::stack::{ServeProcess, wait_for};

/// `envoy/ext-authz.yaml`, as built into this crate.
pub const EXT_AUTHZ_YAML: &str = include_str!("../../envoy/ext-authz.yaml");

/// The listener of `envoy/ext-authz.yaml`.
pub const LISTENER: &str = "ingress";

/// The name of the ext_authz HTTP filter in `envoy/ext-authz.yaml`.
pub const FILTER: &str = "envoy.filters.http.ext_authz";

/// The cluster ext_authz calls (the control plane).
pub const CONTROL_PLANE_CLUSTER: &str = "keygate_control_plane";

/// The cluster the router sends allowed requests to.
pub const UPSTREAM_CLUSTER: &str = "upstream";

/// Envoy's process environment variable `envoy/ext-authz.yaml` reads the proxy's edge key from
/// (`%ENVIRONMENT(KEYGATE_EDGE_KEY)%` in `authorization_request.headers_to_add`).
pub const EDGE_KEY_ENV: &str = "KEYGATE_EDGE_KEY";

/// `envoy/ext-authz.yaml` as a JSON value.
pub fn ext_authz_yaml() -> Value {
    envoy_bootstrap::parse(EXT_AUTHZ_YAML).unwrap_or_else(|e| panic!("envoy/ext-authz.yaml: {e}"))
}

/// The ext_authz filter's `typed_config` of a bootstrap made from `envoy/ext-authz.yaml`.
pub fn ext_authz_config_mut(bootstrap: &mut Value) -> &mut Value {
    bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"]
        .as_array_mut()
        .and_then(|filters| filters.iter_mut().find(|f| f["name"] == FILTER))
        .map(|f| &mut f["typed_config"])
        .unwrap_or_else(|| panic!("envoy/ext-authz.yaml has no {FILTER} HTTP filter"))
}

/// `envoy/ext-authz.yaml` made runnable here: the `ingress` listener and the admin interface at
/// `addresses`, the control-plane and upstream clusters' endpoints (and the `server_uri` the
/// filter names) at theirs. Everything else (the filter, what it sends and copies, its failure
/// mode) is the deployed file's. The edge key is not written into it: Envoy's environment
/// carries it ([`EDGE_KEY_ENV`]).
pub fn bootstrap(addresses: &Addresses<'_>) -> Value {
    let mut b = ext_authz_yaml();
    let listener = b["static_resources"]["listeners"]
        .as_array_mut()
        .and_then(|ls| ls.iter_mut().find(|l| l["name"] == LISTENER))
        .unwrap_or_else(|| panic!("envoy/ext-authz.yaml has no listener {LISTENER}"));
    listener["address"]["socket_address"] = address(addresses.listener);
    b["admin"]["address"]["socket_address"] = address(addresses.admin);
    for (cluster, addr) in [
        (CONTROL_PLANE_CLUSTER, addresses.control_plane),
        (UPSTREAM_CLUSTER, addresses.upstream),
    ] {
        envoy_bootstrap::set_cluster_endpoint(&mut b, cluster, addr)
            .unwrap_or_else(|e| panic!("envoy/ext-authz.yaml: {e}"));
    }
    ext_authz_config_mut(&mut b)["http_service"]["server_uri"]["uri"] =
        json!(format!("http://{}", addresses.control_plane));
    b
}

fn address(addr: &str) -> Value {
    envoy_bootstrap::socket_address(addr).unwrap_or_else(|e| panic!("{e}"))
}

/// A real `keygate serve` process with forward-auth on a given filter configuration, the echo
/// upstream and Envoy running `envoy/ext-authz.yaml`, the edge key in Envoy's environment.
pub struct ExtAuthzStack {
    rt: tokio::runtime::Runtime,
    /// The control plane.
    pub control_plane: ServeProcess,
    /// The edge key Envoy presents to forward-auth.
    pub edge_key: String,
    envoy: Option<Envoy>,
    echo: EchoUpstream,
    /// `http://127.0.0.1:<port>` of Envoy's listener.
    pub url: String,
    /// The bootstrap Envoy runs.
    pub bootstrap: Value,
    /// The control plane's API.
    pub api: Api,
    /// The client of the proxy's listener.
    http: reqwest::Client,
    _config_dir: tempfile::TempDir,
}

impl std::fmt::Debug for ExtAuthzStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtAuthzStack")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl ExtAuthzStack {
    /// Writes `filter_config` (the filter's plugin configuration) to a file, starts
    /// `keygate serve --forward-auth-config <file>` on a fresh SQLite file, issues an edge key,
    /// starts the echo upstream and Envoy with `concurrency` workers, and waits until Envoy is
    /// ready (admin `/ready` `LIVE`). Forward-auth holds the key set from before it listens.
    pub fn start(concurrency: usize, filter_config: &Value) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keygate-forward-auth-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("keygate-filter.json");
        std::fs::write(&path, filter_config.to_string())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        let control_plane = ServeProcess::start_sqlite(&[
            "--forward-auth-config".to_owned(),
            path.display().to_string(),
        ]);
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
            .create_key(json!({"name": "envoy ext_authz", "kind": "edge"}))
            .secret;
        let bootstrap = bootstrap(&Addresses {
            listener: "127.0.0.1:0",
            admin: "127.0.0.1:0",
            control_plane: &control_plane.addr().to_string(),
            upstream: &upstream,
        });
        let mut stack = Self {
            rt,
            control_plane,
            edge_key,
            envoy: None,
            echo,
            url: String::new(),
            bootstrap,
            api,
            http,
            _config_dir: dir,
        };
        let options = EnvoyOptions {
            concurrency,
            env: vec![(EDGE_KEY_ENV.to_owned(), stack.edge_key.clone())],
            ..EnvoyOptions::default()
        };
        let envoy = Envoy::start(&stack.bootstrap.to_string(), &options)
            .unwrap_or_else(|e| panic!("starting Envoy: {e}"));
        let addr = envoy
            .listener_addr(LISTENER)
            .unwrap_or_else(|e| panic!("Envoy's listener: {e}"));
        stack.url = format!("http://{addr}");
        stack.envoy = Some(envoy);
        stack
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

    /// Waits until `GET <path>` with `key` answers `status`; returns that reply.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        path: &str,
        key: &str,
        status: u16,
    ) -> Reply {
        wait_for(what, timeout, || {
            let r = self.get(path, Some(key));
            if r.status == status {
                Ok(r)
            } else {
                Err(format!("{} {}", r.status, r.text))
            }
        })
    }

    /// The key set as the filter syncs it (`GET /v1/keyset` with the edge key), decoded.
    pub fn keyset(&self) -> keygate_protocol::keyset::KeySet {
        let url = format!("{}/v1/keyset", self.control_plane.url());
        let http = &self.api.client().http;
        let bytes = self.api.block_on(async {
            let resp = http
                .get(&url)
                .bearer_auth(&self.edge_key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(resp.status().as_u16(), 200, "{url}");
            resp.bytes().await.unwrap_or_else(|e| panic!("{url}: {e}"))
        });
        let mut set = keygate_protocol::keyset::KeySet::new();
        set.apply(&bytes)
            .unwrap_or_else(|e| panic!("the key-set snapshot: {e}"));
        set
    }

    /// Envoy, the echo upstream and the control plane, stopped.
    pub fn shutdown(&mut self) {
        if let Some(mut e) = self.envoy.take() {
            e.stop();
        }
        self.echo.stop();
        self.control_plane.kill();
    }
}

impl Drop for ExtAuthzStack {
    fn drop(&mut self) {
        self.shutdown();
    }
}
