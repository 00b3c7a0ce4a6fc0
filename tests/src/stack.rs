//! Full-stack test support: the real `keygate` binary as separate processes (`keygate serve`,
//! and the client CLI as an operator runs it) and the development gateway running the real
//! filter `.wasm` in front of the echo upstream, everything over real HTTP on loopback.
//!
//! The `keygate` binary belongs to another package, so tests find it next to their own
//! executable: `<target dir>/<profile>/keygate` (the test runs from `<target>/<profile>/deps/`).
//! `cargo test --workspace` builds it; alone, build it first with
//! `cargo build -p keygate-control-plane --bin keygate`.
//!
//! These are test helpers: on failure they panic with a message that says what went wrong.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use keygate_control_plane::test_support::{self, Engine};
use keygate_gateway::{Gateway, GatewayConfig, PluginSettings, RunningGateway};
use serde_json::{Value, json};

use crate::{ADMIN_TOKEN, ROUTES, Reply, plugin};

/// The filter's name for the control-plane cluster in [`GatewayStack`].
pub const CONTROL_PLANE_CLUSTER: &str = "keygate_control_plane";

/// The VM environment variable that carries the edge key to the filter (`edge_key_env`).
pub const EDGE_KEY_ENV: &str = "KEYGATE_EDGE_KEY";

/// Filter workers of a [`GatewayStack`] (each its own filter instance, as Envoy's worker
/// threads; one leads the sync, the other follows through shared data).
pub const WORKERS: usize = 2;

/// Path of the `keygate` binary of this build; panics with the command that builds it when it
/// is missing.
pub fn keygate_bin() -> PathBuf {
    built_binary(
        "keygate",
        "cargo build -p keygate-control-plane --bin keygate",
    )
}

/// Path of the binary `name` of this build, next to the test executable (the test runs from
/// `<target>/<profile>/deps/`); panics with `build`, the command that builds it, when it is
/// missing.
pub fn built_binary(name: &str, build: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    // <target>/<profile>/deps/<test exe> → <target>/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap_or_else(|| panic!("unexpected test executable path {}", exe.display()));
    let bin = profile_dir.join(name);
    assert!(
        bin.is_file(),
        "{name} is missing at {}: build it first with `{build}` (with the same \
         CARGO_TARGET_DIR and profile as this test), or run `cargo test --workspace`",
        bin.display()
    );
    bin
}

pub use keygate_testkit::poll::wait_for;

/// A `keygate serve` process (the real binary, [`keygate_bin`]) with the bootstrap admin token
/// [`ADMIN_TOKEN`]: the control plane's [`test_support::ServeProcess`] with its output in a
/// temporary directory. Killed on drop.
#[derive(Debug)]
pub struct ServeProcess {
    process: test_support::ServeProcess,
    database_url: String,
}

impl ServeProcess {
    /// Starts `keygate serve --listen 127.0.0.1:0 --database-url <url> <extra_args…>` and
    /// waits for `keygate listening on http://ADDR`.
    pub fn start(database_url: &str, extra_args: &[String]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keygate-serve-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let process = test_support::ServeProcess::start(keygate_bin(), dir.path(), "serve", |c| {
            c.arg("--database-url")
                .arg(database_url)
                .args(extra_args)
                .env("KEYGATE_ADMIN_TOKEN", ADMIN_TOKEN)
                .env("RUST_LOG", "info,sqlx=warn");
        });
        Self {
            process: process.keep(dir),
            database_url: database_url.to_owned(),
        }
    }

    /// Starts on a fresh SQLite file in its own temporary directory (kept across restarts).
    pub fn start_sqlite(extra_args: &[String]) -> Self {
        let (url, dir) = test_support::fresh_database(Engine::Sqlite);
        let mut p = Self::start(&url, extra_args);
        if let Some(dir) = dir {
            p.process = p.process.keep(dir);
        }
        p
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.process.base()
    }

    /// The database URL it runs on.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// The logs (stderr) of every start so far.
    pub fn logs(&self) -> String {
        self.process.stderr()
    }

