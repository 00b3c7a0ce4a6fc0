//! The key-set sync feed and usage intake over real HTTP on both engines, plus two replicas
//! on one PostgreSQL: cross-replica visibility and no change missed under a write storm.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Engine, InProcessServer};
use keygate_control_plane::http::keys::IssuedKey;
use keygate_protocol::wire::{self, Message};
use keygate_protocol::{Digest, key};
use reqwest::{Method, StatusCode};
use serde_json::json;

on_both_engines!(
    snapshot_delta_longpoll_and_timeout,
    usage_is_idempotent_per_batch
);

/// GET /v1/keyset; returns status, revision header and the decoded message (if any).
async fn poll(s: &InProcessServer, edge: &str, query: &str) -> (StatusCode, u64, Option<Message>) {
    let resp = s
        .http
        .get(s.url(&format!("/v1/keyset{query}")))
        .bearer_auth(edge)
        .send()
        .await
        .unwrap();
    let st = resp.status();
    let rev = resp
        .headers()
        .get("x-keygate-revision")
        .map(|v| v.to_str().unwrap().parse().unwrap())
        .unwrap_or(0);
    if st == StatusCode::OK {
        assert_eq!(resp.headers()["content-type"], wire::CONTENT_TYPE);
    }
    let body = resp.bytes().await.unwrap();
    let msg = (st == StatusCode::OK).then(|| wire::decode(&body).expect("decodes"));
    (st, rev, msg)
}

/// Applies a message to a model set: digest -> expires_at.
fn apply(set: &mut HashMap<Digest, Option<u64>>, m: Message) -> u64 {
    match m {
        Message::Snapshot(s) => {
            set.clear();
            for e in s.entries {
                set.insert(e.digest, e.expires_at);
            }
            s.revision
        }
        Message::Delta(d) => {
            for r in d.removals {
                set.remove(&r);
            }
            for e in d.upserts {
                set.insert(e.digest, e.expires_at);
            }
            d.revision
        }
    }
}

