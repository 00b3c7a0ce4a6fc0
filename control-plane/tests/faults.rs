//! Fault injection against the real `keygate` binary (issue 8).
//!
//! - SIGKILL loop, on SQLite and on PostgreSQL: concurrent clients issue, rotate and revoke
//!   keys while the server is killed at random moments and restarted on the same database.
//!   Afterwards every acknowledged write is there with its acknowledged state, no write is half
//!   there, the audit log matches the keys, and the sync feed (both a fresh snapshot and a
//!   reader that followed deltas across the kills) equals the active keys plus rotated-out
//!   secrets in their grace period.
//! - Database outage, on PostgreSQL: the throwaway cluster is stopped under a running control
//!   plane (API 503 `DATABASE_UNAVAILABLE`, `/readyz` 503, `/healthz` 200), then started again
//!   on the same port: the same process recovers by itself with all its data.
//!
//! The figures (rounds, writes, kills, recovery) are printed; run with `--nocapture` to see them.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::ServeProcess;
use keygate_protocol::Digest;
use keygate_protocol::wire::{self, Message};
use keygate_testkit::PgCluster;
use keygate_testkit::rng::Rng;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ADMIN: &str = "faults-admin-token-0123456789";
/// Kill-and-restart rounds per engine.
const ROUNDS: usize = 8;
/// Concurrent writing clients.
const CLIENTS: usize = 4;
/// Grace period of every rotation: longer than the test, so every rotated-out secret is
/// still in the set at the end.
const GRACE: i64 = 3600;

/// `keygate serve` on `database_url` (output in `<dir>/<name>.stdout` and `.stderr`, appended
/// across restarts), once `/readyz` answers 200.
async fn start_keygate(
    database_url: &str,
    dir: &Path,
    name: &str,
    http: &reqwest::Client,
) -> ServeProcess {
    let mut kg = tokio::task::block_in_place(|| {
        common::serve(dir, name, |c| {
            c.env("KEYGATE_DATABASE_URL", database_url)
                .env("KEYGATE_ADMIN_TOKEN", ADMIN)
                .env("RUST_LOG", "info,sqlx=warn");
        })
    });
    wait_ready(&mut kg, http).await;
    kg
}

/// Waits until `/readyz` answers 200; panics with the logs if it exits or takes over 60 s.
async fn wait_ready(kg: &mut ServeProcess, http: &reqwest::Client) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        assert!(kg.is_running(), "keygate exited: {}", kg.logs());
        if let Ok(r) = http.get(kg.url("/readyz")).send().await
            && r.status() == StatusCode::OK
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("keygate not ready within 60 s: {}", kg.logs());
}

/// What one client knows of one key it issued (an acknowledged create).
#[derive(Debug, Clone)]
struct KeyLog {
    id: String,
    /// Every secret acknowledged for this key: the issued one, then each rotation's.
    secrets: Vec<String>,
    /// Acknowledged changes after creation, in order (`key.rotate`, `key.revoke`).
    acked: Vec<&'static str>,
    /// A change sent without an acknowledged answer (the client then leaves the key alone).
    uncertain: Option<&'static str>,
}

impl KeyLog {
    fn open(&self) -> bool {
        self.uncertain.is_none() && !self.acked.contains(&"key.revoke")
    }
}

#[derive(Debug, Default)]
struct ClientLog {
    keys: Vec<KeyLog>,
    /// Names of creates sent without an acknowledged answer.
    uncertain_creates: Vec<String>,
    acked_writes: usize,
    /// Sent while the server was down (connection refused).
    refused_writes: usize,
    /// Sent, but the connection died before the whole answer arrived (killed in flight).
    in_flight_writes: usize,
    /// 5xx answers and unexpected 4xx answers: none are allowed.
    bad_answers: Vec<String>,
}

enum Outcome {
    /// The full response arrived with this status and body.
    Answered(StatusCode, Value),
    /// No (complete) response: the write may or may not have happened. `true` when the
    /// request may have reached the server (not a refused connection).
    Lost(bool),
}

