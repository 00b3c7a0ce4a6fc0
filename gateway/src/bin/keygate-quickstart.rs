//! `keygate-quickstart`: builds what it needs, starts the control plane on SQLite (state in
//! `.keygate/`), the echo upstream and the development gateway with the Keygate filter, issues
//! an edge key and a demo key, and prints curl lines to try. Ctrl-C stops everything.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use keygate_gateway::quickstart::Service;

/// One-command local Keygate: control plane, echo upstream, gateway with the filter.
#[derive(Debug, Parser)]
#[command(name = "keygate-quickstart", version, about)]
struct Args {
    /// State directory (SQLite database, admin token, logs). Default `<repo>/.keygate`.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Gateway listen address.
    #[arg(long, default_value = "127.0.0.1:10000")]
    listen: SocketAddr,
    /// For scripts and tests: also stop when stdin reaches end of file.
    #[arg(long)]
    non_interactive: bool,
    /// Do not run `cargo build` for the sibling binaries.
    #[arg(long)]
    skip_build: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_owned();
    let exe = std::env::current_exe()?;
    let bin_dir = exe.parent().context("binary directory")?.to_owned();
    let release = bin_dir.file_name().is_some_and(|n| n == "release");
    let target_dir = bin_dir.parent().context("target directory")?.to_owned();
    if !args.skip_build {
        eprintln!("building keygate, keygate-gateway, keygate-echo …");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .current_dir(&workspace)
            .args([
                "build",
                "-p",
                "keygate-control-plane",
                "-p",
                "keygate-gateway",
            ])
            .args([
                "--bin",
                "keygate",
                "--bin",
                "keygate-gateway",
                "--bin",
                "keygate-echo",
            ])
            .arg("--target-dir")
            .arg(&target_dir);
        if release {
            build.arg("--release");
        }
        if !build.status()?.success() {
            bail!("cargo build failed");
        }
    }
    let state = args.state_dir.unwrap_or_else(|| workspace.join(".keygate"));
    std::fs::create_dir_all(&state)?;
    let token_file = state.join("admin-token");
    let admin = match std::fs::read_to_string(&token_file) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_owned(),
        _ => {
            use rand::distr::{Alphanumeric, SampleString};
            let t = format!(
                "kgadmin_{}",
                Alphanumeric.sample_string(&mut rand::rng(), 40)
            );
            write_private(&token_file, t.as_bytes())?;
            t
        }
    };
    let keygate = bin_dir.join("keygate");
    let startup = Duration::from_secs(60);

    let mut serve = Command::new(&keygate);
    serve
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--database-url")
        .arg(format!("sqlite:{}", state.join("keygate.db").display()))
        .env("KEYGATE_ADMIN_TOKEN", &admin);
    let control_plane = Service::start(
        "control plane",
        serve,
        &state.join("control-plane.log"),
        startup,
    )?;

    let create = |name: &str, kind: &str, owner: &str| -> anyhow::Result<(String, String)> {
        let out = Command::new(&keygate)
            .args([
                "keys", "create", "--json", "--name", name, "--kind", kind, "--owner", owner,
            ])
            .args(["--workspace", "quickstart"])
            .env("KEYGATE_URL", &control_plane.url)
            .env("KEYGATE_TOKEN", &admin)
            .output()?;
        if !out.status.success() {
            bail!(
                "keygate keys create: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let secret = ["secret", "key"]
            .iter()
            .find_map(|f| v[f].as_str().or_else(|| v["key"][f].as_str()))
            .context("no secret in `keys create` output")?;
        let id = v["id"]
            .as_str()
            .or_else(|| v["key"]["id"].as_str())
            .context("no id")?;
        Ok((id.to_owned(), secret.to_owned()))
    };
    let (_, edge_secret) = create("quickstart-edge", "edge", "quickstart-gateway")?;
    let (demo_id, demo_secret) = create("quickstart-demo", "workspace", "demo-user")?;

    let echo_cmd = {
        let mut c = Command::new(bin_dir.join("keygate-echo"));
        c.args(["--listen", "127.0.0.1:0"]);
        c
    };
    let echo = Service::start("echo upstream", echo_cmd, &state.join("echo.log"), startup)?;

    let authority = control_plane.url.trim_start_matches("http://").to_owned();
    let config = serde_json::json!({
        "cluster": "keygate_control_plane",
        "authority": authority,
        "edge_key": edge_secret,
        "sync_interval_ms": 500,
        "long_poll_wait_s": 20,
        "routes": [{"path_prefix": "/healthz", "anonymous": true}],
    });
    let config_file = state.join("plugin-config.json");
    write_private(&config_file, config.to_string().as_bytes())?;
    let mut gw = Command::new(bin_dir.join("keygate-gateway"));
    gw.arg("--config")
        .arg(&config_file)
        .args(["--upstream", &echo.url])
        .arg("--cluster")
        .arg(format!("keygate_control_plane={}", control_plane.url))
        .arg("--listen")
        .arg(args.listen.to_string());
    let gateway = Service::start("gateway", gw, &state.join("gateway.log"), startup)?;

    let g = &gateway.url;
    println!();
    println!(
        "Keygate quickstart is running (state and logs in {}):",
        state.display()
    );
    println!("  control plane  {}", control_plane.url);
    println!("  echo upstream  {}", echo.url);
    println!("  gateway        {g}  (Keygate filter in the wasmtime host harness)");
    println!();
    println!("# 200: the upstream echoes the identity headers (x-keygate-*) the filter added");
    println!("curl -si {g}/hello -H 'x-api-key: {demo_secret}'");
    println!("# 401: no key");
    println!("curl -si {g}/hello");
    println!("# revoke the demo key; within about a second the first line answers 401");
    println!(
        "KEYGATE_URL={} KEYGATE_TOKEN=\"$(cat {})\" {} keys revoke {demo_id}",
        control_plane.url,
        token_file.display(),
        keygate.display()
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
    let mut services = [gateway, echo, control_plane];
    for s in &mut services {
        eprintln!("stopping {}", s.name());
        s.stop();
    }
    eprintln!("stopped");
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}