async fn snapshot_delta_longpoll_and_timeout(e: Engine) {
    let s = InProcessServer::start(e).await;
    let IssuedKey { secret: edge, .. } = s.create(json!({"name": "edge", "kind": "edge"})).await;
    let IssuedKey {
        secret: a,
        key: arec,
        ..
    } = s
        .create(json!({"name": "a", "scopes": ["x:y"], "owner_id": "o-a"}))
        .await;
    let IssuedKey { secret: b, .. } = s.create(json!({"name": "b"})).await;
    let IssuedKey {
        secret: susp,
        key: srec,
        ..
    } = s.create(json!({"name": "s"})).await;
    s.admin(
        Method::POST,
        &format!("/v1/keys/{}/suspend", srec.id.as_str()),
        None,
    )
    .await;

    let (st, rev, msg) = poll(&s, &edge, "").await;
    assert_eq!(st, StatusCode::OK);
    let Some(Message::Snapshot(snap)) = msg else {
        panic!("snapshot expected")
    };
    assert_eq!(snap.revision, rev);
    let mut set = HashMap::new();
    apply(&mut set, Message::Snapshot(snap.clone()));
    assert!(set.contains_key(&Digest::of(&a)) && set.contains_key(&Digest::of(&b)));
    assert!(
        !set.contains_key(&Digest::of(&susp)),
        "suspended keys are not in the set"
    );
    assert!(
        !set.contains_key(&Digest::of(&edge)),
        "edge credentials are not in the set"
    );
    let ea = snap
        .entries
        .iter()
        .find(|x| x.digest == Digest::of(&a))
        .unwrap();
    assert_eq!(ea.owner, "o-a");
    assert_eq!(ea.scopes, ["x:y"]);
    assert_eq!(ea.key_id.to_string(), arec.id.as_str());

    // Revoke a, rotate b with grace: one delta brings the reader up to date.
    s.admin(
        Method::POST,
        &format!("/v1/keys/{}/revoke", arec.id.as_str()),
        None,
    )
    .await;
    let bid = s.admin(Method::GET, "/v1/keys?limit=10", None).await.1["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "b")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, rot) = s
        .admin(
            Method::POST,
            &format!("/v1/keys/{bid}/rotate"),
            Some(json!({"grace_period": 600})),
        )
        .await;
    let b2 = rot["secret"].as_str().unwrap().to_owned();
    let (st, rev2, msg) = poll(&s, &edge, &format!("?since={rev}")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(rev2 > rev);
    let Some(Message::Delta(d)) = msg else {
        panic!("delta expected")
    };
    assert_eq!((d.base_revision, d.revision), (rev, rev2));
    apply(&mut set, Message::Delta(d));
    assert!(
        !set.contains_key(&Digest::of(&a)),
        "revoked key left the set"
    );
    assert!(set.contains_key(&Digest::of(&b2)));
    let grace_exp = set[&Digest::of(&b)].expect("rotated-out secret carries its grace end");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now + 590..=now + 610).contains(&grace_exp),
        "{grace_exp} vs {now}"
    );
    // The delta result equals a fresh snapshot.
    let (_, _, fresh) = poll(&s, &edge, "").await;
    let mut fresh_set = HashMap::new();
    apply(&mut fresh_set, fresh.unwrap());
    assert_eq!(set, fresh_set);

    // Long-poll: times out with 304 and the same revision...
    let (st, r, _) = poll(&s, &edge, &format!("?since={rev2}&wait=1")).await;
    assert_eq!((st, r), (StatusCode::NOT_MODIFIED, rev2));
    // ...and wakes as soon as a change lands.
    let waiter = {
        let (http, url, edge) = (
            s.http.clone(),
            s.url(&format!("/v1/keyset?since={rev2}&wait=20")),
            edge.clone(),
        );
        tokio::spawn(async move {
            let t = std::time::Instant::now();
            let resp = http.get(url).bearer_auth(edge).send().await.unwrap();
            (resp.status(), t.elapsed(), resp.bytes().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.admin(Method::POST, &format!("/v1/keys/{bid}/suspend"), None)
        .await;
    let (st, waited, body) = waiter.await.unwrap();
    assert_eq!(st, StatusCode::OK);
    assert!(
        waited < Duration::from_secs(10),
        "woke on the change, not the timeout"
    );
    let Message::Delta(d) = wire::decode(&body).unwrap() else {
        panic!("delta expected")
    };
    assert!(d.removals.contains(&Digest::of(&b2)));
    let (st, _, _) = poll(&s, &edge, "?wait=31&since=1").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    s.stop().await;
}

async fn usage_is_idempotent_per_batch(e: Engine) {
    let s = InProcessServer::start(e).await;
    let IssuedKey { secret: edge, .. } = s.create(json!({"name": "edge", "kind": "edge"})).await;
    let IssuedKey { key: rec, .. } = s.create(json!({"name": "k"})).await;
    let id = rec.id.as_str();
    let batch = json!({"batch_id": "b-1", "entries": [{"key_id": id, "count": 12, "last_used_at": 1_763_900_000}]});
    let (st, v) = s
        .call(Some(&edge), Method::POST, "/v1/usage", Some(batch.clone()))
        .await;
    assert_eq!((st, v["applied"].as_bool()), (StatusCode::OK, Some(true)));
    let (st, v) = s
        .call(Some(&edge), Method::POST, "/v1/usage", Some(batch))
        .await;
    assert_eq!(
        (st, v["applied"].as_bool()),
        (StatusCode::OK, Some(false)),
        "retried batch counts once"
    );
    let (_, k) = s.admin(Method::GET, &format!("/v1/keys/{id}"), None).await;
    assert_eq!(k["usage_count"], 12);
    assert_eq!(k["last_used_at"], 1_763_900_000);
    let (st, v) = s.call(Some(&edge), Method::POST, "/v1/usage", Some(json!({"batch_id": "b-2", "entries": [{"key_id": "nope", "count": 1, "last_used_at": 1}]}))).await;
    common::assert_error(st, &v, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    let (st, _) = s.call(Some(&edge), Method::GET, "/v1/keys", None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (_, k) = s.admin(Method::GET, &format!("/v1/keys/{id}"), None).await;
    assert_eq!(k["usage_count"], 12, "a rejected batch changes nothing");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_postgres_and_a_since_reader_misses_nothing() {
    let (url, _) = common::fresh_database(Engine::Postgres);
    let r1 = InProcessServer::start_on(&url, |_| {}).await;
    let r2 = InProcessServer::start_on(&url, |_| {}).await;
    // Created on one, listed, verified and revoked on the other.
    let IssuedKey {
        secret, key: rec, ..
    } = r1.create(json!({"name": "shared"})).await;
    let id = rec.id.as_str();
    let (_, list) = r2.admin(Method::GET, "/v1/keys", None).await;
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == id)
    );
    assert_eq!(r2.verify(&secret, &[], None).await.code, "VALID");
    let (st, _) = r2
        .admin(Method::POST, &format!("/v1/keys/{id}/revoke"), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    // r1 learns of r2's write through NOTIFY (or its fallback poll); allow for delivery.
    let mut code = String::new();
    for _ in 0..40 {
        code = r1.verify(&secret, &[], None).await.code;
        if code == "REVOKED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(code, "REVOKED");

    // Write storm from both replicas while a reader follows with `since` on r1.
    let IssuedKey { secret: edge, .. } = r1.create(json!({"name": "edge", "kind": "edge"})).await;
    let (_, _, snap) = poll(&r1, &edge, "").await;
    let mut set = HashMap::new();
    let mut rev = apply(&mut set, snap.unwrap());
    let mut writers = Vec::new();
    for (w, base) in [(0, r1.base.clone()), (1, r2.base.clone())] {
        let http = r1.http.clone();
        writers.push(tokio::spawn(async move {
            let mut alive = Vec::new();
            for i in 0..60 {
                let resp = http
                    .post(format!("{base}/v1/keys"))
                    .bearer_auth(common::ADMIN)
                    .json(&json!({"name": format!("w{w}-{i}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::CREATED);
                let v: serde_json::Value = resp.json().await.unwrap();
                let (sec, kid) = (
                    v["secret"].as_str().unwrap().to_owned(),
                    v["key"]["id"].as_str().unwrap().to_owned(),
                );
                if i % 3 == 0 {
                    let resp = http
                        .post(format!("{base}/v1/keys/{kid}/revoke"))
                        .bearer_auth(common::ADMIN)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), StatusCode::OK);
                } else {
                    alive.push(sec);
                }
            }
            alive
        }));
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        let http = r1.http.clone();
        let base = r1.base.clone();
        let edge = edge.clone();
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let resp = http
                    .get(format!("{base}/v1/keyset?since={rev}&wait=1"))
                    .bearer_auth(&edge)
                    .send()
                    .await
                    .unwrap();
                if resp.status() == StatusCode::OK {
                    rev = apply(
                        &mut set,
                        wire::decode(&resp.bytes().await.unwrap()).unwrap(),
                    );
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (set, rev)
        })
    };
    let mut alive = Vec::new();
    for w in writers {
        alive.extend(w.await.unwrap());
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut set, mut rev) = reader.await.unwrap();
    // Catch up once more after the storm, still only with `since`.
    loop {
        let (st, _, msg) = poll(&r1, &edge, &format!("?since={rev}")).await;
        if st == StatusCode::NOT_MODIFIED {
            break;
        }
        assert_eq!(st, StatusCode::OK);
        rev = apply(&mut set, msg.unwrap());
    }
    let (_, _, fresh) = poll(&r2, &edge, "").await;
    let mut fresh_set = HashMap::new();
    apply(&mut fresh_set, fresh.unwrap());
    assert_eq!(
        set, fresh_set,
        "the since-reader's set equals a fresh snapshot"
    );
    assert_eq!(alive.len(), 80);
    for sec in &alive {
        assert!(set.contains_key(&Digest::of(sec)));
    }
    let _ = key::parse(&alive[0]).unwrap();
    r1.stop().await;
    r2.stop().await;
}
