//! The real `keygate_plugin.wasm` in the host harness (virtual clock, several workers) against an
//! in-process fake key-set feed built with the protocol crate's wire encoders.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use keygate_host_harness::{
    CalloutReply, CalloutRequest, CalloutResponse, Cluster, Disposition, Harness, HarnessError,
    Plugin, Request, StreamOutcome,
};
use keygate_plugin_artifacts::KEYGATE_PLUGIN_WASM;
use keygate_protocol::KeyId;
use keygate_protocol::key;
use keygate_protocol::wire::{CONTENT_TYPE, Delta, KeyEntry, Snapshot};

fn plugin() -> Arc<Plugin> {
    static PLUGIN: OnceLock<Arc<Plugin>> = OnceLock::new();
    PLUGIN
        .get_or_init(|| Arc::new(Plugin::load_file(KEYGATE_PLUGIN_WASM).unwrap()))
        .clone()
}

/// The harness's virtual clock starts here (Unix seconds); expiries are relative to it.
fn start_secs(h: &Harness) -> u64 {
    h.now_nanos() / 1_000_000_000
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Up,
    Reset,
    Garbage,
    Truncated,
    Unauthorized,
}

#[derive(Debug)]
struct Feed {
    mode: Mode,
    revision: u64,
    entries: Vec<KeyEntry>,
    /// The last change as a delta from `revision - 1`, when it was one.
    last_delta: Option<Vec<u8>>,
    keyset_calls: Vec<String>,
    usage_posts: Vec<serde_json::Value>,
}

impl Feed {
    fn snapshot(&self) -> Vec<u8> {
        Snapshot {
            revision: self.revision,
            entries: self.entries.clone(),
        }
        .encode()
        .unwrap()
    }

    fn answer(&mut self, req: &CalloutRequest) -> CalloutReply {
        let path = req.header(":path").unwrap_or_default().to_owned();
        if path == "/v1/usage" {
            self.usage_posts
                .push(serde_json::from_slice(&req.body).unwrap());
            return CalloutReply::status(202);
        }
        self.keyset_calls.push(path.clone());
        if req.header("authorization") != Some("Bearer kg_edge_secret") {
            return CalloutReply::status(401);
        }
        let since: Option<u64> = path
            .split_once('?')
            .and_then(|(_, q)| q.split('&').find_map(|p| p.strip_prefix("since=")))
            .map(|v| v.parse().unwrap());
        let ok = |body: Vec<u8>, rev: u64| {
            CalloutReply::response(CalloutResponse {
                headers: vec![
                    ("content-type".into(), CONTENT_TYPE.into()),
                    ("x-keygate-revision".into(), rev.to_string().into()),
                ],
                body,
                trailers: Vec::new(),
            })
        };
        match self.mode {
            Mode::Reset => CalloutReply::reset(),
            Mode::Unauthorized => CalloutReply::status(401),
            Mode::Garbage => ok(
                b"\x00\x01garbage, not a key set".to_vec(),
                self.revision + 1,
            ),
            Mode::Truncated => {
                let s = self.snapshot();
                ok(s[..s.len() / 2].to_vec(), self.revision)
            }
            Mode::Up => match since {
                Some(s) if s == self.revision => CalloutReply::status(304),
                Some(s) if s + 1 == self.revision && self.last_delta.is_some() => {
                    ok(self.last_delta.clone().unwrap(), self.revision)
                }
                _ => ok(self.snapshot(), self.revision),
            },
        }
    }

    fn revoke(&mut self, digest: keygate_protocol::Digest) {
        self.entries.retain(|e| e.digest != digest);
        self.last_delta = Some(
            Delta {
                base_revision: self.revision,
                revision: self.revision + 1,
                upserts: Vec::new(),
                removals: vec![digest],
            }
            .encode()
            .unwrap(),
        );
        self.revision += 1;
    }
}

struct TestKey {
    secret: String,
    entry: KeyEntry,
}

fn make_key(
    n: u8,
    owner: &str,
    scopes: &[&str],
    resources: &[&str],
    expires_at: Option<u64>,
) -> TestKey {
    let k = key::generate("kg_live").unwrap();
    TestKey {
        secret: k.expose_secret().to_owned(),
        entry: KeyEntry {
            policy: Default::default(),
            digest: k.digest(),
            key_id: KeyId::from_bytes([n; 16]),
            owner: owner.into(),
            expires_at,
            scopes: scopes.iter().map(|s| (*s).into()).collect(),
            resources: resources.iter().map(|s| (*s).into()).collect(),
        },
    }
}

