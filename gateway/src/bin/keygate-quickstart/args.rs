//! The command line of `keygate-quickstart`: its flags, their defaults, and the state directory
//! they name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;

/// One-command local Keygate: control plane (SQLite), echo upstream, Envoy with the filter.
#[derive(Debug, Parser)]
#[command(name = "keygate-quickstart", version, about)]
pub(crate) struct Args {
    /// State directory (SQLite database, admin token, plugin configuration, Envoy's bootstrap
    /// and log). Default `<repo>/.keygate`.
    #[arg(long)]
    pub(crate) state_dir: Option<PathBuf>,
    /// Listen address of Envoy (or of the local gateway).
    #[arg(long, default_value = "127.0.0.1:10000")]
    pub(crate) listen: SocketAddr,
    /// Control-plane listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) control_plane_listen: SocketAddr,
    /// Echo upstream listen address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub(crate) upstream_listen: SocketAddr,
    /// Worker threads of Envoy (`--concurrency`) or of the local gateway; each runs its own
    /// filter instance.
    #[arg(long, default_value_t = 2)]
    pub(crate) workers: usize,
    /// The Envoy 1.40.0 binary. Default: `envoy` on PATH, then the copy `cargo test` installs
    /// under `target/`; without one the quickstart falls back to the local gateway.
    #[arg(long, env = "KEYGATE_ENVOY", value_name = "PATH")]
    pub(crate) envoy: Option<PathBuf>,
    /// Run the filter in the local development gateway (the wasmtime host harness) even when
    /// Envoy is installed.
    #[arg(long)]
    pub(crate) gateway: bool,
    /// For scripts and tests: also stop when stdin reaches end of file.
    #[arg(long)]
    pub(crate) non_interactive: bool,
}

impl Args {
    /// `--state-dir`, or `<repo>/.keygate`.
    pub(crate) fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap_or(Path::new("."))
                .join(".keygate")
        })
    }
}
