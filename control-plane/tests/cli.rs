//! Drives the real `keygate` binary: `serve` (with debug logging), the `keys` and `audit`
//! client subcommands, and checks that no secret ever reaches the server's logs.

mod common;

use std::process::Command;

use keygate_control_plane::http::keys::{IssuedKey, KeyView};

const ADMIN: &str = "cli-test-admin-token-42";

fn keygate(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .env("KEYGATE_URL", url)
        .env("KEYGATE_TOKEN", ADMIN)
        .output()
        .expect("run keygate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_drives_the_api_and_no_secret_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::serve(dir.path(), "server", |c| {
        c.env(
            "KEYGATE_DATABASE_URL",
            format!("sqlite:{}", dir.path().join("kg.db").display()),
        )
        .env("KEYGATE_ADMIN_TOKEN", ADMIN)
        .env("RUST_LOG", "trace");
    });
    let url = server.base();

    let (ok, out, err) = keygate(
        &url,
        &[
            "keys",
            "create",
            "--name",
            "cli",
            "--scope",
            "keys:read",
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let IssuedKey { secret, key, .. } = serde_json::from_str(&out).unwrap();
    let id = key.id;
    let (ok, out, _) = keygate(&url, &["keys", "list"]);
    assert!(ok);
    assert!(
        out.starts_with("ID") && out.contains(&id) && out.contains("active"),
        "{out}"
    );
    assert!(!out.contains(&secret));
    let (ok, out, _) = keygate(&url, &["keys", "update", &id, "--name", "renamed"]);
    assert!(ok && out.contains("renamed"), "{out}");
    let (ok, out, _) = keygate(&url, &["keys", "suspend", &id, "--reason", "test"]);
    assert!(ok && out.contains("suspended"), "{out}");
    let (ok, out, _) = keygate(&url, &["keys", "reactivate", &id]);
    assert!(ok && out.contains("active"), "{out}");
    let (ok, out, _) = keygate(&url, &["keys", "rotate", &id, "--grace-period", "60"]);
    assert!(ok && out.contains("secret (shown once"), "{out}");
    let (ok, out, _) = keygate(&url, &["keys", "show", &id, "--json"]);
    assert!(ok);
    let shown: KeyView = serde_json::from_str(&out).unwrap();
    assert_eq!(shown.name, "renamed");
    let (ok, out, _) = keygate(&url, &["keys", "revoke", &id, "--reason", "done"]);
    assert!(ok && out.contains("revoked"), "{out}");
    let (ok, out, _) = keygate(&url, &["audit", "--key", &id]);
    assert!(ok);
    for action in [
        "key.create",
        "key.update",
        "key.suspend",
        "key.reactivate",
        "key.rotate",
        "key.revoke",
    ] {
        assert!(out.contains(action), "{action} missing in {out}");
    }
    let (ok, _, err) = keygate(&url, &["keys", "show", "key_nope"]);
    assert!(!ok && err.contains("INVALID_REQUEST"), "{err}");
    // Verification through the API with the secret in the body.
    let status = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("authorization: Bearer {ADMIN}"),
            "-H",
            "content-type: application/json",
            "-d",
            &format!("{{\"key\":\"{secret}\"}}"),
            &format!("{url}/v1/keys/verify"),
        ])
        .output();
    if let Ok(o) = status {
        assert_eq!(String::from_utf8_lossy(&o.stdout), "200");
    }
    let (out, err) = server.stop();
    let logs = out + &err;
    assert!(logs.contains("listening"), "the log was captured: {logs}");
    assert!(!logs.contains(&secret), "secret leaked into logs");
    assert!(!logs.contains(ADMIN), "admin token leaked into logs");
    let body = secret.rsplit_once('_').unwrap().1;
    assert!(!logs.contains(body));
}

