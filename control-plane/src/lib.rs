//! Keygate control plane: key lifecycle service, sync feed, forward-auth and GitHub App token broker.
//!
//! A library with a thin `main`: build an [`AppState`] from a [`Config`], then [`serve`] it on
//! a pre-bound listener, or mount [`app`] yourself.
//!
//! The layers, each importing only the ones below it (checked by `tests/layers.rs`):
//! [`cli`] → [`http`] → [`runtime`] (with its services [`forward_auth`] and [`github`]) →
//! [`storage`] → [`domain`]. This file is the composition root.

pub mod cli;
pub mod domain;
pub mod forward_auth;
pub mod github;
pub mod http;
pub mod runtime;
pub mod storage;
#[cfg(feature = "test-support")]
pub mod test_support;

use std::future::Future;
use std::net::SocketAddr;

pub use http::app;
pub use http::auth::Caller;
pub use http::error::ApiError;
pub use runtime::config::Config;
pub use runtime::state::AppState;
pub use storage::Db;

/// Serves `state` on a pre-bound `listener` until `shutdown` completes, with the background
/// tasks (usage flush, change-log pruning, PostgreSQL LISTEN); flushes usage on the way out.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tasks = state.spawn_background();
    let drain = state.drain.clone();
    let shutdown = async move {
        shutdown.await;
        drain.start();
    };
    let result = axum::serve(
        listener,
        app(state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    for t in tasks {
        t.abort();
    }
    state.usage.flush(&state.db, &state.metrics).await;
    result
}
