//! The filter's host in front of the echo upstream: configured from `envoy/envoy.yaml`, started
//! (Envoy, or the local gateway), and ready only once the filter has synced (the demo key
//! answers 200).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use keygate_gateway::envoy_bootstrap::{self, Addresses};
use keygate_gateway::{Gateway, GatewayConfig, PluginSettings, RunningGateway};
use keygate_host_harness::Plugin;
use serde_json::{Value, json};

use crate::args::Args;
use crate::envoy_process::EnvoyProcess;

/// How long the filter may take to sync its first key set.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// The host of the filter, running.
pub(crate) enum Front {
    Envoy(EnvoyProcess),
    Gateway(RunningGateway),
}

/// `envoy/envoy.yaml` made runnable here (Envoy on `listen`, the filter reaching the control
/// plane, routes to the upstream); its plugin configuration is also written to
/// `<state>/plugin-config.json`, and the local gateway takes it too. The edge key reaches the
/// filter through the environment, never a file.
pub(crate) fn bootstrap(
    listen: SocketAddr,
    control_plane: SocketAddr,
    upstream: SocketAddr,
    state_dir: &Path,
) -> anyhow::Result<Value> {
    let listen = listen.to_string();
    let (cp, up) = (control_plane.to_string(), upstream.to_string());
    let bootstrap = envoy_bootstrap::from_envoy_yaml(
        &Addresses {
            listener: &listen,
            admin: "127.0.0.1:0",
            control_plane: &cp,
            upstream: &up,
        },
        keygate_plugin_artifacts::KEYGATE_PLUGIN_WASM,
        &json!({}),
    )
    .context("envoy/envoy.yaml")?;
    let plugin_config = envoy_bootstrap::plugin_configuration(&bootstrap)?;
    std::fs::write(
        state_dir.join("plugin-config.json"),
        serde_json::to_vec_pretty(&plugin_config)?,
    )?;
    Ok(bootstrap)
}

impl Front {
    /// Envoy `binary` on `bootstrap` with `workers` workers and the edge key, ready once the
    /// demo key passes.
    pub(crate) async fn envoy(
        binary: &Path,
        bootstrap: &Value,
        state_dir: &Path,
        workers: usize,
        edge_key: &str,
        demo_key: &str,
    ) -> anyhow::Result<Self> {
        let envoy =
            EnvoyProcess::start(binary, bootstrap, state_dir, workers.max(1), edge_key).await?;
        // Ready means the filter has synced: the demo key passes on enough consecutive
        // requests, each on a new connection (Envoy's workers take connections as the
        // kernel hands them out), to have reached every worker with good odds.
        let fresh = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()?;
        let url = envoy.url();
        let log = envoy.log.clone();
        let mut envoy = envoy;
        wait_until_allowed(&fresh, &url, demo_key, 3 * workers.max(1), || {
            envoy.check_running()
        })
        .await
        .with_context(|| format!("Envoy's log: {}", log.display()))?;
        Ok(Self::Envoy(envoy))
    }

    /// The local gateway on `--listen` with the filter configured as in `bootstrap`, in front of
    /// `upstream` and reaching the control plane at `cp_url`; ready once the demo key passes.
    pub(crate) async fn gateway(
        args: &Args,
        bootstrap: &Value,
        upstream: &str,
        cp_url: &str,
        edge_key: &str,
        demo_key: &str,
        http: &reqwest::Client,
    ) -> anyhow::Result<Self> {
        let wasm = envoy_bootstrap::wasm_config_mut(&mut bootstrap.clone())?.clone();
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let settings = PluginSettings {
            configuration: wasm["configuration"]["value"]
                .as_str()
                .unwrap_or_default()
                .as_bytes()
                .to_vec(),
            vm_id: text(&wasm["vm_config"]["vm_id"]),
            root_id: text(&wasm["root_id"]),
            key_values: vec![(envoy_bootstrap::EDGE_KEY_ENV.into(), edge_key.to_owned())],
            host_env_keys: Vec::new(),
        };
        let plugin = Plugin::load_file(Path::new(keygate_plugin_artifacts::KEYGATE_PLUGIN_WASM))
            .context("loading the Keygate filter")?;
        let gateway = Gateway::start(GatewayConfig {
            listen: args.listen,
            upstream: upstream.to_owned(),
            plugin: Arc::new(plugin),
            settings,
            clusters: vec![(
                envoy_bootstrap::CONTROL_PLANE_CLUSTER.into(),
                cp_url.to_owned(),
            )],
            workers: args.workers,
            filter_state_headers: envoy_bootstrap::shipped_filter_state_headers()?,
            inline_request_headers: envoy_bootstrap::shipped_inline_request_headers()?,
        })
        .await
        .context("gateway")?;
        // Ready means every worker has the key set: the demo key passes through the gateway
        // on enough consecutive requests (round robin) to have reached each worker twice.
        let g = format!("http://{}", gateway.local_addr());
        wait_until_allowed(http, &g, demo_key, 2 * args.workers.max(1), || Ok(())).await?;
        Ok(Self::Gateway(gateway))
    }

    /// `http://<address>`: where the filter answers.
    pub(crate) fn url(&self) -> String {
        match self {
            Self::Envoy(e) => e.url(),
            Self::Gateway(g) => format!("http://{}", g.local_addr()),
        }
    }
}

/// Waits until `GET <front>/hello` with `key` answers 200 `in_a_row` times in a row; `alive`
/// fails the wait early (Envoy exited).
async fn wait_until_allowed(
    http: &reqwest::Client,
    front: &str,
    key: &str,
    in_a_row: usize,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + SYNC_TIMEOUT;
    let mut passed = 0;
    loop {
        alive()?;
        let status = http
            .get(format!("{front}/hello"))
            .header("x-api-key", key)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        passed = if status == 200 { passed + 1 } else { 0 };
        if passed >= in_a_row {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{front} did not accept the demo key within {SYNC_TIMEOUT:?} (last status \
                 {status})"
            );
        }
        if passed == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