async fn send(http: &reqwest::Client, method: Method, url: String, body: Value) -> Outcome {
    let resp = match http
        .request(method, url)
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return Outcome::Lost(!e.is_connect()),
    };
    let status = resp.status();
    match resp.bytes().await {
        Ok(b) => Outcome::Answered(status, serde_json::from_slice(&b).unwrap_or(Value::Null)),
        Err(_) => Outcome::Lost(true),
    }
}

/// One writing client: issues, rotates and revokes its own keys until `stop`.
async fn client(
    n: usize,
    base: String,
    seed: u64,
    stop: Arc<AtomicBool>,
    http: reqwest::Client,
) -> ClientLog {
    let mut rng = Rng::new(seed);
    let mut log = ClientLog::default();
    let mut made = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let open: Vec<usize> = (0..log.keys.len())
            .filter(|&i| log.keys[i].open())
            .collect();
        let roll = rng.below(100);
        let outcome;
        if open.is_empty() || roll < 45 {
            let name = format!("c{n}-{made}");
            made += 1;
            outcome = send(
                &http,
                Method::POST,
                format!("{base}/v1/keys"),
                json!({"name": name, "scopes": ["x:read"], "owner_id": format!("client-{n}")}),
            )
            .await;
            match &outcome {
                Outcome::Answered(StatusCode::CREATED, v) => log.keys.push(KeyLog {
                    id: v["key"]["id"].as_str().unwrap().to_owned(),
                    secrets: vec![v["secret"].as_str().unwrap().to_owned()],
                    acked: Vec::new(),
                    uncertain: None,
                }),
                Outcome::Answered(st, v) => log.bad_answers.push(format!("create: {st} {v}")),
                Outcome::Lost(_) => log.uncertain_creates.push(name),
            }
        } else {
            let k = open[rng.below(open.len())];
            let id = log.keys[k].id.clone();
            let (action, path, body) = if roll < 78 {
                (
                    "key.rotate",
                    format!("{base}/v1/keys/{id}/rotate"),
                    json!({"grace_period": GRACE}),
                )
            } else {
                (
                    "key.revoke",
                    format!("{base}/v1/keys/{id}/revoke"),
                    json!({"reason": "fault test"}),
                )
            };
            outcome = send(&http, Method::POST, path, body).await;
            let key = &mut log.keys[k];
            match &outcome {
                Outcome::Answered(StatusCode::OK, v) => {
                    key.acked.push(action);
                    if action == "key.rotate" {
                        key.secrets.push(v["secret"].as_str().unwrap().to_owned());
                    } else {
                        assert_eq!(v["status"], "revoked");
                    }
                }
                Outcome::Answered(st, v) => {
                    log.bad_answers.push(format!("{action} {id}: {st} {v}"));
                }
                Outcome::Lost(_) => key.uncertain = Some(action),
            }
        }
        match outcome {
            Outcome::Answered(st, _) if st.is_success() => log.acked_writes += 1,
            Outcome::Answered(..) => {}
            Outcome::Lost(in_flight) => {
                if in_flight {
                    log.in_flight_writes += 1;
                } else {
                    log.refused_writes += 1;
                }
                // The server is down: do not spin.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    log
}

/// The set as a feed reader holds it: digest -> key id.
type Set = HashMap<Digest, String>;

fn apply(set: &mut Set, m: Message) -> u64 {
    match m {
        Message::Snapshot(s) => {
            set.clear();
            for e in s.entries {
                set.insert(e.digest, e.key_id.to_string());
            }
            s.revision
        }
        Message::Delta(d) => {
            for r in d.removals {
                set.remove(&r);
            }
            for e in d.upserts {
                set.insert(e.digest, e.key_id.to_string());
            }
            d.revision
        }
    }
}

/// A feed reader that follows the set with `since` and long-poll across the kills; transport
/// errors (the server is down) are retried. Checks as it goes that every delta starts at its
/// revision and that the revision never goes back.
async fn reader(
    base: String,
    edge: String,
    stop: Arc<AtomicBool>,
    http: reqwest::Client,
) -> (Set, u64, usize) {
    let mut set = Set::new();
    let mut rev: Option<u64> = None;
    let mut answers = 0;
    while !stop.load(Ordering::Relaxed) {
        let query = match rev {
            Some(r) => format!("?since={r}&wait=1"),
            None => String::new(),
        };
        let Ok(resp) = http
            .get(format!("{base}/v1/keyset{query}"))
            .bearer_auth(&edge)
            .send()
            .await
        else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let st = resp.status();
        let Ok(body) = resp.bytes().await else {
            continue;
        };
        if st == StatusCode::NOT_MODIFIED {
            continue;
        }
        assert_eq!(st, StatusCode::OK, "feed answered {st}");
        let msg = wire::decode(&body).expect("a complete feed answer decodes");
        if let Message::Delta(d) = &msg {
            assert_eq!(
                Some(d.base_revision),
                rev,
                "a delta starts at the reader's revision"
            );
        }
        let new = apply(&mut set, msg);
        assert!(
            rev.is_none_or(|r| new > r),
            "revision went back: {rev:?} -> {new}"
        );
        rev = Some(new);
        answers += 1;
    }
    (set, rev.unwrap_or(0), answers)
}

/// Reads every page of `path` (`items`, `next_cursor`).
async fn all_pages(http: &reqwest::Client, k: &ServeProcess, path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => k.url(&format!("{path}?limit=1000&cursor={c}")),
            None => k.url(&format!("{path}?limit=1000")),
        };
        let v: Value = http
            .get(url)
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        out.extend(v["items"].as_array().unwrap().iter().cloned());
        match &v["next_cursor"] {
            Value::Null => return out,
            Value::String(s) => cursor = Some(s.clone()),
            c => cursor = Some(c.to_string()),
        }
    }
}

