//! Everything the quickstart runs, started in order (control plane, echo upstream, keys, the
//! filter's host) and stopped in reverse.

use std::path::Path;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::args::Args;
use crate::control_plane::{ControlPlane, Issued};
use crate::front::{self, Front};
use crate::host::Host;

/// Everything running, and what the ready output prints.
pub(crate) struct Running {
    pub(crate) control_plane: ControlPlane,
    pub(crate) echo_url: String,
    pub(crate) demo: Issued,
    pub(crate) front: Front,
    echo: JoinHandle<()>,
}

/// Starts the control plane, the echo upstream, issues the keys and starts `host` with the
/// filter; returns once the filter has synced. Everything started stops when `stop_rx` turns
/// true (Envoy, with [`Running::stop`] or when dropped).
pub(crate) async fn start(
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
    let control_plane =
        ControlPlane::start(args.control_plane_listen, state_dir, stopped()).await?;

    // Demo upstream.
    let echo_listener = TcpListener::bind(args.upstream_listen)
        .await
        .with_context(|| format!("echo upstream: binding {}", args.upstream_listen))?;
    let echo_addr = echo_listener.local_addr()?;
    let echo_url = format!("http://{echo_addr}");
    let echo = tokio::spawn(keygate_gateway::serve_echo(echo_listener, stopped()));

    // Keys: an edge key for the filter, a demo key for you.
    let http = reqwest::Client::new();
    let (edge, demo) = control_plane.issue_keys(&http).await?;

    let bootstrap = front::bootstrap(args.listen, control_plane.addr, echo_addr, state_dir)?;
    let front = match host {
        Host::Envoy(binary) => {
            Front::envoy(
                &binary,
                &bootstrap,
                state_dir,
                args.workers,
                &edge.secret,
                &demo.secret,
            )
            .await?
        }
        Host::Gateway(_) => {
            Front::gateway(
                args,
                &bootstrap,
                &echo_url,
                &control_plane.url,
                &edge.secret,
                &demo.secret,
                &http,
            )
            .await?
        }
    };
    Ok(Running {
        control_plane,
        echo_url,
        demo,
        front,
        echo,
    })
}

impl Running {
    /// Stops the filter's host (Envoy after the requests in flight), then signals the echo
    /// upstream and the control plane and waits for both.
    pub(crate) async fn stop(self, stop_tx: watch::Sender<bool>) -> anyhow::Result<()> {
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
            .task
            .await
            .context("control plane task")?
            .context("control plane")?;
        eprintln!("stopped");
        Ok(())
    }
}
