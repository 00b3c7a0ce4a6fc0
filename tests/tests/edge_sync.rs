//! Sync behaviour of the real filter `.wasm` against the real control plane over HTTP: one
//! control-plane call per interval with 4 workers, outages bridged up to the maximum staleness
//! and then the failure mode, garbled / truncated / unauthorized feeds never replacing the good
//! set, long-poll in real time, the feed on PostgreSQL, and a PostgreSQL outage under the control
//! plane (the filter keeps its set; everything recovers by itself).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate_e2e::{
    CLUSTER, ControlPlane, decision_count, denial, edge_harness, eventually, harness_builder,
    keyset_callouts, keyset_calls, metric,
};
use keygate_host_harness::{
    CalloutReply, CalloutRequest, CalloutResponse, Cluster, Disposition, Harness, HeaderMap,
    LogLevel, Request, StreamOutcome,
};
use reqwest::Method;
use serde_json::json;

fn get(h: &mut Harness, worker: usize, key: &str) -> StreamOutcome {
    h.run_request_on(
        worker,
        Request::get("/repos/acme/x").header("x-api-key", key),
    )
    .unwrap_or_else(|e| panic!("run_request: {e}"))
}

fn assert_allowed(o: &StreamOutcome) {
    assert_eq!(
        o.disposition,
        Disposition::Completed,
        "expected the request to pass: {o:?}"
    );
}

