//! Security checks as tests:
//!
//! 1. Secret hygiene: the real `keygate serve` binary runs with `RUST_LOG=trace`, stdout and
//!    stderr captured, through a session that issues keys of every kind, an edge key syncing
//!    the feed and reporting usage, the admin token, workspace → repo exchange, rotation with
//!    grace, verification, failed authentications with near-miss credentials, and the GitHub
//!    broker (fake GitHub) handing out installation tokens with their App JWTs on both
//!    endpoints. Then every secret, token, JWT (and the random body of each key, and each JWT's
//!    signature) is searched for in every captured log line and in every later response (list,
//!    show, audit, metrics, openapi, repositories, key-set snapshot, error answers): none may
//!    appear.
//! 2. Digests are compared in constant time: the equality the control plane uses for the admin
//!    token and the internal API key is `keygate_protocol::Digest`'s, which goes through
//!    `subtle` (checked on the source, since a timing measurement cannot be a test).
//! 3. Brute force is rate limited on every endpoint, `POST /v1/keys/verify` included, for
//!    bearer and `x-api-key` guesses alike, per client address.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Engine, InProcessServer, ServeProcess};
use keygate_control_plane::http::keys::verify::VerifyResult;
use keygate_control_plane::http::keys::{IssuedKey, KeyView};
use keygate_fake_github::{FakeGithub, fixture, fixture_path};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ADMIN: &str = "security-admin-token-Zq8Lm3Xv7Rt2";
const INTERNAL: &str = "security-internal-key-Hh4Jk9Pp2Ww6";
const APP_ID: u64 = 4242;

/// `keygate serve` at trace level on a fresh SQLite file, with the GitHub broker pointed at the
/// fake and the App JWT exposed, so every kind of secret passes through it.
fn start_traced(dir: &Path, github_api: &str) -> ServeProcess {
    let app = format!(
        "name=main,app-id={APP_ID},private-key={},api-url={github_api}",
        fixture_path("app-key-1.pkcs1.pem").display()
    );
    common::serve(dir, "server", |c| {
        c.env(
            "KEYGATE_DATABASE_URL",
            format!("sqlite:{}", dir.join("sec.db").display()),
        )
        .env("KEYGATE_ADMIN_TOKEN", ADMIN)
        .env("KEYGATE_INTERNAL_API_KEY", INTERNAL)
        .env("KEYGATE_GITHUB_APPS", app)
        .env("KEYGATE_GITHUB_EXPOSE_APP_JWT", "true")
        .env("KEYGATE_USAGE_FLUSH_MS", "100")
        .env("RUST_LOG", "trace");
    })
}

/// A client that records every response body it reads (for the search afterwards).
struct Client {
    http: reqwest::Client,
    base: String,
    /// (what, body) of every response read after the first issuance.
    bodies: Vec<(String, Vec<u8>)>,
}

impl Client {
    async fn call(
        &mut self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let mut headers = String::new();
        for (n, v) in resp.headers() {
            headers.push_str(&format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes())));
        }
        let bytes = resp.bytes().await.expect("body").to_vec();
        let mut recorded = headers.into_bytes();
        recorded.extend_from_slice(&bytes);
        self.bodies
            .push((format!("{method} {path} → {status}"), recorded));
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, v)
    }

    /// A call whose answer carries secrets by design (issuance): not recorded.
    async fn issue(
        &mut self,
        token: &str,
        method: Method,
        path: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let n = self.bodies.len();
        let r = self.call(Some(token), method, path, Some(body)).await;
        self.bodies.truncate(n);
        r
    }
}

/// Decodes an issuance answer (`POST /v1/keys`, exchange, rotate) into the crate's type.
fn issued(v: Value) -> IssuedKey {
    serde_json::from_value(v).expect("an IssuedKey")
}

/// Decodes a `POST /v1/keys/verify` answer into the crate's type.
fn verified(v: &Value) -> VerifyResult {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("a VerifyResult ({e}): {v}"))
}

/// A credential with one character changed (a near-miss guess).
fn near_miss(s: &str) -> String {
    let mut b = s.as_bytes().to_vec();
    let i = b.len() / 2;
    b[i] = if b[i] == b'x' { b'y' } else { b'x' };
    String::from_utf8(b).expect("ascii")
}

