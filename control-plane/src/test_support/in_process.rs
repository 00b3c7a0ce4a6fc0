//! [`InProcessServer`]: the control plane served in the test's own process, on the test's
//! tokio runtime, driven over real HTTP.

use std::time::Duration;

use super::{ADMIN_TOKEN, ApiClient, Engine, fresh_database};
use crate::runtime::config::Config;
use crate::runtime::state::AppState;

/// The control plane in this process: [`crate::serve`] on 127.0.0.1 port 0 (a task of the
/// current tokio runtime), with the bootstrap admin token [`ADMIN_TOKEN`] and usage flushed
/// every 50 ms.
pub struct InProcessServer {
    /// A client of this server, for the test's own requests (the server derefs to it).
    pub api: ApiClient,
    /// The server's state (database, caches), for checks below the API.
    pub state: AppState,
    /// The database URL it runs on.
    pub database_url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for InProcessServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessServer")
            .field("base", &self.api.base)
            .field("database_url", &self.database_url)
            .finish_non_exhaustive()
    }
}

impl InProcessServer {
    /// Starts on a fresh database of `engine`.
    pub async fn start(engine: Engine) -> Self {
        Self::start_with(engine, |_| {}).await
    }

    /// Starts on a fresh database of `engine`; `tweak` changes the configuration first.
    pub async fn start_with(engine: Engine, tweak: impl FnOnce(&mut Config)) -> Self {
        let (url, dir) = fresh_database(engine);
        let mut s = Self::start_on(&url, tweak).await;
        s._dir = dir;
        s
    }

    /// Starts on `database_url`; `tweak` changes the configuration first.
    pub async fn start_on(database_url: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::new(database_url, Some(ADMIN_TOKEN.to_owned()));
        config.usage_flush_ms = 50;
        tweak(&mut config);
        let (state, generated) = AppState::new(config)
            .await
            .unwrap_or_else(|e| panic!("control plane state on {database_url}: {e}"));
        assert!(generated.is_none(), "an admin token was configured");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(crate::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        Self {
            api: ApiClient::new(&format!("http://{addr}")),
            state,
            database_url: database_url.to_owned(),
            shutdown: Some(tx),
            task: Some(task),
            _dir: None,
        }
    }

    /// Stops serving (graceful, bounded to 5 s) and waits for it; the port then refuses
    /// connections. Later calls do nothing.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// [`InProcessServer::shutdown`], consuming it.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }
}

/// `base`, `http`, `url` and the API calls (`create`, `key_action`, …) are its client's.
impl std::ops::Deref for InProcessServer {
    type Target = ApiClient;

    fn deref(&self) -> &ApiClient {
        &self.api
    }
}
