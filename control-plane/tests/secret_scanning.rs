//! GitHub secret scanning partner alerts (issue 28.2), signed by the fake GitHub's signer
//! (test-only ECDSA P-256 keys) and verified against its published keys: a signed alert for a
//! live key revokes it and its children, audits the URL and source and raises `key.leaked`; an
//! unsigned, badly signed, unknown-key or replayed alert changes nothing; a false positive is
//! labelled; a key GitHub rotated to is fetched on its first use; the suspend and notify
//! policies.

mod common;

use std::time::Duration;

use common::{Engine, InProcessServer, assert_error, fresh_database};
use keygate_control_plane::domain::leaks::LeakPolicy;
use keygate_control_plane::test_support::WebhookReceiver;
use keygate_fake_github::FakeGithub;
use keygate_fake_github::secret_scanning::{KEY_1, OTHER, sign_with};
use keygate_protocol::Digest;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PATH: &str = "/v1/github/secret-scanning";
const URL: &str = "https://github.com/octocat/Hello-World/blob/1234/config.env";

async fn start(
    engine: Engine,
    gh: &FakeGithub,
    policy: LeakPolicy,
) -> (InProcessServer, Option<tempfile::TempDir>) {
    let (url, dir) = fresh_database(engine);
    let keys = gh.alert_keys_url();
    let s = InProcessServer::start_on(&url, |c| {
        c.secret_scanning.secret_scanning_keys_url = keys;
        c.secret_scanning.secret_scanning_policy = policy;
        c.webhooks.webhook_poll_ms = 50;
    })
    .await;
    (s, dir)
}

fn alert(tokens: &[&str]) -> Vec<u8> {
    let items: Vec<Value> = tokens
        .iter()
        .map(|t| json!({"token": t, "type": "keygate_api_key", "url": URL, "source": "content"}))
        .collect();
    serde_json::to_vec(&items).unwrap()
}

