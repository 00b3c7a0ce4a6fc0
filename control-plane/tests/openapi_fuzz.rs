//! API fuzzing with Schemathesis (PyPI, pinned in `tests/python/requirements.txt`) against
//! `/openapi.json` of the real `keygate serve` binary on a fresh SQLite database: no 5xx, no
//! crash. Three passes, one per credential kind: the admin token (every operation), a
//! `workspace` key (`keys:read keys:write`, so exchange and the workspace-confined paths run),
//! and an `edge` key (the key-set feed and usage intake).
//!
//! Schemathesis must be installed: `python3 -m pip install -r
//! control-plane/tests/python/requirements.txt` (`.ci/run` does it). Without it this test fails
//! with that command; it never skips. `KEYGATE_ST_EXAMPLES` (default 40 per operation) and
//! `KEYGATE_ST_SEED` (default 1) size and replay a run.

mod common;

use std::process::Command;

use serde_json::{Value, json};

const ADMIN: &str = "openapi-fuzz-admin-token-0123456789";
const INSTALL: &str = "python3 -m pip install -r control-plane/tests/python/requirements.txt";

async fn create(http: &reqwest::Client, base: &str, body: Value) -> String {
    let resp = http
        .post(format!("{base}/v1/keys"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .expect("create key");
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.expect("json");
    v["secret"].as_str().expect("secret").to_owned()
}

/// The count of 5xx responses the server itself reports in `/metrics`.
async fn server_errors(http: &reqwest::Client, base: &str) -> u64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix("keygate_http_responses_total{class=\"5xx\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no 5xx counter in /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut served = common::serve(dir.path(), "server", |c| {
        c.env(
            "KEYGATE_DATABASE_URL",
            format!("sqlite:{}", dir.path().join("fuzz.db").display()),
        )
        .env("KEYGATE_ADMIN_TOKEN", ADMIN)
        // The fuzzer sends many requests that fail authentication on purpose (bad `x-api-key`
        // values among them); the limiter has its own tests, here it would only turn every
        // later answer into 429.
        .env("KEYGATE_AUTH_FAILURES_PER_MINUTE", "100000000")
        .env("RUST_LOG", "info,sqlx=warn");
    });
    let http = reqwest::Client::new();
    let base = served.base();
    // Some state for the generated calls to run into: keys of each kind, one suspended, one
    // revoked, one rotated with grace.
    let workspace = create(
        &http,
        &base,
        json!({"name": "fuzz ws", "workspace_id": "fuzz", "scopes": ["keys:read", "keys:write"]}),
    )
    .await;
    let edge = create(&http, &base, json!({"name": "fuzz edge", "kind": "edge"})).await;
    for (i, kind) in ["workspace", "repo", "workspace"].iter().enumerate() {
        create(
            &http,
            &base,
            json!({"name": format!("seed {i}"), "kind": kind, "workspace_id": "fuzz",
                   "scopes": ["repo:read"], "resources": ["acme/*"]}),
        )
        .await;
    }
    let examples: u32 = std::env::var("KEYGATE_ST_EXAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let seed: u64 = std::env::var("KEYGATE_ST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let passes = json!([
        {"label": "admin", "token": ADMIN},
        {"label": "workspace", "token": workspace},
        {"label": "edge", "token": edge, "include_path_regex": "^/v1/(keyset|usage)$"},
    ]);
    let reports = dir.path().join("reports");
    std::fs::create_dir_all(&reports).expect("report dir");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/schemathesis_run.py"
    );
    let (base2, reports2) = (base.clone(), reports.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(&base2)
            .arg(&reports2)
            .arg(examples.to_string())
            .arg(seed.to_string())
            .env("KEYGATE_ST_PASSES", passes.to_string())
            .output()
    })
    .await
    .expect("join")
    .unwrap_or_else(|e| panic!("python3 does not run ({e}); install Python 3 and then {INSTALL}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.code() != Some(3),
        "Schemathesis is not installed: run `{INSTALL}` ({stdout})"
    );
    assert!(
        out.status.success(),
        "schemathesis_run.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("summary is not JSON ({e}): {stdout}"));
    assert_eq!(
        summary["schemathesis_version"], "4.32.5",
        "the pinned version ({INSTALL})"
    );
    let (mut generated, mut operations) = (0, 0);
    for p in summary["passes"].as_array().expect("passes") {
        let label = p["label"].as_str().unwrap_or("?");
        let log = p["log"]
            .as_str()
            .and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            p["report_error"].is_null(),
            "{label}: no report: {p}\n{tail}"
        );
        assert_eq!(p["complete"], true, "{label}: run incomplete: {p}\n{tail}");
        assert_eq!(
            p["with_failures"], 0,
            "{label}: Schemathesis found a server error: {}\n{tail}",
            p["failures"]
        );
        assert_eq!(
            p["errored"], 0,
            "{label}: errors (crash, timeout, connection): {}\n{tail}",
            p["errors"]
        );
        assert_eq!(p["operations_errored"], 0, "{label}: {p}\n{tail}");
        assert_eq!(p["exit_code"], 0, "{label}: {p}\n{tail}");
        let tested = p["operations_tested"].as_u64().unwrap_or(0);
        let cases = p["generated"].as_u64().unwrap_or(0);
        let want_ops = if label == "edge" { 2 } else { 17 };
        assert!(
            tested >= want_ops,
            "{label}: only {tested} operations tested: {p}"
        );
        assert!(cases >= tested, "{label}: too few cases: {p}");
        println!("schemathesis {label}: {tested} operations, {cases} test cases, 0 failures");
        generated += cases;
        operations += tested;
    }
    // The server's own count agrees, and it is still up.
    assert_eq!(
        server_errors(&http, &base).await,
        0,
        "5xx answers in /metrics; log:\n{}",
        served.logs()
    );
    assert!(
        served.is_running(),
        "keygate serve exited:\n{}",
        served.logs()
    );
    let logs = served.logs();
    assert!(!logs.contains("panicked"), "a panic in the server:\n{logs}");
    println!(
        "schemathesis total: {generated} test cases over {operations} operation runs \
         ({examples} examples per operation, seed {seed}), 0 server errors"
    );
}