struct Setup {
    h: Harness,
    feed: Arc<Mutex<Feed>>,
    reader: TestKey,
    admin: TestKey,
    short_lived: TestKey,
}

const BASE_CONFIG: &str = r#""cluster":"keygate","authority":"keygate.internal","edge_key":"kg_edge_secret",
    "routes":[
      {"path_prefix":"/health","anonymous":true},
      {"path_prefix":"/repos/","methods":["GET"],"required_scopes":["repo:read"],"resource_from_path_segment":1},
      {"path_prefix":"/repos/","required_scopes":["repo:write"],"resource_from_path_segment":1}
    ]"#;

fn setup(workers: usize, mode: Mode, extra: &str) -> Setup {
    // The harness's default virtual start is fixed; read it from a throwaway build-free clock.
    let start = keygate_host_harness::DEFAULT_VIRTUAL_START_NANOS / 1_000_000_000;
    let reader = make_key(1, "alice", &["repo:read"], &["acme"], None);
    let admin = make_key(2, "root", &["repo:read", "repo:write"], &[], None);
    let short_lived = make_key(3, "bob", &["repo:read"], &[], Some(start + 90));
    let feed = Arc::new(Mutex::new(Feed {
        mode,
        revision: 7,
        entries: vec![
            reader.entry.clone(),
            admin.entry.clone(),
            short_lived.entry.clone(),
        ],
        last_delta: None,
        keyset_calls: Vec::new(),
        usage_posts: Vec::new(),
    }));
    let f = feed.clone();
    let config = format!(
        "{{{BASE_CONFIG}{}{extra}}}",
        if extra.is_empty() { "" } else { "," }
    );
    let h = Harness::builder_shared(plugin())
        .workers(workers)
        .plugin_configuration(config.into_bytes())
        .cluster(
            "keygate",
            Cluster::handler(move |req| f.lock().unwrap().answer(req)),
        )
        .build()
        .unwrap();
    assert_eq!(start_secs(&h), start);
    Setup {
        h,
        feed,
        reader,
        admin,
        short_lived,
    }
}

fn get(h: &mut Harness, worker: usize, path: &str, key: Option<&str>) -> StreamOutcome {
    let mut r = Request::get(path);
    if let Some(k) = key {
        r = r.header("x-api-key", k);
    }
    h.run_request_on(worker, r).unwrap()
}

/// (status, code) of a local reply.
fn denied(o: &StreamOutcome) -> (u16, String) {
    assert_eq!(o.disposition, Disposition::LocalResponse, "{o:?}");
    let lr = o.local_response.as_ref().unwrap();
    let body: serde_json::Value = serde_json::from_slice(&lr.body).unwrap();
    (
        lr.status,
        body["error"]["code"].as_str().unwrap().to_owned(),
    )
}

fn local_header<'a>(o: &'a StreamOutcome, name: &str) -> Option<&'a str> {
    o.local_response
        .as_ref()?
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_text())
}

fn metric(h: &Harness, name: &str) -> u64 {
    h.metric(name).map_or(0, |m| m.value)
}

/// A decision counter after one timer tick: the filter adds its decisions to the host's
/// counters on the tick (100 ms is at least one tick here).
fn decision_count(h: &mut Harness, name: &str) -> u64 {
    h.advance(Duration::from_millis(100));
    metric(h, name)
}

/// The module exports exactly the callbacks the filter implements: no request pays a call into
/// the VM for a callback the SDK would answer with its default.
#[test]
fn the_module_exports_only_the_filters_own_callbacks() {
    let module = std::fs::read(KEYGATE_PLUGIN_WASM).unwrap();
    let mut callbacks: Vec<String> = keygate_plugin_artifacts::exports::names(&module)
        .unwrap()
        .into_iter()
        .filter(|name| name.starts_with("proxy_on_"))
        .collect();
    callbacks.sort();
    let mut expected: Vec<&str> = keygate_plugin::callbacks::CALLBACKS.to_vec();
    expected.sort_unstable();
    assert_eq!(callbacks, expected);
    assert!(
        !callbacks
            .iter()
            .any(|c| c == "proxy_on_response_headers" || c == "proxy_on_log")
    );
}

