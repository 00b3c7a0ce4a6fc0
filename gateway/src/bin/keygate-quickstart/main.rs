//! `keygate-quickstart`: one process that runs the control plane on SQLite (state in
//! `.keygate/`), the echo upstream and, in front of it, **Envoy 1.40 with the Keygate filter**
//! (`envoy/envoy.yaml` with its addresses substituted, the trimmed `.wasm` of
//! `keygate-plugin-artifacts`), or the development gateway when Envoy is not installed or
//! `--gateway` asks for it. It issues an edge key and a demo key, waits until the filter has
//! synced (the demo key answers 200), and prints curl lines to try.
//! Ctrl-C (or, with `--non-interactive`, the end of stdin) stops everything cleanly; Envoy is
//! stopped on every way out (and, where `setpriv` exists, dies with this process even on SIGKILL).
//!
//! This file holds the process's life (parse, start, print, wait, stop); the parts:
//! [`args`] (the command line), [`host`] (Envoy 1.40 found, or the local gateway),
//! [`control_plane`] (the in-process control plane, its admin token and the keys it issues),
//! [`envoy_process`] (Envoy as a supervised child), [`front`] (the filter's host started and
//! synced), [`running`] (everything started in order, and stopped) and [`ready`] (what the
//! ready output prints).

mod args;
mod control_plane;
mod envoy_process;
mod front;
mod host;
mod ready;
mod running;

use anyhow::Context;
use clap::Parser;
use tokio::sync::watch;

use crate::args::Args;
use crate::host::{ENVOY_INSTALL, ENVOY_VERSION, Host};

/// The host allocates on every request (streams, header maps, copies into the guest); Envoy
/// links tcmalloc, this process mimalloc (glibc's malloc made the host's share larger).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let host = host::choose_host(&args)?;
    if let Host::Gateway(Some(why)) = &host {
        println!(
            "Envoy {ENVOY_VERSION} not found ({why}): running the filter in the local gateway \
             instead; install Envoy with `{ENVOY_INSTALL}` (or pass --envoy PATH) to run the real \
             thing."
        );
    }
    let state_dir = args.state_dir();
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let (stop_tx, stop_rx) = watch::channel(false);

    // A signal while starting drops the start-up future, and with it Envoy's guard (which kills
    // the process); the tasks end with the runtime.
    let signal = keygate_gateway::shutdown_signal();
    tokio::pin!(signal);
    let running = tokio::select! {
        r = running::start(&args, host, &state_dir, stop_rx) => r?,
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
