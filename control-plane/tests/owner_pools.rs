//! Owner pools are per workspace: two workspaces that each have an owner `acme` with a pooled
//! limit count in two pools, in the key set the edges get (each pool scoped to its workspace,
//! format version 3), in `POST /v1/keys/verify` (the database's windows) and in forward-auth
//! (its in-process counters), on SQLite and on PostgreSQL, while the keys of one owner in one
//! workspace still share one pool.

mod common;

use common::{Engine, InProcessServer};
use keygate_control_plane::http::keys::IssuedKey;
use keygate_control_plane::http::keys::verify::VerifyResult;
use keygate_control_plane::test_support::limits::{
    edge_key, forward_auth, policy_in_set, until_forward_auth_allows, window_with_room,
    with_forward_auth,
};
use keygate_protocol::policy::LimitPool;
use keygate_protocol::wire;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::json;

on_both_engines!(
    the_key_set_scopes_each_owner_pool_to_its_keys_workspace,
    verify_counts_two_workspaces_same_named_owners_in_two_pools,
    forward_auth_counts_two_workspaces_same_named_owners_in_two_pools,
);

/// Two keys of `acme` in workspace `ws-a` and one of `acme` in `ws-b`, each with the pooled
/// limit `team` = 3 per 60 s.
async fn acme_in_two_workspaces(s: &InProcessServer) -> [IssuedKey; 3] {
    let pooled = json!([{"name": "team", "limit": 3, "window": "60s", "pool": "owner"}]);
    let mut keys = Vec::new();
    for (name, ws) in [("a1", "ws-a"), ("a2", "ws-a"), ("b1", "ws-b")] {
        keys.push(
            s.create(
                json!({"name": name, "owner_id": "acme", "workspace_id": ws, "limits": pooled}),
            )
            .await,
        );
    }
    keys.try_into().unwrap()
}

async fn the_key_set_scopes_each_owner_pool_to_its_keys_workspace(e: Engine) {
    let s = InProcessServer::start(e).await;
    let edge = edge_key(&s).await;
    let [a1, a2, b1] = acme_in_two_workspaces(&s).await;
    for (k, ws) in [(&a1, "ws-a"), (&a2, "ws-a"), (&b1, "ws-b")] {
        let p = policy_in_set(&s, &edge, &k.key.id).await.unwrap();
        assert_eq!(p.limits[0].pool, LimitPool::OwnerIn(ws.into()), "{ws}");
    }
    // A scoped pool needs version 3, which this build's filters read.
    let read = |accept: &'static str| {
        let (http, url, edge) = (s.http.clone(), s.url("/v1/keyset"), edge.clone());
        async move {
            let resp = http
                .get(url)
                .header("accept", accept)
                .bearer_auth(&edge)
                .send()
                .await
                .unwrap();
            resp.bytes().await.unwrap()
        }
    };
    let bytes = read(wire::ACCEPT_V3).await;
    assert_eq!(wire::peek_header(&bytes).unwrap().version, wire::VERSION);
    // A reader of version 2 (the build before scoped pools) gets version 2, its owner pools
    // unscoped as it always counted them: its set stays readable during an upgrade.
    let bytes = read(wire::ACCEPT_V2).await;
    assert_eq!(wire::peek_header(&bytes).unwrap().version, wire::VERSION_2);
    let Ok(wire::Message::Snapshot(snap)) = wire::decode(&bytes) else {
        panic!("a read without since is a snapshot that decodes");
    };
    let pools: Vec<&LimitPool> = snap
        .entries
        .iter()
        .flat_map(|e| e.policy.limits.iter().map(|l| &l.pool))
        .collect();
    assert_eq!(pools, [&LimitPool::Owner; 3], "{pools:?}");
    // A reader of version 1 gets the keys without limits.
    let resp = s
        .http
        .get(s.url("/v1/keyset"))
        .bearer_auth(&edge)
        .send()
        .await
        .unwrap();
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(wire::peek_header(&bytes).unwrap().version, wire::VERSION_1);
    s.stop().await;
}

async fn verify_counts_two_workspaces_same_named_owners_in_two_pools(e: Engine) {
    let s = InProcessServer::start(e).await;
    let [a1, a2, b1] = acme_in_two_workspaces(&s).await;
    window_with_room(60, 10).await;
    let remaining = |r: &VerifyResult| r.ratelimits.as_ref().unwrap()[0].remaining;
    // ws-a's acme spends its pool with both its keys.
    for (k, left) in [(&a1, 2), (&a2, 1), (&a1, 0)] {
        let r = s.verify(&k.secret, &[], None).await;
        assert!(r.valid && remaining(&r) == left, "{r:?}");
    }
    for k in [&a1, &a2] {
        assert_eq!(s.verify(&k.secret, &[], None).await.code, "RATE_LIMITED");
    }
    // ws-b's acme has a pool of its own, whole.
    for left in [2, 1, 0] {
        let r = s.verify(&b1.secret, &[], None).await;
        assert!(r.valid && remaining(&r) == left, "ws-b's pool: {r:?}");
    }
    assert_eq!(s.verify(&b1.secret, &[], None).await.code, "RATE_LIMITED");
    s.stop().await;
}

async fn forward_auth_counts_two_workspaces_same_named_owners_in_two_pools(e: Engine) {
    let (s, _config_dir) = with_forward_auth(
        e,
        r#"{"routes":[{"path_prefix":"/"}],"key_sources":[{"header":"x-api-key"}],"rate_limit_headers":true}"#,
    )
    .await;
    let [a1, a2, b1] = acme_in_two_workspaces(&s).await;
    window_with_room(60, 15).await;
    let field = |h: &HeaderMap| h.get("ratelimit").map(|v| v.to_str().unwrap().to_owned());
    let call = |secret: &str| {
        let (s, secret) = (&s, secret.to_owned());
        async move {
            let (st, headers, _) = forward_auth(s, &secret).await;
            (st, field(&headers))
        }
    };
    // The mirror has the keys once b1's first call passes (b1 is the last issued).
    let (headers, _) = until_forward_auth_allows(&s, &b1.secret).await;
    assert!(field(&headers).unwrap().starts_with(r#""team";r=2;"#));
    // ws-a's acme: its own three, whatever ws-b's acme spent.
    for (k, left) in [(&a1, 2), (&a2, 1), (&a1, 0)] {
        let (st, field) = call(&k.secret).await;
        assert_eq!(st, StatusCode::OK, "ws-a's pool");
        assert!(field.unwrap().starts_with(&format!(r#""team";r={left};"#)));
    }
    for k in [&a1, &a2] {
        assert_eq!(call(&k.secret).await.0, StatusCode::TOO_MANY_REQUESTS);
    }
    // ws-b's acme has two left of its own.
    for left in [1, 0] {
        let (st, field) = call(&b1.secret).await;
        assert_eq!(st, StatusCode::OK, "ws-b's pool");
        assert!(field.unwrap().starts_with(&format!(r#""team";r={left};"#)));
    }
    assert_eq!(call(&b1.secret).await.0, StatusCode::TOO_MANY_REQUESTS);
    s.stop().await;
}