#[test]
fn fails_closed_before_the_first_sync() {
    let mut s = setup(2, Mode::Reset, "");
    let key = s.reader.secret.clone();
    s.h.advance(Duration::from_secs(3));
    for w in 0..2 {
        let o = get(&mut s.h, w, "/repos/acme/x", Some(&key));
        assert_eq!(denied(&o), (503, "keyset_unavailable".into()));
    }
    // anonymous routes need no key set
    let o = get(&mut s.h, 0, "/health", None);
    assert_eq!(o.disposition, Disposition::Completed);
    assert!(metric(&s.h, "keygate.sync.failure.unreachable") >= 1);
    assert_eq!(
        decision_count(&mut s.h, "keygate.decision.deny.keyset_unavailable"),
        2
    );
}

#[test]
fn allowed_requests_carry_identity_and_no_secret_and_spoofs_are_stripped() {
    let mut s = setup(2, Mode::Up, "");
    s.h.advance(Duration::from_millis(500));
    for w in 0..2 {
        let r = Request::get("/repos/acme/widgets")
            .header("x-api-key", &s.reader.secret)
            .header("x-keygate-owner", "mallory")
            .header("x-keygate-key-id", "key_ffffffffffffffffffffffffffffffff")
            .header("x-keygate-admin", "true")
            .header("x-keygate-owner", "eve");
        let o = s.h.run_request_on(w, r).unwrap();
        assert_eq!(o.disposition, Disposition::Completed, "worker {w}: {o:?}");
        assert_eq!(
            o.request_header("x-keygate-key-id"),
            Some(s.reader.entry.key_id.to_string().as_str())
        );
        assert_eq!(o.request_header("x-keygate-owner"), Some("alice"));
        assert_eq!(o.request_header("x-keygate-scopes"), Some("repo:read"));
        assert_eq!(o.request_header("x-keygate-admin"), None);
        assert_eq!(o.request_header("x-api-key"), None);
        let fwd = o.request.as_ref().unwrap();
        assert!(
            fwd.headers
                .iter()
                .all(|(_, v)| !v.to_str_lossy().contains(&s.reader.secret)),
            "secret forwarded"
        );
        // exactly one of each identity header, the filter's (spoofs removed, then added)
        for name in ["x-keygate-key-id", "x-keygate-owner", "x-keygate-scopes"] {
            assert_eq!(
                fwd.headers.iter().filter(|(k, _)| k == name).count(),
                1,
                "{name}"
            );
        }
    }
    // bearer: only that Authorization header goes
    let r = Request::get("/repos/acme/widgets")
        .header("authorization", format!("Bearer {}", s.admin.secret));
    let o = s.h.run_request_on(0, r).unwrap();
    assert_eq!(o.disposition, Disposition::Completed);
    assert_eq!(o.request_header("authorization"), None);
    assert_eq!(o.request_header("x-keygate-owner"), Some("root"));
    // spoofed headers are stripped on anonymous routes too
    let o =
        s.h.run_request_on(
            1,
            Request::get("/health").header("x-keygate-owner", "mallory"),
        )
        .unwrap();
    assert_eq!(o.disposition, Disposition::Completed);
    assert_eq!(o.request_header("x-keygate-owner"), None);
    assert_eq!(
        decision_count(&mut s.h, "keygate.decision.allow.allowed"),
        3
    );
    assert_eq!(
        decision_count(&mut s.h, "keygate.decision.allow.anonymous"),
        1
    );
    assert_eq!(metric(&s.h, "keygate.keyset.keys"), 3);
    assert_eq!(metric(&s.h, "keygate.keyset.revision"), 7);
}