async fn snapshot(http: &reqwest::Client, k: &ServeProcess, edge: &str) -> (u64, Set) {
    let resp = http
        .get(k.url("/v1/keyset"))
        .bearer_auth(edge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut set = Set::new();
    let rev = apply(
        &mut set,
        wire::decode(&resp.bytes().await.unwrap()).unwrap(),
    );
    (rev, set)
}

async fn verify_code(http: &reqwest::Client, k: &ServeProcess, secret: &str) -> String {
    let v: Value = http
        .post(k.url("/v1/keys/verify"))
        .bearer_auth(ADMIN)
        .json(&json!({"key": secret}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["code"].as_str().unwrap().to_owned()
}

/// The SIGKILL loop on one database; returns the figures line.
async fn sigkill_loop(engine: &str, database_url: String, dir: &Path) -> String {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    // Printed with the figures, so that a failing run's timings can be replayed.
    let seed = Rng::seed_from_env("KEYGATE_FAULT_SEED");
    let mut rng = Rng::new(seed);
    let mut kg = start_keygate(&database_url, dir, &format!("keygate-{engine}"), &http).await;
    let (st, v) = match send(
        &http,
        Method::POST,
        kg.url("/v1/keys"),
        json!({"name": "edge", "kind": "edge"}),
    )
    .await
    {
        Outcome::Answered(st, v) => (st, v),
        Outcome::Lost(_) => panic!("edge key not created"),
    };
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let edge = v["secret"].as_str().unwrap().to_owned();
    let edge_id = v["key"]["id"].as_str().unwrap().to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let base = kg.url("");
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            tokio::spawn(client(
                n,
                base.clone(),
                rng.next_u64(),
                stop.clone(),
                http.clone(),
            ))
        })
        .collect();
    let follower = tokio::spawn(reader(
        base.clone(),
        edge.clone(),
        stop.clone(),
        http.clone(),
    ));

    let mut restart_to_ready = Vec::new();
    for _ in 0..ROUNDS {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(900) as u64)).await;
        kg.kill();
        tokio::time::sleep(Duration::from_millis(rng.below(200) as u64)).await;
        let t = Instant::now();
        tokio::task::block_in_place(|| kg.restart());
        wait_ready(&mut kg, &http).await;
        restart_to_ready.push(t.elapsed());
    }
    // Let the clients work against the last server for a moment, then stop them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    for c in clients {
        logs.push(c.await.unwrap());
    }
    let (mut followed, mut followed_rev, feed_answers) = follower.await.unwrap();

    // Nothing unexpected was answered.
    let bad: Vec<&String> = logs.iter().flat_map(|l| &l.bad_answers).collect();
    assert!(bad.is_empty(), "5xx or unexpected answers: {bad:?}");

    // The database as the API shows it.
    let keys: HashMap<String, Value> = all_pages(&http, &kg, "/v1/keys")
        .await
        .into_iter()
        .map(|k| (k["id"].as_str().unwrap().to_owned(), k))
        .collect();
    let audit = all_pages(&http, &kg, "/v1/audit").await;
    let mut audit_by_key: HashMap<String, Vec<&Value>> = HashMap::new();
    for row in &audit {
        let id = row["key_id"]
            .as_str()
            .expect("every audit row here is about a key");
        assert!(
            keys.contains_key(id),
            "audit row for a key that does not exist: {row}"
        );
        audit_by_key.entry(id.to_owned()).or_default().push(row);
    }
    // Every key has its audit trail, opened by its creation, and the last row's `after` is
    // the key as stored (the audit log matches the keys).
    for (id, k) in &keys {
        let rows = audit_by_key
            .get(id)
            .unwrap_or_else(|| panic!("key without audit rows: {k}"));
        assert_eq!(rows[0]["action"], "key.create", "{id}");
        let mut shown = k.clone();
        let o = shown.as_object_mut().unwrap();
        o.remove("usage_count");
        o.remove("last_used_at");
        assert_eq!(
            rows.last().unwrap()["after"],
            shown,
            "last audit row vs stored key {id}"
        );
        let revokes = rows.iter().filter(|r| r["action"] == "key.revoke").count();
        assert_eq!(
            k["status"] == "revoked",
            revokes == 1,
            "status vs audit for {id}"
        );
    }

    // Every acknowledged write is there with its acknowledged state; an unacknowledged one is
    // either wholly there (as the last change) or not at all.
    let mut acked_keys = HashSet::new();
    let mut committed_uncertain = 0;
    let mut secrets_checked = 0;
    for log in &logs {
        for kl in &log.keys {
            acked_keys.insert(kl.id.clone());
            let k = keys
                .get(&kl.id)
                .unwrap_or_else(|| panic!("acknowledged create lost: {}", kl.id));
            let actions: Vec<&str> = audit_by_key[&kl.id]
                .iter()
                .map(|r| r["action"].as_str().unwrap())
                .collect();
            let mut want = vec!["key.create"];
            want.extend(&kl.acked);
            if actions != want {
                let u = kl
                    .uncertain
                    .expect("only an unacknowledged change may differ");
                want.push(u);
                assert_eq!(actions, want, "history of {}", kl.id);
                committed_uncertain += 1;
            }
            let status = k["status"].as_str().unwrap();
            let expect = if status == "active" {
                "VALID"
            } else {
                "REVOKED"
            };
            // Each acknowledged secret still works (rotated-out ones in their grace period):
            // a rotation committed both halves (new digest on the key, old one retired).
            for s in &kl.secrets {
                assert_eq!(
                    verify_code(&http, &kg, s).await,
                    expect,
                    "{} {status}",
                    kl.id
                );
                secrets_checked += 1;
            }
        }
    }
    let uncertain_creates: HashSet<&String> =
        logs.iter().flat_map(|l| &l.uncertain_creates).collect();
    for (id, k) in &keys {
        if *id == edge_id || acked_keys.contains(id) {
            continue;
        }
        let name = k["name"].as_str().unwrap().to_owned();
        assert!(uncertain_creates.contains(&name), "a key nobody sent: {k}");
        committed_uncertain += 1;
    }

    // The feed: a fresh snapshot holds exactly the active keys' current secrets plus one
    // rotated-out secret per rotation (all still in grace); the reader that followed deltas
    // across the kills ends on the same set.
    let (rev, snap) = snapshot(&http, &kg, &edge).await;
    // Each write here (no exchanged children, so no cascades) is one transaction with one
    // audit row and one revision: the counter and the log agree.
    assert_eq!(rev as usize, audit.len(), "revisions vs audit rows");
    let mut per_key: BTreeMap<&str, usize> = BTreeMap::new();
    for id in snap.values() {
        *per_key.entry(id.as_str()).or_default() += 1;
    }
    let mut want_per_key = BTreeMap::new();
    for (id, k) in &keys {
        if k["status"] == "active" && k["kind"] != "edge" {
            let rotations = audit_by_key[id]
                .iter()
                .filter(|r| r["action"] == "key.rotate")
                .count();
            want_per_key.insert(id.as_str(), 1 + rotations);
        }
    }
    assert_eq!(
        per_key, want_per_key,
        "feed entries per key vs the database"
    );
    for log in &logs {
        for kl in &log.keys {
            let active = keys[&kl.id]["status"] == "active";
            for s in &kl.secrets {
                assert_eq!(
                    snap.contains_key(&Digest::of(s)),
                    active,
                    "secret of {} in the feed",
                    kl.id
                );
            }
        }
    }
    // Catch the follower up with `since` only.
    loop {
        let resp = http
            .get(kg.url(&format!("/v1/keyset?since={followed_rev}")))
            .bearer_auth(&edge)
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::NOT_MODIFIED {
            break;
        }
        assert_eq!(resp.status(), StatusCode::OK);
        followed_rev = apply(
            &mut followed,
            wire::decode(&resp.bytes().await.unwrap()).unwrap(),
        );
    }
    assert_eq!(followed_rev, rev);
    assert_eq!(followed, snap, "the delta follower equals a fresh snapshot");
    assert!(kg.is_running());

    let acked: usize = logs.iter().map(|l| l.acked_writes).sum();
    let refused: usize = logs.iter().map(|l| l.refused_writes).sum();
    let in_flight: usize = logs.iter().map(|l| l.in_flight_writes).sum();
    let mut rr = restart_to_ready.clone();
    rr.sort();
    let figures = format!(
        "fault sigkill {engine}: seed {seed}, {ROUNDS} SIGKILLs survived, {CLIENTS} clients, \
         {acked} writes acknowledged and all present, {in_flight} cut off in flight and \
         {refused} refused while down ({committed_uncertain} of these committed whole, the rest \
         absent), {} keys, {} audit \
         rows, {secrets_checked} secrets verified, feed revision {rev} ({feed_answers} answers \
         followed across kills), restart-to-ready median {:?} max {:?}",
        keys.len(),
        audit.len(),
        rr[rr.len() / 2],
        rr[rr.len() - 1],
    );
    println!("{figures}");
    assert!(acked > 0 && in_flight > 0, "the kills hit in-flight writes");
    figures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("faults.db").display());
    sigkill_loop("sqlite", url, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let url = PgCluster::shared().fresh_database().unwrap();
    sigkill_loop("postgres", url, dir.path()).await;
}