/// The fixture of the secret-hygiene scenarios: fake GitHub with the App installed on `acme`,
/// `keygate serve` at trace level, a client recording every answer it reads, keys of every kind
/// issued (a workspace key, an edge key, a repo key the workspace key issued, an exchanged
/// child, a key rotated with grace) and `acme/widgets` in the repository registry. Each scenario
/// starts its own (the search is over one server's logs) and ends with [`Session::search`].
struct Session {
    fake: FakeGithub,
    _dir: tempfile::TempDir,
    served: ServeProcess,
    c: Client,
    /// Every secret of the session, with a name for the failure message.
    secrets: Vec<(String, String)>,
    /// Near-miss guesses a scenario sent: searched for too.
    guesses: Vec<(String, String)>,
    ws: IssuedKey,
    edge: IssuedKey,
    repo: IssuedKey,
    child: IssuedKey,
    /// The rotating key before and after its rotation.
    rot: IssuedKey,
    rotated: IssuedKey,
    /// `acme/widgets`'s id in the registry.
    widgets: i64,
}

impl Session {
    async fn start() -> Self {
        let fake = FakeGithub::start().await.expect("fake GitHub");
        fake.add_app(APP_ID, "Iv23liKeygate", &[&fixture("app-key-1.pub.pem")])
            .expect("app");
        fake.install(
            APP_ID,
            "acme",
            &["widgets", "gadgets"],
            &[("contents", "write"), ("metadata", "read")],
        )
        .expect("install");
        let dir = tempfile::tempdir().expect("tempdir");
        let served = start_traced(dir.path(), &fake.base_url());
        let mut c = Client {
            http: reqwest::Client::new(),
            base: served.base(),
            bodies: Vec::new(),
        };
        let mut secrets: Vec<(String, String)> = vec![
            ("admin token".into(), ADMIN.into()),
            ("internal API key".into(), INTERNAL.into()),
        ];
        let pem = fixture("app-key-1.pkcs1.pem");
        let pem_line = pem
            .lines()
            .nth(3)
            .expect("a line of the App's private key")
            .to_owned();
        secrets.push(("App private key (a line)".into(), pem_line));

        // Keys of every kind.
        let (st, ws) = c
            .issue(
                ADMIN,
                Method::POST,
                "/v1/keys",
                json!({"name": "ws", "workspace_id": "acme", "owner_id": "svc-ws",
                       "scopes": ["keys:read", "keys:write", "github:tokens", "repo:read"],
                       "resources": ["acme/*"], "metadata": {"team": "infra"}}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{ws}");
        let ws = issued(ws);
        secrets.push(("workspace key".into(), ws.secret.clone()));
        let (st, edge) = c
            .issue(
                ADMIN,
                Method::POST,
                "/v1/keys",
                json!({"name": "edge", "kind": "edge"}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{edge}");
        let edge = issued(edge);
        secrets.push(("edge key".into(), edge.secret.clone()));
        let (st, repo) = c
            .issue(
                &ws.secret,
                Method::POST,
                "/v1/keys",
                json!({"name": "ci", "kind": "repo", "scopes": ["github:tokens", "repo:read"],
                       "resources": ["acme/widgets"]}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{repo}");
        let repo = issued(repo);
        secrets.push((
            "repo key (issued by a workspace key)".into(),
            repo.secret.clone(),
        ));
        let (st, child) = c
            .issue(
                &ws.secret,
                Method::POST,
                "/v1/keys/exchange",
                json!({"subject": "ci-run-7", "scopes": ["repo:read"], "resources": ["acme/widgets"]}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{child}");
        let child = issued(child);
        secrets.push(("exchanged child key".into(), child.secret.clone()));
        let (st, rot) = c
            .issue(
                ADMIN,
                Method::POST,
                "/v1/keys",
                json!({"name": "rotating", "scopes": ["repo:read"]}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED);
        let rot = issued(rot);
        secrets.push(("key before rotation".into(), rot.secret.clone()));
        let (st, rotated) = c
            .issue(
                ADMIN,
                Method::POST,
                &format!("/v1/keys/{}/rotate", rot.key.id),
                json!({"grace_period": 600}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{rotated}");
        let rotated = issued(rotated);
        secrets.push(("key after rotation".into(), rotated.secret.clone()));

        // The GitHub broker's registry.
        let (st, v) = c
            .call(
                Some(ADMIN),
                Method::POST,
                "/v1/repositories",
                Some(json!({"organization": "acme", "repository": "widgets"})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        let widgets = v["id"].as_i64().expect("id");
        Self {
            fake,
            _dir: dir,
            served,
            c,
            secrets,
            guesses: Vec::new(),
            ws,
            edge,
            repo,
            child,
            rot,
            rotated,
            widgets,
        }
    }

    /// The check every scenario ends with: reads everything readable (list, each key, audit,
    /// registry, metrics, OpenAPI, health), stops the server, checks the log is a real
    /// trace-level one with the request lines of `/v1/keys/exchange` (the fixture's) and of
    /// `paths` (the scenario's), then searches every secret and guess (whole, a key's random
    /// body, a JWT's signature and claims) in every log line and every recorded answer: none
    /// may appear. Returns the number of audit rows.
    async fn search(self, paths: &[&str]) -> usize {
        let Session {
            served,
            mut c,
            secrets,
            guesses,
            ws,
            ..
        } = self;
        let (_, list) = c
            .call(Some(ADMIN), Method::GET, "/v1/keys?limit=100", None)
            .await;
        let keys: Vec<KeyView> =
            serde_json::from_value(list["items"].clone()).expect("items: KeyView");
        assert!(keys.len() >= 5, "{list}");
        for id in keys.iter().map(|k| &k.id) {
            let (st, _) = c
                .call(Some(ADMIN), Method::GET, &format!("/v1/keys/{id}"), None)
                .await;
            assert_eq!(st, StatusCode::OK);
        }
        for path in [
            "/v1/audit?limit=1000",
            "/v1/repositories",
            "/metrics",
            "/openapi.json",
            "/healthz",
            "/readyz",
            "/v1/keys?limit=100&kind=edge",
        ] {
            let (st, _) = c.call(Some(ADMIN), Method::GET, path, None).await;
            assert_eq!(st, StatusCode::OK, "{path}");
        }
        let (st, _) = c
            .call(Some(&ws.secret), Method::GET, "/v1/audit", None)
            .await;
        assert_eq!(st, StatusCode::OK);
        let (st, audit) = c
            .call(Some(ADMIN), Method::GET, "/v1/audit?limit=1000", None)
            .await;
        assert_eq!(st, StatusCode::OK);
        let audited = audit["items"].as_array().map_or(0, Vec::len);

        // Give the usage flush and any late log line a moment, then stop the server.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (out, err) = served.stop();
        let logs_after = out + &err;
        let lines = logs_after.lines().count();
        for level in ["TRACE", "DEBUG", "INFO"] {
            assert!(
                logs_after.contains(level),
                "{level} lines were captured (RUST_LOG=trace)"
            );
        }
        assert!(lines > 100, "a real trace-level log: {lines} lines");
        for path in std::iter::once(&"/v1/keys/exchange").chain(paths) {
            assert!(
                logs_after.contains(path),
                "the request log of {path} was captured"
            );
        }

        // The search: whole values, keys' random bodies, and JWT signatures.
        let mut needles: Vec<(String, String)> = Vec::new();
        for (name, s) in secrets.iter().chain(guesses.iter()) {
            needles.push((name.clone(), s.clone()));
            if let Ok(parsed) = keygate_protocol::key::parse(s) {
                needles.push((format!("{name} (random body)"), parsed.body().to_owned()));
            }
            if s.matches('.').count() == 2 && s.starts_with("eyJ") {
                let sig = s.rsplit('.').next().unwrap_or_default();
                needles.push((format!("{name} (signature)"), sig.to_owned()));
                let claims = s.split('.').nth(1).unwrap_or_default();
                needles.push((format!("{name} (claims)"), claims.to_owned()));
            }
        }
        for (name, needle) in &needles {
            assert!(needle.len() >= 16, "{name} is long enough to search for");
            if let Some(line) = logs_after.lines().find(|l| l.contains(needle.as_str())) {
                panic!("the {name} is in a log line: {line}");
            }
            for (what, body) in &c.bodies {
                let text = String::from_utf8_lossy(body);
                assert!(
                    !text.contains(needle.as_str()),
                    "the {name} is in the response to {what}"
                );
            }
        }
        println!(
            "secret hygiene: {} secrets and {} near-miss guesses ({} needles) searched in {lines} \
             log lines (RUST_LOG=trace, stdout+stderr) and {} responses; {audited} audit rows; \
             none found",
            secrets.len(),
            guesses.len(),
            needles.len(),
            c.bodies.len()
        );
        audited
    }
}

/// Verification (secrets in request bodies), the edge key's feed and usage, the workspace
/// key's management calls and lifecycle changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_in_use_leave_no_secret_in_a_log_line_or_a_later_response() {
    let mut s = Session::start().await;
    let c = &mut s.c;
    for key in [
        &s.ws.secret,
        &s.repo.secret,
        &s.rot.secret,
        &s.rotated.secret,
    ] {
        let (st, v) = c
            .call(
                Some(ADMIN),
                Method::POST,
                "/v1/keys/verify",
                Some(json!({"key": key, "scopes": ["repo:read"]})),
            )
            .await;
        assert_eq!((st, verified(&v).valid), (StatusCode::OK, true), "{v}");
    }
    let (st, v) = c
        .call(
            Some(&s.ws.secret),
            Method::POST,
            "/v1/keys/verify",
            Some(json!({"key": s.repo.secret})),
        )
        .await;
    assert_eq!((st, verified(&v).code.as_str()), (StatusCode::OK, "VALID"));
    let resp = c
        .http
        .get(format!("{}/v1/keyset", c.base))
        .header("x-api-key", &s.edge.secret)
        .send()
        .await
        .expect("keyset");
    assert_eq!(resp.status(), StatusCode::OK);
    let revision: i64 = resp.headers()["x-keygate-revision"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("revision");
    let snapshot = resp.bytes().await.expect("snapshot").to_vec();
    c.bodies
        .push(("GET /v1/keyset (snapshot)".into(), snapshot));
    let (st, _) = c
        .call(
            Some(&s.edge.secret),
            Method::GET,
            &format!("/v1/keyset?since={revision}&wait=1"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_MODIFIED);
    let (st, v) = c
        .call(
            Some(&s.edge.secret),
            Method::POST,
            "/v1/usage",
            Some(json!({"batch_id": "sec-1", "entries": [{"key_id": s.repo.key.id, "count": 3, "last_used_at": 1_763_900_000}]})),
        )
        .await;
    assert!(st.is_success(), "{st} {v}");
    let (st, _) = c
        .call(Some(&s.ws.secret), Method::GET, "/v1/keys", None)
        .await;
    assert_eq!(st, StatusCode::OK);
    for action in ["suspend", "reactivate"] {
        let (st, v) = c
            .call(
                Some(&s.ws.secret),
                Method::POST,
                &format!("/v1/keys/{}/{action}", s.child.key.id),
                Some(json!({"reason": "security test"})),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{action}: {v}");
    }
    let (st, _) = c
        .call(
            Some(ADMIN),
            Method::PATCH,
            &format!("/v1/keys/{}", s.rot.key.id),
            Some(json!({"name": "renamed", "metadata": {"k": "v"}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let audited = s
        .search(&["/v1/keys/verify", "/v1/keyset", "/v1/usage"])
        .await;
    assert!(audited >= 10, "the session was audited: {audited} rows");
}

/// The GitHub broker: a repo key's installation token with its App JWT, the seed's internal
/// endpoint (token and JWT), revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_tokens_and_app_jwts_appear_in_no_log_line_or_later_response() {
    let mut s = Session::start().await;
    let (st, gh) =
        s.c.issue(
            &s.repo.secret,
            Method::POST,
            "/v1/github/tokens",
            json!({"repository": "acme/widgets"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{gh}");
    let gh_token = gh["token"].as_str().expect("token").to_owned();
    let gh_jwt = gh["app_jwt"]
        .as_str()
        .expect("app_jwt (exposed)")
        .to_owned();
    assert!(s.fake.token(&gh_token).is_some(), "a token GitHub minted");
    s.secrets
        .push(("GitHub installation token (v1)".into(), gh_token.clone()));
    s.secrets
        .push(("GitHub App JWT (v1)".into(), gh_jwt.clone()));
    let (st, seed) =
        s.c.issue(
            INTERNAL,
            Method::POST,
            "/api/github/tokens",
            json!({"repositoryId": s.widgets, "internalApiKey": INTERNAL}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{seed}");
    let seed_jwt = seed["githubAppToken"].as_str().expect("jwt").to_owned();
    s.secrets.push((
        "GitHub installation token (seed endpoint)".into(),
        seed["installationToken"]
            .as_str()
            .expect("token")
            .to_owned(),
    ));
    s.secrets
        .push(("GitHub App JWT (seed endpoint)".into(), seed_jwt));
    let (st, v) =
        s.c.call(
            Some(&s.repo.secret),
            Method::DELETE,
            "/v1/github/tokens",
            Some(json!({"token": gh_token})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    s.search(&["/v1/github/tokens", "/api/github/tokens"]).await;
}

/// Near-miss guesses of the first six secrets (admin token, internal key, App private key,
/// workspace, edge and repo keys) and of the internal key on the seed's endpoint: refused, and
/// the guessed values are not logged or echoed either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_miss_guesses_are_refused_and_appear_in_no_log_line_or_later_response() {
    let mut s = Session::start().await;
    for (name, secret) in s.secrets.clone().iter().take(6) {
        let guess = near_miss(secret);
        let (st, v) = s.c.call(Some(&guess), Method::GET, "/v1/keys", None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{name}: {v}");
        let (st, v) =
            s.c.call(
                Some(ADMIN),
                Method::POST,
                "/v1/keys/verify",
                Some(json!({"key": guess})),
            )
            .await;
        assert_eq!((st, verified(&v).valid), (StatusCode::OK, false), "{v}");
        s.guesses.push((format!("near miss of the {name}"), guess));
    }
    let (st, v) =
        s.c.call(
            Some(ADMIN),
            Method::POST,
            "/api/github/tokens",
            Some(json!({"repositoryId": s.widgets, "internalApiKey": near_miss(INTERNAL)})),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    s.guesses
        .push(("near miss of the internal key".into(), near_miss(INTERNAL)));
    s.search(&["/v1/keys/verify", "/api/github/tokens"]).await;
}

/// Bad input carrying a secret: refused, and the error does not echo it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_carrying_a_secret_is_refused_without_echoing_it() {
    let mut s = Session::start().await;
    let ws_secret = s.ws.secret.clone();
    let (st, v) =
        s.c.call(
            Some(ADMIN),
            Method::POST,
            "/v1/keys",
            Some(json!({"name": ws_secret, "description": ws_secret, "evil": ws_secret})),
        )
        .await;
    assert!(st.is_client_error(), "{v}");
    s.search(&[]).await;
}

/// The comparisons that decide authentication go through `Digest`'s equality, and that
/// equality is `subtle`'s constant-time comparison. Checked on the source: a timing
/// measurement would be a flaky test, and a change of the comparison is what must not slip
/// through unnoticed.
#[test]
fn digests_are_compared_in_constant_time() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let read = |p: &str| {
        std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("reading {p}: {e}"))
    };
    let digest = read("protocol/src/digest.rs");
    let block = |src: &str, start: &str| -> String {
        let i = src
            .find(start)
            .unwrap_or_else(|| panic!("`{start}` not found"));
        let rest = &src[i..];
        // The item ends at the first line that is a lone closing brace.
        let end = rest.find("\n}\n").map_or(rest.len(), |e| e + 3);
        rest[..end].to_owned()
    };
    let eq = block(&digest, "impl PartialEq for Digest");
    assert!(
        eq.contains("ct_eq_32(&self.0, &other.0)"),
        "Digest == must use the constant-time helper:\n{eq}"
    );
    let helper = block(&digest, "pub(crate) fn ct_eq_32");
    assert!(
        digest.contains("use subtle::ConstantTimeEq;") && helper.contains(".ct_eq(&0)"),
        "the helper must end in subtle's ct_eq:\n{helper}"
    );
    // Data-independent control flow: the loop folds every byte; no early exit, no byte ==.
    for banned in ["return", "break", "if ", "==", "!="] {
        assert!(
            !helper
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .any(|l| l.contains(banned)),
            "`{banned}` in the constant-time helper:\n{helper}"
        );
    }
    let ct = block(&digest, "impl ConstantTimeEq for Digest");
    assert!(ct.contains("self.0.ct_eq(&other.0)"), "{ct}");
    // Behaviour: every single-bit difference at every position is unequal.
    let a = keygate_protocol::Digest::from_bytes([0x5a; 32]);
    for i in 0..32 {
        for bit in 0..8 {
            let mut b = [0x5a; 32];
            b[i] ^= 1 << bit;
            assert_ne!(a, keygate_protocol::Digest::from_bytes(b));
        }
    }
    assert_eq!(a, keygate_protocol::Digest::from_bytes([0x5a; 32]));

    // The control plane compares secrets only as Digests: the admin token (a Digest field) and
    // the internal API key, never as strings or byte slices.
    let auth = read("control-plane/src/http/auth.rs");
    assert!(
        auth.contains("state.admin_token.as_ref().is_some_and(|d| *d == digest)"),
        "admin token compared as Digest"
    );
    let state = read("control-plane/src/runtime/state.rs");
    assert!(
        state.contains("admin_token: Option<Digest>"),
        "admin token held as a Digest"
    );
    let routes = read("control-plane/src/http/github.rs");
    assert!(
        routes.contains("Digest::of(given) != Digest::of(expected)"),
        "internal API key compared as Digests"
    );
    // Stored keys are found by their digest (an index lookup on SHA-256 output, not on the
    // secret), and the filter's key set ends every lookup with the same helper: the overlay and
    // the main array are both searched by `Index::find`, which compares with it.
    let keyset = read("protocol/src/keyset/mod.rs");
    let find = block(
        &keyset,
        "    fn find(&self, records: &[Record], d: &[u8; 32])",
    );
    assert!(
        find.contains(".find(|&p| ct_eq_32(&records[p].digest, d))"),
        "Index::find ends in ct_eq_32:\n{find}"
    );
    let lookup = block(&keyset, "    pub fn lookup(&self, digest: &Digest)");
    assert!(
        lookup.contains("self.overlay_index.find(&self.overlay, d)")
            && lookup.contains("self.find_main(d)"),
        "KeySet::lookup searches through Index::find:\n{lookup}"
    );
    let find_main = block(&keyset, "    fn find_main(");
    assert!(
        find_main.contains("self.main_index.find(&self.main, d)"),
        "{find_main}"
    );
}

/// Failed authentications are rate limited per client address on every endpoint, key
/// verification included, whatever header the guess comes in.
async fn brute_force_is_rate_limited_everywhere(e: Engine) {
    let s = InProcessServer::start(e).await;
    let IssuedKey { secret, .. } = s
        .create(json!({"name": "target", "scopes": ["keys:read"]}))
        .await;
    let guess = |i: usize| {
        let g = keygate_protocol::key::generate("kg_live").expect("generate");
        let _ = i;
        g.into_string()
    };
    // 30 guesses against /v1/keys/verify (the limit per minute), half bearer, half x-api-key.
    for i in 0..30 {
        let mut req = s
            .http
            .post(s.url("/v1/keys/verify"))
            .json(&json!({"key": secret}));
        req = if i % 2 == 0 {
            req.bearer_auth(guess(i))
        } else {
            req.header("x-api-key", guess(i))
        };
        let resp = req.send().await.expect("send");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "guess {i}");
    }
    // Now blocked: verify, list, and any credential — even the right one.
    for (path, method, token) in [
        ("/v1/keys/verify", Method::POST, secret.as_str()),
        ("/v1/keys/verify", Method::POST, common::ADMIN),
        ("/v1/keys", Method::GET, common::ADMIN),
        ("/v1/keyset", Method::GET, common::ADMIN),
        ("/v1/audit", Method::GET, secret.as_str()),
    ] {
        let mut req = s
            .http
            .request(method.clone(), s.url(path))
            .bearer_auth(token);
        if method == Method::POST {
            req = req.json(&json!({"key": secret}));
        }
        let resp = req.send().await.expect("send");
        assert_eq!(
            resp.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "{method} {path}"
        );
        let retry: u64 = resp.headers()["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((1..=60).contains(&retry), "{retry}");
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["error"]["code"], "RATE_LIMITED");
        assert!(!v.to_string().contains(&secret));
    }
    // x-api-key is blocked as well as bearer.
    let resp = s
        .http
        .get(s.url("/v1/keys"))
        .header("x-api-key", common::ADMIN)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    // Another client address is not affected (the limit is per address).
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let resp = other
        .post(s.url("/v1/keys/verify"))
        .bearer_auth(common::ADMIN)
        .json(&json!({"key": secret}))
        .send()
        .await
        .expect("send from 127.0.0.2");
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["code"], "VALID");
    // Guessing keys in the verify body with a valid credential is not an authentication
    // failure (it answers NOT_FOUND and is confined to the caller's workspace); a 190-bit key
    // body is not guessable by volume.
    for _ in 0..40 {
        let resp = other
            .post(s.url("/v1/keys/verify"))
            .bearer_auth(common::ADMIN)
            .json(&json!({"key": guess(0)}))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::OK);
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["code"], "NOT_FOUND");
    }
    s.stop().await;
}

on_both_engines!(brute_force_is_rate_limited_everywhere);
