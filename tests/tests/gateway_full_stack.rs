//! Full-stack scenarios over real HTTP: the control plane as real `keygate serve` processes,
//! the `keygate` CLI as an operator runs it, and the development gateway running the real
//! filter `.wasm` (2 workers, real-time sync) in front of the echo upstream.
//!
//! 1. Operator lifecycle: admin issues a workspace key; the workspace key issues a workspace and
//!    a repo key; the admin issues the edge key; each key passes the gateway with identity
//!    headers and no secret upstream; revoke → 401 within a few sync intervals; rotate with
//!    grace → both secrets pass, the old one is denied once the grace ends.
//! 2. GitHub broker: a `repo` key gets an installation token for a repository on its allow-list
//!    from fake GitHub through the control plane, and `RESOURCE_NOT_ALLOWED` for one off it.
//! 3. Restart: SIGKILL the control plane; the gateway keeps serving its last good set; the
//!    process comes back on the same port and SQLite file with every key; a revocation made
//!    after the restart reaches the gateway.
//! 4. Two replicas on one PostgreSQL: the gateway syncs from replica B; keys issued and revoked
//!    through replica A reach it.
//!
//! Needs the `keygate` binary of this build (see `keygate_e2e::stack::keygate_bin`): `cargo test
//! --workspace` builds it; alone, run `cargo build -p keygate-control-plane --bin keygate` first.

use std::collections::BTreeSet;
use std::time::Duration;

use keygate_control_plane::domain::KeyKind;
use keygate_e2e::IssuedKey;
use keygate_e2e::stack::{Cli, GatewayStack, ServeProcess};
use keygate_fake_github::{FakeGithub, fixture, fixture_path};
use serde_json::{Value, json};

/// The filter's sync interval in these tests is 200 ms: a change must reach the gateway within
/// this bound (many intervals, for a loaded 2-core machine).
const SYNC_BOUND: Duration = Duration::from_secs(5);

/// The first sync after the gateway starts (wasm instantiation, first snapshot).
const FIRST_SYNC: Duration = Duration::from_secs(20);

/// A path every key of these tests may call: `GET /repos/acme/…` needs `repo:read` and `acme`
/// on the key's allow-list (or no allow-list).
const ACME: &str = "/repos/acme/widgets";

