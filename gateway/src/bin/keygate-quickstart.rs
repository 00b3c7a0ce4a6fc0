//! `keygate-quickstart`: one process that runs the control plane on SQLite (state in
//! `.keygate/`), the echo upstream and the development gateway with the Keygate filter, issues an
//! edge key and a demo key, waits for the filter's first sync, and prints curl lines to try.
//! Ctrl-C (or, with `--non-interactive`, the end of stdin) stops everything cleanly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use keygate_control_plane::{AppState, Config};
use keygate_gateway::{Gateway, GatewayConfig, PluginSettings};
use keygate_host_harness::Plugin;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The host allocates on every request (streams, header maps, copies into the guest); Envoy
/// links tcmalloc, this process mimalloc (glibc's malloc made the host's share larger).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The cluster name the filter calls the control plane by (as in `envoy/envoy.yaml`).
const CLUSTER: &str = "keygate_control_plane";

/// One-command local Keygate: control plane (SQLite), echo upstream, gateway with the filter.
#[derive(Debug, Parser)]
#[command(name = "keygate-quickstart", version, about)]
struct Args {
    /// State directory (SQLite database, admin token, plugin configuration).
    /// Default `<repo>/.keygate`.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Gateway listen address.
    #[arg(long, default_value = "127.0.0.1:10000")]
    listen: SocketAddr,
    /// Control-plane listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    control_plane_listen: SocketAddr,
    /// Echo upstream listen address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    upstream_listen: SocketAddr,
    /// Gateway worker threads (each runs its own filter instance).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// For scripts and tests: also stop when stdin reaches end of file.
    #[arg(long)]
    non_interactive: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,keygate_control_plane=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let state_dir = args.state_dir.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or(Path::new("."))
            .join(".keygate")
    });
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    // Control plane on SQLite, with a bootstrap admin token kept (0600) in the state directory.
    let token_file = state_dir.join("admin-token");
    let admin = read_or_create_token(&token_file)?;
    let database = state_dir.join("keygate.db");
    let mut config = Config::new(
        format!("sqlite:{}", database.display()),
        Some(admin.clone()),
    );
    config.listen = args.control_plane_listen;
    let cp_listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("control plane: binding {}", config.listen))?;
    let cp_url = format!("http://{}", cp_listener.local_addr()?);
    let (state, _) = AppState::new(config).await.context("control plane")?;
    let control_plane = tokio::spawn(keygate_control_plane::serve(cp_listener, state, stopped()));

    // Demo upstream.
    let echo_listener = TcpListener::bind(args.upstream_listen)
        .await
        .with_context(|| format!("echo upstream: binding {}", args.upstream_listen))?;
    let echo_url = format!("http://{}", echo_listener.local_addr()?);
    let echo = tokio::spawn(keygate_gateway::serve_echo(echo_listener, stopped()));

    // Keys: an edge key for the filter, a demo key for you.
    let http = reqwest::Client::new();
    let edge = create_key(
        &http,
        &cp_url,
        &admin,
        json!({"name": "quickstart-edge", "kind": "edge", "owner_id": "quickstart-gateway",
               "workspace_id": "quickstart"}),
    )
    .await?;
    let demo = create_key(
        &http,
        &cp_url,
        &admin,
        json!({"name": "quickstart-demo", "kind": "workspace", "owner_id": "demo-user",
               "workspace_id": "quickstart", "scopes": ["demo:read"]}),
    )
    .await?;

    // The gateway with the Keygate filter, configured as Envoy would configure it; the edge key
    // reaches the filter through the VM environment, not the configuration file.
    let plugin_config = json!({
        "cluster": CLUSTER,
        "authority": cp_url.trim_start_matches("http://"),
        "edge_key_env": "KEYGATE_EDGE_KEY",
        "sync_interval_ms": 500,
        "long_poll_wait_s": 20,
        "routes": [{"path_prefix": "/healthz", "anonymous": true}],
    });
    let config_file = state_dir.join("plugin-config.json");
    std::fs::write(&config_file, serde_json::to_vec_pretty(&plugin_config)?)?;
    let settings = PluginSettings {
        configuration: serde_json::to_vec(&plugin_config)?,
        vm_id: "keygate".into(),
        root_id: "keygate".into(),
        key_values: vec![("KEYGATE_EDGE_KEY".into(), edge.secret.clone())],
        host_env_keys: Vec::new(),
    };
    let plugin = Plugin::load_file(Path::new(keygate_plugin_artifacts::KEYGATE_PLUGIN_WASM))
        .context("loading the Keygate filter")?;
    let gateway = Gateway::start(GatewayConfig {
        listen: args.listen,
        upstream: echo_url.clone(),
        plugin: Arc::new(plugin),
        settings,
        clusters: vec![(CLUSTER.into(), cp_url.clone())],
        workers: args.workers,
    })
    .await
    .context("gateway")?;
    let g = format!("http://{}", gateway.local_addr());

    // Ready means every worker has the key set: the demo key passes through the gateway on
    // enough consecutive requests (round robin) to have reached each worker twice.
    wait_until_allowed(&http, &g, &demo.secret, 2 * args.workers.max(1)).await?;

    println!();
    println!(
        "Keygate quickstart is running (state in {}):",
        state_dir.display()
    );
    println!(
        "  control plane  {cp_url}   (admin token in {})",
        token_file.display()
    );
    println!("  echo upstream  {echo_url}");
    println!("  gateway        {g}   (the Keygate filter in the wasmtime host harness)");
    println!();
    println!("# 200: the upstream echoes the identity headers (x-keygate-*) the filter added");
    println!("curl -s {g}/hello -H 'x-api-key: {}'", demo.secret);
    println!("# 401: no key");
    println!("curl -s {g}/hello");
    println!("# revoke the demo key; within about a second the first line answers 401");
    println!(
        "curl -s -X POST {cp_url}/v1/keys/{}/revoke -H \"authorization: Bearer $(cat {})\" \
         -H 'content-type: application/json' -d '{{\"reason\":\"quickstart\"}}'",
        demo.id,
        token_file.display()
    );
    println!("# the same with the CLI");
    println!(
        "KEYGATE_URL={cp_url} KEYGATE_TOKEN=\"$(cat {})\" cargo run -q -p keygate-control-plane \
         --bin keygate -- keys revoke {}",
        token_file.display(),
        demo.id
    );
    println!();
    println!("ready; press Ctrl-C to stop");

    let stdin_closed = async {
        if args.non_interactive {
            let _ = tokio::task::spawn_blocking(|| {
                std::io::copy(&mut std::io::stdin(), &mut std::io::sink())
            })
            .await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = keygate_gateway::shutdown_signal() => {}
        () = stdin_closed => {}
    }
    eprintln!("stopping the gateway, the echo upstream and the control plane");
    gateway.shutdown().await;
    let _ = stop_tx.send(true);
    let _ = echo.await;
    control_plane
        .await
        .context("control plane task")?
        .context("control plane")?;
    eprintln!("stopped");
    Ok(())
}