/// `keygate webhooks add|list|deliveries|remove` against a real server and a real receiver:
/// the secret printed once by `add`, never by `list`; a revocation's delivery in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_manages_webhooks() {
    let rx = keygate_control_plane::test_support::WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = tokio::task::block_in_place(|| {
        common::serve(dir.path(), "webhooks", |c| {
            c.env(
                "KEYGATE_DATABASE_URL",
                format!("sqlite:{}", dir.path().join("kg.db").display()),
            )
            .env("KEYGATE_ADMIN_TOKEN", ADMIN)
            .env("KEYGATE_WEBHOOK_POLL_MS", "50");
        })
    });
    let url = server.base();
    let run = |args: &[&str]| tokio::task::block_in_place(|| keygate(&url, args));
    let (ok, out, err) = run(&["webhooks", "add", &rx.url(), "--event", "key.bogus"]);
    assert!(!ok && err.contains("INVALID_REQUEST"), "{out}{err}");
    let (ok, out, err) = run(&[
        "webhooks",
        "add",
        &rx.url(),
        "--event",
        "key.created,key.revoked",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (id, secret) = (v["id"].as_str().unwrap(), v["secret"].as_str().unwrap());
    rx.set_secret(secret);
    let (ok, out, _) = run(&["webhooks", "list"]);
    assert!(ok && out.starts_with("ID") && out.contains(id), "{out}");
    assert!(!out.contains(secret), "{out}");
    let (ok, out, err) = run(&["keys", "create", "--name", "hooked", "--json"]);
    assert!(ok, "{err}");
    let issued: IssuedKey = serde_json::from_str(&out).unwrap();
    let (ok, _, err) = run(&["keys", "revoke", &issued.key.id]);
    assert!(ok, "{err}");
    let got = rx
        .wait_for(std::time::Duration::from_secs(20), "two events", |r| {
            r.iter().filter(|x| x.answered == Some(204)).count() >= 2
        })
        .await;
    assert!(got.iter().all(|r| r.verified));
    let (ok, out, _) = run(&["webhooks", "deliveries", id]);
    assert!(
        ok && out.contains("key.revoked") && out.contains("delivered"),
        "{out}"
    );
    let (ok, out, _) = run(&["webhooks", "remove", id]);
    assert!(ok && out.contains(id), "{out}");
    let (ok, out, _) = run(&["webhooks", "list"]);
    assert!(ok && !out.contains(id), "{out}");
}

/// `keygate edges list` (table and `--json`) and `--wait` on a write: an edge (a plain HTTP
/// client sending the filter's report headers) that never applies the revocation is named
/// `behind`, and the command exits 2 after making the write.
#[test]
fn edges_list_and_a_wait_that_an_edge_misses_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::serve(dir.path(), "server", |c| {
        c.env(
            "KEYGATE_DATABASE_URL",
            format!("sqlite:{}", dir.path().join("kg.db").display()),
        )
        .env("KEYGATE_ADMIN_TOKEN", ADMIN);
    });
    let url = server.base();
    let issue = |args: &[&str]| -> IssuedKey {
        let mut all = vec!["keys", "create", "--json"];
        all.extend_from_slice(args);
        let (ok, out, err) = keygate(&url, &all);
        assert!(ok, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let edge = issue(&["--name", "edge", "--kind", "edge"]);
    let victim = issue(&["--name", "victim"]);
    assert!(
        victim.revision > edge.revision,
        "writes answer their revision"
    );
    let edge_id = "0123456789abcdef0123456789abcdef";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{url}/v1/keyset?since={}", victim.revision))
            .bearer_auth(&edge.secret)
            .header("keygate-edge-id", edge_id)
            .header("keygate-edge-node", "edge-1")
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status.as_u16(), 304);

    let (ok, table, err) = keygate(&url, &["edges", "list"]);
    assert!(ok, "{err}");
    assert!(table.starts_with("EDGE"), "{table}");
    let row = table.lines().find(|l| l.starts_with(edge_id)).unwrap();
    assert!(row.contains("edge-1") && row.contains("live"), "{row}");
    let (ok, json, _) = keygate(&url, &["edges", "list", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["items"][0]["applied_revision"], victim.revision);

    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["keys", "revoke", &victim.key.id, "--wait", "1"])
        .env("KEYGATE_URL", &url)
        .env("KEYGATE_TOKEN", ADMIN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("1 of 1 edges behind"), "{stdout}");
    assert!(
        stdout.contains(&format!("behind: {edge_id} (edge-1)")),
        "{stdout}"
    );
    let (_, shown, _) = keygate(&url, &["keys", "show", &victim.key.id, "--json"]);
    let shown: KeyView = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown.status.as_str(), "revoked", "the write was made");
}

