//! Native simulation tests of the sync state machine and usage reporting: several workers over a
//! fake host with a virtual clock, shared data and an in-process fake control-plane feed.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use keygate_protocol::wire::CONTENT_TYPE;

use crate::config::Config;
use crate::decision::{Decision, KeySetState, Reason, Request};
use crate::fake::{FakeHost, RecordedCall, World};
use crate::host::HttpResponse;
use crate::sync::{MAX_CHAIN, metrics};
use crate::testutil::{TestKey, delta, headers, snapshot, test_key};
use crate::worker::Worker;

pub(crate) const T0: u64 = 1_763_900_000_000;

pub(crate) struct Sim {
    pub(crate) world: Rc<RefCell<World>>,
    pub(crate) workers: Vec<(Worker, FakeHost)>,
    answered: HashSet<u32>,
    alive: Vec<bool>,
}

pub(crate) fn config(extra: &str) -> Config {
    let json = format!(
        r#"{{"cluster":"cp","authority":"cp.local","edge_key":"kg_edge_secret"{}{extra}}}"#,
        if extra.is_empty() { "" } else { "," }
    );
    Config::from_json(json.as_bytes()).unwrap()
}

pub(crate) fn ok(body: Vec<u8>) -> HttpResponse {
    HttpResponse {
        status: Some(200),
        headers: vec![("content-type".into(), CONTENT_TYPE.into())],
        body,
    }
}

pub(crate) fn status(s: u16) -> HttpResponse {
    HttpResponse {
        status: Some(s),
        ..HttpResponse::default()
    }
}

pub(crate) fn no_answer() -> HttpResponse {
    HttpResponse::default()
}

fn since(call: &RecordedCall) -> Option<u64> {
    let path = call.header(":path")?;
    let q = path.split_once('?')?.1;
    q.split('&')
        .find_map(|p| p.strip_prefix("since="))
        .map(|v| v.parse().unwrap())
}

impl Sim {
    pub(crate) fn new(n: usize, config: &Config) -> Self {
        let world = World::new(T0);
        let workers = (0..n)
            .map(|i| {
                (
                    Worker::new(config.clone(), 0x1000 + i as u64, T0),
                    FakeHost::new(&world, i),
                )
            })
            .collect();
        Self {
            world,
            workers,
            answered: HashSet::new(),
            alive: vec![true; n],
        }
    }

    pub(crate) fn now(&self) -> u64 {
        self.world.borrow().now_ms
    }

    fn tick_all(&mut self) {
        for (i, (w, h)) in self.workers.iter_mut().enumerate() {
            if self.alive[i] {
                w.tick(h);
            }
        }
        self.deliver_queue_ready();
    }

    /// Runs `on_queue_ready` on every live worker whose queue got an item, as the host does
    /// after the callback that enqueued it.
    pub(crate) fn deliver_queue_ready(&mut self) {
        loop {
            let ready = std::mem::take(&mut self.world.borrow_mut().queue_ready);
            if ready.is_empty() {
                return;
            }
            for i in ready {
                if self.alive[i] {
                    let (w, h) = &mut self.workers[i];
                    w.on_queue_ready(h);
                }
            }
        }
    }

    /// Unanswered calls.
    pub(crate) fn pending(&self) -> Vec<RecordedCall> {
        self.world
            .borrow()
            .calls
            .iter()
            .filter(|c| !self.answered.contains(&c.token))
            .cloned()
            .collect()
    }

    pub(crate) fn answer(&mut self, call: &RecordedCall, resp: &HttpResponse) {
        self.answered.insert(call.token);
        let (w, h) = &mut self.workers[call.worker];
        w.on_response(h, call.token, resp);
        self.deliver_queue_ready();
    }

    /// Advances the clock in tick steps, ticking every live worker and answering every new call
    /// with `feed` (a `None` leaves the call pending).
    pub(crate) fn run(
        &mut self,
        ms: u64,
        feed: &mut dyn FnMut(&RecordedCall) -> Option<HttpResponse>,
    ) {
        let step = self.workers[0].0.config().tick_period_ms();
        let end = self.now() + ms;
        loop {
            self.tick_all();
            loop {
                let pending = self.pending();
                let mut any = false;
                for c in pending {
                    if let Some(r) = feed(&c) {
                        self.answer(&c, &r);
                        any = true;
                    }
                }
                if !any {
                    break;
                }
            }
            if self.now() + step > end {
                break;
            }
            self.world.borrow_mut().now_ms += step;
        }
    }

