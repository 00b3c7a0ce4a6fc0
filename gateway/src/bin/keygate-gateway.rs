//! `keygate-gateway`: runs a proxy-wasm filter in the host harness in front of one upstream.
//! For development, CI and benchmarks — Envoy is the production host.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use keygate_gateway::{Gateway, GatewayConfig, PluginSettings, envoy_bootstrap};
use keygate_host_harness::Plugin;

/// The host allocates on every request (streams, header maps, copies into the guest); Envoy
/// links tcmalloc, this process mimalloc (glibc's malloc made the host's share larger).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Development gateway: a proxy-wasm filter (in the wasmtime host harness) in front of an
/// upstream. For development, CI and benchmarks; Envoy is the production host.
#[derive(Debug, Parser)]
#[command(name = "keygate-gateway", version, about)]
struct Args {
    /// The filter module (`.wasm`). Default: the Keygate filter built with this binary.
    #[arg(long)]
    plugin: Option<PathBuf>,
    /// Plugin configuration file (the bytes Envoy's `configuration.value` would hold).
    #[arg(
        long,
        conflicts_with = "envoy_config",
        required_unless_present = "envoy_config"
    )]
    config: Option<PathBuf>,
    /// Take the configuration, root id, VM id and environment from the Wasm filter of this
    /// Envoy bootstrap (e.g. envoy/envoy.yaml): the filter's settings, the response headers its
    /// `ingress` routes fill from the filter's state and its request headers with an inline slot
    /// (without it, envoy/envoy.yaml's).
    #[arg(long)]
    envoy_config: Option<PathBuf>,
    /// Upstream base URL, e.g. http://127.0.0.1:8081.
    #[arg(long)]
    upstream: String,
    /// A cluster the filter calls: `name=http://host:port` (repeatable).
    #[arg(long = "cluster", value_parser = parse_cluster)]
    clusters: Vec<(String, String)>,
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:10000")]
    listen: SocketAddr,
    /// Worker threads, each with its own filter instance.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Extra VM environment variable `KEY=VALUE` (repeatable).
    #[arg(long = "env", value_parser = parse_pair)]
    env: Vec<(String, String)>,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))
}

fn parse_cluster(s: &str) -> Result<(String, String), String> {
    let (name, url) =
        parse_pair(s).map_err(|_| format!("expected name=http://host:port, got `{s}`"))?;
    if !url.starts_with("http://") {
        return Err(format!(
            "cluster `{name}`: expected an http:// URL, got `{url}`"
        ));
    }
    Ok((name, url))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut settings = match (&args.config, &args.envoy_config) {
        (Some(path), _) => PluginSettings::from_file(path)?,
        (None, Some(path)) => PluginSettings::from_envoy_file(path)?,
        (None, None) => anyhow::bail!("pass --config or --envoy-config"),
    };
    settings.key_values.extend(args.env);
    // The response headers Envoy's routes fill from the filter's state: the given Envoy
    // configuration's, or envoy/envoy.yaml's as deployed.
    let envoy = match &args.envoy_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            envoy_bootstrap::parse(&text)?
        }
        None => envoy_bootstrap::parse(envoy_bootstrap::ENVOY_YAML)?,
    };
    let filter_state_headers = envoy_bootstrap::filter_state_headers(&envoy)?;
    let inline_request_headers = envoy_bootstrap::inline_request_headers(&envoy);
    let plugin_path = args
        .plugin
        .unwrap_or_else(|| PathBuf::from(keygate_plugin_artifacts::KEYGATE_PLUGIN_WASM));
    let plugin = Plugin::load_file(&plugin_path)
        .with_context(|| format!("loading {}", plugin_path.display()))?;
    let gateway = Gateway::start(GatewayConfig {
        listen: args.listen,
        upstream: args.upstream,
        plugin: Arc::new(plugin),
        settings,
        clusters: args.clusters,
        workers: args.workers,
        filter_state_headers,
        inline_request_headers,
    })
    .await?;
    println!(
        "keygate-gateway listening on http://{}",
        gateway.local_addr()
    );
    keygate_gateway::shutdown_signal().await;
    tracing::info!("shutting down");
    gateway.shutdown().await;
    Ok(())
}
