//! `keygate-gateway`: a small HTTP/1.1 gateway that runs a proxy-wasm filter in the
//! `keygate-host-harness` and proxies allowed requests to one upstream.
//!
//! **It is for development, CI and benchmarks. Envoy is the production host** (see `envoy/`).
//!
//! * Each request's headers go through the filter on one of N worker threads (round robin);
//!   every worker thread owns its own harness instance, like an Envoy worker owns its VM. The
//!   filter's callouts go over real HTTP to the `--cluster` endpoints and ticks fire in real time.
//! * Allowed requests go to the upstream with the headers as the filter left them; request and
//!   response bodies stream through without buffering. Local replies (401, 403, 503, …) go back
//!   to the client as the filter wrote them.
//! * The plugin configuration is the one Envoy gets: a file, or the Wasm filter's
//!   `configuration.value` extracted from an `envoy.yaml` ([`PluginSettings::from_envoy_yaml`]).
//! * [`envoy_bootstrap`] turns `envoy/envoy.yaml` into a bootstrap a real Envoy runs here (the
//!   quickstart's and the end-to-end tests').
//!
//! Limits (by design, for a development host): the filter sees the request headers only
//! (`end_of_stream` is true on them; body and response callbacks see nothing of the real
//! body or upstream response); shared data is one store for all worker threads, as in one Envoy
//! process (so one worker syncs the key set and the others read it), but shared queues are per
//! worker thread.

mod echo;
pub mod envoy_bootstrap;
mod error;
mod proxy;
mod settings;
mod workers;

pub use echo::serve_echo;
pub use error::GatewayError;
pub use proxy::{Gateway, GatewayConfig, RunningGateway};
pub use settings::PluginSettings;
pub use workers::{FilterPool, Verdict};

/// Waits for SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
