//! Test helpers shared by Keygate's integration and end-to-end tests: throwaway PostgreSQL
//! clusters (`initdb`/`pg_ctl` from the machine's PostgreSQL), real Envoy processes ([`envoy`]),
//! supervised child processes ([`process`]), free TCP ports, polling ([`poll`]), a seeded
//! generator ([`rng`]), a raw HTTP/1.1 upstream ([`raw_upstream`]); and the benchmarks' shared
//! scaffolding ([`bench`]).

pub mod bench;
#[cfg(feature = "browser")]
pub mod browser;
pub mod envoy;
pub mod poll;
pub mod process;
pub mod raw_upstream;
pub mod rng;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Errors from starting or using a throwaway cluster.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// A PostgreSQL tool could not be run or failed.
    #[error("{tool} failed: {detail}")]
    Tool {
        /// The program that failed.
        tool: String,
        /// Its exit status and output.
        detail: String,
    },
    /// A file-system or socket operation failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// The directory holding `initdb` and `pg_ctl`: `pg_config --bindir`, else the Debian default.
pub fn pg_bindir() -> PathBuf {
    let candidates = [
        "/usr/lib/postgresql/17/bin",
        "/usr/lib/postgresql/16/bin",
        "/usr/lib/postgresql/15/bin",
    ];
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("initdb").exists())
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL server tool, through `runuser -u postgres --` when we are root
/// (initdb and postgres refuse to run as root).
fn run_pg_tool(as_postgres: bool, program: &Path, args: &[&str]) -> Result<String, TestkitError> {
    let mut cmd = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TestkitError::Tool {
            tool: program.display().to_string(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(TestkitError::Tool {
            tool: program.display().to_string(),
            detail: format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A throwaway PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 on a free
/// port (unix socket inside the temporary directory), with trust authentication for the
/// `postgres` user. Stopped and deleted on drop.
#[derive(Debug)]
pub struct PgCluster {
    dir: tempfile::TempDir,
    port: u16,
    bindir: PathBuf,
    as_postgres: bool,
    next_db: AtomicU32,
}

impl PgCluster {
    /// Creates and starts a cluster (`initdb`, then `pg_ctl start -w`).
    pub fn start() -> Result<Self, TestkitError> {
        let bindir = pg_bindir();
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new().prefix("keygate-pg-").tempdir()?;
        if as_postgres {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()?;
            if !st.success() {
                return Err(TestkitError::Tool {
                    tool: "chown".into(),
                    detail: st.to_string(),
                });
            }
        }
        let data_s = dir.path().join("data").to_string_lossy().into_owned();
        run_pg_tool(
            as_postgres,
            &bindir.join("initdb"),
            &[
                "-D",
                &data_s,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        // The port can be taken between our probe and postgres' bind: retry a few times.
        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port()?;
            match pg_ctl_start(as_postgres, &bindir, dir.path(), port) {
                Ok(()) => {
                    return Ok(Self {
                        dir,
                        port,
                        bindir,
                        as_postgres,
                        next_db: AtomicU32::new(0),
                    });
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| TestkitError::Tool {
            tool: "pg_ctl".into(),
            detail: "no attempt".into(),
        }))
    }

    /// A cluster shared by every test of this test binary, started on first use. A small
    /// watcher process stops it when the test process exits (statics are never dropped).
    pub fn shared() -> &'static PgCluster {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let cluster = PgCluster::start().expect("start throwaway PostgreSQL cluster");
            cluster.stop_when_process_exits(std::process::id());
            cluster
        })
    }

    fn stop_when_process_exits(&self, pid: u32) {
        let data = self.dir.path().join("data");
        let pg_ctl = self.bindir.join("pg_ctl");
        let stop = format!(
            "{} {} -D {} -m immediate stop >/dev/null 2>&1; rm -rf {}",
            if self.as_postgres {
                "runuser -u postgres --"
            } else {
                ""
            },
            pg_ctl.display(),
            data.display(),
            self.dir.path().display()
        );
        let script = format!("while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop}");
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    /// Stops the server (`pg_ctl stop -m fast`: connections are closed, the data is kept), so
    /// that tests can see the database become unreachable; [`PgCluster::restart`] brings it back.
    pub fn stop(&self) -> Result<(), TestkitError> {
        let data = self.dir.path().join("data").to_string_lossy().into_owned();
        run_pg_tool(
            self.as_postgres,
            &self.bindir.join("pg_ctl"),
            &["-D", &data, "-m", "fast", "-w", "stop"],
        )
        .map(|_| ())
    }

    /// Starts a stopped cluster again on the same port, with the same data.
    pub fn restart(&self) -> Result<(), TestkitError> {
        pg_ctl_start(self.as_postgres, &self.bindir, self.dir.path(), self.port)
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of the default `postgres` database.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// URL of the named database on this cluster.
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a fresh, empty database and returns its URL.
    pub fn fresh_database(&self) -> Result<String, TestkitError> {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        let port = self.port.to_string();
        run_pg_tool(
            false,
            &self.bindir.join("createdb"),
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", &name],
        )?;
        Ok(self.url_for(&name))
    }
}

/// `pg_ctl start -w` of the cluster in `dir` on `port` (unix socket in `dir`, log in
/// `dir/server.log`), tuned for throwaway use (no fsync).
fn pg_ctl_start(
    as_postgres: bool,
    bindir: &Path,
    dir: &Path,
    port: u16,
) -> Result<(), TestkitError> {
    let data = dir.join("data").to_string_lossy().into_owned();
    let sock = dir.to_string_lossy().into_owned();
    let log = dir.join("server.log").to_string_lossy().into_owned();
    let opts = format!(
        "-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off \
         -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    );
    run_pg_tool(
        as_postgres,
        &bindir.join("pg_ctl"),
        &[
            "-D", &data, "-o", &opts, "-l", &log, "-w", "-t", "60", "start",
        ],
    )
    .map(|_| ())
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").to_string_lossy().into_owned();
        let _ = run_pg_tool(
            self.as_postgres,
            &self.bindir.join("pg_ctl"),
            &["-D", &data, "-m", "immediate", "stop"],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }

    #[test]
    fn cluster_starts_accepts_connections_and_stops() {
        let cluster = PgCluster::start().unwrap();
        let url = cluster.fresh_database().unwrap();
        assert!(url.starts_with("postgres://postgres@127.0.0.1:"));
        let port = cluster.port();
        assert!(std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok());
        cluster.stop().unwrap();
        assert!(std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
        cluster.restart().unwrap();
        assert!(std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok());
        drop(cluster);
        assert!(std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
    }
}
