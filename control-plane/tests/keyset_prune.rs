//! Change-log pruning and the sync feed, on both engines: after pruning, every reader whose
//! `since` is below the retained window gets a full snapshot (never a delta with a gap), and
//! every reader inside the window gets a delta that brings it exactly to the current set.
//! Pruning runs both through the background task at start-up (`changes_retained`) and through
//! [`Db::prune_changes`] directly.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::{Engine, InProcessServer};
use keygate_control_plane::Db;
use keygate_control_plane::http::keys::IssuedKey;
use keygate_protocol::Digest;
use keygate_protocol::wire::{self, Message};
use reqwest::{Method, StatusCode};
use serde_json::json;

on_both_engines!(pruned_readers_get_a_snapshot_and_recent_readers_a_delta);

/// The set as a reader holds it: digest -> (key id, expiry).
type Set = HashMap<Digest, (String, Option<u64>)>;

/// GET /v1/keyset with the edge key: status and decoded message (when 200).
async fn poll(s: &InProcessServer, edge: &str, query: &str) -> (StatusCode, Option<Message>) {
    let resp = s
        .http
        .get(s.url(&format!("/v1/keyset{query}")))
        .bearer_auth(edge)
        .send()
        .await
        .unwrap();
    let st = resp.status();
    let body = resp.bytes().await.unwrap();
    (
        st,
        (st == StatusCode::OK).then(|| wire::decode(&body).expect("decodes")),
    )
}

fn apply(set: &mut Set, m: Message) -> u64 {
    match m {
        Message::Snapshot(s) => {
            set.clear();
            for e in s.entries {
                set.insert(e.digest, (e.key_id.to_string(), e.expires_at));
            }
            s.revision
        }
        Message::Delta(d) => {
            for r in d.removals {
                set.remove(&r);
            }
            for e in d.upserts {
                set.insert(e.digest, (e.key_id.to_string(), e.expires_at));
            }
            d.revision
        }
    }
}

/// A fresh snapshot: (revision, set).
async fn snapshot(s: &InProcessServer, edge: &str) -> (u64, Set) {
    let (st, m) = poll(s, edge, "").await;
    assert_eq!(st, StatusCode::OK);
    let mut set = Set::new();
    let rev = apply(&mut set, m.unwrap());
    (rev, set)
}

/// Records the set after a write that must have moved the revision by exactly one.
async fn record(s: &InProcessServer, edge: &str, states: &mut BTreeMap<u64, Set>) -> u64 {
    let (rev, set) = snapshot(s, edge).await;
    let last = *states.keys().next_back().unwrap();
    assert_eq!(rev, last + 1, "one write, one revision");
    states.insert(rev, set);
    rev
}

/// (floor, smallest revision left in the change log) read straight from the database.
async fn floor_and_oldest(db: &Db) -> (i64, Option<i64>) {
    db.change_log_bounds().await.expect("change-log bounds")
}

/// Every possible reader, from revision 0 to the current one, asks for the changes since its
/// revision: below `floor` it must get a snapshot of the current set; from `floor` on a delta
/// from exactly its revision that turns its set into the current one (304 when it is current).
/// Returns (snapshots, deltas) answered.
async fn check_every_reader(
    s: &InProcessServer,
    edge: &str,
    states: &BTreeMap<u64, Set>,
    floor: u64,
) -> (usize, usize) {
    let (&cur, current) = states.iter().next_back().unwrap();
    let (mut snaps, mut deltas) = (0, 0);
    for (&since, held) in states {
        let (st, msg) = poll(s, edge, &format!("?since={since}")).await;
        if since == cur {
            assert_eq!(st, StatusCode::NOT_MODIFIED, "a current reader");
            continue;
        }
        assert_eq!(st, StatusCode::OK, "since={since}");
        let mut set = held.clone();
        match msg.unwrap() {
            Message::Snapshot(snap) => {
                assert!(
                    since < floor,
                    "since={since} is inside the window (floor {floor}): a delta was expected"
                );
                assert_eq!(snap.revision, cur);
                apply(&mut set, Message::Snapshot(snap));
                snaps += 1;
            }
            Message::Delta(d) => {
                assert!(
                    since >= floor,
                    "since={since} is below the floor {floor}: its changes were pruned, a delta \
                     from it would have a gap"
                );
                assert_eq!((d.base_revision, d.revision), (since, cur));
                apply(&mut set, Message::Delta(d));
                deltas += 1;
            }
        }
        assert_eq!(&set, current, "reader at {since} ends on the current set");
    }
    (snaps, deltas)
}