    fn keyset_calls(&self) -> Vec<RecordedCall> {
        self.world
            .borrow()
            .calls
            .iter()
            .filter(|c| {
                c.header(":path")
                    .is_some_and(|p| p.starts_with("/v1/keyset"))
            })
            .cloned()
            .collect()
    }

    fn decide(&self, worker: usize, key: &str) -> Reason {
        let h = headers("GET", "/x", &[("x-api-key", key)]);
        let req = Request::from_headers(&h);
        self.workers[worker].0.decide(&req, self.now()).reason()
    }

    fn revisions(&self) -> Vec<Option<u64>> {
        self.workers
            .iter()
            .map(|(w, _)| w.syncer().revision())
            .collect()
    }
}

fn keys() -> (TestKey, TestKey) {
    (
        test_key(1, "alice", &["repo:read"], &[], None),
        test_key(2, "bob", &["repo:read"], &[], None),
    )
}

#[test]
fn fails_closed_until_the_first_sync_then_every_worker_follows() {
    let c = config("");
    let mut sim = Sim::new(4, &c);
    let (a, b) = keys();
    // control plane not answering yet
    sim.run(0, &mut |_| None);
    for w in 0..4 {
        assert_eq!(sim.decide(w, &a.secret), Reason::KeysetUnavailable);
    }
    let calls = sim.keyset_calls();
    assert_eq!(calls.len(), 1, "one worker calls the control plane");
    let call = &calls[0];
    assert_eq!(call.cluster, "cp");
    assert_eq!(call.header(":path"), Some("/v1/keyset"));
    assert_eq!(call.header(":authority"), Some("cp.local"));
    assert_eq!(call.header("authorization"), Some("Bearer kg_edge_secret"));
    assert_eq!(since(call), None);

    let snap = snapshot(5, &[&a, &b]);
    sim.answer(call, &ok(snap));
    sim.run(300, &mut |_| Some(status(304)));
    assert_eq!(sim.revisions(), vec![Some(5); 4]);
    for w in 0..4 {
        assert_eq!(sim.decide(w, &a.secret), Reason::Allowed, "worker {w}");
    }
    assert!(sim.world.borrow().counter(metrics::FOLLOWED) >= 3);
}

#[test]
fn four_workers_make_one_call_per_interval() {
    let c = config("");
    let mut sim = Sim::new(4, &c);
    let (a, b) = keys();
    let snap = snapshot(1, &[&a, &b]);
    let mut first = true;
    sim.run(10_000, &mut |_| {
        if first {
            first = false;
            Some(ok(snap.clone()))
        } else {
            Some(status(304))
        }
    });
    let calls = sim.keyset_calls();
    // t = 0, one interval, …, 10 s
    assert_eq!(c.sync_interval_ms, 500, "the default interval");
    assert_eq!(
        calls.len() as u64,
        10_000 / c.sync_interval_ms + 1,
        "{:?}",
        calls.iter().map(|c| c.worker).collect::<Vec<_>>()
    );
    let leaders: HashSet<usize> = calls.iter().map(|c| c.worker).collect();
    assert_eq!(leaders.len(), 1);
    assert!(calls[1..].iter().all(|c| since(c) == Some(1)));
}

#[test]
fn plain_polls_start_one_interval_apart_however_long_the_answer_takes() {
    // Revocation latency with plain polling is bounded by the period between poll starts, so
    // a slow answer must not stretch it (the next poll is due one interval after the previous
    // one started, not after it was answered).
    let c = config("");
    let interval = c.sync_interval_ms;
    let tick = c.tick_period_ms();
    assert!(
        tick <= interval / 5,
        "tick {tick} ms vs interval {interval} ms"
    );
    let mut sim = Sim::new(2, &c);
    let (a, b) = keys();
    let snap = snapshot(1, &[&a, &b]);
    sim.run(0, &mut |_| Some(ok(snap.clone())));
    let slow = interval * 3 / 5;
    for _ in 0..20 {
        sim.run(slow, &mut |_| None);
        for call in sim.pending() {
            sim.answer(&call, &status(304));
        }
        sim.run(interval - slow, &mut |_| None);
    }
    let starts: Vec<u64> = sim.keyset_calls().iter().map(|c| c.at_ms).collect();
    assert!(starts.len() >= 20, "{starts:?}");
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= interval && gap <= interval + tick,
            "polls {pair:?} are {gap} ms apart (interval {interval} ms, tick {tick} ms)"
        );
    }
}