/// Scopes as a set, from the space-separated `x-keygate-scopes` header.
fn scope_set(header: Option<&str>) -> BTreeSet<String> {
    header
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Asserts a request with `key` passed and the upstream saw the key's identity and no secret.
fn assert_identity(gw: &GatewayStack, key: &IssuedKey, owner: &str) {
    let r = gw.get(ACME, Some(&key.secret));
    assert_eq!(r.status, 200, "{} through the gateway: {}", key.id, r.text);
    assert_eq!(
        r.upstream_header("x-keygate-key-id"),
        Some(key.id.as_str()),
        "{}",
        r.text
    );
    assert_eq!(
        r.upstream_header("x-keygate-owner"),
        Some(owner),
        "{}",
        r.text
    );
    assert_eq!(
        scope_set(r.upstream_header("x-keygate-scopes")),
        key.record.scopes.iter().cloned().collect::<BTreeSet<_>>(),
        "{}",
        r.text
    );
    assert_eq!(
        r.upstream_header("x-api-key"),
        None,
        "credential hidden: {}",
        r.text
    );
    assert!(
        !r.text.contains(&key.secret),
        "the secret reached the upstream: {}",
        r.text
    );
}

/// Waits until the gateway denies `key` with 401.
fn wait_denied(gw: &GatewayStack, what: &str, key: &str, within: Duration) -> String {
    let r = gw.wait_status(what, within, ACME, key, 401);
    r.code().to_owned()
}

fn status_of(keys: &[Value], id: &str) -> String {
    keys.iter()
        .find(|k| k["id"] == id)
        .and_then(|k| k["status"].as_str())
        .unwrap_or_else(|| panic!("{id} not listed in {keys:?}"))
        .to_owned()
}

#[test]
fn operator_issues_revokes_and_rotates_keys_through_the_gateway() {
    let cp = ServeProcess::start_sqlite(&[]);
    let admin = cp.admin_cli();

    // The admin issues a workspace key for a team.
    let team = admin.create_key(&[
        "--name",
        "team",
        "--kind",
        "workspace",
        "--workspace",
        "team",
        "--owner",
        "alice",
        "--scope",
        "keys:read",
        "--scope",
        "keys:write",
        "--scope",
        "repo:read",
    ]);
    assert_eq!(team.record.kind, KeyKind::Workspace);
    assert_eq!(team.record.workspace_id, "team");

    // With it, the team issues the kinds a workspace key may: workspace and repo.
    let team_cli = admin.with_token(&team.secret);
    let service = team_cli.create_key(&[
        "--name",
        "service",
        "--kind",
        "workspace",
        "--owner",
        "svc-reports",
        "--scope",
        "repo:read",
    ]);
    let ci = team_cli.create_key(&[
        "--name",
        "ci",
        "--kind",
        "repo",
        "--owner",
        "ci-bot",
        "--scope",
        "repo:read",
        "--resource",
        "acme",
    ]);
    for (k, kind) in [(&service, KeyKind::Workspace), (&ci, KeyKind::Repo)] {
        assert_eq!(k.record.kind, kind);
        assert_eq!(
            k.record.workspace_id, "team",
            "issued in the team's workspace"
        );
        assert_eq!(k.record.created_by.id, team.id, "{:?}", k.record);
    }
    // Not an edge key: that is the admin's (it reads every workspace's key set).
    let refused = team_cli.run(&["keys", "create", "--name", "edge", "--kind", "edge"]);
    assert!(
        !refused.ok && refused.stderr.contains("EDGE_KEY_ADMIN_ONLY"),
        "{refused:?}"
    );
    // Nor beyond its own scopes.
    let refused = team_cli.run(&["keys", "create", "--name", "x", "--scope", "repo:write"]);
    assert!(!refused.ok && refused.stderr.contains("403"), "{refused:?}");
    let edge = admin.create_key(&["--name", "gateway", "--kind", "edge", "--owner", "gw-1"]);
    assert_eq!(edge.record.kind, KeyKind::Edge);

    let gw = GatewayStack::start(&cp.url(), &edge.secret, json!({}));
    gw.wait_status("the first sync", FIRST_SYNC, ACME, &team.secret, 200);
    assert_identity(&gw, &team, "alice");
    assert_identity(&gw, &service, "svc-reports");
    assert_identity(&gw, &ci, "ci-bot");
    // The repo key's allow-list holds at the edge; the edge key is no client credential; no
    // key, no entry.
    let r = gw.get("/repos/other/widgets", Some(&ci.secret));
    assert_eq!(
        (r.status, r.code()),
        (403, "resource_not_allowed"),
        "{}",
        r.text
    );
    let r = gw.get(ACME, Some(&edge.secret));
    assert_eq!((r.status, r.code()), (401, "unknown_key"), "{}", r.text);
    let r = gw.get(ACME, None);
    assert_eq!((r.status, r.code()), (401, "missing_key"), "{}", r.text);

    // Revoke (by the team, in its workspace) → denied within a few sync intervals.
    let out = team_cli.run(&["keys", "revoke", &service.id, "--reason", "decommissioned"]);
    assert!(out.ok && out.stdout.contains("revoked"), "{out:?}");
    let code = wait_denied(
        &gw,
        "the revocation at the gateway",
        &service.secret,
        SYNC_BOUND,
    );
    assert_eq!(code, "unknown_key");
    assert_identity(&gw, &team, "alice");
    assert_identity(&gw, &ci, "ci-bot");

    // Rotate with a grace period: the new secret passes once synced, the old one still passes,
    // and is denied after the grace ends.
    let grace_s = 8;
    let rotated = team_cli.json(&[
        "keys",
        "rotate",
        &ci.id,
        "--grace-period",
        &grace_s.to_string(),
    ]);
    let new_ci = keygate_e2e::issued(&rotated);
    assert_eq!(new_ci.id, ci.id);
    assert_ne!(new_ci.secret, ci.secret);
    let rotated_at = std::time::Instant::now();
    gw.wait_status(
        "the rotated secret at the gateway",
        SYNC_BOUND,
        ACME,
        &new_ci.secret,
        200,
    );
    assert_identity(&gw, &new_ci, "ci-bot");
    assert!(
        rotated_at.elapsed() < Duration::from_secs(grace_s - 1),
        "the new secret took so long to reach the gateway that the old one cannot be checked \
         inside its grace period"
    );
    assert_identity(&gw, &ci, "ci-bot");
    let code = wait_denied(
        &gw,
        "the old secret after the grace period",
        &ci.secret,
        Duration::from_secs(grace_s) + SYNC_BOUND,
    );
    assert!(
        matches!(code.as_str(), "expired_key" | "unknown_key"),
        "{code}"
    );
    assert_identity(&gw, &new_ci, "ci-bot");

    // The operator's view agrees, and the audit log has every step.
    let keys = admin.list_keys();
    assert_eq!(status_of(&keys, &service.id), "revoked");
    assert_eq!(status_of(&keys, &ci.id), "active");
    let audit = admin.run(&["audit", "--key", &ci.id]);
    assert!(
        audit.ok && audit.stdout.contains("key.create") && audit.stdout.contains("key.rotate"),
        "{audit:?}"
    );
    let logs = cp.logs();
    for secret in [
        &team.secret,
        &service.secret,
        &ci.secret,
        &new_ci.secret,
        &edge.secret,
    ] {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret is in the control plane's logs"
        );
    }
}

