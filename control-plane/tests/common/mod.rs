//! Shared harness for the integration tests: a real server on port 0 over a fresh SQLite file
//! or a fresh database on a throwaway PostgreSQL cluster, and small HTTP helpers.
#![allow(dead_code)]

use keygate_control_plane::{AppState, Config, serve};
use keygate_testkit::PgCluster;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Which engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

pub const ADMIN: &str = "test-admin-token-0123456789";

/// A running server.
pub struct Server {
    pub base: String,
    pub http: reqwest::Client,
    pub state: AppState,
    pub database_url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

/// A fresh database URL for `engine` (and the temp dir that holds an SQLite file).
pub fn fresh_database(engine: Engine) -> (String, Option<tempfile::TempDir>) {
    match engine {
        Engine::Sqlite => {
            let dir = tempfile::tempdir().expect("tempdir");
            (
                format!("sqlite:{}", dir.path().join("keygate.db").display()),
                Some(dir),
            )
        }
        Engine::Postgres => (
            PgCluster::shared()
                .fresh_database()
                .expect("fresh database"),
            None,
        ),
    }
}

impl Server {
    pub async fn start(engine: Engine) -> Self {
        let (url, dir) = fresh_database(engine);
        let mut s = Self::start_on(&url, |_| {}).await;
        s._dir = dir;
        s
    }

    pub async fn start_on(url: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::new(url, Some(ADMIN.to_owned()));
        config.usage_flush_ms = 50;
        tweak(&mut config);
        let (state, generated) = AppState::new(config).await.expect("state");
        assert!(generated.is_none(), "an admin token was configured");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        Self {
            base,
            http: reqwest::Client::new(),
            state,
            database_url: url.to_owned(),
            shutdown: Some(tx),
            task: Some(task),
            _dir: None,
        }
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A JSON request with a bearer token; returns status and body (Null when empty).
    pub async fn call(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call(Some(ADMIN), method, path, body).await
    }

    /// Creates a key as the admin; returns (secret, record).
    pub async fn create(&self, body: Value) -> (String, Value) {
        let (st, v) = self.admin(Method::POST, "/v1/keys", Some(body)).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        (v["secret"].as_str().unwrap().to_owned(), v["key"].clone())
    }

    pub async fn verify(&self, key: &str, scopes: &[&str], resource: Option<&str>) -> Value {
        let mut body = json!({"key": key, "scopes": scopes});
        if let Some(r) = resource {
            body["resource"] = json!(r);
        }
        let (st, v) = self
            .admin(Method::POST, "/v1/keys/verify", Some(body))
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v
    }
}

/// Asserts the error shape and code.
pub fn assert_error(status: StatusCode, body: &Value, want_status: StatusCode, want_code: &str) {
    assert_eq!(status, want_status, "body: {body}");
    assert_eq!(body["error"]["code"], want_code, "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "body: {body}"
    );
}

/// Generates one `#[tokio::test]` per engine for each listed async fn taking an [`Engine`].
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Engine::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Engine::Postgres).await
                }
            )*
        }
    };
}

/// The real `keygate serve` binary on a free port, its stdout and stderr in their own files under
/// a test's directory; killed on drop.
pub struct Served {
    child: std::process::Child,
    pub port: u16,
    pub base: String,
    stdout: std::path::PathBuf,
    stderr: std::path::PathBuf,
}

impl Served {
    /// Starts `keygate serve` listening on a free port with stdin closed; `configure` sets the
    /// rest (database, tokens, `RUST_LOG`, …). Output goes to `<dir>/<run>.stdout` and
    /// `<run>.stderr`. Returns once it printed its listening line and accepts connections.
    pub fn start(
        dir: &std::path::Path,
        run: &str,
        configure: impl FnOnce(&mut std::process::Command),
    ) -> Self {
        use std::process::{Command, Stdio};
        let port = keygate_testkit::free_port().expect("free port");
        let stdout = dir.join(format!("{run}.stdout"));
        let stderr = dir.join(format!("{run}.stderr"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_keygate"));
        command
            .arg("serve")
            .env("KEYGATE_LISTEN", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                std::fs::File::create(&stdout).expect("stdout file"),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(&stderr).expect("stderr file"),
            ));
        configure(&mut command);
        let mut s = Self {
            child: command.spawn().expect("spawn keygate serve"),
            port,
            base: format!("http://127.0.0.1:{port}"),
            stdout,
            stderr,
        };
        for _ in 0..300 {
            // The listening line comes after the bootstrap banner (if any), so once it is
            // there the banner is complete too.
            if s.stdout().contains("keygate listening on")
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                return s;
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("keygate serve exited with {status}:\n{}", s.logs());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("keygate serve did not start within 30 s:\n{}", s.logs());
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What it logged on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// stdout then stderr.
    pub fn logs(&self) -> String {
        self.stdout() + &self.stderr()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process and returns (stdout, stderr), complete.
    pub fn stop(mut self) -> (String, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.stdout(), self.stderr())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
