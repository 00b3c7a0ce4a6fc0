//! The `proxy-wasm-harness` binary on scenario files.

use std::process::Command;

use keygate_harness_test_artifacts::SDK_FILTER;

fn run(name: &str, scenario: &str) -> (bool, serde_json::Value, String) {
    let path = std::env::temp_dir().join(format!("harness-cli-{}-{name}.json", std::process::id()));
    std::fs::write(&path, scenario).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_proxy-wasm-harness"))
        .args(["--wasm", SDK_FILTER, "--scenario"])
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).ok();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let json = if output.status.success() {
        serde_json::from_str(&stdout).unwrap()
    } else {
        serde_json::from_str(&stderr).unwrap()
    };
    (output.status.success(), json, stderr)
}

#[test]
fn runs_requests_clock_steps_and_canned_cluster_replies() {
    let scenario = r#"{
        "plugin_configuration": "callout",
        "clusters": { "auth": { "replies": [
            { "status": 200, "body": "alice", "delay_ms": 50 },
            { "reset": true }
        ] } },
        "steps": [
            { "request": { "headers": [[":method","GET"],[":path","/a"],[":authority","x"]] } },
            { "advance_ms": 50 },
            { "request": { "headers": [[":method","GET"],[":path","/b"],[":authority","x"]] } }
        ]
    }"#;
    let (ok, report, stderr) = run("callout", scenario);
    assert!(ok, "{stderr}");
    let streams = report["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2);
    assert_eq!(streams[0]["disposition"], "completed");
    let forwarded = &streams[0]["request"]["headers"];
    assert!(
        forwarded
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "x-auth" && h[1] == "alice"),
        "{forwarded}"
    );
    assert_eq!(streams[1]["disposition"], "local_response");
    assert_eq!(streams[1]["response"]["status"], 502);
    assert_eq!(report["callouts"].as_array().unwrap().len(), 2);
    assert_eq!(report["callouts"][1]["result"]["kind"], "reset");
}

#[test]
fn bad_scenarios_and_refused_configurations_are_json_errors() {
    let (ok, error, _) = run(
        "typo",
        r#"{ "plugin_configuration": "continue", "stepz": [] }"#,
    );
    assert!(!ok);
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `stepz`"),
        "{error}"
    );
    let (ok, error, _) = run("refuse", r#"{ "plugin_configuration": "refuse" }"#);
    assert!(!ok);
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("proxy_on_configure returned false"),
        "{error}"
    );
}
