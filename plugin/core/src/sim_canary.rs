//! Canary hits over the fake host: a canary is denied byte for byte as an unknown key and its
//! hit is reported at once (woken through the worker's own queue, not at the next usage batch);
//! hits that arrive while a report is in flight are held (bounded) and go together in the next
//! report; a failed report is retried with the same hit ids after the sync's backoff and
//! dropped, counted, after its attempts run out.

use keygate_protocol::policy::KeyState;
use serde_json::Value;

use crate::canary::{MAX_ATTEMPTS, MAX_QUEUED, metrics};
use crate::decision::{Decision, Deny, DenyBodies, Reason, Request, UNKNOWN_KEY_MESSAGE};
use crate::fake::RecordedCall;
use crate::host::HttpResponse;
use crate::sim::{Sim, config, ok, status};
use crate::testutil::{TestKey, headers, snapshot, test_key};

fn setup() -> (Sim, TestKey, TestKey) {
    let c = config(r#""usage_report_interval_ms":60000"#);
    let mut sim = Sim::new(2, &c);
    let live = test_key(1, "alice", &[], &[], None);
    let mut canary = test_key(2, "bait", &[], &[], None);
    canary.entry.policy.state = KeyState::Canary;
    let snap = snapshot(1, &[&live, &canary]);
    sim.run(300, &mut |call| {
        Some(if call.header(":path") == Some("/v1/keyset") {
            ok(snap.clone())
        } else {
            status(304)
        })
    });
    (sim, live, canary)
}

/// Presents `key` to worker `w` as the shells do: decide, then report a canary's hit.
fn present(sim: &mut Sim, w: usize, key: &str, path: &str) -> Deny {
    let now = sim.now();
    let h = headers(
        "GET",
        path,
        &[("x-api-key", key), ("user-agent", "sqlmap/1.7")],
    );
    let req = Request::from_headers(&h);
    let deny = match sim.workers[w].0.decide(&req, now) {
        Decision::Deny(d) => d,
        Decision::Allow(a) => panic!("allowed: {a:?}"),
    };
    if let Some(k) = deny.canary {
        let (worker, host) = &mut sim.workers[w];
        worker.record_canary_hit(host, k, now, req.path, "203.0.113.7:5555", "sqlmap/1.7");
    }
    deny
}

fn hit_calls(sim: &Sim) -> Vec<RecordedCall> {
    sim.world
        .borrow()
        .calls
        .iter()
        .filter(|c| c.header(":path") == Some("/v1/canary-hits"))
        .cloned()
        .collect()
}

fn body(call: &RecordedCall) -> Value {
    serde_json::from_slice(call.body.as_ref().unwrap()).unwrap()
}

#[test]
fn a_canary_is_denied_as_an_unknown_key_and_reported_at_once() {
    let (mut sim, _live, canary) = setup();
    let unknown = test_key(9, "nobody", &[], &[], None);
    let d_unknown = present(&mut sim, 0, &unknown.secret, "/x");
    assert_eq!(d_unknown.reason, Reason::UnknownKey);
    assert!(hit_calls(&sim).is_empty(), "an unknown key reports nothing");

    let d = present(&mut sim, 0, &canary.secret, "/v1/things?api_key=secret");
    assert_eq!(d.reason, Reason::CanaryKey);
    // The answer a client sees: byte for byte an unknown key's.
    let mut bodies = DenyBodies::default();
    assert_eq!(d.status(), d_unknown.status());
    assert_eq!(d.www_authenticate, d_unknown.www_authenticate);
    assert_eq!(bodies.body(&d).into_owned(), bodies.body(&d_unknown));
    assert_eq!(
        d.body(),
        Deny::new(Reason::UnknownKey, UNKNOWN_KEY_MESSAGE).body()
    );

    // The worker woke itself through its queue; the host runs its root context right after
    // the request's callback, and the report goes then: no tick, no usage interval.
    assert!(hit_calls(&sim).is_empty());
    sim.deliver_queue_ready();
    let calls = hit_calls(&sim);
    assert_eq!(calls.len(), 1, "reported at once");
    let call = &calls[0];
    assert_eq!(call.at_ms, sim.now(), "same instant: no wait for a tick");
    assert_eq!(call.worker, 0);
    assert_eq!(call.header(":method"), Some("POST"));
    assert_eq!(call.header("authorization"), Some("Bearer kg_edge_secret"));
    assert!(
        call.header(keygate_protocol::edge::ID_HEADER)
            .is_some_and(keygate_protocol::edge::is_edge_id),
        "{call:?}"
    );
    let b = body(call);
    let hits = b["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["key_id"], canary.id.to_string());
    assert_eq!(hits[0]["path"], "/v1/things", "no query string");
    assert_eq!(hits[0]["client"], "203.0.113.7:5555");
    assert_eq!(hits[0]["user_agent"], "sqlmap/1.7");
    assert_eq!(hits[0]["at"].as_u64(), Some(sim.now() / 1000));
    let raw = String::from_utf8(call.body.clone().unwrap()).unwrap();
    assert!(
        !raw.contains(&canary.secret) && !raw.contains("api_key"),
        "{raw}"
    );
    assert_eq!(sim.world.borrow().counter(metrics::HITS), 1);
}

#[test]
fn hits_during_a_report_wait_bounded_and_go_together_next() {
    let (mut sim, _live, canary) = setup();
    present(&mut sim, 0, &canary.secret, "/first");
    sim.deliver_queue_ready();
    let first = hit_calls(&sim);
    assert_eq!(first.len(), 1);
    // In flight: more hits wait, at most MAX_QUEUED held in all.
    for i in 0..MAX_QUEUED + 10 {
        present(&mut sim, 0, &canary.secret, &format!("/more/{i}"));
    }
    sim.deliver_queue_ready();
    assert_eq!(
        hit_calls(&sim).len(),
        1,
        "nothing new while one is in flight"
    );
    assert_eq!(sim.workers[0].0.canary().held(), MAX_QUEUED);
    assert_eq!(sim.world.borrow().counter(metrics::HITS_DROPPED), 11);
    assert_eq!(
        sim.world.borrow().counter(metrics::HITS),
        MAX_QUEUED as u64 + 11
    );
    // The answer sends the waiting hits at once, in one report.
    sim.answer(&first[0], &status(200));
    let calls = hit_calls(&sim);
    assert_eq!(calls.len(), 2);
    let next = body(&calls[1]);
    assert_eq!(next["hits"].as_array().unwrap().len(), MAX_QUEUED - 1);
    assert!(next.to_string().len() <= keygate_protocol::canary::MAX_BODY_BYTES);
    sim.answer(&calls[1], &status(200));
    assert_eq!(sim.workers[0].0.canary().held(), 0);
    assert_eq!(
        sim.world.borrow().counter(metrics::HITS_REPORTED),
        MAX_QUEUED as u64
    );
}

#[test]
fn a_lost_report_is_retried_with_the_same_ids_then_dropped_and_counted() {
    let (mut sim, _live, canary) = setup();
    present(&mut sim, 1, &canary.secret, "/a");
    sim.deliver_queue_ready();
    let first = hit_calls(&sim);
    assert_eq!(first.len(), 1);
    let ids = body(&first[0])["hits"].to_string();
    // Control plane down: no answer.
    sim.answer(&first[0], &HttpResponse::default());
    assert_eq!(hit_calls(&sim).len(), 1, "no retry before the backoff");
    let mut feed = |c: &RecordedCall| -> Option<HttpResponse> {
        Some(if c.header(":path") == Some("/v1/canary-hits") {
            status(503)
        } else {
            status(304)
        })
    };
    sim.run(200, &mut feed);
    assert_eq!(
        hit_calls(&sim).len(),
        1,
        "the backoff is at least the sync interval"
    );
    sim.run(60_000, &mut feed);
    let calls = hit_calls(&sim);
    assert_eq!(calls.len() as u32, MAX_ATTEMPTS, "{} calls", calls.len());
    for c in &calls {
        assert_eq!(body(c)["hits"].to_string(), ids, "same hits, same ids");
    }
    let gaps: Vec<u64> = calls.windows(2).map(|w| w[1].at_ms - w[0].at_ms).collect();
    assert!(gaps.windows(2).all(|g| g[1] + 1_000 >= g[0]), "{gaps:?}");
    assert!(
        gaps.iter()
            .all(|g| *g <= crate::sync::MAX_BACKOFF_MS * 6 / 5 + 200),
        "{gaps:?}"
    );
    let w = sim.world.borrow();
    assert_eq!(w.counter(metrics::HITS_DROPPED), 1);
    assert_eq!(w.counter(metrics::REPORTS_FAILED), u64::from(MAX_ATTEMPTS));
    drop(w);
    assert_eq!(sim.workers[1].0.canary().held(), 0);
}