async fn pruned_readers_get_a_snapshot_and_recent_readers_a_delta(e: Engine) {
    let (url, _dir) = common::fresh_database(e);
    let a = InProcessServer::start_on(&url, |_| {}).await;
    let IssuedKey { secret: edge, .. } = a.create(json!({"name": "edge", "kind": "edge"})).await;
    let mut states = BTreeMap::new();
    states.insert(0, Set::new());
    states.insert(1, snapshot(&a, &edge).await.1);
    assert_eq!(snapshot(&a, &edge).await.0, 1);

    // A dozen writes of every kind that touches the set.
    let mut ids = Vec::new();
    for i in 0..6 {
        let IssuedKey { key: k, .. } = a
            .create(json!({"name": format!("k{i}"), "scopes": ["x:read"]}))
            .await;
        ids.push(k.id.clone());
        record(&a, &edge, &mut states).await;
    }
    for (path, body) in [
        (format!("/v1/keys/{}/revoke", ids[0]), None),
        (format!("/v1/keys/{}/suspend", ids[1]), None),
        (
            format!("/v1/keys/{}/rotate", ids[2]),
            Some(json!({"grace_period": 600})),
        ),
        (format!("/v1/keys/{}/reactivate", ids[1]), None),
        (format!("/v1/keys/{}", ids[3]), Some(json!({"scopes": []}))),
        (format!("/v1/keys/{}/revoke", ids[4]), None),
    ] {
        let method = if body.as_ref().is_some_and(|b| b.get("scopes").is_some()) {
            Method::PATCH
        } else {
            Method::POST
        };
        let (st, v) = a.admin(method, &path, body).await;
        assert_eq!(st, StatusCode::OK, "{path}: {v}");
        record(&a, &edge, &mut states).await;
    }
    let cur = *states.keys().next_back().unwrap();
    assert_eq!(cur, 13);

    // Nothing pruned yet: every reader gets a delta (this is what pruning must change).
    assert_eq!(floor_and_oldest(a.state.db()).await, (0, Some(1)));
    assert_eq!(
        check_every_reader(&a, &edge, &states, 0).await,
        (0, cur as usize)
    );
    a.stop().await;

    // Restart with a window of 4 revisions: the background task prunes at start-up.
    let b = InProcessServer::start_on(&url, |c| c.changes_retained = 4).await;
    let want_floor = cur as i64 - 4;
    let mut seen = (0, None);
    for _ in 0..100 {
        seen = floor_and_oldest(b.state.db()).await;
        if seen.0 == want_floor {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen,
        (want_floor, Some(want_floor + 1)),
        "the start-up prune raised the floor and dropped the older change-log rows"
    );
    let (snaps, deltas) = check_every_reader(&b, &edge, &states, want_floor as u64).await;
    assert_eq!((snaps, deltas), (want_floor as usize, 4));

    // More writes, then a direct prune down to 2 revisions.
    for path in [
        format!("/v1/keys/{}/suspend", ids[5]),
        format!("/v1/keys/{}/revoke", ids[1]),
        format!("/v1/keys/{}/rotate", ids[3]),
    ] {
        let (st, v) = b.admin(Method::POST, &path, None).await;
        assert_eq!(st, StatusCode::OK, "{path}: {v}");
        record(&b, &edge, &mut states).await;
    }
    let cur = *states.keys().next_back().unwrap();
    b.state.db().prune_changes(2).await.unwrap();
    let floor = cur as i64 - 2;
    assert_eq!(
        floor_and_oldest(b.state.db()).await,
        (floor, Some(floor + 1))
    );
    let (snaps, deltas) = check_every_reader(&b, &edge, &states, floor as u64).await;
    assert_eq!((snaps, deltas), (floor as usize, 2));
    // Pruning never lowers the floor.
    b.state.db().prune_changes(100).await.unwrap();
    assert_eq!(floor_and_oldest(b.state.db()).await.0, floor);
    b.stop().await;
}
