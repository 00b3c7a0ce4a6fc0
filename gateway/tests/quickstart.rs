//! Runs the README's first command (`keygate-quickstart`) non-interactively and checks that the
//! curl lines it prints do what they say: 200 with identity headers, 401 without a key, revoke,
//! then 401 for the revoked key; closing stdin stops everything cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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

#[test]
fn quickstart_prints_curl_lines_that_work() {
    let state = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keygate-quickstart"))
        .arg("--non-interactive")
        .arg("--state-dir")
        .arg(state.path())
        .args(["--listen", "127.0.0.1:0"])
        .args(["--control-plane-listen", "127.0.0.1:0"])
        .args(["--upstream-listen", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("quickstart starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("ready") => break,
            Ok(line) => printed.push(line),
            Err(e) => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "no `ready` line ({e}); printed {printed:?}; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
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
    assert!(echoed["headers"].get("x-api-key").is_none(), "{body}");

    // 401 without a key, with a machine-readable code.
    let (status, body) = run_curl(anonymous);
    assert_eq!(status, 401, "{body}");
    let error: Value = serde_json::from_str(&body).expect("error JSON");
    assert_eq!(error["error"]["code"], "missing_key");

    // Revoke, then the first line is denied within the sync interval (plus slack).
    let (status, body) = run_curl(revoke);
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let denied = loop {
        let (status, body) = run_curl(allowed);
        if status == 401 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} 10 s after revoke"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let error: Value = serde_json::from_str(&denied).expect("error JSON");
    // A revoked key has left the key set: to the filter it is unknown.
    assert_eq!(error["error"]["code"], "unknown_key", "{denied}");

    // End of stdin stops everything, cleanly.
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "quickstart did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
}
