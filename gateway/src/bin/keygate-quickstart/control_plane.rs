//! The control plane run in-process: on SQLite in the state directory, with a bootstrap admin
//! token kept there (0600), and the keys the quickstart issues through its API (an edge key for
//! the filter, a demo key for you).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use keygate_control_plane::{AppState, Config};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The control plane, serving.
pub(crate) struct ControlPlane {
    /// `http://<addr>`.
    pub(crate) url: String,
    /// The address it is bound to.
    pub(crate) addr: SocketAddr,
    /// Where its admin token is kept.
    pub(crate) token_file: PathBuf,
    /// The admin token.
    admin: String,
    /// Its server, until the stop signal.
    pub(crate) task: JoinHandle<std::io::Result<()>>,
}

/// A key just issued: its id and its secret (shown once).
pub(crate) struct Issued {
    pub(crate) id: String,
    pub(crate) secret: String,
}

impl ControlPlane {
    /// Binds `listen` and serves the control plane on `<state>/keygate.db` until `stopped`, with
    /// the admin token of `<state>/admin-token` (created when missing).
    pub(crate) async fn start(
        listen: SocketAddr,
        state_dir: &Path,
        stopped: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<Self> {
        let token_file = state_dir.join("admin-token");
        let admin = read_or_create_token(&token_file)?;
        let database = state_dir.join("keygate.db");
        let mut config = Config::new(
            format!("sqlite:{}", database.display()),
            Some(admin.clone()),
        );
        config.listen = listen;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("control plane: binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let (state, _) = AppState::new(config).await.context("control plane")?;
        let task = tokio::spawn(keygate_control_plane::serve(listener, state, stopped));
        Ok(Self {
            url: format!("http://{addr}"),
            addr,
            token_file,
            admin,
            task,
        })
    }

    /// An edge key for the filter, then a demo key for you.
    pub(crate) async fn issue_keys(
        &self,
        http: &reqwest::Client,
    ) -> anyhow::Result<(Issued, Issued)> {
        let edge = self
            .create_key(
                http,
                json!({"name": "quickstart-edge", "kind": "edge", "owner_id": "quickstart-gateway",
                       "workspace_id": "quickstart"}),
            )
            .await?;
        let demo = self
            .create_key(
                http,
                json!({"name": "quickstart-demo", "kind": "workspace", "owner_id": "demo-user",
                       "workspace_id": "quickstart", "scopes": ["demo:read"]}),
            )
            .await?;
        Ok((edge, demo))
    }

    /// `POST /v1/keys` with `body`, as the admin.
    async fn create_key(&self, http: &reqwest::Client, body: Value) -> anyhow::Result<Issued> {
        let response = http
            .post(format!("{}/v1/keys", self.url))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .context("POST /v1/keys")?;
        let status = response.status();
        let v: Value = response.json().await.context("POST /v1/keys: body")?;
        if status != reqwest::StatusCode::CREATED {
            bail!("POST /v1/keys answered {status}: {v}");
        }
        let field = |pointer: &str| {
            v.pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .with_context(|| format!("POST /v1/keys: no {pointer} in the answer"))
        };
        Ok(Issued {
            id: field("/key/id")?,
            secret: field("/secret")?,
        })
    }
}

/// The token in `path`, or a new one written there (mode 0600).
fn read_or_create_token(path: &Path) -> anyhow::Result<String> {
    if let Ok(t) = std::fs::read_to_string(path)
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_owned());
    }
    use rand::distr::{Alphanumeric, SampleString};
    let token = format!(
        "kgadmin_{}",
        Alphanumeric.sample_string(&mut rand::rng(), 40)
    );
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(token.as_bytes())?;
    Ok(token)
}