#[test]
fn a_cookie_key_is_stripped_and_the_other_cookies_reach_upstream_byte_for_byte() {
    let mut s = setup(1, Mode::Up, r#""key_sources":[{"cookie":"kg"}]"#);
    s.h.advance(Duration::from_millis(500));
    let cookies = |o: &StreamOutcome| -> Vec<Vec<u8>> {
        let fwd = o.request.as_ref().expect("allowed requests go upstream");
        fwd.headers
            .iter()
            .filter(|(k, _)| k == "cookie")
            .map(|(_, v)| v.as_bytes().to_vec())
            .collect()
    };
    // UTF-8 cookies: the view is exact
    let r = Request::get("/repos/acme/x").header(
        "cookie",
        format!("theme=dark; kg={}; lang=en", s.reader.secret),
    );
    let o = s.h.run_request(r).unwrap();
    assert_eq!(o.disposition, Disposition::Completed, "{o:?}");
    assert_eq!(o.request_header("x-keygate-owner"), Some("alice"));
    assert_eq!(cookies(&o), [b"theme=dark; lang=en".to_vec()]);
    // Latin-1 cookies next to the key's, over two headers: stripped from the bytes sent
    let mut first = b"a=caf\xe9;\tkg=".to_vec();
    first.extend_from_slice(s.reader.secret.as_bytes());
    let r = Request::get("/repos/acme/x")
        .header("cookie", first)
        .header("x-other", &b"\xff"[..])
        .header("cookie", &b"b=\xe9\xe2 ; kg=old"[..]);
    let o = s.h.run_request(r).unwrap();
    assert_eq!(o.disposition, Disposition::Completed, "{o:?}");
    assert_eq!(cookies(&o), [b"a=caf\xe9; b=\xe9\xe2".to_vec()]);
    assert_eq!(o.request_header_bytes("x-other"), Some(&b"\xff"[..]));
    // the key was the only cookie: the header goes
    let r = Request::get("/repos/acme/x").header("cookie", format!("kg={}", s.reader.secret));
    let o = s.h.run_request(r).unwrap();
    assert_eq!(o.disposition, Disposition::Completed, "{o:?}");
    assert!(cookies(&o).is_empty());
    assert_eq!(
        decision_count(&mut s.h, "keygate.decision.allow.allowed"),
        3
    );
}

#[test]
fn a_header_map_the_host_will_not_hand_over_is_denied_without_a_trap() {
    let mut s = setup(1, Mode::Up, "");
    s.h.advance(Duration::from_millis(500));
    // Over the harness's limit for one buffer, so the host refuses to copy the map into the
    // guest (the SDK's `get_map` panics on that status; the filter reads the map itself). An
    // anonymous path and a valid key: neither may let it through unread.
    let r = Request::get("/health")
        .header("x-api-key", &s.reader.secret)
        .header(
            "x-filler",
            "a".repeat(keygate_host_harness::MAX_GUEST_BUFFER + 1),
        );
    let o = s.h.run_request_on(0, r).unwrap();
    assert_eq!(denied(&o), (401, "missing_key".into()));
    assert!(o.request.is_none(), "nothing reached the upstream");
    assert!(s.h.traps().is_empty(), "{:?}", s.h.traps());
    let o = get(&mut s.h, 0, "/repos/acme/x", Some(&s.reader.secret));
    assert_eq!(o.disposition, Disposition::Completed, "{o:?}");
}

#[test]
fn every_deny_has_its_status_code_and_challenge() {
    let mut s = setup(1, Mode::Up, "");
    s.h.advance(Duration::from_millis(500));
    let o = get(&mut s.h, 0, "/repos/acme/x", None);
    assert_eq!(denied(&o), (401, "missing_key".into()));
    assert_eq!(
        local_header(&o, "www-authenticate"),
        Some(r#"Bearer realm="keygate""#)
    );
    assert_eq!(local_header(&o, "content-type"), Some("application/json"));

    let mut bad = s.reader.secret.clone();
    let last = bad.pop().unwrap();
    bad.push(if last == '0' { '1' } else { '0' });
    let o = get(&mut s.h, 0, "/repos/acme/x", Some(&bad));
    assert_eq!(denied(&o), (401, "malformed_key".into()));
    assert!(
        local_header(&o, "www-authenticate")
            .unwrap()
            .contains(r#"error="invalid_token""#)
    );

    let unknown = key::generate("kg_live").unwrap();
    let o = get(&mut s.h, 0, "/repos/acme/x", Some(unknown.expose_secret()));
    assert_eq!(denied(&o), (401, "unknown_key".into()));

    let o =
        s.h.run_request_on(
            0,
            Request::new("POST", "/repos/acme/x").header("x-api-key", &s.reader.secret),
        )
        .unwrap();
    assert_eq!(denied(&o), (403, "insufficient_scope".into()));
    assert!(
        local_header(&o, "www-authenticate")
            .unwrap()
            .contains(r#"error="insufficient_scope""#)
    );

    let o = get(&mut s.h, 0, "/repos/globex/x", Some(&s.reader.secret));
    assert_eq!(denied(&o), (403, "resource_not_allowed".into()));

    // expiry follows the (virtual) clock between syncs
    let o = get(&mut s.h, 0, "/repos/acme/x", Some(&s.short_lived.secret));
    assert_eq!(o.disposition, Disposition::Completed);
    s.h.advance(Duration::from_secs(91));
    let o = get(&mut s.h, 0, "/repos/acme/x", Some(&s.short_lived.secret));
    assert_eq!(denied(&o), (401, "expired_key".into()));

    for code in ["missing_key", "malformed_key", "unknown_key", "expired_key"] {
        assert_eq!(
            decision_count(&mut s.h, &format!("keygate.decision.deny.{code}")),
            1,
            "{code}"
        );
    }
}

#[test]
fn a_revocation_reaches_every_worker_within_one_interval() {
    let mut s = setup(4, Mode::Up, "");
    s.h.advance(Duration::from_millis(500));
    for w in 0..4 {
        assert_eq!(
            get(&mut s.h, w, "/repos/acme/x", Some(&s.reader.secret)).disposition,
            Disposition::Completed
        );
    }
    s.feed.lock().unwrap().revoke(s.reader.entry.digest);
    s.h.advance(Duration::from_millis(1300));
    for w in 0..4 {
        let o = get(&mut s.h, w, "/repos/acme/x", Some(&s.reader.secret));
        assert_eq!(denied(&o), (401, "unknown_key".into()), "worker {w}");
        assert_eq!(
            get(&mut s.h, w, "/repos/acme/x", Some(&s.admin.secret)).disposition,
            Disposition::Completed
        );
    }
    assert_eq!(metric(&s.h, "keygate.keyset.revision"), 8);
    let calls = s.feed.lock().unwrap().keyset_calls.clone();
    assert!(calls.iter().any(|p| p == "/v1/keyset?since=7"), "{calls:?}");
}

#[test]
fn four_workers_make_one_sync_call_per_interval() {
    let mut s = setup(4, Mode::Up, "");
    s.h.advance(Duration::from_secs(10));
    let calls = s.feed.lock().unwrap().keyset_calls.len();
    // The default interval is 500 ms: t = 0 (configure), 0.5 s, …, 10 s
    assert!(
        (20..=21).contains(&calls),
        "{calls} calls in 10 s with 4 workers"
    );
    let workers: std::collections::HashSet<usize> =
        s.h.callouts()
            .iter()
            .filter(|c| {
                c.request
                    .header(":path")
                    .is_some_and(|p| p.starts_with("/v1/keyset"))
            })
            .map(|c| c.worker)
            .collect();
    assert_eq!(workers.len(), 1, "one leader: {workers:?}");
}

#[test]
fn outage_is_bridged_until_max_staleness_then_fails_closed() {
    let mut s = setup(2, Mode::Up, r#""max_staleness_s":120"#);
    s.h.advance(Duration::from_millis(500));
    s.feed.lock().unwrap().mode = Mode::Reset;
    s.h.advance(Duration::from_secs(118));
    for w in 0..2 {
        assert_eq!(
            get(&mut s.h, w, "/repos/acme/x", Some(&s.admin.secret)).disposition,
            Disposition::Completed
        );
    }
    s.h.advance(Duration::from_secs(3));
    for w in 0..2 {
        let o = get(&mut s.h, w, "/repos/acme/x", Some(&s.admin.secret));
        assert_eq!(denied(&o), (503, "keyset_stale".into()), "worker {w}");
    }
    assert!(metric(&s.h, "keygate.keyset.staleness_seconds") >= 120);
    assert!(metric(&s.h, "keygate.sync.failure.unreachable") >= 3);
    // the control plane comes back: allowed again after the next (backed-off) poll
    s.feed.lock().unwrap().mode = Mode::Up;
    s.h.advance(Duration::from_secs(40));
    assert_eq!(
        get(&mut s.h, 0, "/repos/acme/x", Some(&s.admin.secret)).disposition,
        Disposition::Completed
    );
}

#[test]
fn failure_mode_open_lets_requests_through_without_identity_after_max_staleness() {
    let mut s = setup(1, Mode::Up, r#""max_staleness_s":60,"failure_mode":"open""#);
    s.h.advance(Duration::from_millis(500));
    s.feed.lock().unwrap().mode = Mode::Reset;
    s.h.advance(Duration::from_secs(61));
    let unknown = key::generate("kg_live").unwrap();
    let r = Request::get("/repos/acme/x")
        .header("x-api-key", unknown.expose_secret())
        .header("x-keygate-owner", "mallory");
    let o = s.h.run_request_on(0, r).unwrap();
    assert_eq!(o.disposition, Disposition::Completed);
    assert_eq!(o.request_header("x-keygate-owner"), None);
    assert_eq!(
        decision_count(&mut s.h, "keygate.decision.allow.fail_open"),
        1
    );
}

#[test]
fn garbage_truncated_and_unauthorized_feeds_keep_the_good_set() {
    let mut s = setup(2, Mode::Up, "");
    s.h.advance(Duration::from_millis(500));
    for mode in [Mode::Garbage, Mode::Truncated, Mode::Unauthorized] {
        s.feed.lock().unwrap().mode = mode;
        s.feed.lock().unwrap().revoke(s.admin.entry.digest); // a change the filter must not see
        // long enough for a poll despite the growing backoff (interval × 2ⁿ, at most 30 s)
        s.h.advance(Duration::from_secs(35));
        for w in 0..2 {
            let o = get(&mut s.h, w, "/repos/acme/x", Some(&s.admin.secret));
            assert_eq!(
                o.disposition,
                Disposition::Completed,
                "{mode:?} replaced the set on worker {w}"
            );
        }
        // put the admin key back for the next round
        let mut f = s.feed.lock().unwrap();
        f.entries.push(s.admin.entry.clone());
        f.last_delta = None;
    }
    assert!(metric(&s.h, "keygate.sync.failure.garbled") >= 2);
    assert!(metric(&s.h, "keygate.sync.failure.unauthorized") >= 1);
    assert_eq!(metric(&s.h, "keygate.keyset.revision"), 7);
    let warns = s.h.logs_at(keygate_host_harness::LogLevel::Warn);
    assert!(warns.iter().any(|l| l.contains("garbled")), "{warns:?}");
    assert!(warns.iter().all(|l| !l.contains("kg_edge_secret")));
}

#[test]
fn usage_is_reported_in_batches() {
    let mut s = setup(1, Mode::Up, r#""usage_report_interval_ms":2000"#);
    s.h.advance(Duration::from_millis(500));
    for _ in 0..3 {
        get(&mut s.h, 0, "/repos/acme/x", Some(&s.reader.secret));
    }
    get(&mut s.h, 0, "/repos/acme/x", Some(&s.admin.secret));
    get(&mut s.h, 0, "/repos/globex/x", Some(&s.reader.secret)); // 403: not counted
    s.h.advance(Duration::from_secs(3));
    let posts = s.feed.lock().unwrap().usage_posts.clone();
    assert_eq!(posts.len(), 1, "{posts:?}");
    let entries = posts[0]["entries"].as_array().unwrap();
    let count = |id: &KeyId| {
        entries
            .iter()
            .find(|e| e["key_id"] == id.to_string())
            .map(|e| e["count"].as_u64().unwrap())
    };
    assert_eq!(count(&s.reader.entry.key_id), Some(3));
    assert_eq!(count(&s.admin.entry.key_id), Some(1));
    assert!(posts[0]["batch_id"].as_str().is_some_and(|b| !b.is_empty()));
    assert_eq!(metric(&s.h, "keygate.usage.batches_sent"), 1);
}

#[test]
fn an_invalid_configuration_fails_configure() {
    let err = Harness::builder_shared(plugin())
        .plugin_configuration(
            br#"{"cluster":"keygate","authority":"a","edge_key":"k","long_poll_wait_s":99}"#
                .to_vec(),
        )
        .build()
        .unwrap_err();
    assert!(matches!(err, HarnessError::ConfigureFailed), "{err}");
}