/// One request during the outage: (what, status, body, Retry-After, elapsed).
async fn outage_call(
    http: reqwest::Client,
    what: &'static str,
    method: Method,
    url: String,
    token: String,
    body: Option<Value>,
) -> (&'static str, StatusCode, Value, Option<String>, Duration) {
    let t = Instant::now();
    let mut req = http.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: no answer during the outage (hang?): {e}"));
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.json().await.unwrap_or(Value::Null);
    (what, status, body, retry, t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_answers_503_and_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    // A cluster of its own: this test stops it.
    let cluster = Arc::new(PgCluster::start().unwrap());
    let url = cluster.fresh_database().unwrap();
    // Any request that hangs past this fails the test.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut kg = start_keygate(&url, dir.path(), "outage", &http).await;
    let keys_url = kg.url("/v1/keys");
    let create = |name: &str, kind: &str| {
        send(
            &http,
            Method::POST,
            keys_url.clone(),
            json!({"name": name, "kind": kind}),
        )
    };
    let Outcome::Answered(StatusCode::CREATED, v) = create("edge", "edge").await else {
        panic!("edge key")
    };
    let edge = v["secret"].as_str().unwrap().to_owned();
    let mut keys = Vec::new();
    for i in 0..5 {
        let Outcome::Answered(StatusCode::CREATED, v) = create(&format!("k{i}"), "workspace").await
        else {
            panic!("key {i}")
        };
        keys.push((
            v["key"]["id"].as_str().unwrap().to_owned(),
            v["secret"].as_str().unwrap().to_owned(),
        ));
    }
    let before = all_pages(&http, &kg, "/v1/keys").await;
    let audit_before = all_pages(&http, &kg, "/v1/audit").await.len();
    let (rev_before, set_before) = snapshot(&http, &kg, &edge).await;
    assert_eq!(set_before.len(), 5);

    // The database goes away under the running control plane.
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.stop())
        .await
        .unwrap()
        .unwrap();
    let (id0, _) = keys[0].clone();
    let (_, secret4) = keys[4].clone();
    let calls = vec![
        outage_call(
            http.clone(),
            "list keys",
            Method::GET,
            kg.url("/v1/keys"),
            ADMIN.into(),
            None,
        ),
        outage_call(
            http.clone(),
            "show key",
            Method::GET,
            kg.url(&format!("/v1/keys/{id0}")),
            ADMIN.into(),
            None,
        ),
        outage_call(
            http.clone(),
            "create key",
            Method::POST,
            kg.url("/v1/keys"),
            ADMIN.into(),
            Some(json!({"name": "during-outage"})),
        ),
        outage_call(
            http.clone(),
            "revoke key",
            Method::POST,
            kg.url(&format!("/v1/keys/{id0}/revoke")),
            ADMIN.into(),
            Some(json!({})),
        ),
        outage_call(
            http.clone(),
            "audit",
            Method::GET,
            kg.url("/v1/audit"),
            ADMIN.into(),
            None,
        ),
        outage_call(
            http.clone(),
            "verify (not cached)",
            Method::POST,
            kg.url("/v1/keys/verify"),
            ADMIN.into(),
            Some(json!({"key": secret4})),
        ),
        outage_call(
            http.clone(),
            "key-set feed",
            Method::GET,
            kg.url("/v1/keyset"),
            edge.clone(),
            None,
        ),
        outage_call(
            http.clone(),
            "workspace-key call",
            Method::GET,
            kg.url("/v1/keys"),
            keys[1].1.clone(),
            None,
        ),
    ];
    let answers = futures_util::future::join_all(calls).await;
    let mut slowest = Duration::ZERO;
    for (what, st, body, retry, took) in answers {
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
        assert_eq!(
            body["error"]["code"], "DATABASE_UNAVAILABLE",
            "{what}: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert_eq!(retry.as_deref(), Some("1"), "{what}: Retry-After");
        slowest = slowest.max(took);
    }
    let r = http.get(kg.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "unavailable");
    let r = http.get(kg.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the process itself is healthy");
    assert!(kg.is_running());

    // The database returns on the same port: the same process recovers by itself.
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.restart())
        .await
        .unwrap()
        .unwrap();
    let t = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let r = http
            .get(kg.url("/v1/keys"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            break;
        }
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(t.elapsed() < Duration::from_secs(60), "no recovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovery = t.elapsed();
    assert!(
        kg.is_running(),
        "recovered without a restart of the control plane"
    );
    let r = http.get(kg.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // All the data is there, and the refused writes changed nothing.
    assert_eq!(all_pages(&http, &kg, "/v1/keys").await, before);
    assert_eq!(all_pages(&http, &kg, "/v1/audit").await.len(), audit_before);
    let (rev_after, set_after) = snapshot(&http, &kg, &edge).await;
    assert_eq!((rev_after, &set_after), (rev_before, &set_before));
    for (id, secret) in &keys {
        assert_eq!(verify_code(&http, &kg, secret).await, "VALID", "{id}");
    }
    // And it writes again.
    let Outcome::Answered(StatusCode::CREATED, _) = create("after-outage", "workspace").await
    else {
        panic!("create after recovery")
    };
    let (rev_new, set_new) = snapshot(&http, &kg, &edge).await;
    assert_eq!((rev_new, set_new.len()), (rev_before + 1, 6));
    println!(
        "fault db-outage postgres: 8 API calls during the outage all 503 DATABASE_UNAVAILABLE \
         (slowest answer {slowest:?}), /readyz 503, /healthz 200; recovered {recovery:?} after \
         the database came back ({attempts} polls), same process, no data lost"
    );
}