/// `keygate revoke-found <file>` without any credential: the live key in the file is revoked.
#[test]
fn revoke_found_hands_in_keys_from_a_file_without_a_credential() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::serve(dir.path(), "found", |c| {
        c.env(
            "KEYGATE_DATABASE_URL",
            format!("sqlite:{}", dir.path().join("kg.db").display()),
        )
        .env("KEYGATE_ADMIN_TOKEN", ADMIN);
    });
    let url = server.base();
    let (ok, out, err) = keygate(&url, &["keys", "create", "--name", "found", "--json"]);
    assert!(ok, "{err}");
    let issued: IssuedKey = serde_json::from_str(&out).unwrap();
    let file = dir.path().join("found.txt");
    std::fs::write(&file, format!("{}\n\nnot-a-key\n", issued.secret)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["revoke-found", file.to_str().unwrap()])
        .env("KEYGATE_URL", &url)
        .env_remove("KEYGATE_TOKEN")
        .output()
        .expect("run keygate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("handed in 2 key(s)"), "{stdout}");
    assert!(!stdout.contains(&issued.secret));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, shown, _) = keygate(&url, &["keys", "show", &issued.key.id, "--json"]);
        let shown: KeyView = serde_json::from_str(&shown).unwrap();
        if shown.status.as_str() == "revoked" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {:?}",
            shown.status
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (ok, _, err) = keygate(&url, &["revoke-found", "/nonexistent/file"]);
    assert!(!ok && err.contains("reading /nonexistent/file"), "{err}");
}

#[test]
fn cli_sets_limits_and_credits_on_keys_and_workspace_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::serve(dir.path(), "limits", |c| {
        c.env(
            "KEYGATE_DATABASE_URL",
            format!("sqlite:{}", dir.path().join("kg.db").display()),
        )
        .env("KEYGATE_ADMIN_TOKEN", ADMIN);
    });
    let url = server.base();
    let (ok, out, err) = keygate(
        &url,
        &[
            "keys",
            "create",
            "--name",
            "metered",
            "--limit",
            "burst=100/10s",
            "--limit",
            "day=5000/1d@owner",
            "--credits",
            "500",
            "--refill",
            "500/daily",
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let IssuedKey { key, .. } = serde_json::from_str(&out).unwrap();
    let limits = key.limits.clone().expect("limits");
    assert_eq!(
        limits
            .iter()
            .map(|l| (l.name.as_str(), l.limit, l.window_s, l.pool.as_str()))
            .collect::<Vec<_>>(),
        [("burst", 100, 10, "key"), ("day", 5000, 86_400, "owner")]
    );
    let credits = key.credits.clone().expect("credits");
    assert_eq!(
        (
            credits.remaining,
            credits.refill_amount,
            credits.refill_interval.as_deref()
        ),
        (500, Some(500), Some("daily"))
    );
    let (ok, out, _) = keygate(&url, &["keys", "limits", &key.id]);
    assert!(ok, "{out}");
    assert!(
        out.contains("limit burst: 100 per 10 s (key)") && out.contains("credits: 500 remaining"),
        "{out}"
    );
    let (ok, out, err) = keygate(
        &url,
        &[
            "keys",
            "limits",
            &key.id,
            "--limit",
            "burst=5/1s",
            "--no-credits",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("limit burst: 5 per 1 s") && out.contains("credits: unlimited"),
        "{out}"
    );
    // A malformed limit is refused before any call; a bad one by the server.
    let (ok, _, err) = keygate(&url, &["keys", "limits", &key.id, "--limit", "burst"]);
    assert!(!ok && err.contains("expected name=limit/window"), "{err}");
    let (ok, _, err) = keygate(&url, &["keys", "limits", &key.id, "--limit", "b=1/0s"]);
    assert!(!ok && err.contains("INVALID_LIMITS"), "{err}");
    let (ok, out, err) = keygate(
        &url,
        &["workspace", "limits", "default", "--limit", "day=1000/1d"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("limit day: 1000 per 86400 s"), "{out}");
    let (ok, out, _) = keygate(&url, &["keys", "limits", &key.id, "--inherit"]);
    assert!(ok && out.contains("the workspace's defaults"), "{out}");
    let (ok, out, _) = keygate(&url, &["workspace", "limits", "default", "--clear"]);
    assert!(ok && out.contains("limits: none"), "{out}");
    let view: KeyView = {
        let (ok, out, err) = keygate(&url, &["keys", "show", &key.id, "--json"]);
        assert!(ok, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    assert_eq!(view.limits, None);
    assert_eq!(view.credits, None);
}
