//! Test support (cargo feature `test-support`): the control plane for this crate's and the
//! end-to-end tests, in two clearly separate forms.
//!
//! - [`InProcessServer`]: the service in the test's process ([`crate::serve`] on a free port of
//!   127.0.0.1), over a fresh SQLite file, a fresh database on the shared throwaway PostgreSQL
//!   cluster, or a given URL; its [`AppState`](crate::AppState) is at hand, and its helpers
//!   decode answers into the crate's own types ([`IssuedKey`](crate::http::keys::IssuedKey),
//!   [`KeyView`](crate::http::keys::KeyView), …).
//! - [`ServeProcess`]: the real `keygate serve` binary as a child process (supervised by
//!   [`keygate_testkit::process`]); the caller gives the binary's path.
//!
//! - [`WebhookReceiver`]: a real HTTP receiver of webhooks that checks every signature.
//! - [`limits`]: the rate-limit and credit tests' helpers (windows with room, a key's policy in
//!   the set, usage reported and read back, metrics, forward-auth on, called and caught up).
//!
//! These are test helpers: on failure they panic with a message that says what went wrong.

mod api_client;
mod in_process;
pub mod limits;
mod serve_process;
mod webhook_receiver;

pub use api_client::{ApiClient, json_call};
pub use in_process::InProcessServer;
pub use serve_process::ServeProcess;
pub use webhook_receiver::{Answer, Received, WebhookReceiver, verify_signature};

/// The bootstrap admin credential of every test control plane.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Which database engine a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// A fresh SQLite file in its own temporary directory.
    Sqlite,
    /// A fresh database on the shared throwaway PostgreSQL cluster
    /// ([`keygate_testkit::PgCluster::shared`]).
    Postgres,
}

/// A fresh database URL for `engine`, and the temporary directory that holds an SQLite file
/// (keep it as long as the database is used).
pub fn fresh_database(engine: Engine) -> (String, Option<tempfile::TempDir>) {
    match engine {
        Engine::Sqlite => {
            let dir = tempfile::Builder::new()
                .prefix("keygate-db-")
                .tempdir()
                .unwrap_or_else(|e| panic!("tempdir: {e}"));
            let url = format!("sqlite:{}", dir.path().join("keygate.db").display());
            (url, Some(dir))
        }
        Engine::Postgres => (
            keygate_testkit::PgCluster::shared()
                .fresh_database()
                .unwrap_or_else(|e| panic!("fresh PostgreSQL database: {e}")),
            None,
        ),
    }
}