#[test]
fn a_repo_key_brokers_a_github_token_only_for_its_allow_list() {
    const APP_ID: u64 = 4242;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let fake = rt.block_on(FakeGithub::start()).expect("fake GitHub");
    fake.add_app(APP_ID, "Iv23liKeygate", &[&fixture("app-key-1.pub.pem")])
        .expect("app");
    fake.install(
        APP_ID,
        "acme",
        &["widgets", "gadgets"],
        &[("contents", "write"), ("metadata", "read")],
    )
    .expect("install");
    let app = format!(
        "name=main,app-id={APP_ID},private-key={},api-url={}",
        fixture_path("app-key-1.pkcs1.pem").display(),
        fake.base_url()
    );
    let cp = ServeProcess::start_sqlite(&["--github-app".into(), app]);
    let admin = cp.admin_cli();
    for repo in ["widgets", "gadgets"] {
        let out = admin.run(&["repos", "add", "acme", repo]);
        assert!(out.ok, "repos add acme/{repo}: {out:?}");
    }
    let listed = admin.run(&["repos", "list"]);
    assert!(
        listed.ok
            && listed.stdout.contains("acme/widgets")
            && listed.stdout.contains("acme/gadgets"),
        "{listed:?}"
    );

    // The operator's workspace key issues a repo key for one repository.
    let team = admin.create_key(&[
        "--name",
        "team",
        "--workspace",
        "team",
        "--scope",
        "keys:write",
        "--scope",
        "github:tokens",
    ]);
    let ci = admin.with_token(&team.secret).create_key(&[
        "--name",
        "ci",
        "--kind",
        "repo",
        "--owner",
        "ci-bot",
        "--scope",
        "github:tokens",
        "--resource",
        "acme/widgets",
    ]);

    let http = reqwest::Client::new();
    let mint = |repository: &str| -> (u16, Value) {
        rt.block_on(async {
            let resp = http
                .post(format!("{}/v1/github/tokens", cp.url()))
                .bearer_auth(&ci.secret)
                .json(&json!({"repository": repository}))
                .send()
                .await
                .expect("POST /v1/github/tokens");
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        })
    };

    let (status, v) = mint("acme/widgets");
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["repository"], "acme/widgets");
    let token = v["token"].as_str().expect("token").to_owned();
    let record = fake.token(&token).expect("a token fake GitHub minted");
    assert_eq!(
        record.repositories,
        vec!["widgets".to_owned()],
        "scoped to the one repository"
    );
    assert_eq!(
        record.permissions.get("contents").map(String::as_str),
        Some("read"),
        "a read token by default"
    );
    assert!(!record.revoked);
    let minted = fake.tokens_minted();

    // Off the allow-list: refused with the documented code, and GitHub is never asked.
    let (status, v) = mint("acme/gadgets");
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("RESOURCE_NOT_ALLOWED")),
        "{v}"
    );
    assert_eq!(
        fake.tokens_minted(),
        minted,
        "no token minted for a refused request"
    );

    let audit = admin.run(&["audit", "--key", &ci.id]);
    assert!(
        audit.ok && audit.stdout.contains("github.token.issue"),
        "{audit:?}"
    );
    let logs = cp.logs();
    assert!(!logs.contains(&token), "the GitHub token is in the logs");
    assert!(!logs.contains(&ci.secret), "the repo key is in the logs");
}

