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
