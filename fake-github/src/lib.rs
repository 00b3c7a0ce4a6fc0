//! A local fake of GitHub's App-authentication REST API, for tests (GitHub cannot be reached
//! from here). It behaves as GitHub documents for the eight operations in
//! `fake-github/spec/github-app-operations.json`:
//!
//! - App endpoints need `Authorization: Bearer <JWT>`: RS256, signed by one of the App's keys
//!   (verified with its *public* key), `iss` the App id or client id, `iat` not in the future
//!   (5 s tolerance), `exp` in the future, at most 10 minutes after `iat` and after the fake's now.
//!   Failures answer 401 with GitHub's messages, which clients match on for clock-skew retries.
//! - Every request needs `User-Agent` (403 otherwise, as GitHub), `Accept:
//!   application/vnd.github+json` (415) and `X-GitHub-Api-Version: 2022-11-28` (400) — the last
//!   two stricter than GitHub, so a client that forgets them fails here.
//! - Bodies follow GitHub's documented JSON shapes (checked by this crate's tests against the
//!   OpenAPI excerpt), errors carry `message` and `documentation_url`.
//! - It counts calls per operation and can simulate: an App not installed (404), permissions or
//!   repositories the installation lacks (422), primary (403) and secondary (403/429) rate limits
//!   with GitHub's headers, a skewed clock, slow answers, and stateless ~520-character `ghs_`
//!   tokens with dots (`X-GitHub-Stateless-S2S-Token: enabled|disabled` forces either form).
//! - Secret scanning partner alerts ([`secret_scanning`]): a signer with test-only ECDSA P-256
//!   keys and `GET /meta/public_keys/secret_scanning`, as GitHub documents them.
//! - `path_prefix: "/api/v3"` serves the routes as GitHub Enterprise Server does.

#![recursion_limit = "256"]

mod auth;
mod faults;
mod fixtures;
mod installations;
mod limits;
mod model;
mod recorded;
mod responses;
mod routes;
pub mod secret_scanning;
mod setup;
mod state;
mod tokens;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

pub use auth::IAT_TOLERANCE_SECS;
pub use fixtures::{fixture, fixture_path};
pub use limits::RateLimit;
pub use routes::Operation;
pub use tokens::{RecordedTokenRequest, TokenRecord};

use state::{Inner, Shared};

/// Errors from setting up the fake.
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    /// A public key PEM could not be parsed.
    #[error("bad public key: {0}")]
    BadKey(#[from] jsonwebtoken::errors::Error),
    /// Binding the listener failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// An installation names an App the fake does not know.
    #[error("unknown app {0}")]
    UnknownApp(u64),
}

/// Start-up options.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `""` for api.github.com's layout, `"/api/v3"` for GitHub Enterprise Server's.
    pub path_prefix: String,
}

/// A running fake GitHub on `127.0.0.1:<random port>`; stops when dropped.
#[derive(Debug)]
pub struct FakeGithub {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGithub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGithub {
    /// Starts the fake with api.github.com's path layout.
    pub async fn start() -> Result<Self, FakeError> {
        Self::start_with(Options::default()).await
    }

    /// Starts the fake with the given options.
    pub async fn start_with(options: Options) -> Result<Self, FakeError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let prefix = options.path_prefix.trim_end_matches('/').to_owned();
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                token_ttl: 3600,
                next_id: 1000,
                alert_keys: vec![secret_scanning::KEY_1, secret_scanning::KEY_2],
                alert_key_current: secret_scanning::KEY_2,
                ..Inner::default()
            }),
            api_base: format!("http://{addr}{prefix}"),
            web_base: format!("http://{addr}"),
        });
        let router = routes::router(shared.clone(), &prefix);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// The API base URL a client should be configured with (no trailing slash).
    pub fn base_url(&self) -> String {
        self.shared.api_base.clone()
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
