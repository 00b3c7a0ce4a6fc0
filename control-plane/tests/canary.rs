//! Canary keys (issue 28.3) over real HTTP on both engines: a canary is issued like any key and
//! looks like one; verify, caller authentication and forward-auth answer it exactly as an unknown
//! key; it sits in the key set as `Canary`; it cannot be rotated; an edge's hit report
//! (`POST /v1/canary-hits`) and the control plane's own sightings raise `key.canary_used`, an
//! audit row and a signed webhook carrying path, client and user agent, never the key; a hit id
//! raises once; bad reports are structured errors that change nothing.

mod common;

use std::time::Duration;

use common::{ADMIN, Engine, InProcessServer, assert_error, fresh_database};
use keygate_control_plane::test_support::WebhookReceiver;
use keygate_protocol::policy::KeyState;
use keygate_protocol::wire::{self, Message};
use keygate_protocol::{Digest, key};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_both_engines!(
    a_canary_is_answered_as_an_unknown_key_everywhere,
    edge_reports_raise_one_signed_event_per_hit,
    bad_reports_change_nothing,
    forward_auth_answers_a_canary_as_an_unknown_key_and_raises_it
);

async fn start(engine: Engine) -> (InProcessServer, Option<tempfile::TempDir>) {
    let (url, dir) = fresh_database(engine);
    let s = InProcessServer::start_on(&url, |c| {
        c.webhooks.webhook_poll_ms = 50;
        c.webhooks.webhook_retry_base_ms = 200;
        c.webhooks.webhook_timeout_ms = 2000;
    })
    .await;
    (s, dir)
}

