//! Envoy as a supervised child process: started on the quickstart's bootstrap, ready when its
//! admin interface says `LIVE`, stopped with `/quitquitquit` (then SIGKILL), and killed when
//! dropped.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use keygate_gateway::envoy_bootstrap;
use serde_json::Value;

use crate::host::on_path;

/// How long Envoy may take to answer `/ready` (V8 compiles the module; slow on a loaded machine).
const ENVOY_READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Envoy as a child process: killed (and reaped) when dropped, so every way out of the
/// quickstart (an error, a panic, a signal during start-up) stops it.
pub(crate) struct EnvoyProcess {
    child: Child,
    pub(crate) binary: PathBuf,
    pub(crate) admin: SocketAddr,
    listener: SocketAddr,
    pub(crate) bootstrap: PathBuf,
    pub(crate) log: PathBuf,
}

impl EnvoyProcess {
    /// Writes `bootstrap` to the state directory, starts `binary` on it with `concurrency`
    /// workers and the edge key in its environment, its log in `<state>/envoy.log`, and waits
    /// until its admin interface says `LIVE`; reads back the admin and listener addresses.
    pub(crate) async fn start(
        binary: &Path,
        bootstrap: &Value,
        state_dir: &Path,
        concurrency: usize,
        edge_key: &str,
    ) -> anyhow::Result<Self> {
        let bootstrap_path = state_dir.join("envoy-bootstrap.json");
        std::fs::write(&bootstrap_path, serde_json::to_vec_pretty(bootstrap)?)
            .with_context(|| format!("writing {}", bootstrap_path.display()))?;
        let admin_path = state_dir.join("envoy-admin-address");
        let _ = std::fs::remove_file(&admin_path);
        let log = state_dir.join("envoy.log");
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        // `setpriv --pdeathsig KILL` (util-linux) makes the kernel kill Envoy when this process
        // dies, even by SIGKILL. The signal follows the thread that spawned the child: this runs
        // on the main thread (the runtime's `block_on`), which lives as long as the process.
        let mut cmd = match on_path("setpriv") {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        cmd.arg("-c")
            .arg(&bootstrap_path)
            .arg("--concurrency")
            .arg(concurrency.to_string())
            .arg("--disable-hot-restart")
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("--log-level")
            .arg("info")
            .env(envoy_bootstrap::EDGE_KEY_ENV, edge_key)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            // Its own process group: a terminal's Ctrl-C reaches the quickstart, which stops
            // Envoy itself, after the requests in flight.
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut envoy = Self {
            child,
            binary: binary.to_owned(),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listener: SocketAddr::from(([127, 0, 0, 1], 0)),
            bootstrap: bootstrap_path,
            log,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let deadline = Instant::now() + ENVOY_READY_TIMEOUT;
        loop {
            envoy.check_running()?;
            if envoy.admin.port() == 0
                && let Ok(text) = std::fs::read_to_string(&admin_path)
                && let Ok(addr) = text.trim().parse()
            {
                envoy.admin = addr;
            }
            if envoy.admin.port() != 0
                && let Ok(r) = http
                    .get(format!("http://{}/ready", envoy.admin))
                    .send()
                    .await
                && r.status() == reqwest::StatusCode::OK
                && r.text().await.is_ok_and(|t| t.trim() == "LIVE")
            {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "Envoy was not ready within {ENVOY_READY_TIMEOUT:?}; its log: {}",
                    envoy.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        envoy.listener = envoy.listener_addr(&http).await?;
        Ok(envoy)
    }

    /// `http://<listener>`: where the filter answers.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.listener)
    }

    /// An error (with the end of Envoy's log) when the process has exited.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "Envoy exited ({status}); the end of its log ({}):\n{}",
                    self.log.display(),
                    tail.join("\n")
                )
            }
            Err(e) => bail!("Envoy: {e}"),
        }
    }

    /// The address the `ingress` listener is bound to (`/listeners?format=json`).
    async fn listener_addr(&self, http: &reqwest::Client) -> anyhow::Result<SocketAddr> {
        let v: Value = http
            .get(format!("http://{}/listeners?format=json", self.admin))
            .send()
            .await?
            .json()
            .await
            .context("Envoy's /listeners")?;
        v["listener_statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["name"] == envoy_bootstrap::LISTENER)
            .and_then(|l| {
                let a = &l["local_address"]["socket_address"];
                let ip: std::net::IpAddr = a["address"].as_str()?.parse().ok()?;
                Some(SocketAddr::new(
                    ip,
                    u16::try_from(a["port_value"].as_u64()?).ok()?,
                ))
            })
            .with_context(|| format!("no listener {} in Envoy's {v}", envoy_bootstrap::LISTENER))
    }

    /// `POST /quitquitquit`, then SIGKILL if Envoy has not exited within 10 s.
    pub(crate) async fn stop(&mut self) {
        let http = reqwest::Client::new();
        let _ = http
            .post(format!("http://{}/quitquitquit", self.admin))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("Envoy did not exit within 10 s; killing it");
        self.kill();
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
