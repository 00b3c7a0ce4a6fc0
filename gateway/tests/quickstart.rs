//! Runs the README's first command (`keygate-quickstart`) non-interactively and checks that the
//! curl lines it prints do what they say: 200 with identity headers, 401 without a key, revoke,
//! then 401 for the revoked key; closing stdin stops everything cleanly. With real Envoy 1.40
//! (found or installed by `keygate_testkit::envoy`: the test fails, never skips, without it), with
//! the local gateway (`--gateway`), and refusing an `--envoy` that is not Envoy 1.40.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keygate_testkit::envoy::{INSTALL_COMMAND, envoy_binary};
use keygate_testkit::poll::wait_for;
use keygate_testkit::process::Supervised;
use serde_json::Value;

/// Runs one printed shell line, with `-w` appended so the status code comes last.
fn run_curl(line: &str) -> (u16, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{line} -w '\\n%{{http_code}}'"))
        .output()
        .expect("sh runs");
    assert!(out.status.success(), "`{line}` failed: {out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.trim().parse().expect("status code"), body.to_owned())
}

/// A running quickstart, supervised: its stdin is a pipe this test holds, so that it stops
/// what it started when the pipe closes (on [`Quickstart::stop`], on drop after a failed
/// assertion, or when the test process dies); killed on drop if it has not exited by then.
struct Quickstart {
    process: Supervised,
    /// Everything printed on stdout before `ready`.
    printed: Vec<String>,
    _logs: tempfile::TempDir,
}

impl Quickstart {
    /// Starts the quickstart with every address on port 0 and `extra` arguments, and waits for
    /// its `ready` line.
    fn start(state: &Path, extra: &[&str]) -> Self {
        let logs = tempfile::tempdir().expect("tempdir");
        let mut command = Command::new(env!("CARGO_BIN_EXE_keygate-quickstart"));
        command
            .arg("--non-interactive")
            .arg("--state-dir")
            .arg(state)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--control-plane-listen", "127.0.0.1:0"])
            .args(["--upstream-listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("KEYGATE_ENVOY");
        let mut process = Supervised::spawn_with_stdin("quickstart", command, logs.path())
            .expect("quickstart starts");
        if let Err(e) = process.wait_for_line("ready", Duration::from_secs(180)) {
            process.close_stdin();
            let _ = process.wait_exit(Duration::from_secs(20));
            panic!("no `ready` line: {e}");
        }
        let printed = process
            .stdout()
            .lines()
            .take_while(|l| !l.starts_with("ready"))
            .map(str::to_owned)
            .collect();
        Self {
            process,
            printed,
            _logs: logs,
        }
    }

    /// The printed line that starts with `prefix` (after indentation).
    fn line(&self, prefix: &str) -> Option<&str> {
        self.printed
            .iter()
            .map(|l| l.trim_start())
            .find(|l| l.starts_with(prefix))
    }

    /// Closes stdin and waits for a clean exit.
    fn stop(mut self) {
        self.process.close_stdin();
        let Some(status) = self.process.wait_exit(Duration::from_secs(30)) else {
            self.process.kill();
            panic!("quickstart did not stop; stderr: {}", self.process.stderr());
        };
        assert!(
            status.success(),
            "exit status {status}; stderr: {}",
            self.process.stderr()
        );
    }
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        self.process.close_stdin();
        let _ = self.process.wait_exit(Duration::from_secs(20));
    }
}

/// The three curl lines and the CLI line do what they say against whatever the quickstart put
/// in front of the upstream.
fn check_curl_lines(printed: &[String]) {
    let curls: Vec<&String> = printed.iter().filter(|l| l.starts_with("curl ")).collect();
    assert_eq!(curls.len(), 3, "three curl lines: {printed:?}");
    let (allowed, anonymous, revoke) = (curls[0], curls[1], curls[2]);
    let key_id = revoke
        .split("/v1/keys/")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect("key id in the revoke line");
    assert!(
        printed
            .iter()
            .any(|l| l.contains("keys revoke") && l.contains(key_id)),
        "a CLI form of the revoke: {printed:?}"
    );

    // 200 with the identity the filter forwarded, and no secret upstream.
    let (status, body) = run_curl(allowed);
    assert_eq!(status, 200, "{body}");
    let echoed: Value = serde_json::from_str(&body).expect("echo JSON");
    assert_eq!(echoed["headers"]["x-keygate-key-id"], key_id);
    assert_eq!(echoed["headers"]["x-keygate-owner"], "demo-user");
    assert_eq!(echoed["headers"]["x-keygate-scopes"], "demo:read");
    assert!(echoed["headers"].get("x-api-key").is_none(), "{body}");

    // 401 without a key, with a machine-readable code.
    let (status, body) = run_curl(anonymous);
    assert_eq!(status, 401, "{body}");
    let error: Value = serde_json::from_str(&body).expect("error JSON");
    assert_eq!(error["error"]["code"], "missing_key");

    // Revoke, then the first line is denied within about a second (slack for a loaded machine).
    let (status, body) = run_curl(revoke);
    assert_eq!(status, 200, "{body}");
    let revoked = Instant::now();
    let denied = loop {
        let (status, body) = run_curl(allowed);
        if status == 401 {
            break body;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(5),
            "still {status} 5 s after revoke"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("revoked key denied after {:?}", revoked.elapsed());
    let error: Value = serde_json::from_str(&denied).expect("error JSON");
    // A revoked key has left the key set: to the filter it is unknown.
    assert_eq!(error["error"]["code"], "unknown_key", "{denied}");
}

/// Processes whose command line mentions `needle` (this machine's `/proc`).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(needle)
                .then(|| format!("{}: {cmdline}", e.file_name().to_string_lossy()))
        })
        .collect()
}

#[test]
fn quickstart_runs_envoy_with_the_filter_and_its_curl_lines_work() {
    let envoy = envoy_binary().unwrap_or_else(|e| {
        panic!(
            "the quickstart test runs real Envoy 1.40.0: {e} (install it with `{INSTALL_COMMAND}`)"
        )
    });
    let state = tempfile::tempdir().expect("tempdir");
    let envoy_arg = envoy.to_str().expect("utf-8 path");
    let q = Quickstart::start(state.path(), &["--envoy", envoy_arg, "--workers", "2"]);

    // Envoy, not the local gateway, is in front; its admin interface is printed and live.
    assert!(q.line("gateway ").is_none(), "{:?}", q.printed);
    let front = q.line("envoy ").expect("an `envoy` line");
    assert!(front.contains("Envoy 1.40.0"), "{front}");
    let admin_line = q.line("envoy admin ").expect("an `envoy admin` line");
    let admin: SocketAddr = admin_line
        .split_whitespace()
        .nth(2)
        .and_then(|u| u.strip_prefix("http://"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("admin address in {admin_line:?}"));
    assert!(admin.ip().is_loopback(), "{admin}");
    let (status, body) = run_curl(&format!("curl -s http://{admin}/ready"));
    assert_eq!((status, body.trim()), (200, "LIVE"));
    // The filter runs in Envoy: its own counters are Envoy's (the quickstart's readiness
    // requests were allowed by it), and it has called the control plane. The filter adds its
    // decision counts to Envoy's counters on its tick, so they show within a few ticks.
    let stat = |stats: &str, name: &str| {
        stats
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(": ")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
    };
    wait_for(
        "Envoy's stats show the filter's allowed requests and its calls to the control plane",
        Duration::from_secs(10),
        || {
            let (_, stats) = run_curl(&format!("curl -s http://{admin}/stats"));
            let allowed = stat(&stats, "wasmcustom.keygate.decision.allow.allowed");
            let calls = stat(&stats, "cluster.keygate_control_plane.upstream_rq_total");
            if allowed >= 1 && calls >= 1 {
                Ok(())
            } else {
                Err(format!("allowed {allowed}, control-plane calls {calls}"))
            }
        },
    );

    // Its bootstrap, the plugin configuration and its log are in the state directory; no secret
    // is in a file.
    let bootstrap =
        std::fs::read_to_string(state.path().join("envoy-bootstrap.json")).expect("bootstrap");
    assert!(!bootstrap.contains("edge_key\""), "{bootstrap}");
    assert!(
        bootstrap.contains(keygate_plugin_artifacts::KEYGATE_PLUGIN_WASM),
        "the built filter module: {bootstrap}"
    );
    let log = std::fs::read_to_string(state.path().join("envoy.log")).expect("envoy.log");
    assert!(log.contains("starting main dispatch loop"), "{log}");

    check_curl_lines(&q.printed);

    // End of stdin stops everything, Envoy included: nothing still runs on its bootstrap.
    let bootstrap_path = state.path().join("envoy-bootstrap.json");
    let needle = bootstrap_path.to_str().expect("utf-8").to_owned();
    assert!(
        !processes_mentioning(&needle).is_empty(),
        "Envoy runs on {needle}"
    );
    q.stop();
    assert!(
        processes_mentioning(&needle).is_empty(),
        "Envoy still running after the quickstart stopped: {:?}",
        processes_mentioning(&needle)
    );
    assert!(
        TcpStream::connect_timeout(&admin, Duration::from_secs(1)).is_err(),
        "Envoy's admin port {admin} still answers"
    );
}

#[test]
fn quickstart_with_gateway_runs_the_local_gateway_and_its_curl_lines_work() {
    let state = tempfile::tempdir().expect("tempdir");
    let q = Quickstart::start(state.path(), &["--gateway"]);
    assert!(q.line("envoy ").is_none(), "{:?}", q.printed);
    let front = q.line("gateway ").expect("a `gateway` line");
    assert!(front.contains("host harness"), "{front}");
    assert!(
        !q.printed.iter().any(|l| l.contains("not found")),
        "--gateway is a choice, not a fallback: {:?}",
        q.printed
    );
    check_curl_lines(&q.printed);
    q.stop();
}

#[test]
fn quickstart_refuses_an_envoy_that_is_not_envoy_1_40_and_says_how_to_install_it() {
    let state = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_keygate-quickstart"))
        .arg("--state-dir")
        .arg(state.path())
        .args(["--envoy", "/nonexistent/envoy"])
        .stdin(Stdio::null())
        .output()
        .expect("quickstart runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(INSTALL_COMMAND), "{stderr}");
    assert!(stderr.contains("/nonexistent/envoy"), "{stderr}");
}