    /// A CLI pointed at this process with the admin token.
    pub fn admin_cli(&self) -> Cli {
        Cli::new(&self.url(), ADMIN_TOKEN)
    }
}

/// The rest (`addr`, `pid`, `kill`, `restart`, `is_running`, …) is the control plane's.
impl std::ops::Deref for ServeProcess {
    type Target = test_support::ServeProcess;

    fn deref(&self) -> &test_support::ServeProcess {
        &self.process
    }
}

impl std::ops::DerefMut for ServeProcess {
    fn deref_mut(&mut self) -> &mut test_support::ServeProcess {
        &mut self.process
    }
}

/// What one CLI run printed.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// Exit status 0.
    pub ok: bool,
    /// The exit code (none when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// The `keygate` client CLI with `KEYGATE_URL` and `KEYGATE_TOKEN` set, as an operator runs it.
#[derive(Debug, Clone)]
pub struct Cli {
    url: String,
    token: String,
}

impl Cli {
    /// A CLI for `url` acting with `token` (admin token or a workspace key).
    pub fn new(url: &str, token: &str) -> Self {
        Self {
            url: url.to_owned(),
            token: token.to_owned(),
        }
    }

    /// The same CLI acting with another credential.
    pub fn with_token(&self, token: &str) -> Self {
        Self::new(&self.url, token)
    }

    /// Runs `keygate <args…>`.
    pub fn run(&self, args: &[&str]) -> CliOutput {
        let out = Command::new(keygate_bin())
            .args(args)
            .env("KEYGATE_URL", &self.url)
            .env("KEYGATE_TOKEN", &self.token)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running keygate {args:?}: {e}"));
        CliOutput {
            ok: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `keygate <args…> --json`, asserts success and parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all);
        assert!(
            out.ok,
            "keygate {all:?} failed:\nstdout: {}\nstderr: {}",
            out.stdout, out.stderr
        );
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("keygate {all:?}: stdout is not JSON ({e}): {}", out.stdout))
    }

    /// `keygate keys create … --json` → the issued key (secret and record).
    pub fn create_key(&self, args: &[&str]) -> crate::IssuedKey {
        let mut all = vec!["keys", "create"];
        all.extend_from_slice(args);
        crate::issued(&self.json(&all))
    }

    /// Every key the credential can list (`keygate keys list --json`, all pages).
    pub fn list_keys(&self) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut args = vec!["keys", "list", "--limit", "100"];
            if let Some(c) = cursor.as_deref() {
                args.extend_from_slice(&["--cursor", c]);
            }
            let page = self.json(&args);
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return items,
            }
        }
    }
}

/// The development gateway (real filter `.wasm`, N workers, real-time ticks, callouts over real
/// HTTP) in front of the echo upstream, on its own tokio runtime. The filter gets the edge key
/// through the VM environment (`edge_key_env`), as in `envoy/envoy.yaml`.
pub struct GatewayStack {
    rt: tokio::runtime::Runtime,
    gateway: Option<RunningGateway>,
    stop_echo: Option<tokio::sync::oneshot::Sender<()>>,
    /// `http://127.0.0.1:<port>` of the gateway.
    pub url: String,
    /// The plugin configuration given to the filter.
    pub configuration: Value,
    http: reqwest::Client,
}