#[test]
fn deltas_reach_followers_through_the_published_chain() {
    let c = config("");
    let mut sim = Sim::new(3, &c);
    let (a, b) = keys();
    let new = test_key(9, "carol", &[], &[], None);
    let mut step = 0;
    let (s1, d2, d3) = (
        snapshot(10, &[&a, &b]),
        delta(10, 12, &[&new], &[]),
        delta(12, 15, &[], &[&a]),
    );
    sim.run(3_000, &mut |call| {
        step += 1;
        Some(match step {
            1 => ok(s1.clone()),
            2 => {
                assert_eq!(since(call), Some(10));
                ok(d2.clone())
            }
            3 => {
                assert_eq!(since(call), Some(12));
                ok(d3.clone())
            }
            _ => status(304),
        })
    });
    assert_eq!(sim.revisions(), vec![Some(15); 3]);
    for w in 0..3 {
        assert_eq!(
            sim.decide(w, &a.secret),
            Reason::UnknownKey,
            "revoked on worker {w}"
        );
        assert_eq!(
            sim.decide(w, &new.secret),
            Reason::Allowed,
            "new key on worker {w}"
        );
        assert_eq!(sim.decide(w, &b.secret), Reason::Allowed);
    }
    let world = sim.world.borrow();
    let head: crate::sync::Head =
        serde_json::from_slice(&world.shared["keygate/cp/head"].0).unwrap();
    assert_eq!((head.rev, head.snap_rev), (15, 10));
    assert_eq!(head.chain, vec![(10, 12), (12, 15)]);
}

/// Syncs three workers to `s1`, then answers the leader's next poll with `d2` without any tick:
/// the revisions every worker holds right after that answer.
fn revisions_right_after_a_change(refuse_queues: bool) -> (Vec<Option<u64>>, u64) {
    let c = config("");
    let mut sim = Sim::new(3, &c);
    sim.world.borrow_mut().refuse_queues = refuse_queues;
    let (a, b) = keys();
    let s1 = snapshot(10, &[&a, &b]);
    let d2 = delta(10, 12, &[], &[&a]);
    let mut first = true;
    sim.run(2_000, &mut |_| {
        std::mem::take(&mut first).then(|| ok(s1.clone()))
    });
    assert_eq!(sim.revisions(), vec![Some(10); 3]);
    let poll = sim.pending();
    assert_eq!(poll.len(), 1, "one poll in flight: {poll:?}");
    let before = sim.world.borrow().counter(metrics::WOKEN);
    sim.answer(&poll[0], &ok(d2));
    let woken = sim.world.borrow().counter(metrics::WOKEN) - before;
    (sim.revisions(), woken)
}

#[test]
fn the_leader_wakes_every_follower_the_moment_it_applies_a_change() {
    assert_eq!(
        revisions_right_after_a_change(false),
        (vec![Some(12); 3], 2)
    );
}

#[test]
fn without_shared_queues_followers_still_catch_up_on_their_tick() {
    let (revisions, woken) = revisions_right_after_a_change(true);
    assert_eq!(woken, 0);
    // Only the leader has it until the followers' next tick.
    assert_eq!(revisions.iter().filter(|r| **r == Some(12)).count(), 1);
    assert_eq!(revisions.iter().filter(|r| **r == Some(10)).count(), 2);
}