/// POSTs `body` with the given signature headers: (status, JSON answer).
async fn post(s: &InProcessServer, body: &[u8], sig: Option<(&str, &str)>) -> (StatusCode, Value) {
    let mut req = s
        .api
        .http
        .post(s.api.url(PATH))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some((id, sig)) = sig {
        req = req
            .header("Github-Public-Key-Identifier", id)
            .header("Github-Public-Key-Signature", sig);
    }
    let r = req.send().await.unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

async fn signed(s: &InProcessServer, gh: &FakeGithub, body: &[u8]) -> (StatusCode, Value) {
    let (id, sig) = gh.sign_alert(body);
    post(s, body, Some((&id, &sig))).await
}

async fn status(s: &InProcessServer, id: &str) -> String {
    s.api.key(id).await.status.as_str().to_owned()
}

/// A workspace key with an exchanged child.
async fn parent_and_child(s: &InProcessServer) -> (String, String, String) {
    let parent = s
        .api
        .create(json!({"name": "leaky", "workspace_id": "acme", "scopes": ["repo:read"]}))
        .await;
    let (st, v) = s
        .api
        .call(
            Some(&parent.secret),
            Method::POST,
            "/v1/keys/exchange",
            Some(json!({"subject": "ci", "scopes": ["repo:read"]})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    (
        parent.secret,
        parent.key.id,
        v["key"]["id"].as_str().unwrap().to_owned(),
    )
}

async fn a_signed_alert_revokes_the_key_and_its_children(engine: Engine) {
    let gh = FakeGithub::start().await.unwrap();
    let rx = WebhookReceiver::start().await;
    let (s, _dir) = start(engine, &gh, LeakPolicy::Revoke).await;
    let (st, v) = s
        .api
        .admin(
            Method::POST,
            "/v1/webhooks",
            Some(json!({"url": rx.url(), "event_types": ["key.leaked", "key.revoked"]})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    rx.set_secret(v["secret"].as_str().unwrap());
    let (secret, parent, child) = parent_and_child(&s).await;
    let bystander = s.api.create(json!({"name": "bystander"})).await;
    let not_ours = "kg_live_thisIsNotAKeyBecauseItsChecksumIsWrong000000";

    let body = alert(&[&secret, not_ours]);
    let (st, v) = signed(&s, &gh, &body).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!([
            {"token_hash": Digest::of(&secret).to_hex(), "token_type": "keygate_api_key", "label": "true_positive"},
            {"token_hash": Digest::of(not_ours).to_hex(), "token_type": "keygate_api_key", "label": "false_positive"},
        ])
    );
    assert_eq!(status(&s, &parent).await, "revoked");
    assert_eq!(status(&s, &child).await, "revoked");
    assert_eq!(status(&s, &bystander.key.id).await, "active");
    assert_eq!(s.api.verify(&secret, &[], None).await.code, "REVOKED");

    // Audited with the URL and the source.
    let (_, audit) = s
        .api
        .admin(
            Method::GET,
            &format!("/v1/audit?key_id={parent}&action=key.leak"),
            None,
        )
        .await;
    let row = &audit["items"][0];
    assert_eq!(row["actor"]["id"], "github-secret-scanning");
    let reason = row["reason"].as_str().unwrap();
    assert!(
        reason.contains(URL) && reason.contains("content"),
        "{reason}"
    );
    let (_, audit) = s
        .api
        .admin(
            Method::GET,
            &format!("/v1/audit?key_id={child}&action=key.revoke"),
            None,
        )
        .await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(1), "{audit}");

    // Events: key.leaked for the parent, key.revoked for both.
    let got = rx
        .wait_for(Duration::from_secs(20), "leaked + two revoked", |r| {
            r.len() >= 3
        })
        .await;
    assert!(got.iter().all(|r| r.verified));
    let leaked: Vec<&Value> = got
        .iter()
        .map(|r| &r.body)
        .filter(|b| b["type"] == "key.leaked")
        .collect();
    assert_eq!(leaked.len(), 1, "{got:?}");
    assert_eq!(leaked[0]["data"]["key"]["id"], parent.as_str());
    assert!(leaked[0]["data"]["reason"].as_str().unwrap().contains(URL));
    assert!(got.iter().all(|r| !r.raw.contains(&secret)));

    // The same signed body again (a replay, or GitHub's retry): the same answer, nothing more.
    let (st, again) = signed(&s, &gh, &body).await;
    assert_eq!((st, &again), (StatusCode::OK, &v));
    let (_, audit) = s
        .api
        .admin(
            Method::GET,
            &format!("/v1/audit?key_id={parent}&action=key.leak"),
            None,
        )
        .await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(1), "{audit}");
}

async fn unsigned_or_badly_signed_alerts_change_nothing(engine: Engine) {
    let gh = FakeGithub::start().await.unwrap();
    let (s, _dir) = start(engine, &gh, LeakPolicy::Revoke).await;
    let (secret, parent, child) = parent_and_child(&s).await;
    let body = alert(&[&secret]);
    let (id, sig) = gh.sign_alert(&body);
    let (other_id, other_sig) = sign_with(OTHER, &body);
    let (_, sig_of_other_body) = gh.sign_alert(&alert(&["kg_live_something"]));
    let (_, sig_by_key_1) = sign_with(KEY_1, &body);
    let cases: Vec<(&str, Option<(&str, &str)>)> = vec![
        ("unsigned", None),
        ("signature of another body", Some((&id, &sig_of_other_body))),
        ("not base64", Some((&id, "%%%"))),
        ("not DER", Some((&id, "AAAA"))),
        (
            "a key GitHub does not publish",
            Some((&other_id, &other_sig)),
        ),
        (
            "signed by the other published key, named as the current",
            Some((&id, &sig_by_key_1)),
        ),
    ];
    for (what, h) in cases {
        let (st, v) = post(&s, &body, h).await;
        assert_error(st, &v, StatusCode::UNAUTHORIZED, "BAD_SIGNATURE");
        assert_eq!(status(&s, &parent).await, "active", "{what}");
    }
    // A body changed after signing.
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let (st, v) = post(&s, &tampered, Some((&id, &sig))).await;
    assert_error(st, &v, StatusCode::UNAUTHORIZED, "BAD_SIGNATURE");
    // Signed but not an alert.
    let junk = br#"{"token": "x"}"#;
    let (st, v) = signed(&s, &gh, junk).await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    assert_eq!(status(&s, &parent).await, "active");
    assert_eq!(status(&s, &child).await, "active");
    let (_, audit) = s
        .api
        .admin(Method::GET, "/v1/audit?action=key.leak", None)
        .await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(0), "{audit}");
    // The key signed by the older published key is accepted.
    let (id1, sig1) = sign_with(KEY_1, &body);
    let (st, _) = post(&s, &body, Some((&id1, &sig1))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(status(&s, &parent).await, "revoked");
}

async fn false_positives_are_labelled_and_rotation_is_followed(engine: Engine) {
    let gh = FakeGithub::start().await.unwrap();
    let (s, _dir) = start(engine, &gh, LeakPolicy::Revoke).await;
    // Well formed, right checksum, but never issued here.
    let stranger = keygate_protocol::key::generate("kg_live").unwrap();
    let stranger = stranger.expose_secret();
    let body = alert(&[stranger, "hello"]);
    let (st, v) = signed(&s, &gh, &body).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v[0]["label"], "false_positive");
    assert_eq!(v[0]["token_hash"], Digest::of(stranger).to_hex());
    assert_eq!(v[1]["label"], "false_positive");
    let fetches = gh.alert_key_fetches();
    // GitHub rotates its key: the first alert signed by the new key makes one fetch.
    gh.publish_alert_key();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let k = s.api.create(json!({"name": "after-rotation"})).await;
    let (st, v) = signed(&s, &gh, &alert(&[&k.secret])).await;
    assert_eq!(
        (st, &v[0]["label"]),
        (StatusCode::OK, &json!("true_positive")),
        "{v}"
    );
    assert_eq!(gh.alert_key_fetches(), fetches + 1);
    assert_eq!(status(&s, &k.key.id).await, "revoked");
}

async fn suspend_and_notify_policies(engine: Engine) {
    let gh = FakeGithub::start().await.unwrap();
    let (s, _dir) = start(engine, &gh, LeakPolicy::Suspend).await;
    let (secret, parent, child) = parent_and_child(&s).await;
    let (st, _) = signed(&s, &gh, &alert(&[&secret])).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(status(&s, &parent).await, "suspended");
    assert_eq!(status(&s, &child).await, "suspended");
    drop(s);
    let (s, _dir) = start(engine, &gh, LeakPolicy::Notify).await;
    let k = s.api.create(json!({"name": "notify"})).await;
    let (st, v) = signed(&s, &gh, &alert(&[&k.secret])).await;
    assert_eq!(
        (st, &v[0]["label"]),
        (StatusCode::OK, &json!("true_positive"))
    );
    assert_eq!(status(&s, &k.key.id).await, "active");
    let (_, audit) = s
        .api
        .admin(
            Method::GET,
            &format!("/v1/audit?key_id={}&action=key.leak", k.key.id),
            None,
        )
        .await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(1), "{audit}");
}

on_both_engines!(
    a_signed_alert_revokes_the_key_and_its_children,
    unsigned_or_badly_signed_alerts_change_nothing,
    false_positives_are_labelled_and_rotation_is_followed,
    suspend_and_notify_policies,
);
