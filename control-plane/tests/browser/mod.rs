//! The console's test fixture (`tests/console.rs`, `tests/console_pages.rs`): the real
//! `keygate serve` binary on a free port ([`Console`], through `test_support::ServeProcess`),
//! the API calls the scenarios set up with, and the console's sign-in ([`SignIn`]) on the
//! testkit's real browser ([`Browser`]: headless chromium, killed on drop with everything it
//! started).

#![allow(dead_code)] // each test binary uses its own subset

use keygate_control_plane::test_support::ServeProcess;
pub use keygate_testkit::browser::{Browser, ONE_AT_A_TIME};
use serde_json::{Value, json};

/// The admin token every [`Console`] starts with.
pub const ADMIN_TOKEN: &str = "console-test-admin-token-0123456789";

/// The prefix of the keys a [`Console`] issues (the screenshots show it: not `kg_live`).
pub const KEY_PREFIX: &str = "kg_demo";

/// `keygate serve` (the binary cargo built for this test, as the crate's shared
/// [`ServeProcess`]) on 127.0.0.1 with a fresh SQLite file, [`ADMIN_TOKEN`] and [`KEY_PREFIX`].
pub struct Console {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    _process: ServeProcess,
}

impl Console {
    /// Starts it and waits for its listening line.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`Console::start`] with more `keygate serve` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = format!("sqlite:{}", dir.path().join("keygate.db").display());
        let process = ServeProcess::start(
            env!("CARGO_BIN_EXE_keygate"),
            dir.path(),
            "console",
            |cmd| {
                cmd.args(["--database-url", &db, "--admin-token", ADMIN_TOKEN])
                    .args(["--key-prefix", KEY_PREFIX])
                    .args(extra);
            },
        )
        .keep(dir);
        Self {
            base: process.base(),
            _process: process,
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Creates a key through the API as `token`; returns the answer (`secret`, `key`).
    pub async fn api_create(&self, token: &str, body: Value) -> Value {
        let resp = reqwest::Client::new()
            .post(self.url("/v1/keys"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("POST /v1/keys");
        assert_eq!(resp.status(), 201, "create {body}");
        resp.json().await.expect("JSON")
    }

    /// `POST <path>` as the admin with an empty body (suspend, reactivate, revoke).
    pub async fn api_post(&self, path: &str) {
        let resp = reqwest::Client::new()
            .post(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("POST");
        assert!(resp.status().is_success(), "POST {path}: {}", resp.status());
    }

    /// A key's status as the API (admin) reports it.
    pub async fn api_status(&self, id: &str) -> String {
        let v: Value = reqwest::Client::new()
            .get(self.url(&format!("/v1/keys/{id}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("GET /v1/keys/{id}")
            .json()
            .await
            .expect("JSON");
        v["status"].as_str().unwrap_or_default().to_owned()
    }

    /// Reports usage as an edge's filter does: `POST /v1/usage` with the `edge` key `edge`,
    /// `(key id, count, last used at)` per entry; asserts the batch was applied.
    pub async fn report_usage(&self, edge: &str, batch_id: &str, entries: &[(&str, u64, i64)]) {
        let entries: Vec<Value> = entries
            .iter()
            .map(|(id, count, at)| json!({"key_id": id, "count": count, "last_used_at": at}))
            .collect();
        let resp = reqwest::Client::new()
            .post(self.url("/v1/usage"))
            .bearer_auth(edge)
            .json(&json!({"batch_id": batch_id, "entries": entries}))
            .send()
            .await
            .expect("POST /v1/usage");
        assert_eq!(resp.status(), 200, "usage report");
        let v: Value = resp.json().await.expect("JSON");
        assert_eq!(v["applied"], true, "{v}");
    }

    /// The key set's current revision, as an edge reads it (`x-keygate-revision`).
    pub async fn revision(&self, edge: &str) -> i64 {
        let resp = reqwest::Client::new()
            .get(self.url("/v1/keyset"))
            .bearer_auth(edge)
            .send()
            .await
            .expect("GET /v1/keyset");
        assert_eq!(resp.status(), 200, "key-set snapshot");
        resp.headers()["x-keygate-revision"]
            .to_str()
            .expect("text")
            .parse()
            .expect("a revision")
    }

    /// One key-set call as a proxy's filter makes it, with the report headers of an edge
    /// (`keygate_protocol::edge`) holding `revision`.
    pub async fn report_edge(&self, edge: &str, edge_id: &str, node: &str, revision: i64) {
        use keygate_protocol::edge::{
            CLUSTER_HEADER, ID_HEADER, KEYS_HEADER, NODE_HEADER, REVISION_HEADER, VERSION_HEADER,
            WORKERS_HEADER,
        };
        let resp = reqwest::Client::new()
            .get(self.url(&format!("/v1/keyset?since={revision}")))
            .bearer_auth(edge)
            .header(ID_HEADER, edge_id)
            .header(NODE_HEADER, node)
            .header(CLUSTER_HEADER, "ingress")
            .header(REVISION_HEADER, revision.to_string())
            .header(KEYS_HEADER, "2")
            .header(WORKERS_HEADER, "4")
            .header(VERSION_HEADER, "0.1.0")
            .send()
            .await
            .expect("GET /v1/keyset");
        assert!(
            [200, 304].contains(&resp.status().as_u16()),
            "key-set call: {}",
            resp.status()
        );
    }

    /// A workspace key of `workspace` with the key-management scopes; returns its secret.
    pub async fn workspace_key(&self, workspace: &str) -> String {
        let v = self
            .api_create(
                ADMIN_TOKEN,
                json!({"name": format!("{workspace} operator"), "workspace_id": workspace,
                       "owner_id": format!("{workspace}-ops"), "scopes": ["keys:read", "keys:write"]}),
            )
            .await;
        v["secret"].as_str().expect("secret").to_owned()
    }
}

/// The console's sign-in, on a [`Browser`].
pub trait SignIn {
    /// Signs in with `credential` and waits for the keys list.
    async fn sign_in(&self, console: &Console, credential: &str);
}

impl SignIn for Browser {
    async fn sign_in(&self, console: &Console, credential: &str) {
        self.goto(&console.url("/sign-in")).await;
        self.fill("#credential", credential).await;
        self.click("#sign-in").await;
        self.find("#new-key").await;
        assert_eq!(self.path().await, "/keys");
    }
}