/// Registers a webhook endpoint for `key.canary_used` at `rx`.
async fn subscribe(s: &InProcessServer, rx: &WebhookReceiver) {
    let (st, v) = s
        .api
        .admin(
            Method::POST,
            "/v1/webhooks",
            Some(json!({"url": rx.url(), "event_types": ["key.canary_used"]})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    rx.set_secret(v["secret"].as_str().unwrap());
}

/// The audit rows `key.canary_used` of key `id`.
async fn canary_audit(s: &InProcessServer, id: &str) -> Vec<Value> {
    let (st, v) = s
        .api
        .admin(
            Method::GET,
            &format!("/v1/audit?key_id={id}&action=key.canary_used"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().clone()
}

async fn report(s: &InProcessServer, edge: &str, body: Value) -> (StatusCode, Value) {
    s.api
        .call(Some(edge), Method::POST, "/v1/canary-hits", Some(body))
        .await
}

async fn a_canary_is_answered_as_an_unknown_key_everywhere(engine: Engine) {
    let (s, _dir) = start(engine).await;
    let rx = WebhookReceiver::start().await;
    subscribe(&s, &rx).await;
    let canary = s
        .api
        .create(json!({"name": "bait", "kind": "canary", "scopes": ["keys:read"]}))
        .await;
    assert_eq!(
        canary.key.kind,
        keygate_control_plane::domain::KeyKind::Canary
    );
    // It looks like any key: same prefix, format and checksum.
    let parsed = key::parse(&canary.secret).expect("a canary parses as a key");
    let live = s.api.create(json!({"name": "live"})).await;
    assert_eq!(
        parsed.prefix(),
        key::parse(&live.secret).unwrap().prefix(),
        "same prefix as a live key"
    );
    assert_eq!(canary.secret.len(), live.secret.len());
    let unknown = key::generate(parsed.prefix()).unwrap();

    // verify: NOT_FOUND, the same body as a key never issued.
    let (st_c, v_c) = s
        .api
        .admin(
            Method::POST,
            "/v1/keys/verify",
            Some(json!({"key": canary.secret})),
        )
        .await;
    let (st_u, v_u) = s
        .api
        .admin(
            Method::POST,
            "/v1/keys/verify",
            Some(json!({"key": unknown.expose_secret()})),
        )
        .await;
    assert_eq!((st_c, &v_c), (st_u, &v_u));
    assert_eq!(v_c["code"], "NOT_FOUND");

    // As a caller's credential: the unknown key's 401, byte for byte.
    let as_caller = |k: String| {
        let http = s.http.clone();
        let url = s.url("/v1/keys");
        async move {
            let r = http
                .get(url)
                .bearer_auth(k)
                .header("user-agent", "canary-test/1")
                .send()
                .await
                .unwrap();
            let headers: Vec<(String, String)> = r
                .headers()
                .iter()
                .filter(|(n, _)| *n != "date" && !n.as_str().starts_with("x-request"))
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
                .collect();
            (r.status(), headers, r.bytes().await.unwrap())
        }
    };
    let c = as_caller(canary.secret.clone()).await;
    let u = as_caller(unknown.expose_secret().to_owned()).await;
    assert_eq!(c, u);
    assert_eq!(c.0, StatusCode::UNAUTHORIZED);

    // Two sightings by the control plane: two events, with where it was presented.
    let got = rx
        .wait_for(Duration::from_secs(10), "two canary events", |r| {
            r.iter().filter(|x| x.answered == Some(204)).count() >= 2
        })
        .await;
    assert!(got.iter().all(|x| x.verified), "every signature checks");
    for x in &got {
        assert_eq!(x.body["type"], "key.canary_used");
        assert_eq!(x.body["data"]["key"]["id"], canary.key.id.as_str());
        assert_eq!(x.body["data"]["hit"]["source"], "control_plane");
        assert!(!x.raw.contains(&canary.secret), "never the key: {}", x.raw);
    }
    let paths: Vec<&str> = got
        .iter()
        .map(|x| x.body["data"]["hit"]["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"/v1/keys/verify"), "{paths:?}");
    assert!(paths.contains(&"/v1/keys"), "{paths:?}");
    let caller_hit = got
        .iter()
        .find(|x| x.body["data"]["hit"]["path"] == "/v1/keys")
        .unwrap();
    assert_eq!(
        caller_hit.body["data"]["hit"]["user_agent"],
        "canary-test/1"
    );
    assert_eq!(canary_audit(&s, &canary.key.id).await.len(), 2);

    // In the key set with state Canary, so edges recognize it.
    let edge = s.api.create(json!({"name": "edge", "kind": "edge"})).await;
    let resp = s
        .http
        .get(s.url("/v1/keyset"))
        .bearer_auth(&edge.secret)
        .header("accept", wire::ACCEPT_V2)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let Message::Snapshot(snap) = wire::decode(&resp.bytes().await.unwrap()).unwrap() else {
        panic!("a snapshot")
    };
    let digest = Digest::of(&canary.secret);
    let entry = snap.entries.iter().find(|e| e.digest == digest).unwrap();
    assert_eq!(entry.policy.state, KeyState::Canary);
    let live_entry = snap
        .entries
        .iter()
        .find(|e| e.digest == Digest::of(&live.secret))
        .unwrap();
    assert_eq!(live_entry.policy.state, KeyState::Active);
    // A filter built before policies (no `version=2` in its Accept) never gets the canary, which
    // it would let pass: for it the canary is an unknown key.
    let resp = s
        .http
        .get(s.url("/v1/keyset"))
        .bearer_auth(&edge.secret)
        .send()
        .await
        .unwrap();
    let Message::Snapshot(old_reader) = wire::decode(&resp.bytes().await.unwrap()).unwrap() else {
        panic!("a snapshot")
    };
    assert!(old_reader.entries.iter().all(|e| e.digest != digest));
    assert!(
        old_reader
            .entries
            .iter()
            .any(|e| e.digest == Digest::of(&live.secret))
    );

    // Not rotatable; revocable (then it leaves the set).
    let (st, v) = s
        .api
        .admin(
            Method::POST,
            &format!("/v1/keys/{}/rotate", canary.key.id),
            None,
        )
        .await;
    assert_error(st, &v, StatusCode::CONFLICT, "CONFLICT");
    s.api.key_action(&canary.key.id, "revoke").await;
    let resp = s
        .http
        .get(s.url("/v1/keyset"))
        .bearer_auth(&edge.secret)
        .header("accept", wire::ACCEPT_V2)
        .send()
        .await
        .unwrap();
    let Message::Snapshot(snap) = wire::decode(&resp.bytes().await.unwrap()).unwrap() else {
        panic!("a snapshot")
    };
    assert!(snap.entries.iter().all(|e| e.digest != digest));
}

async fn edge_reports_raise_one_signed_event_per_hit(engine: Engine) {
    let (s, _dir) = start(engine).await;
    let rx = WebhookReceiver::start().await;
    subscribe(&s, &rx).await;
    let canary = s
        .api
        .create(json!({"name": "bait", "kind": "canary", "workspace_id": "acme"}))
        .await;
    let live = s.api.create(json!({"name": "live"})).await;
    let edge = s.api.create(json!({"name": "edge", "kind": "edge"})).await;
    let edge_id = "0123456789abcdef0123456789abcdef";
    let hit = |id: &str, key_id: &str| {
        json!({"id": id, "key_id": key_id, "at": 0, "path": "/v1/things",
               "client": "203.0.113.7", "user_agent": "sqlmap/1.7"})
    };
    let body = json!({"hits": [hit("h-1", &canary.key.id), hit("h-2", &live.key.id)]});
    let resp = s
        .http
        .post(s.url("/v1/canary-hits"))
        .bearer_auth(&edge.secret)
        .header("keygate-edge-id", edge_id)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v, json!({"written": 1, "duplicate": 0, "ignored": 1}));
    // A retried report: the hit id raises nothing twice.
    let (st, v) = report(&s, &edge.secret, body.clone()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"written": 0, "duplicate": 1, "ignored": 1}));

    let got = rx
        .wait_for(Duration::from_secs(10), "the canary event", |r| {
            r.iter().any(|x| x.answered == Some(204))
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = if rx.received().len() > got.len() {
        rx.received()
    } else {
        got
    };
    assert_eq!(got.len(), 1, "one event for one hit");
    let e = &got[0];
    assert!(e.verified);
    assert_eq!(e.body["type"], "key.canary_used");
    assert_eq!(e.body["data"]["workspace_id"], "acme");
    let h = &e.body["data"]["hit"];
    assert_eq!(h["source"], "edge");
    assert_eq!(h["edge_id"], edge_id);
    assert_eq!(h["hit_id"], "h-1");
    assert_eq!(h["path"], "/v1/things");
    assert_eq!(h["client"], "203.0.113.7");
    assert_eq!(h["user_agent"], "sqlmap/1.7");
    assert!(!e.raw.contains(&canary.secret));
    let audit = canary_audit(&s, &canary.key.id).await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert!(canary_audit(&s, &live.key.id).await.is_empty());

    let metrics = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"keygate_canary_hits_total{outcome="edge"} 1"#,
        r#"keygate_canary_hits_total{outcome="duplicate"} 1"#,
        r#"keygate_canary_hits_total{outcome="ignored"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

async fn bad_reports_change_nothing(engine: Engine) {
    let (s, _dir) = start(engine).await;
    let canary = s
        .api
        .create(json!({"name": "bait", "kind": "canary"}))
        .await;
    let edge = s.api.create(json!({"name": "edge", "kind": "edge"})).await;
    let workspace = s
        .api
        .create(json!({"name": "ws", "scopes": ["keys:read"]}))
        .await;
    let good = |path: &str| json!({"hits": [{"id": "x1", "key_id": canary.key.id, "path": path}]});
    for body in [
        json!({"hits": []}),
        good("/a?api_key=kg_live_leaked"),
        good("relative"),
        json!({"hits": [{"key_id": "kg_live_not_an_id"}]}),
        json!({"hits": [{"id": "has space", "key_id": canary.key.id}]}),
        json!({"hits": [{"key_id": canary.key.id, "user_agent": "u".repeat(257)}]}),
        json!({"hits": (0..65).map(|_| json!({"key_id": canary.key.id})).collect::<Vec<_>>()}),
    ] {
        let (st, v) = report(&s, &edge.secret, body).await;
        assert_error(st, &v, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    }
    // Unknown members: the JSON extractor's 422, as on every route.
    let (st, v) = report(&s, &edge.secret, json!({"hits": [], "extra": 1})).await;
    assert_error(st, &v, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    // A bad edge id header.
    let resp = s
        .http
        .post(s.url("/v1/canary-hits"))
        .bearer_auth(&edge.secret)
        .header("keygate-edge-id", "not-hex")
        .json(&good("/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Over the route's size bound: the JSON 413, nothing read.
    let big = format!(
        "{{\"hits\":[{{\"key_id\":\"{}\",\"path\":\"/{}\"}}]}}",
        canary.key.id,
        "a".repeat(keygate_protocol::canary::MAX_BODY_BYTES)
    );
    let resp = s
        .http
        .post(s.url("/v1/canary-hits"))
        .bearer_auth(&edge.secret)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let st = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert_error(st, &v, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
    // Only an edge key reports.
    let (st, v) = report(&s, &workspace.secret, good("/a")).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, v) = report(&s, ADMIN, good("/a")).await;
    assert_eq!(st, StatusCode::OK, "the admin may report: {v}");
    let (st, _) = s
        .api
        .call(None, Method::POST, "/v1/canary-hits", Some(good("/a")))
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // Nothing but the admin's one hit was written.
    assert_eq!(canary_audit(&s, &canary.key.id).await.len(), 1);
}

async fn forward_auth_answers_a_canary_as_an_unknown_key_and_raises_it(engine: Engine) {
    let (url, _db) = fresh_database(engine);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("forward-auth.json");
    std::fs::write(
        &config,
        r#"{"routes":[{"path_prefix":"/","required_scopes":[]}],"key_sources":[{"header":"x-api-key"}]}"#,
    )
    .unwrap();
    let s = InProcessServer::start_on(&url, |c| {
        c.forward_auth.config = Some(config);
        c.forward_auth.open = true;
        c.webhooks.webhook_poll_ms = 50;
    })
    .await;
    let rx = WebhookReceiver::start().await;
    subscribe(&s, &rx).await;
    let canary = s
        .api
        .create(json!({"name": "bait", "kind": "canary"}))
        .await;
    let unknown = key::generate(key::parse(&canary.secret).unwrap().prefix()).unwrap();
    let ask = |k: String| {
        let http = s.http.clone();
        let url = s.url("/v1/forward-auth/v1/orders?token=x");
        async move {
            let r = http
                .get(url)
                .header("x-api-key", k)
                .header("user-agent", "fa-test/2")
                .header("x-forwarded-for", "192.0.2.55, 10.0.0.1")
                .send()
                .await
                .unwrap();
            let headers: Vec<(String, String)> = r
                .headers()
                .iter()
                .filter(|(n, _)| *n != "date")
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
                .collect();
            (r.status(), headers, r.bytes().await.unwrap())
        }
    };
    let c = ask(canary.secret.clone()).await;
    let u = ask(unknown.expose_secret().to_owned()).await;
    assert_eq!(c, u, "the filter's unknown-key reply, byte for byte");
    assert_eq!(c.0, StatusCode::UNAUTHORIZED);
    let got = rx
        .wait_for(Duration::from_secs(10), "the canary event", |r| {
            r.iter().any(|x| x.answered == Some(204))
        })
        .await;
    let hit = &got[0].body["data"]["hit"];
    assert_eq!(hit["source"], "control_plane", "{hit}");
    assert_eq!(
        hit["path"], "/v1/orders",
        "the original path, no query: {hit}"
    );
    assert_eq!(hit["client"], "192.0.2.55", "{hit}");
    assert_eq!(hit["user_agent"], "fa-test/2", "{hit}");
    assert!(got[0].verified);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.received().len(), 1, "the unknown key raised nothing");
}