#[test]
fn a_long_chain_is_compacted_into_a_snapshot() {
    let c = config("");
    let mut sim = Sim::new(2, &c);
    let (a, b) = keys();
    let mut rev = 1;
    let mut first = true;
    sim.run(((MAX_CHAIN + 3) * 1000) as u64, &mut |_| {
        if first {
            first = false;
            return Some(ok(snapshot(1, &[&a, &b])));
        }
        rev += 1;
        Some(ok(delta(rev - 1, rev, &[], &[])))
    });
    // one more tick for the follower to pick up the last answer
    sim.run(0, &mut |_| Some(status(304)));
    let head: crate::sync::Head =
        serde_json::from_slice(&sim.world.borrow().shared["keygate/cp/head"].0).unwrap();
    assert_eq!(head.rev, rev);
    assert!(head.chain.len() <= MAX_CHAIN);
    assert!(head.snap_rev > 1, "a newer snapshot was published");
    assert_eq!(sim.revisions(), vec![Some(rev); 2]);
    // The follower, woken on every change, went from delta to delta across the compactions:
    // it read the snapshot once, at the start, and never built a second set.
    assert_eq!(
        sim.world.borrow().shared_reads.get("keygate/cp/snap"),
        Some(&1)
    );
    // a worker that starts now catches up from snapshot + chain
    let mut late = Worker::new(c.clone(), 0x99, sim.now());
    let mut h = FakeHost::new(&sim.world, 7);
    late.tick(&mut h);
    assert_eq!(late.syncer().revision(), Some(rev));
    assert_eq!(
        late.decide(
            &Request::from_headers(&headers("GET", "/", &[("x-api-key", &a.secret)])),
            sim.now()
        )
        .reason(),
        Reason::Allowed
    );
}

#[test]
fn a_single_vm_shell_publishes_nothing_and_still_follows_every_change() {
    let c = config("");
    let mut sim = Sim::new(1, &c);
    sim.world.borrow_mut().single_vm = true;
    let (a, b) = keys();
    let mut rev = 1;
    let mut first = true;
    sim.run(((MAX_CHAIN + 3) * 1000) as u64, &mut |_| {
        if first {
            first = false;
            return Some(ok(snapshot(1, &[&a])));
        }
        rev += 1;
        let upserts: &[&TestKey] = if rev == 2 { &[&b] } else { &[] };
        Some(ok(delta(rev - 1, rev, upserts, &[])))
    });
    assert_eq!(sim.revisions(), vec![Some(rev)]);
    assert_eq!(sim.decide(0, &b.secret), Reason::Allowed);
    let w = sim.world.borrow();
    let published: Vec<&String> = w
        .shared
        .keys()
        .filter(|k| k.ends_with("/head") || k.ends_with("/snap") || k.contains("/delta"))
        .collect();
    assert!(published.is_empty(), "published {published:?}");
}

#[test]
fn bad_responses_never_replace_the_good_set() {
    let c = config("");
    let mut sim = Sim::new(2, &c);
    let (a, b) = keys();
    let good = snapshot(3, &[&a, &b]);
    let garbled = {
        let mut g = snapshot(4, &[&b]);
        let n = g.len();
        g[n / 2] ^= 0xff;
        g
    };
    let truncated = {
        let g = snapshot(4, &[&b]);
        g[..g.len() - 7].to_vec()
    };
    let wrong_type = HttpResponse {
        status: Some(200),
        headers: vec![("content-type".into(), "text/html".into())],
        body: snapshot(4, &[&b]),
    };
    let mut n = 0;
    sim.run(240_000, &mut |_| {
        n += 1;
        Some(match n {
            1 => ok(good.clone()),
            2 => ok(garbled.clone()),
            3 => ok(truncated.clone()),
            4 => ok(b"<html>oops</html>".to_vec()),
            5 => wrong_type.clone(),
            6 => status(401),
            7 => status(403),
            8 => status(500),
            9 => no_answer(),
            _ => status(304),
        })
    });
    assert!(n >= 10);
    assert_eq!(sim.revisions(), vec![Some(3); 2]);
    for w in 0..2 {
        assert_eq!(sim.decide(w, &a.secret), Reason::Allowed);
    }
    let world = sim.world.borrow();
    assert_eq!(world.counter("keygate.sync.failure.garbled"), 4);
    assert_eq!(world.counter("keygate.sync.failure.unauthorized"), 2);
    assert_eq!(world.counter("keygate.sync.failure.status"), 1);
    assert_eq!(world.counter("keygate.sync.failure.unreachable"), 1);
    let warns: Vec<_> = world
        .logs
        .iter()
        .filter(|(_, m)| m.contains("sync failed"))
        .collect();
    assert_eq!(warns.len(), 8);
    // the edge key never appears in a log line
    assert!(
        world
            .logs
            .iter()
            .all(|(_, m)| !m.contains("kg_edge_secret"))
    );
}