/// A key just issued: its id and its secret (shown once).
struct Issued {
    id: String,
    secret: String,
}

async fn create_key(
    http: &reqwest::Client,
    cp_url: &str,
    admin: &str,
    body: Value,
) -> anyhow::Result<Issued> {
    let response = http
        .post(format!("{cp_url}/v1/keys"))
        .bearer_auth(admin)
        .json(&body)
        .send()
        .await
        .context("POST /v1/keys")?;
    let status = response.status();
    let v: Value = response.json().await.context("POST /v1/keys: body")?;
    if status != reqwest::StatusCode::CREATED {
        bail!("POST /v1/keys answered {status}: {v}");
    }
    let field = |pointer: &str| {
        v.pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("POST /v1/keys: no {pointer} in the answer"))
    };
    Ok(Issued {
        id: field("/key/id")?,
        secret: field("/secret")?,
    })
}

async fn wait_until_allowed(
    http: &reqwest::Client,
    gateway: &str,
    key: &str,
    in_a_row: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut passed = 0;
    loop {
        let status = http
            .get(format!("{gateway}/hello"))
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
            bail!("the gateway did not accept the demo key within 30 s (last status {status})");
        }
        if passed == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn read_or_create_token(path: &Path) -> anyhow::Result<String> {
    if let Ok(t) = std::fs::read_to_string(path)
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_owned());
    }
    use rand::distr::{Alphanumeric, SampleString};
    let token = format!(
        "kgadmin_{}",
        Alphanumeric.sample_string(&mut rand::rng(), 40)
    );
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(token.as_bytes())?;
    Ok(token)
}