impl std::fmt::Debug for GatewayStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayStack")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl GatewayStack {
    /// Starts the echo upstream and the gateway with [`WORKERS`] workers, the filter syncing from
    /// `control_plane` (`http://host:port`) with `edge_key`. The configuration has the e2e
    /// [`ROUTES`] plus `/whoami` (any valid key), `sync_interval_ms` 200, and `extra` members
    /// (a JSON object, e.g. `{"long_poll_wait_s": 5}`) merged over it.
    pub fn start(control_plane: &str, edge_key: &str, extra: Value) -> Self {
        let routes: Value =
            serde_json::from_str(ROUTES).unwrap_or_else(|e| panic!("ROUTES is not JSON: {e}"));
        let mut configuration = json!({
            "cluster": CONTROL_PLANE_CLUSTER,
            "authority": control_plane.trim_start_matches("http://"),
            "edge_key_env": EDGE_KEY_ENV,
            "sync_interval_ms": 200,
            "routes": routes,
        });
        if let (Some(base), Some(extra)) = (configuration.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
        let settings = PluginSettings {
            configuration: serde_json::to_vec(&configuration)
                .unwrap_or_else(|e| panic!("configuration: {e}")),
            vm_id: "keygate".into(),
            root_id: "keygate".into(),
            key_values: vec![(EDGE_KEY_ENV.into(), edge_key.to_owned())],
            host_env_keys: Vec::new(),
        };
        let (gateway, stop_echo) = rt.block_on(async {
            let echo = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|e| panic!("binding the echo upstream: {e}"));
            let echo_url = format!(
                "http://{}",
                echo.local_addr()
                    .unwrap_or_else(|e| panic!("echo local_addr: {e}"))
            );
            let (stop_echo, stopped) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(keygate_gateway::serve_echo(echo, async move {
                let _ = stopped.await;
            }));
            let gateway = Gateway::start(GatewayConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                upstream: echo_url,
                plugin: Arc::clone(&plugin()),
                settings,
                clusters: vec![(CONTROL_PLANE_CLUSTER.into(), control_plane.to_owned())],
                workers: WORKERS,
                filter_state_headers:
                    keygate_gateway::envoy_bootstrap::shipped_filter_state_headers()
                        .unwrap_or_else(|e| panic!("envoy/envoy.yaml: {e}")),
                inline_request_headers:
                    keygate_gateway::envoy_bootstrap::shipped_inline_request_headers()
                        .unwrap_or_else(|e| panic!("envoy/envoy.yaml: {e}")),
            })
            .await
            .unwrap_or_else(|e| panic!("starting the gateway: {e}"));
            (gateway, stop_echo)
        });
        Self {
            url: format!("http://{}", gateway.local_addr()),
            rt,
            gateway: Some(gateway),
            stop_echo: Some(stop_echo),
            configuration,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_else(|e| panic!("HTTP client: {e}")),
        }
    }

    /// `GET <path>` through the gateway, with `x-api-key: <key>` when given.
    pub fn get(&self, path: &str, key: Option<&str>) -> Reply {
        self.get_with(path, key.map(|k| ("x-api-key", k.to_owned())))
    }

    /// `GET <path>` through the gateway with one extra header.
    pub fn get_with(&self, path: &str, header: Option<(&str, String)>) -> Reply {
        let url = format!("{}{path}", self.url);
        self.rt.block_on(async {
            let mut req = self.http.get(&url);
            if let Some((name, value)) = header {
                req = req.header(name, value);
            }
            let resp = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url} through the gateway: {e}"));
            Reply::read(resp).await
        })
    }

    /// Waits until `GET <path>` with `key` answers `status` on every worker (e.g. after a
    /// change must reach the filter through a sync): [`WORKERS`] consecutive answers agree,
    /// and requests go to the workers round robin. Returns the last reply.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        path: &str,
        key: &str,
        status: u16,
    ) -> Reply {
        wait_for(what, timeout, || {
            let mut last = None;
            for _ in 0..WORKERS {
                let r = self.get(path, Some(key));
                if r.status != status {
                    return Err(format!("{} {}", r.status, r.text));
                }
                last = Some(r);
            }
            last.ok_or_else(|| "no worker".to_owned())
        })
    }

    /// Stops the gateway (its workers and their filter instances) and the echo upstream.
    pub fn shutdown(&mut self) {
        if let Some(g) = self.gateway.take() {
            self.rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(15), g.shutdown()).await;
            });
        }
        if let Some(tx) = self.stop_echo.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for GatewayStack {
    fn drop(&mut self) {
        self.shutdown();
    }
}