#[test]
fn control_plane_restart_loses_nothing_and_the_gateway_resyncs() {
    let mut cp = ServeProcess::start_sqlite(&[]);
    let admin = cp.admin_cli();
    let alive = admin.create_key(&[
        "--name",
        "alive",
        "--owner",
        "alice",
        "--scope",
        "repo:read",
    ]);
    let later = admin.create_key(&["--name", "later", "--owner", "bob", "--scope", "repo:read"]);
    let ci = admin.create_key(&[
        "--name",
        "ci",
        "--kind",
        "repo",
        "--owner",
        "ci-bot",
        "--scope",
        "repo:read",
        "--resource",
        "acme",
    ]);
    let gone = admin.create_key(&["--name", "gone", "--scope", "repo:read"]);
    let edge = admin.create_key(&["--name", "gateway", "--kind", "edge"]);
    // Long-poll on: the filter holds a request open on the process that is about to die.
    let gw = GatewayStack::start(&cp.url(), &edge.secret, json!({"long_poll_wait_s": 5}));
    gw.wait_status("the first sync", FIRST_SYNC, ACME, &alive.secret, 200);
    let out = admin.run(&["keys", "revoke", &gone.id]);
    assert!(out.ok, "{out:?}");
    wait_denied(
        &gw,
        "a revocation before the restart",
        &gone.secret,
        SYNC_BOUND,
    );
    let before = admin.list_keys();
    assert_eq!(before.len(), 5);

    let addr = cp.addr();
    cp.kill();
    assert!(!cp.is_running(), "SIGKILLed");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the control plane is down"
    );
    // During the outage (a window of many sync intervals) the gateway serves its last good set.
    for _ in 0..8 {
        assert_identity(&gw, &alive, "alice");
        assert_identity(&gw, &ci, "ci-bot");
        let r = gw.get(ACME, Some(&gone.secret));
        assert_eq!((r.status, r.code()), (401, "unknown_key"), "{}", r.text);
        std::thread::sleep(Duration::from_millis(150));
    }

    cp.restart();
    assert_eq!(cp.addr(), addr, "same port");
    let after = admin.list_keys();
    let view = |keys: &[Value]| -> Vec<(String, String, String, String)> {
        let mut v: Vec<_> = keys
            .iter()
            .map(|k| {
                let s = |f: &str| k[f].as_str().unwrap_or_default().to_owned();
                (s("id"), s("status"), s("name"), s("display_prefix"))
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        view(&after),
        view(&before),
        "every key is still there, as it was"
    );
    let table = admin.run(&["keys", "list"]);
    assert!(
        table.ok
            && [&alive.id, &later.id, &ci.id, &gone.id, &edge.id]
                .iter()
                .all(|id| table.stdout.contains(id.as_str())),
        "{table:?}"
    );

    // The gateway resyncs: a revocation and a new key made after the restart reach it (the
    // filter may be in its failure backoff, up to a few seconds, at the moment of restart).
    let out = admin.run(&["keys", "revoke", &later.id, "--reason", "after restart"]);
    assert!(out.ok, "{out:?}");
    let fresh = admin.create_key(&[
        "--name",
        "fresh",
        "--owner",
        "carol",
        "--scope",
        "repo:read",
    ]);
    let resync = Duration::from_secs(15);
    wait_denied(&gw, "a revocation after the restart", &later.secret, resync);
    gw.wait_status(
        "a key issued after the restart",
        resync,
        ACME,
        &fresh.secret,
        200,
    );
    assert_identity(&gw, &fresh, "carol");
    assert_identity(&gw, &alive, "alice");
    let r = gw.get(ACME, Some(&gone.secret));
    assert_eq!(r.status, 401, "{}", r.text);
}

#[test]
fn a_revocation_on_one_postgres_replica_reaches_a_gateway_syncing_from_the_other() {
    let database_url = keygate_testkit::PgCluster::shared()
        .fresh_database()
        .expect("fresh PostgreSQL database");
    let a = ServeProcess::start(&database_url, &[]);
    let b = ServeProcess::start(&database_url, &[]);
    assert_eq!(a.database_url(), b.database_url());
    assert_ne!(a.addr(), b.addr());
    let admin_a: Cli = a.admin_cli();
    let admin_b: Cli = b.admin_cli();

    // Keys issued on replica A; the gateway's edge key is one of them, checked by replica B.
    let edge = admin_a.create_key(&["--name", "gateway", "--kind", "edge"]);
    let first = admin_a.create_key(&[
        "--name",
        "first",
        "--owner",
        "alice",
        "--scope",
        "repo:read",
    ]);
    let gw = GatewayStack::start(&b.url(), &edge.secret, json!({"long_poll_wait_s": 5}));
    gw.wait_status(
        "the first sync from replica B",
        FIRST_SYNC,
        ACME,
        &first.secret,
        200,
    );
    assert_identity(&gw, &first, "alice");

    // Issued on A after the gateway's long poll on B began: B's feed wakes up and serves it.
    let second =
        admin_a.create_key(&["--name", "second", "--owner", "bob", "--scope", "repo:read"]);
    gw.wait_status(
        "a key issued on A, at the gateway",
        SYNC_BOUND,
        ACME,
        &second.secret,
        200,
    );
    assert_identity(&gw, &second, "bob");
    let on_b = admin_b.list_keys();
    assert_eq!(status_of(&on_b, &second.id), "active", "B lists A's key");

    // Revoked on A → denied by the gateway that syncs from B.
    let out = admin_a.run(&["keys", "revoke", &first.id, "--reason", "replica test"]);
    assert!(out.ok && out.stdout.contains("revoked"), "{out:?}");
    let code = wait_denied(&gw, "A's revocation, via B", &first.secret, SYNC_BOUND);
    assert_eq!(code, "unknown_key");
    assert_eq!(
        admin_b.json(&["keys", "show", &first.id])["status"],
        "revoked"
    );
    assert_identity(&gw, &second, "bob");

    // And the other way round: suspended on B, denied too (the set is one).
    let out = admin_b.run(&["keys", "suspend", &second.id]);
    assert!(out.ok, "{out:?}");
    wait_denied(&gw, "B's suspension", &second.secret, SYNC_BOUND);
}
