//! [`ServeProcess`]: the real `keygate serve` binary as a child process of the test.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use keygate_testkit::process::Supervised;

/// The line `keygate serve` prints on stdout once it serves (after the bootstrap banner, if
/// any), followed by its address.
pub const LISTENING: &str = "keygate listening on http://";

/// How long a start may take to print [`LISTENING`] (PostgreSQL migrations included, on a
/// loaded 2-core machine).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// How long [`ServeProcess::stop`] waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// `keygate serve` (the binary at a path the caller gives: `env!("CARGO_BIN_EXE_keygate")` in
/// this crate's tests) listening on 127.0.0.1, its stdout and stderr in
/// `<dir>/<name>.stdout` and `<dir>/<name>.stderr` (appended across restarts). Killed on drop.
pub struct ServeProcess {
    name: String,
    dir: PathBuf,
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, Option<OsString>)>,
    current_dir: Option<PathBuf>,
    addr: SocketAddr,
    process: Option<Supervised>,
    starts: u32,
    keep: Vec<tempfile::TempDir>,
}

impl std::fmt::Debug for ServeProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeProcess")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ServeProcess {
    /// Starts `<bin> serve --listen 127.0.0.1:0` with stdin closed; `configure` adds the rest
    /// (database, tokens, `RUST_LOG`, more arguments, working directory). Returns once it
    /// printed its listening line (so a bootstrap banner before it is complete too).
    pub fn start(
        bin: impl AsRef<Path>,
        dir: &Path,
        name: &str,
        configure: impl FnOnce(&mut Command),
    ) -> Self {
        let mut command = Command::new(bin.as_ref());
        command.arg("serve");
        configure(&mut command);
        let mut p = Self {
            name: name.to_owned(),
            dir: dir.to_owned(),
            program: bin.as_ref().to_owned(),
            args: command.get_args().map(ToOwned::to_owned).collect(),
            envs: command
                .get_envs()
                .map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned)))
                .collect(),
            current_dir: command.get_current_dir().map(ToOwned::to_owned),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            process: None,
            starts: 0,
            keep: Vec::new(),
        };
        p.spawn_until_listening(Duration::ZERO);
        p
    }

    /// Keeps `dir` (e.g. the one holding its SQLite file) as long as the process handle.
    pub fn keep(mut self, dir: tempfile::TempDir) -> Self {
        self.keep.push(dir);
        self
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// [`ServeProcess::base`] + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Supervised::id)
    }

    /// Its resident memory in bytes, while it runs.
    pub fn rss_bytes(&self) -> Option<u64> {
        self.process.as_ref().and_then(|p| p.rss_bytes().ok())
    }

    /// What it printed on stdout so far, over every start.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.stdout", self.name))).unwrap_or_default()
    }

    /// What it logged on stderr so far, over every start.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.stderr", self.name))).unwrap_or_default()
    }

    /// Stdout then stderr.
    pub fn logs(&self) -> String {
        self.stdout() + &self.stderr()
    }

    /// Whether the process runs (not killed, not exited).
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(Supervised::is_running)
    }

    /// SIGKILL and reap: no shutdown code runs. The port then refuses connections.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Starts the binary again on the same address and configuration (after
    /// [`ServeProcess::kill`], or killing it first). Retries for a few seconds while the port
    /// is not yet free.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn_until_listening(Duration::from_secs(10));
    }

    /// Stops it (SIGTERM, SIGKILL after a grace period) and returns (stdout, stderr), complete.
    pub fn stop(mut self) -> (String, String) {
        if let Some(mut p) = self.process.take() {
            p.stop(STOP_GRACE);
        }
        (self.stdout(), self.stderr())
    }

    /// Spawns and waits for the listening line; a start that fails because the address is
    /// still in use is retried until `retry_for` has passed.
    fn spawn_until_listening(&mut self, retry_for: Duration) {
        let deadline = Instant::now() + retry_for;
        loop {
            match self.spawn_once() {
                Ok(()) => return,
                Err(why) if why.contains("in use") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(why) => panic!("keygate serve ({}): {why}", self.name),
            }
        }
    }

    fn spawn_once(&mut self) -> Result<(), String> {
        self.starts += 1;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .arg("--listen")
            .arg(self.addr.to_string());
        for (k, v) in &self.envs {
            match v {
                Some(v) => command.env(k, v),
                None => command.env_remove(k),
            };
        }
        if let Some(d) = &self.current_dir {
            command.current_dir(d);
        }
        let mut process =
            Supervised::spawn(&self.name, command, &self.dir).map_err(|e| e.to_string())?;
        let addr = process
            .wait_for_line(LISTENING, START_TIMEOUT)
            .map_err(|e| format!("start #{}: {e}", self.starts))?;
        self.addr = addr
            .parse()
            .map_err(|e| format!("listening line {addr:?}: {e}"))?;
        self.process = Some(process);
        Ok(())
    }
}
