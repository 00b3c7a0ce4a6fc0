//! The GitHub broker over real HTTP (server on port 0, fresh database, fake GitHub): the
//! repository registry, the seed's `POST /api/github/tokens`, `POST/DELETE /v1/github/tokens`,
//! allow-list and scope enforcement, GitHub failures mapped to statuses, audit, metrics, the
//! seed's Python client, and start-up errors. Runs on SQLite and PostgreSQL.

mod common;

use common::{ADMIN, Engine, InProcessServer, assert_error, fresh_database};
use keygate_control_plane::http::keys::IssuedKey;
use keygate_fake_github::{FakeGithub, Operation, RateLimit, fixture, fixture_path};
use keygate_protocol::Digest;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const APP_ID: u64 = 4242;
const INTERNAL: &str = "internal-key-for-tests-0123456789";

struct Env {
    server: InProcessServer,
    fake: FakeGithub,
    widgets: i64,
    _dir: Option<tempfile::TempDir>,
}

fn key(name: &str) -> String {
    fixture_path(name).display().to_string()
}

async fn setup_with(engine: Engine, tweak: impl FnOnce(&mut keygate_control_plane::Config)) -> Env {
    let fake = FakeGithub::start().await.expect("fake");
    fake.add_app(APP_ID, "Iv23liKeygate", &[&fixture("app-key-1.pub.pem")])
        .expect("app");
    fake.install(
        APP_ID,
        "acme",
        &["widgets", "gadgets"],
        &[("contents", "write"), ("metadata", "read")],
    )
    .expect("install");
    fake.install(APP_ID, "beta", &["tools"], &[("contents", "read")])
        .expect("install");
    let (url, dir) = fresh_database(engine);
    let main = format!(
        "name=main,app-id={APP_ID},private-key={},api-url={}",
        key("app-key-1.pkcs1.pem"),
        fake.base_url()
    );
    // An App whose key GitHub does not know: its tokens fail with GitHub's 401.
    let rogue = format!(
        "name=rogue,app-id={APP_ID},private-key={},api-url={}",
        key("other-app.pkcs8.pem"),
        fake.base_url()
    );
    let server = InProcessServer::start_on(&url, |c| {
        c.github.github_apps = vec![main, rogue];
        c.github.internal_api_key = Some(INTERNAL.into());
        c.github.timeout_secs = 1;
        tweak(c);
    })
    .await;
    let (st, v) = server
        .admin(
            Method::POST,
            "/v1/repositories",
            Some(json!({"organization": "acme", "repository": "widgets"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let widgets = v["id"].as_i64().expect("id");
    Env {
        server,
        fake,
        widgets,
        _dir: dir,
    }
}

async fn setup(engine: Engine) -> Env {
    setup_with(engine, |_| {}).await
}

async fn register(s: &InProcessServer, org: &str, repo: &str, app: Option<&str>) -> i64 {
    let (st, v) = s
        .admin(
            Method::POST,
            "/v1/repositories",
            Some(json!({"organization": org, "repository": repo, "app": app})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v["id"].as_i64().expect("id")
}

async fn seed(s: &InProcessServer, body: Value) -> (StatusCode, Value) {
    s.call(None, Method::POST, "/api/github/tokens", Some(body))
        .await
}

async fn repository_registry(engine: Engine) {
    let e = setup(engine).await;
    let s = &e.server;
    let (st, v) = s.admin(Method::GET, "/v1/repositories", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["items"][0]["organization"], "acme");
    assert_eq!(v["items"][0]["app"], "main", "the default App");
    assert_eq!(v["items"][0]["installation_id"], Value::Null);

    let (st, v) = s
        .admin(
            Method::POST,
            "/v1/repositories",
            Some(json!({"organization": "ACME", "repository": "Widgets"})),
        )
        .await;
    assert_error(st, &v, StatusCode::CONFLICT, "CONFLICT");
    for bad in [
        json!({"organization": "acme", "repository": "bad/name"}),
        json!({"organization": "", "repository": "x"}),
        json!({"organization": "acme", "repository": "x", "app": "nope"}),
        json!({"organization": "acme", "repository": "x", "colour": "blue"}),
        json!({"organization": "acme"}),
    ] {
        let (st, v) = s
            .admin(Method::POST, "/v1/repositories", Some(bad.clone()))
            .await;
        // Validation failures are 400; JSON of the wrong shape is the API's 422.
        assert!(matches!(st.as_u16(), 400 | 422), "{bad}: {v}");
        assert!(v["error"]["code"].is_string(), "{v}");
    }
    let gadgets = register(s, "acme", "gadgets", Some("main")).await;
    let (_, v) = s.admin(Method::GET, "/v1/repositories?limit=1", None).await;
    assert_eq!(v["items"].as_array().map(Vec::len), Some(1));
    let cursor = v["next_cursor"].as_i64().expect("cursor");
    let (_, v) = s
        .admin(
            Method::GET,
            &format!("/v1/repositories?after={cursor}"),
            None,
        )
        .await;
    assert_eq!(v["items"][0]["id"], gadgets);
    let (st, _) = s
        .admin(Method::DELETE, &format!("/v1/repositories/{gadgets}"), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = s
        .admin(Method::DELETE, &format!("/v1/repositories/{gadgets}"), None)
        .await;
    assert_error(st, &v, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (st, _) = s.admin(Method::DELETE, "/v1/repositories/abc", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (_, v) = s.admin(Method::GET, "/v1/repositories", None).await;
    assert_eq!(
        v["items"].as_array().map(Vec::len),
        Some(1),
        "nothing else changed"
    );

    // Keys without the registry scope cannot manage it; no credential is 401.
    let IssuedKey { secret: repo_key, .. } = s
        .create(json!({"name": "r", "kind": "repo", "scopes": ["github:tokens"], "resources": ["acme/widgets"]}))
        .await;
    let (st, _) = s
        .call(Some(&repo_key), Method::GET, "/v1/repositories", None)
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s.call(None, Method::GET, "/v1/repositories", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    let (_, audit) = s.admin(Method::GET, "/v1/audit?limit=100", None).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"github.repository.create")
            && actions.contains(&"github.repository.delete"),
        "{actions:?}"
    );
}

async fn seed_endpoint(engine: Engine) {
    let e = setup(engine).await;
    let s = &e.server;
    let (st, v) = seed(
        s,
        json!({"repositoryId": e.widgets, "internalApiKey": INTERNAL}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["organizationName"], "acme");
    assert_eq!(v["repositoryName"], "widgets");
    let token = v["installationToken"].as_str().expect("token").to_owned();
    let record = e.fake.token(&token).expect("a token the fake minted");
    assert_eq!(record.repositories, vec!["widgets".to_owned()]);
    assert_eq!(
        record.permissions.get("contents").map(String::as_str),
        Some("write")
    );
    assert!(v["expiresAt"].as_str().is_some_and(|t| t.ends_with('Z')));
    let jwt = v["githubAppToken"].as_str().expect("jwt");
    assert_eq!(
        jsonwebtoken::decode_header(jwt).expect("a JWT").alg,
        jsonwebtoken::Algorithm::RS256
    );

    // By names (GitHub names are case-insensitive): the cached token, no new GitHub call.
    let (st, v) =
        seed(s, json!({"organizationName": "ACME", "repositoryName": "widgets", "internalApiKey": INTERNAL})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["installationToken"], token.as_str());
    assert_eq!(e.fake.calls(Operation::CreateInstallationAccessToken), 1);
    assert_eq!(e.fake.calls(Operation::GetRepoInstallation), 1);
    let (_, repos) = s.admin(Method::GET, "/v1/repositories", None).await;
    assert!(
        repos["items"][0]["installation_id"].as_i64().is_some(),
        "installation id remembered: {repos}"
    );

    let cases = [
        (
            json!({"repositoryId": e.widgets, "internalApiKey": "wrong"}),
            StatusCode::UNAUTHORIZED,
        ),
        (json!({"repositoryId": e.widgets}), StatusCode::UNAUTHORIZED),
        (json!({"internalApiKey": INTERNAL}), StatusCode::BAD_REQUEST),
        (
            json!({"organizationName": "acme", "internalApiKey": INTERNAL}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"repositoryId": "five", "internalApiKey": INTERNAL}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"repositoryId": 999_999, "internalApiKey": INTERNAL}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"organizationName": "acme", "repositoryName": "nope", "internalApiKey": INTERNAL}),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (body, want) in cases {
        let (st, v) = seed(s, body.clone()).await;
        assert_eq!(st, want, "{body}: {v}");
        assert!(v["error"]["code"].is_string(), "{v}");
    }
    let raw = s
        .http
        .post(s.url("/api/github/tokens"))
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);

    // Registered but the App is not installed there: the seed's 400.
    let plans = register(s, "acme", "secret-plans", None).await;
    let (st, v) = seed(
        s,
        json!({"repositoryId": plans, "internalApiKey": INTERNAL}),
    )
    .await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "GITHUB_APP_NOT_INSTALLED");

    // Each hand-out is audited with the token's SHA-256, never the token or the JWT.
    let (_, audit) = s.admin(Method::GET, "/v1/audit?limit=100", None).await;
    let text = audit.to_string();
    assert!(!text.contains(&token) && !text.contains(jwt));
    let issued: Vec<&Value> = audit["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["action"] == "github.token.issue")
        .collect();
    assert_eq!(issued.len(), 2);
    let sha = Digest::of(&token).to_hex();
    assert!(
        issued.iter().all(|r| r.to_string().contains(&sha)),
        "{issued:?}"
    );
    assert!(
        issued
            .iter()
            .all(|r| r.to_string().contains("acme/widgets"))
    );
}

async fn v1_tokens(engine: Engine) {
    let e = setup(engine).await;
    let s = &e.server;
    register(s, "acme", "gadgets", None).await;
    let IssuedKey { secret: reader, .. } = s
        .create(json!({"name": "ci", "kind": "repo", "scopes": ["github:tokens"], "resources": ["acme/widgets"]}))
        .await;
    let (st, v) = s
        .call(
            Some(&reader),
            Method::POST,
            "/v1/github/tokens",
            Some(json!({"repository": "acme/widgets"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["permissions"], json!({"contents": "read"}));
    assert_eq!(v["repository"], "acme/widgets");
    assert!(
        v.get("app_jwt").is_none(),
        "no App JWT unless the operator enables it"
    );
    let token = v["token"].as_str().expect("token").to_owned();
    assert!(e.fake.token(&token).is_some());
    let last = e.fake.token_requests().pop().expect("a request");
    assert_eq!(
        last.body,
        json!({"repositories": ["widgets"], "permissions": {"contents": "read"}})
    );

    // The allow-list: a repo key reaches only what it names.
    let (st, v) = s
        .call(
            Some(&reader),
            Method::POST,
            "/v1/github/tokens",
            Some(json!({"repository": "acme/gadgets"})),
        )
        .await;
    assert_error(st, &v, StatusCode::FORBIDDEN, "RESOURCE_NOT_ALLOWED");
    let (st, v) = s
        .call(
            Some(&reader),
            Method::POST,
            "/v1/github/tokens",
            Some(json!({"repository": "acme/widgets", "permission": "write"})),
        )
        .await;
    assert_error(st, &v, StatusCode::FORBIDDEN, "FORBIDDEN");
    let IssuedKey {
        secret: unlisted, ..
    } = s
        .create(json!({"name": "u", "kind": "repo", "scopes": ["github:tokens"]}))
        .await;
    let (st, _) = s
        .call(
            Some(&unlisted),
            Method::POST,
            "/v1/github/tokens",
            Some(json!({"repository": "acme/widgets"})),
        )
        .await;
    assert_eq!(
        st,
        StatusCode::FORBIDDEN,
        "a repo key with no allow-list reaches nothing"
    );
    let IssuedKey { secret: writer, .. } = s
        .create(json!({"name": "w", "kind": "repo", "scopes": ["github:tokens", "github:write"], "resources": ["acme/*"]}))
        .await;
    let (st, v) = s
        .call(
            Some(&writer),
            Method::POST,
            "/v1/github/tokens",
            Some(json!({"repository": "acme/gadgets", "permission": "write"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["permissions"], json!({"contents": "write"}));
    let IssuedKey {
        secret: no_scope, ..
    } = s
        .create(json!({"name": "n", "kind": "workspace", "scopes": ["keys:read"]}))
        .await;
    let (st, _) = s
        .call(
            Some(&no_scope),
            Method::POST,
            "/v1/github/tokens",
            Some(json!({"repository": "acme/widgets"})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let IssuedKey { secret: edge, .. } = s
        .create(json!({"name": "e", "kind": "edge", "scopes": ["github:tokens"]}))
        .await;
    let (st, _) = s
        .call(
            Some(&edge),
            Method::POST,
            "/v1/github/tokens",
            Some(json!({"repository": "acme/widgets"})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s
        .call(
            None,
            Method::POST,
            "/v1/github/tokens",
            Some(json!({"repository": "acme/widgets"})),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    for bad in [
        json!({}),
        json!({"repository": "widgets"}),
        json!({"repository": "acme/widgets", "permission": "admin"}),
        json!({"repository": "acme/widgets", "x": 1}),
    ] {
        let (st, v) = s
            .call(
                Some(&writer),
                Method::POST,
                "/v1/github/tokens",
                Some(bad.clone()),
            )
            .await;
        assert!(matches!(st.as_u16(), 400 | 422), "{bad}: {v}");
        assert!(v["error"]["code"].is_string(), "{v}");
    }
    let (st, v) = s
        .call(
            Some(&writer),
            Method::POST,
            "/v1/github/tokens",
            Some(json!({"repository": "acme/unknown"})),
        )
        .await;
    assert_error(st, &v, StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_eq!(
        e.fake.calls(Operation::CreateInstallationAccessToken),
        2,
        "refusals never reached GitHub"
    );

    // Revocation: at GitHub, then "already revoked".
    let (st, v) = s
        .call(
            Some(&reader),
            Method::DELETE,
            "/v1/github/tokens",
            Some(json!({"token": token})),
        )
        .await;
    assert_eq!(
        (st, v["status"].as_str()),
        (StatusCode::OK, Some("revoked")),
        "{v}"
    );
    assert!(e.fake.token(&token).expect("known").revoked);
    let (st, v) = s
        .call(
            Some(&reader),
            Method::DELETE,
            "/v1/github/tokens",
            Some(json!({"token": token})),
        )
        .await;
    assert_eq!(
        (st, v["status"].as_str()),
        (StatusCode::OK, Some("already_revoked"))
    );
    let (st, _) = s
        .call(
            Some(&reader),
            Method::DELETE,
            "/v1/github/tokens",
            Some(json!({"token": ""})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // A fresh request after revocation mints a new token.
    let (_, v) = s
        .call(
            Some(&reader),
            Method::POST,
            "/v1/github/tokens",
            Some(json!({"repository": "acme/widgets"})),
        )
        .await;
    assert_ne!(v["token"].as_str(), Some(token.as_str()));

    let (_, audit) = s.admin(Method::GET, "/v1/audit?limit=200", None).await;
    assert!(!audit.to_string().contains(&token));
    assert!(audit.to_string().contains("github.token.revoke"));

    let metrics = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("keygate_github_tokens_minted_total 3"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "keygate_github_request_duration_seconds_count{operation=\"create_installation_token\"} 3"
    ));
}

async fn github_failures_map_to_statuses(engine: Engine) {
    let e = setup(engine).await;
    let s = &e.server;
    let tools = register(s, "beta", "tools", None).await;
    let rogue = register(s, "acme", "gadgets", Some("rogue")).await;
    let IssuedKey { secret: writer, .. } = s
        .create(
            json!({"name": "w", "kind": "workspace", "scopes": ["github:tokens", "github:write"]}),
        )
        .await;
    // GitHub's 422 (the installation only has contents: read) → 403 with GitHub's message.
    let (st, v) = s
        .call(
            Some(&writer),
            Method::POST,
            "/v1/github/tokens",
            Some(json!({"repository_id": tools, "permission": "write"})),
        )
        .await;
    assert_error(st, &v, StatusCode::FORBIDDEN, "GITHUB_PERMISSION_DENIED");
    assert_eq!(
        v["error"]["message"],
        "The permissions requested are not granted to this installation."
    );
    // GitHub's 401 for the App → 500 naming the App.
    let (st, v) = s
        .call(
            Some(&writer),
            Method::POST,
            "/v1/github/tokens",
            Some(json!({"repository_id": rogue})),
        )
        .await;
    assert_error(
        st,
        &v,
        StatusCode::INTERNAL_SERVER_ERROR,
        "GITHUB_CONFIGURATION",
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("rogue")),
        "{v}"
    );
    // Rate limits → 503 with Retry-After.
    for limit in [
        RateLimit::Primary { reset_in: 90 },
        RateLimit::Secondary {
            status: 429,
            retry_after: 30,
        },
    ] {
        e.fake.set_rate_limit(Some(limit));
        let resp = s
            .http
            .post(s.url("/v1/github/tokens"))
            .bearer_auth(&writer)
            .json(&json!({"repository": "acme/widgets"}))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let retry: u64 = resp.headers()["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        match limit {
            RateLimit::Primary { .. } => assert!((85..=95).contains(&retry), "{retry}"),
            RateLimit::Secondary { .. } => assert_eq!(retry, 30),
        }
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["error"]["code"], "GITHUB_RATE_LIMITED");
    }
    e.fake.set_rate_limit(None);
    // A slow GitHub (beyond the 1 s timeout) → 502.
    e.fake.set_delay(std::time::Duration::from_millis(1500));
    let (st, v) = s
        .call(
            Some(&writer),
            Method::POST,
            "/v1/github/tokens",
            Some(json!({"repository": "acme/widgets"})),
        )
        .await;
    assert_error(st, &v, StatusCode::BAD_GATEWAY, "GITHUB_UNAVAILABLE");
    e.fake.set_delay(std::time::Duration::ZERO);
    let (st, v) = s
        .call(
            Some(&writer),
            Method::POST,
            "/v1/github/tokens",
            Some(json!({"repository": "acme/widgets"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "recovers: {v}");
}

on_both_engines!(
    repository_registry,
    seed_endpoint,
    v1_tokens,
    github_failures_map_to_statuses
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_jwt_is_returned_only_when_enabled() {
    let e = setup_with(Engine::Sqlite, |c| c.github.expose_app_jwt = true).await;
    let (st, v) = e
        .server
        .admin(
            Method::POST,
            "/v1/github/tokens",
            Some(json!({"repository_id": e.widgets})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let jwt = v["app_jwt"].as_str().expect("app_jwt");
    assert_eq!(
        jsonwebtoken::decode_header(jwt).expect("JWT").alg,
        jsonwebtoken::Algorithm::RS256
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_internal_key_the_seed_endpoint_is_a_configuration_error() {
    let e = setup_with(Engine::Sqlite, |c| c.github.internal_api_key = None).await;
    let (st, v) = seed(
        &e.server,
        json!({"repositoryId": e.widgets, "internalApiKey": ""}),
    )
    .await;
    assert_error(st, &v, StatusCode::INTERNAL_SERVER_ERROR, "CONFIGURATION");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_file_or_url_stops_start_up_with_a_clear_message() {
    let (url, _dir) = fresh_database(Engine::Sqlite);
    for (spec, expect) in [
        (
            "app-id=1,private-key=/nonexistent/key.pem".to_owned(),
            "/nonexistent/key.pem",
        ),
        (
            format!(
                "app-id=1,private-key={},api-url=http://github.example.com",
                key("app-key-1.pkcs1.pem")
            ),
            "must be https",
        ),
    ] {
        let mut config = keygate_control_plane::Config::new(url.clone(), Some(ADMIN.into()));
        config.github.github_apps = vec![spec];
        let err = keygate_control_plane::AppState::new(config)
            .await
            .expect_err("start-up fails");
        let text = err.to_string();
        assert!(text.contains("GitHub") && text.contains(expect), "{text}");
    }
}

/// Runs the seed's Python client with `args`; returns the JSON line it prints.
fn run(args: Vec<String>) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/seed_client.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(&args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout).expect("JSON line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_python_client_works_unchanged() {
    let e = setup(Engine::Sqlite).await;
    let base = e.server.base.clone();
    let by_id = tokio::task::spawn_blocking({
        let base = base.clone();
        let id = e.widgets.to_string();
        move || run(vec![base, INTERNAL.into(), "id".into(), id])
    })
    .await
    .expect("join");
    assert_eq!(by_id["status"], 200, "{by_id}");
    assert_eq!(by_id["organization_name"], "acme");
    assert_eq!(by_id["repository_name"], "widgets");
    let token = by_id["installation_token"].as_str().expect("token");
    assert!(e.fake.token(token).is_some(), "a token GitHub issued");
    assert!(
        by_id["github_app_token"]
            .as_str()
            .is_some_and(|j| j.split('.').count() == 3)
    );
    let by_names = tokio::task::spawn_blocking({
        let base = base.clone();
        move || {
            run(vec![
                base,
                INTERNAL.into(),
                "names".into(),
                "acme".into(),
                "widgets".into(),
            ])
        }
    })
    .await
    .expect("join");
    assert_eq!(by_names["installation_token"], by_id["installation_token"]);
    let denied = tokio::task::spawn_blocking(move || {
        run(vec![base, "wrong".into(), "id".into(), "1".into()])
    })
    .await
    .expect("join");
    assert_eq!(denied["status"], 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygate_repos_cli_drives_the_registry() {
    let e = setup(Engine::Sqlite).await;
    let base = e.server.base.clone();
    let cli = move |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
            .arg("repos")
            .args(args)
            .args(["--url", &base, "--token", ADMIN])
            .output()
            .expect("keygate runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = tokio::task::spawn_blocking({
        let cli = cli.clone();
        move || cli(&["add", "acme", "gadgets", "--json"])
    })
    .await
    .expect("join");
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(created["repository"], "gadgets");
    let id = created["id"].as_i64().expect("id");
    let (ok, out, _) = tokio::task::spawn_blocking({
        let cli = cli.clone();
        move || cli(&["list"])
    })
    .await
    .expect("join");
    assert!(
        ok && out.contains("acme/widgets") && out.contains("acme/gadgets"),
        "{out}"
    );
    let (ok, _, err) = tokio::task::spawn_blocking({
        let cli = cli.clone();
        move || cli(&["add", "acme", "gadgets"])
    })
    .await
    .expect("join");
    assert!(!ok && err.contains("409"), "{err}");
    let (ok, out, err) = tokio::task::spawn_blocking({
        let cli = cli.clone();
        let id = id.to_string();
        move || cli(&["remove", &id])
    })
    .await
    .expect("join");
    assert!(ok && out.contains("removed"), "{err}");
    let (_, v) = e.server.admin(Method::GET, "/v1/repositories", None).await;
    assert_eq!(v["items"].as_array().map(Vec::len), Some(1));
}