#[test]
fn four_workers_make_one_sync_call_per_interval() {
    let cp = ControlPlane::start_sqlite();
    let k = cp
        .api
        .create_key(json!({"name": "k", "scopes": ["repo:read"]}));
    // An explicit 1 s interval (the default is 500 ms): 10 s are 10 intervals.
    let mut h = edge_harness(&cp, 4, r#""sync_interval_ms":1000"#);
    h.advance(Duration::from_millis(500));
    let before = keyset_calls(&h);
    assert!((1..=2).contains(&before), "{before} calls at start-up");
    h.advance(Duration::from_secs(10));
    let calls = keyset_calls(&h) - before;
    assert!(
        (9..=11).contains(&calls),
        "{calls} key-set calls in 10 intervals with 4 workers"
    );
    let callers: std::collections::HashSet<usize> =
        keyset_callouts(&h).iter().map(|c| c.worker).collect();
    assert_eq!(
        callers.len(),
        1,
        "one leader calls the control plane: {callers:?}"
    );
    // Every worker has the set (picked up from shared data) and enforces a revocation.
    for w in 0..4 {
        assert_allowed(&get(&mut h, w, &k.secret));
    }
    cp.api.key_action(&k.id, "revoke");
    h.advance(Duration::from_millis(1300));
    for w in 0..4 {
        assert_eq!(
            denial(&get(&mut h, w, &k.secret)),
            (401, "unknown_key".into()),
            "worker {w}"
        );
    }
    assert!(
        metric(&h, "keygate.sync.followed") >= 3,
        "followers picked revisions up from shared data"
    );
}

#[test]
fn a_control_plane_outage_keeps_the_last_good_set_until_max_staleness_then_fails_closed() {
    let mut cp = ControlPlane::start_sqlite();
    let k = cp
        .api
        .create_key(json!({"name": "k", "scopes": ["repo:read"]}));
    let mut h = edge_harness(&cp, 2, r#""max_staleness_s":120"#);
    h.advance(Duration::from_millis(500));
    assert_allowed(&get(&mut h, 0, &k.secret));
    cp.stop();
    h.advance(Duration::from_secs(118));
    for w in 0..2 {
        assert_allowed(&get(&mut h, w, &k.secret));
    }
    assert!(
        metric(&h, "keygate.sync.failure.unreachable") >= 3,
        "{:?}",
        h.metrics()
    );
    h.advance(Duration::from_secs(3));
    for w in 0..2 {
        assert_eq!(
            denial(&get(&mut h, w, &k.secret)),
            (503, "keyset_stale".into()),
            "worker {w}"
        );
    }
    assert!(metric(&h, "keygate.keyset.staleness_seconds") >= 120);
    // Anonymous routes still pass.
    let o = h.run_request_on(0, Request::get("/health")).unwrap();
    assert_allowed(&o);
}

#[test]
fn failure_mode_open_passes_requests_without_identity_after_max_staleness() {
    let mut cp = ControlPlane::start_sqlite();
    let k = cp
        .api
        .create_key(json!({"name": "k", "scopes": ["repo:read"], "owner_id": "alice"}));
    let mut h = edge_harness(&cp, 1, r#""max_staleness_s":60,"failure_mode":"open""#);
    h.advance(Duration::from_millis(500));
    assert_eq!(
        get(&mut h, 0, &k.secret).request_header("x-keygate-owner"),
        Some("alice")
    );
    cp.stop();
    h.advance(Duration::from_secs(61));
    let o = h
        .run_request_on(
            0,
            Request::get("/repos/acme/x")
                .header("x-api-key", &k.secret)
                .header("x-keygate-owner", "mallory"),
        )
        .unwrap();
    assert_allowed(&o);
    assert_eq!(
        o.request_header("x-keygate-owner"),
        None,
        "no identity when failing open"
    );
    assert_eq!(
        decision_count(&mut h, "keygate.decision.allow.fail_open"),
        1
    );
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Forward to the control plane as is.
    Proxy,
    /// Forward, then flip bytes in the middle of a 200 body.
    Garbled,
    /// Forward, then cut a 200 body in half.
    Truncated,
    /// Forward with a credential that is not an edge key (the control plane refuses it).
    WrongKey,
}

/// An in-process cluster that relays the filter's calls to the real control plane and spoils
/// the answers according to `mode`.
fn relay(cp: &ControlPlane, mode: Arc<Mutex<Mode>>, wrong_key: String) -> Cluster {
    let rt = cp.runtime();
    let base = cp.base.clone();
    let http = keygate_e2e::reqwest::Client::new();
    Cluster::handler(move |req: &CalloutRequest| {
        let mode = *mode
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let path = req.header(":path").unwrap_or("/").to_owned();
        let method = req.header(":method").unwrap_or("GET").to_owned();
        let auth = match mode {
            Mode::WrongKey => format!("Bearer {wrong_key}"),
            _ => req.header("authorization").unwrap_or_default().to_owned(),
        };
        let body = req.body.clone();
        let fetched = rt.block_on(async {
            let method = keygate_e2e::reqwest::Method::from_bytes(method.as_bytes()).ok()?;
            let mut r = http
                .request(method, format!("{base}{path}"))
                .header("authorization", auth);
            if let Some(ct) = req.header("content-type") {
                r = r.header("content-type", ct);
            }
            let resp = r.body(body).send().await.ok()?;
            let status = resp.status().as_u16();
            let headers: HeaderMap = resp
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().into()))
                .collect();
            let body = resp.bytes().await.ok()?.to_vec();
            Some((status, headers, body))
        });
        let Some((status, mut headers, mut body)) = fetched else {
            return CalloutReply::reset();
        };
        if status == 200 && path.starts_with("/v1/keyset") {
            match mode {
                Mode::Garbled => {
                    let mid = body.len() / 2;
                    for b in body.iter_mut().skip(mid).take(8) {
                        *b ^= 0x5a;
                    }
                }
                Mode::Truncated => body.truncate(body.len() / 2),
                Mode::Proxy | Mode::WrongKey => {}
            }
        }
        headers.retain(|(k, _)| k != "content-length" && k != "transfer-encoding");
        headers.insert(0, (":status".to_owned(), status.to_string().into()));
        CalloutReply::response(CalloutResponse {
            headers,
            body,
            trailers: Vec::new(),
        })
    })
}

#[test]
fn garbled_truncated_and_unauthorized_feeds_never_replace_the_good_set() {
    let cp = ControlPlane::start_sqlite();
    let a = cp
        .api
        .create_key(json!({"name": "a", "scopes": ["repo:read"]}));
    let b = cp
        .api
        .create_key(json!({"name": "b", "scopes": ["repo:read"]}));
    // A workspace key: valid for the API, but not an edge key.
    let not_edge = cp
        .api
        .create_key(json!({"name": "ws", "scopes": ["keys:read"]}));
    let mode = Arc::new(Mutex::new(Mode::Proxy));
    let mut h = harness_builder(2, &cp.edge_key, "")
        .cluster(CLUSTER, relay(&cp, mode.clone(), not_edge.secret.clone()))
        .build()
        .unwrap();
    h.advance(Duration::from_millis(500));
    let good_revision = metric(&h, "keygate.keyset.revision");
    assert!(good_revision > 0);
    for w in 0..2 {
        assert_allowed(&get(&mut h, w, &a.secret));
    }
    // Each bad mode meets a real change (b's suspension) that the filter must not half-apply.
    cp.api.key_action(&b.id, "suspend");
    for (bad, reason) in [
        (Mode::Garbled, "garbled"),
        (Mode::Truncated, "garbled"),
        (Mode::WrongKey, "unauthorized"),
    ] {
        *mode.lock().unwrap() = bad;
        let counter = format!("keygate.sync.failure.{reason}");
        let failures = metric(&h, &counter);
        // Failures back off (interval × 2ⁿ, at most 30 s): step virtual time until one lands.
        for _ in 0..40 {
            h.advance(Duration::from_secs(1));
            if metric(&h, &counter) > failures {
                break;
            }
        }
        assert!(
            metric(&h, &counter) > failures,
            "{bad:?} not counted as {reason}: {:?}",
            h.metrics()
        );
        assert_eq!(
            metric(&h, "keygate.keyset.revision"),
            good_revision,
            "{bad:?} moved the revision"
        );
        for w in 0..2 {
            assert_allowed(&get(&mut h, w, &a.secret));
            assert_allowed(&get(&mut h, w, &b.secret)); // the last good set still has b
        }
    }
    let warnings = h.logs_at(LogLevel::Warn);
    assert!(
        warnings.iter().any(|l| l.contains("garbled")),
        "{warnings:?}"
    );
    for l in h.logs() {
        assert!(!l.message.contains(&cp.edge_key), "the edge key was logged");
        assert!(!l.message.contains(&not_edge.secret), "a key was logged");
    }
    // The feed heals: the suspension arrives (after the failure backoff) and b is denied.
    *mode.lock().unwrap() = Mode::Proxy;
    for _ in 0..40 {
        h.advance(Duration::from_secs(1));
        if metric(&h, "keygate.keyset.revision") > good_revision {
            break;
        }
    }
    assert!(
        metric(&h, "keygate.keyset.revision") > good_revision,
        "the feed did not heal"
    );
    h.advance(Duration::from_millis(500)); // followers pick the revision up
    for w in 0..2 {
        assert_eq!(
            denial(&get(&mut h, w, &b.secret)),
            (401, "unknown_key".into()),
            "worker {w}"
        );
        assert_allowed(&get(&mut h, w, &a.secret));
    }
}

/// Real time, long-poll on: a revocation reaches the filter without waiting for an interval.
fn long_poll_revocation(cp: &ControlPlane) {
    let k = cp
        .api
        .create_key(json!({"name": "k", "scopes": ["repo:read"]}));
    let mut h = harness_builder(
        2,
        &cp.edge_key,
        r#""long_poll_wait_s":20,"sync_interval_ms":5000"#,
    )
    .real_time()
    .cluster(CLUSTER, Cluster::http(cp.base.clone()))
    .build()
    .unwrap();
    eventually("first sync", 200, Duration::ZERO, || {
        h.run_for(Duration::from_millis(50));
        (get(&mut h, 0, &k.secret).disposition == Disposition::Completed).then_some(())
    });
    assert_allowed(&get(&mut h, 1, &k.secret));
    // let the leader park its long poll
    h.run_for(Duration::from_millis(200));
    let calls = keyset_calls(&h);
    cp.api.key_action(&k.id, "revoke");
    // Bounded (~8 s) below the 20 s long-poll wait: only an answer to the parked poll is in time.
    eventually("revocation via long poll", 150, Duration::ZERO, || {
        h.run_for(Duration::from_millis(50));
        (0..2)
            .all(|w| get(&mut h, w, &k.secret).disposition == Disposition::LocalResponse)
            .then_some(())
    });
    assert_eq!(
        denial(&get(&mut h, 0, &k.secret)),
        (401, "unknown_key".into())
    );
    assert!(
        keyset_calls(&h) <= calls + 2,
        "answered by the parked long poll"
    );
}

#[test]
fn long_poll_delivers_a_revocation_at_once_on_sqlite() {
    let cp = ControlPlane::start_sqlite();
    long_poll_revocation(&cp);
}

#[test]
fn the_feed_works_on_postgresql() {
    let cp = ControlPlane::start_postgres();
    let k = cp
        .api
        .create_key(json!({"name": "pg", "scopes": ["repo:read"], "owner_id": "dora"}));
    let mut h = edge_harness(&cp, 2, "");
    h.advance(Duration::from_millis(500));
    for w in 0..2 {
        let o = get(&mut h, w, &k.secret);
        assert_allowed(&o);
        assert_eq!(o.request_header("x-keygate-owner"), Some("dora"));
    }
    cp.api.key_action(&k.id, "suspend");
    h.advance(Duration::from_millis(1300));
    assert_eq!(
        denial(&get(&mut h, 0, &k.secret)),
        (401, "unknown_key".into())
    );
    cp.api.key_action(&k.id, "reactivate");
    h.advance(Duration::from_millis(1300));
    assert_allowed(&get(&mut h, 1, &k.secret));
    drop(h);
    long_poll_revocation(&cp);
}

#[test]
fn a_database_outage_keeps_the_filters_set_and_everything_recovers_by_itself() {
    // Its own cluster: stopping the shared one would break other tests.
    let pg = keygate_testkit::PgCluster::start().unwrap_or_else(|e| panic!("cluster: {e}"));
    let url = pg
        .fresh_database()
        .unwrap_or_else(|e| panic!("database: {e}"));
    let cp = ControlPlane::start_on(&url);
    let stay = cp
        .api
        .create_key(json!({"name": "stay", "scopes": ["repo:read"]}));
    let doomed = cp
        .api
        .create_key(json!({"name": "doomed", "scopes": ["repo:read"]}));
    let mut h = edge_harness(&cp, 2, r#""max_staleness_s":600"#);
    h.advance(Duration::from_millis(500));
    for w in 0..2 {
        assert_allowed(&get(&mut h, w, &stay.secret));
        assert_allowed(&get(&mut h, w, &doomed.secret));
    }
    let revision = metric(&h, "keygate.keyset.revision");

    pg.stop().unwrap_or_else(|e| panic!("pg_ctl stop: {e}"));
    // The feed answers 503 DATABASE_UNAVAILABLE: counted, the good set kept on every worker.
    h.advance(Duration::from_secs(8));
    assert!(
        metric(&h, "keygate.sync.failure.status") >= 2,
        "{:?}",
        h.metrics()
    );
    assert_eq!(metric(&h, "keygate.keyset.revision"), revision);
    for w in 0..2 {
        assert_allowed(&get(&mut h, w, &stay.secret));
        assert_allowed(&get(&mut h, w, &doomed.secret));
    }
    let (status, body) = cp.api.admin(
        Method::POST,
        &format!("/v1/keys/{}/revoke", doomed.id),
        None,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("DATABASE_UNAVAILABLE")),
        "{body}"
    );

    pg.restart().unwrap_or_else(|e| panic!("pg_ctl start: {e}"));
    // No restart of anything else: the control plane writes again, the filter syncs again.
    eventually(
        "the control plane writes again",
        100,
        Duration::from_millis(100),
        || {
            let (status, _) = cp.api.admin(
                Method::POST,
                &format!("/v1/keys/{}/revoke", doomed.id),
                None,
            );
            (status == 200).then_some(())
        },
    );
    eventually(
        "the filter follows the revocation",
        60,
        Duration::ZERO,
        || {
            h.advance(Duration::from_secs(1));
            (0..2)
                .all(|w| get(&mut h, w, &doomed.secret).disposition == Disposition::LocalResponse)
                .then_some(())
        },
    );
    for w in 0..2 {
        assert_eq!(
            denial(&get(&mut h, w, &doomed.secret)),
            (401, "unknown_key".into())
        );
        assert_allowed(&get(&mut h, w, &stay.secret));
    }
    assert!(metric(&h, "keygate.keyset.revision") > revision);
}
