//! Revoke by possession (issue 28.3): `POST /v1/keys/revoke-by-possession`, unauthenticated, up
//! to 1,000 keys; the live ones among them are revoked with their children and audited; the
//! answer is the same whatever existed; bad input changes nothing; rate limited per address.

mod common;

use std::time::Duration;

use common::{Engine, InProcessServer, assert_error, fresh_database};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PATH: &str = "/v1/keys/revoke-by-possession";

async fn start(engine: Engine, per_minute: u32) -> (InProcessServer, Option<tempfile::TempDir>) {
    let (url, dir) = fresh_database(engine);
    let s =
        InProcessServer::start_on(&url, |c| c.possession_revocations_per_minute = per_minute).await;
    (s, dir)
}

async fn hand_in(s: &InProcessServer, keys: &[&str]) -> (StatusCode, Value) {
    s.api
        .call(None, Method::POST, PATH, Some(json!({ "keys": keys })))
        .await
}

async fn status(s: &InProcessServer, id: &str) -> String {
    s.api.key(id).await.status.as_str().to_owned()
}

async fn live_keys_handed_in_are_revoked_and_the_answer_reveals_nothing(engine: Engine) {
    let (s, _dir) = start(engine, 100).await;
    let parent = s
        .api
        .create(json!({"name": "found", "workspace_id": "acme", "scopes": ["repo:read"]}))
        .await;
    let (st, child) = s
        .api
        .call(
            Some(&parent.secret),
            Method::POST,
            "/v1/keys/exchange",
            Some(json!({"subject": "ci", "scopes": ["repo:read"]})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{child}");
    let child_id = child["key"]["id"].as_str().unwrap().to_owned();
    let suspended = s.api.create(json!({"name": "suspended"})).await;
    s.api.key_action(&suspended.key.id, "suspend").await;
    let bystander = s.api.create(json!({"name": "bystander"})).await;
    let never_issued = keygate_protocol::key::generate("kg_live").unwrap();

    let found = [
        parent.secret.as_str(),
        suspended.secret.as_str(),
        never_issued.expose_secret(),
        "not a key at all",
    ];
    let (st, v) = hand_in(&s, &found).await;
    assert_eq!((st, &v), (StatusCode::ACCEPTED, &json!({"received": 4})));
    // Keys that do not exist: the very same answer.
    let strangers = [
        never_issued.expose_secret(),
        "kg_live_nope",
        "x",
        "still not a key",
    ];
    let (st2, v2) = hand_in(&s, &strangers).await;
    assert_eq!((st2, &v2), (st, &v));

    // Committed before the answer: an accepted batch is not lost to a crash.
    assert_eq!(status(&s, &parent.key.id).await, "revoked");
    assert_eq!(status(&s, &child_id).await, "revoked");
    assert_eq!(status(&s, &suspended.key.id).await, "revoked");
    assert_eq!(status(&s, &bystander.key.id).await, "active");
    assert_eq!(
        s.api.verify(&parent.secret, &[], None).await.code,
        "REVOKED"
    );

    let (_, audit) = s
        .api
        .admin(
            Method::GET,
            &format!("/v1/audit?key_id={}&action=key.revoke", parent.key.id),
            None,
        )
        .await;
    let row = &audit["items"][0];
    assert_eq!(row["actor"]["id"], "revoke-by-possession", "{audit}");
    assert!(
        row["reason"].as_str().unwrap().contains("127.0.0.1"),
        "{audit}"
    );
    // Handing in a revoked key again changes nothing.
    let (st, _) = hand_in(&s, &[&parent.secret]).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, audit) = s
        .api
        .admin(
            Method::GET,
            &format!("/v1/audit?key_id={}&action=key.revoke", parent.key.id),
            None,
        )
        .await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(1), "{audit}");
}

async fn bad_input_changes_nothing_and_requests_are_rate_limited(engine: Engine) {
    let (s, _dir) = start(engine, 2).await;
    let k = s.api.create(json!({"name": "safe"})).await;
    let (st, v) = hand_in(&s, &[]).await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    let many: Vec<String> = (0..1001).map(|_| k.secret.clone()).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let (st, v) = hand_in(&s, &refs).await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    let (st, v) = s
        .api
        .call(
            None,
            Method::POST,
            PATH,
            Some(json!({"keys": [k.secret], "extra": 1})),
        )
        .await;
    assert_error(st, &v, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status(&s, &k.key.id).await, "active");
    // Two accepted requests a minute from this address, then 429 with Retry-After.
    for _ in 0..2 {
        let (st, _) = hand_in(&s, &["x"]).await;
        assert_eq!(st, StatusCode::ACCEPTED);
    }
    let r = s
        .api
        .http
        .post(s.api.url(PATH))
        .json(&json!({"keys": [k.secret]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get("retry-after").is_some());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "RATE_LIMITED");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status(&s, &k.key.id).await, "active");
}

on_both_engines!(
    live_keys_handed_in_are_revoked_and_the_answer_reveals_nothing,
    bad_input_changes_nothing_and_requests_are_rate_limited,
);