#[test]
fn outage_keeps_the_set_until_max_staleness_then_the_failure_mode() {
    for (mode, expect) in [("closed", Reason::KeysetStale), ("open", Reason::FailOpen)] {
        let c = config(&format!(r#""max_staleness_s":60,"failure_mode":"{mode}""#));
        let mut sim = Sim::new(2, &c);
        let (a, b) = keys();
        let mut first = true;
        let snap = snapshot(3, &[&a, &b]);
        sim.run(0, &mut |_| {
            first = false;
            Some(ok(snap.clone()))
        });
        assert!(!first);
        // control plane goes down
        sim.run(59_000, &mut |_| Some(no_answer()));
        for w in 0..2 {
            assert_eq!(
                sim.decide(w, &a.secret),
                Reason::Allowed,
                "fail static ({mode})"
            );
            assert!(matches!(
                sim.workers[w].0.syncer().state(&c, sim.now()),
                KeySetState::Fresh(_)
            ));
        }
        sim.run(2_000, &mut |_| Some(no_answer()));
        for w in 0..2 {
            assert_eq!(
                sim.decide(w, &a.secret),
                expect,
                "after max staleness ({mode})"
            );
        }
        // the leader's staleness, under the plain name
        let gauge = sim
            .world
            .borrow()
            .gauges
            .iter()
            .filter(|((_, name), _)| name == metrics::STALENESS)
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(0);
        assert!(gauge >= 60, "staleness gauge {gauge}");
        // recovery
        sim.run(40_000, &mut |_| Some(status(304)));
        for w in 0..2 {
            assert_eq!(
                sim.decide(w, &a.secret),
                Reason::Allowed,
                "recovered ({mode})"
            );
        }
    }
}

#[test]
fn failures_back_off_exponentially_with_jitter() {
    let c = config("");
    let mut sim = Sim::new(1, &c);
    sim.run(120_000, &mut |_| Some(status(503)));
    let times: Vec<u64> = {
        // the fake records no times; recover them from the failure log order instead
        let w = sim.world.borrow();
        w.logs
            .iter()
            .filter_map(|(_, m)| m.split("retry in ").nth(1))
            .map(|s| s.trim_end_matches(" ms").parse().unwrap())
            .collect()
    };
    assert!(times.len() >= 5, "{times:?}");
    // 2, 4, 8, 16, … intervals, capped at MAX_BACKOFF_MS, each ±20 %
    for (i, t) in times.iter().enumerate() {
        let base = (c.sync_interval_ms << (i + 1).min(16)).min(crate::sync::MAX_BACKOFF_MS) as f64;
        assert!(
            (*t as f64) >= base * 0.8 && (*t as f64) <= base * 1.2,
            "retry {i}: {t} ms vs {base}"
        );
    }
    // once capped, one call per MAX_BACKOFF_MS (at most -20 %)
    let calls = sim.keyset_calls().len() as u64;
    let bound = 120_000 / (crate::sync::MAX_BACKOFF_MS * 4 / 5) + 4;
    assert!(
        calls <= bound,
        "{calls} calls in 2 minutes of outage (bound {bound})"
    );
}

#[test]
fn a_dead_leaders_lease_lapses_and_another_worker_takes_over() {
    let c = config("");
    let mut sim = Sim::new(3, &c);
    let (a, b) = keys();
    let snap = snapshot(1, &[&a, &b]);
    let mut first = true;
    sim.run(3_000, &mut |_| {
        let r = if first { ok(snap.clone()) } else { status(304) };
        first = false;
        Some(r)
    });
    let leader = sim.keyset_calls()[0].worker;
    sim.alive[leader] = false;
    let before = sim.keyset_calls().len();
    sim.run(10_000, &mut |_| Some(status(304)));
    let after: Vec<_> = sim.keyset_calls()[before..].to_vec();
    assert!(!after.is_empty());
    let new_leaders: HashSet<usize> = after.iter().map(|c| c.worker).collect();
    assert_eq!(new_leaders.len(), 1);
    assert!(!new_leaders.contains(&leader));
    // one call per interval resumes after the lease TTL
    let ttl = crate::sync::lease_ttl_ms(&c);
    let (lo, hi) = (
        (10_000 - ttl) / c.sync_interval_ms - 2,
        10_000 / c.sync_interval_ms - 1,
    );
    let n = after.len() as u64;
    assert!(n >= lo && n <= hi, "{n} calls, expected {lo}..={hi}");
}

#[test]
fn a_delta_from_another_base_makes_the_next_poll_ask_for_a_snapshot() {
    let c = config("");
    let mut sim = Sim::new(1, &c);
    let (a, b) = keys();
    let mut n = 0;
    let mut paths = Vec::new();
    sim.run(5_000, &mut |call| {
        n += 1;
        paths.push(call.header(":path").unwrap().to_owned());
        Some(match n {
            1 => ok(snapshot(1, &[&a])),
            2 => ok(delta(7, 8, &[&b], &[])),
            3 => ok(snapshot(9, &[&a, &b])),
            _ => status(304),
        })
    });
    assert_eq!(paths[1], "/v1/keyset?since=1");
    assert_eq!(
        paths[2], "/v1/keyset",
        "snapshot requested after a base mismatch"
    );
    assert_eq!(paths[3], "/v1/keyset?since=9");
    assert_eq!(
        sim.world
            .borrow()
            .counter("keygate.sync.failure.base_mismatch"),
        1
    );
    assert_eq!(sim.decide(0, &b.secret), Reason::Allowed);
}

#[test]
fn long_poll_repolls_at_once_with_wait() {
    let c = config(r#""long_poll_wait_s":30"#);
    let mut sim = Sim::new(2, &c);
    let (a, b) = keys();
    let snap = snapshot(1, &[&a, &b]);
    let d = delta(1, 2, &[], &[&a]);
    let mut n = 0;
    // answer the first two calls, keep the third pending (a long poll in progress)
    sim.run(200, &mut |_| {
        n += 1;
        match n {
            1 => Some(ok(snap.clone())),
            2 => Some(ok(d.clone())),
            _ => None,
        }
    });
    let calls = sim.keyset_calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[1].header(":path"), Some("/v1/keyset?since=1&wait=30"));
    assert_eq!(calls[2].header(":path"), Some("/v1/keyset?since=2&wait=30"));
    // within one tick (50 ms) the follower has the revocation too
    assert_eq!(sim.revisions(), vec![Some(2); 2]);
    assert_eq!(sim.decide(1, &a.secret), Reason::UnknownKey);
    // the long poll stays outstanding: no new call while it is in flight
    sim.run(5_000, &mut |_| None);
    assert_eq!(sim.keyset_calls().len(), 3);
}

#[test]
fn usage_is_batched_retried_with_the_same_id_and_counted_once() {
    let c = config(r#""usage_report_interval_ms":1000,"usage_cluster":"usage""#);
    let mut sim = Sim::new(1, &c);
    let (a, b) = keys();
    let snap = snapshot(1, &[&a, &b]);
    let mut first = true;
    sim.run(0, &mut |_| {
        first = false;
        Some(ok(snap.clone()))
    });
    let now = sim.now();
    let use_key = |sim: &mut Sim, key: &str, n: usize| {
        for _ in 0..n {
            let h = headers("GET", "/x", &[("x-api-key", key)]);
            let (reason, id) = match sim.workers[0].0.decide(&Request::from_headers(&h), now) {
                Decision::Allow(al) => (al.reason, al.key_id()),
                Decision::Deny(d) => (d.reason, None),
            };
            sim.workers[0].0.record_use(reason, id, now);
        }
    };
    use_key(&mut sim, &a.secret, 3);
    use_key(&mut sim, &b.secret, 1);
    use_key(&mut sim, "kg_live_bad", 5); // denied: not counted

    let mut acked: Vec<serde_json::Value> = Vec::new();
    let mut usage_posts: Vec<serde_json::Value> = Vec::new();
    let mut fail_next = 2;
    let mut feed = |call: &RecordedCall| -> Option<HttpResponse> {
        if call.header(":path") == Some("/v1/usage") {
            assert_eq!(call.cluster, "usage");
            assert_eq!(call.header(":method"), Some("POST"));
            assert_eq!(call.header("content-type"), Some("application/json"));
            let body: serde_json::Value =
                serde_json::from_slice(call.body.as_ref().unwrap()).unwrap();
            usage_posts.push(body.clone());
            if fail_next > 0 {
                fail_next -= 1;
                return Some(if fail_next == 1 {
                    status(500)
                } else {
                    no_answer()
                });
            }
            acked.push(body);
            return Some(status(200));
        }
        Some(status(304))
    };
    sim.run(1_500, &mut feed);
    // traffic during the failing period
    use_key(&mut sim, &a.secret, 2);
    sim.run(5_000, &mut feed);

    assert!(usage_posts.len() >= 4, "{usage_posts:?}");
    // the two failed posts and the first ack are the same batch
    assert_eq!(usage_posts[0], usage_posts[1]);
    assert_eq!(usage_posts[1], usage_posts[2]);
    assert_ne!(usage_posts[2]["batch_id"], usage_posts[3]["batch_id"]);
    let total = |k: &TestKey| -> u64 {
        acked
            .iter()
            .flat_map(|b| b["entries"].as_array().unwrap().iter())
            .filter(|e| e["key_id"] == k.id.to_string())
            .map(|e| e["count"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(total(&a), 5);
    assert_eq!(total(&b), 1);
    let entry = acked[0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key_id"] == a.id.to_string())
        .unwrap()
        .clone();
    assert_eq!(entry["last_used_at"].as_u64(), Some(now / 1000));
    assert_eq!(
        sim.world.borrow().counter("keygate.usage.batches_failed"),
        2
    );
}

#[test]
fn every_key_set_call_reports_one_edge_id_for_the_process_and_what_it_holds() {
    use keygate_protocol::edge;
    let c = config(r#""long_poll_wait_s":0"#);
    let mut sim = Sim::new(3, &c);
    {
        let mut w = sim.world.borrow_mut();
        w.properties
            .insert("xds.node.id".into(), b"edge-eu-1".to_vec());
        w.properties
            .insert("node.cluster".into(), b"front\r\nproxy".to_vec());
    }
    let (a, b) = keys();
    let snap = snapshot(5, &[&a, &b]);
    let mut first = true;
    sim.run(2_000, &mut |_| {
        Some(if std::mem::take(&mut first) {
            ok(snap.clone())
        } else {
            status(304)
        })
    });
    let calls = sim.keyset_calls();
    assert!(calls.len() >= 2, "{calls:?}");
    let id = calls[0].header(edge::ID_HEADER).unwrap().to_owned();
    assert!(edge::is_edge_id(&id), "{id}");
    for call in &calls {
        assert_eq!(call.header(edge::ID_HEADER), Some(id.as_str()));
        assert_eq!(call.header(edge::NODE_HEADER), Some("edge-eu-1"));
        assert_eq!(call.header(edge::CLUSTER_HEADER), Some("front??proxy"));
        assert_eq!(
            call.header(edge::VERSION_HEADER),
            Some(crate::sync::VERSION)
        );
        assert!(
            call.headers
                .iter()
                .all(|(k, v)| k == "authorization" || !v.contains("kg_edge_secret"))
        );
        assert!(!call.header(":path").unwrap().contains("edge"));
    }
    // The first call leaves on the first tick, before the other workers counted themselves.
    assert_eq!(calls[0].header(edge::WORKERS_HEADER), Some("1"));
    assert_eq!(calls[1].header(edge::WORKERS_HEADER), Some("3"));
    assert_eq!(calls[0].header(edge::REVISION_HEADER), None, "no set yet");
    let last = calls.last().unwrap();
    assert_eq!(last.header(edge::REVISION_HEADER), Some("5"));
    assert_eq!(last.header(edge::KEYS_HEADER), Some("2"));
    let staleness: u64 = last
        .header(edge::STALENESS_HEADER)
        .unwrap()
        .parse()
        .unwrap();
    assert!(staleness <= c.sync_interval_ms, "{staleness}");
    // Properties are read once per VM, not per call.
    assert_eq!(
        sim.world.borrow().property_reads.get("xds.node.id"),
        Some(&1)
    );

    // The leader dies: another worker takes the lease and reports the same id.
    let leader = last.worker;
    sim.alive[leader] = false;
    sim.run(10_000, &mut |_| Some(status(304)));
    let after = sim.keyset_calls();
    let later = after.last().unwrap();
    assert_ne!(later.worker, leader);
    assert_eq!(later.header(edge::ID_HEADER), Some(id.as_str()));

    // Another process (a fresh world) draws another id.
    let mut other = Sim::new(1, &c);
    other.world.borrow_mut().rng = 12345;
    other.run(0, &mut |_| None);
    let other_id = other.keyset_calls()[0]
        .header(edge::ID_HEADER)
        .unwrap()
        .to_owned();
    assert!(edge::is_edge_id(&other_id));
    assert_ne!(other_id, id);
}
