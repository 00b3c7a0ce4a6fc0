//! The real filter `.wasm` in the host harness (virtual clock) syncing over real HTTP from the
//! real control plane (fresh SQLite each): keys issued, suspended, reactivated, revoked, expired
//! and rotated through the HTTP API are enforced at the edge after one sync.

use std::time::Duration;

use keygate_e2e::{ControlPlane, decision_count, denial, edge_harness, local_header, metric};
use keygate_host_harness::{Disposition, Harness, Request, StreamOutcome};
use serde_json::json;

/// One poll interval of the default configuration (1 s), plus one follower tick (250 ms) for
/// the workers that pick the revision up from shared data, plus margin.
const ONE_SYNC: Duration = Duration::from_millis(1300);

fn get(h: &mut Harness, worker: usize, path: &str, key: &str) -> StreamOutcome {
    h.run_request_on(worker, Request::get(path).header("x-api-key", key))
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
fn an_issued_key_passes_with_identity_headers_and_without_its_secret() {
    let cp = ControlPlane::start_sqlite();
    let k = cp.api.create_key(json!({
        "name": "reader", "scopes": ["repo:read"], "resources": ["acme"], "owner_id": "alice"
    }));
    let mut h = edge_harness(&cp, 2, "");
    h.advance(Duration::from_millis(500));
    for w in 0..2 {
        let r = Request::get("/repos/acme/widgets")
            .header("x-api-key", &k.secret)
            .header("x-keygate-owner", "mallory")
            .header("x-keygate-key-id", "key_ffffffffffffffffffffffffffffffff")
            .header("x-keygate-scopes", "keys:write")
            .header("x-keygate-admin", "true");
        let o = h.run_request_on(w, r).unwrap();
        assert_allowed(&o);
        assert_eq!(
            o.request_header("x-keygate-key-id"),
            Some(k.id.as_str()),
            "worker {w}"
        );
        assert_eq!(o.request_header("x-keygate-owner"), Some("alice"));
        assert_eq!(o.request_header("x-keygate-scopes"), Some("repo:read"));
        assert_eq!(
            o.request_header("x-keygate-admin"),
            None,
            "spoofed header forwarded"
        );
        assert_eq!(o.request_header("x-api-key"), None, "credential forwarded");
        let fwd = o.request.as_ref().expect("a forwarded request");
        assert!(
            fwd.headers
                .iter()
                .all(|(_, v)| !v.to_str_lossy().contains(&k.secret)),
            "the secret reached the upstream: {:?}",
            fwd.headers
        );
        assert_eq!(
            fwd.headers
                .iter()
                .filter(|(n, _)| n == "x-keygate-owner")
                .count(),
            1
        );
    }
    // Bearer: the Authorization header that carried the key is removed.
    let o = h
        .run_request_on(
            0,
            Request::get("/repos/acme/x").header("authorization", format!("Bearer {}", k.secret)),
        )
        .unwrap();
    assert_allowed(&o);
    assert_eq!(o.request_header("authorization"), None);
    assert_eq!(o.request_header("x-keygate-owner"), Some("alice"));
    // Spoofed identity is stripped on anonymous routes too.
    let o = h
        .run_request_on(
            1,
            Request::get("/health").header("x-keygate-owner", "mallory"),
        )
        .unwrap();
    assert_allowed(&o);
    assert_eq!(o.request_header("x-keygate-owner"), None);
    // The filter holds exactly the control plane's set: the one key (edge keys are not in it).
    assert_eq!(metric(&h, "keygate.keyset.keys"), 1);
    assert_eq!(decision_count(&mut h, "keygate.decision.allow.allowed"), 3);
}

#[test]
fn revoke_suspend_and_reactivate_take_effect_after_one_sync() {
    let cp = ControlPlane::start_sqlite();
    let a = cp
        .api
        .create_key(json!({"name": "a", "scopes": ["repo:read"], "owner_id": "alice"}));
    let b = cp
        .api
        .create_key(json!({"name": "b", "scopes": ["repo:read"], "owner_id": "bob"}));
    let mut h = edge_harness(&cp, 2, "");
    h.advance(Duration::from_millis(500));
    for w in 0..2 {
        assert_allowed(&get(&mut h, w, "/repos/acme/x", &a.secret));
        assert_allowed(&get(&mut h, w, "/repos/acme/x", &b.secret));
    }

    cp.api.key_action(&a.id, "suspend");
    h.advance(ONE_SYNC);
    for w in 0..2 {
        assert_eq!(
            denial(&get(&mut h, w, "/repos/acme/x", &a.secret)),
            (401, "unknown_key".into()),
            "worker {w}"
        );
        assert_allowed(&get(&mut h, w, "/repos/acme/x", &b.secret));
    }

    cp.api.key_action(&a.id, "reactivate");
    h.advance(ONE_SYNC);
    for w in 0..2 {
        assert_allowed(&get(&mut h, w, "/repos/acme/x", &a.secret));
    }

    cp.api.key_action(&b.id, "revoke");
    h.advance(ONE_SYNC);
    for w in 0..2 {
        let o = get(&mut h, w, "/repos/acme/x", &b.secret);
        assert_eq!(denial(&o), (401, "unknown_key".into()), "worker {w}");
        let challenge = local_header(&o, "www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{challenge}"
        );
        assert_allowed(&get(&mut h, w, "/repos/acme/x", &a.secret));
    }
    // Revocation is final: reactivating a revoked key is refused and changes nothing.
    let (st, v) = cp.api.admin(
        keygate_e2e::reqwest::Method::POST,
        &format!("/v1/keys/{}/reactivate", b.id),
        Some(json!({})),
    );
    assert!(
        (400..500).contains(&st),
        "reactivating a revoked key: {st} {v}"
    );
    h.advance(ONE_SYNC);
    assert_eq!(
        denial(&get(&mut h, 0, "/repos/acme/x", &b.secret)),
        (401, "unknown_key".into())
    );
    assert_eq!(metric(&h, "keygate.keyset.keys"), 1);
}

#[test]
fn an_expired_key_is_denied_on_the_filter_clock() {
    let cp = ControlPlane::start_sqlite();
    let k = cp
        .api
        .create_key(json!({"name": "short", "scopes": ["repo:read"], "expires_in": 120}));
    let forever = cp
        .api
        .create_key(json!({"name": "long", "scopes": ["repo:read"]}));
    let mut h = edge_harness(&cp, 2, "");
    h.advance(Duration::from_millis(500));
    assert_allowed(&get(&mut h, 0, "/repos/acme/x", &k.secret));
    // The virtual clock started at wall-clock now; move it past expires_at (+120 s).
    // (expires_at is whole seconds, so it may lie up to 1 s before creation + 120)
    h.advance(Duration::from_secs(117));
    assert_allowed(&get(&mut h, 1, "/repos/acme/x", &k.secret));
    h.advance(Duration::from_secs(4));
    for w in 0..2 {
        assert_eq!(
            denial(&get(&mut h, w, "/repos/acme/x", &k.secret)),
            (401, "expired_key".into()),
            "worker {w}"
        );
        assert_allowed(&get(&mut h, w, "/repos/acme/x", &forever.secret));
    }
    assert_eq!(
        decision_count(&mut h, "keygate.decision.deny.expired_key"),
        2
    );
}

#[test]
fn a_rotated_key_keeps_its_old_secret_until_the_grace_period_ends() {
    let cp = ControlPlane::start_sqlite();
    let old = cp
        .api
        .create_key(json!({"name": "rotating", "scopes": ["repo:read"], "owner_id": "carol"}));
    let mut h = edge_harness(&cp, 2, "");
    h.advance(Duration::from_millis(500));
    assert_allowed(&get(&mut h, 0, "/repos/acme/x", &old.secret));

    let new = cp.api.rotate(&old.id, 60);
    assert_ne!(new.secret, old.secret);
    assert_eq!(new.id, old.id, "rotation keeps the key id");
    h.advance(ONE_SYNC);
    for w in 0..2 {
        for secret in [&old.secret, &new.secret] {
            let o = get(&mut h, w, "/repos/acme/x", secret);
            assert_allowed(&o);
            assert_eq!(o.request_header("x-keygate-key-id"), Some(old.id.as_str()));
            assert_eq!(o.request_header("x-keygate-owner"), Some("carol"));
        }
    }
    // 30 s later, still inside the grace period.
    h.advance(Duration::from_secs(30));
    assert_allowed(&get(&mut h, 1, "/repos/acme/x", &old.secret));
    // Past the grace end (60 s after the rotation, by the filter's clock; the virtual clock
    // runs ahead of the wall clock, so a few seconds of margin cover the real time spent).
    h.advance(Duration::from_secs(34));
    for w in 0..2 {
        assert_eq!(
            denial(&get(&mut h, w, "/repos/acme/x", &old.secret)),
            (401, "expired_key".into()),
            "worker {w}"
        );
        assert_allowed(&get(&mut h, w, "/repos/acme/x", &new.secret));
    }

    // Rotation without grace: the previous secret is out after one sync.
    let newest = cp.api.rotate(&old.id, 0);
    h.advance(ONE_SYNC);
    assert_eq!(
        denial(&get(&mut h, 0, "/repos/acme/x", &new.secret)),
        (401, "unknown_key".into())
    );
    assert_allowed(&get(&mut h, 0, "/repos/acme/x", &newest.secret));
}

#[test]
fn scopes_and_allow_lists_give_403_with_their_codes() {
    let cp = ControlPlane::start_sqlite();
    let reader = cp
        .api
        .create_key(json!({"name": "reader", "scopes": ["repo:read"], "resources": ["acme"]}));
    let writer = cp
        .api
        .create_key(json!({"name": "writer", "scopes": ["repo:read", "repo:write"]}));
    let mut h = edge_harness(&cp, 1, "");
    h.advance(Duration::from_millis(500));

    assert_allowed(&get(&mut h, 0, "/repos/acme/x", &reader.secret));
    let o = get(&mut h, 0, "/repos/globex/x", &reader.secret);
    assert_eq!(denial(&o), (403, "resource_not_allowed".into()));
    assert!(
        local_header(&o, "www-authenticate")
            .unwrap_or_default()
            .contains("insufficient_scope")
    );
    let o = h
        .run_request_on(
            0,
            Request::new("POST", "/repos/acme/x").header("x-api-key", &reader.secret),
        )
        .unwrap();
    assert_eq!(denial(&o), (403, "insufficient_scope".into()));
    // no resource segment at all is not allowed for an allow-listed key
    assert_eq!(denial(&get(&mut h, 0, "/repos/", &reader.secret)).0, 403);

    // A key without an allow-list may use any resource; repo:write allows POST.
    assert_allowed(&get(&mut h, 0, "/repos/globex/x", &writer.secret));
    let o = h
        .run_request_on(
            0,
            Request::new("POST", "/repos/globex/x").header("x-api-key", &writer.secret),
        )
        .unwrap();
    assert_allowed(&o);

    // Narrowing the scopes through the API reaches the filter after one sync.
    let (st, v) = cp.api.admin(
        keygate_e2e::reqwest::Method::PATCH,
        &format!("/v1/keys/{}", writer.id),
        Some(json!({"scopes": ["repo:read"]})),
    );
    assert_eq!(st, 200, "{v}");
    h.advance(ONE_SYNC);
    let o = h
        .run_request_on(
            0,
            Request::new("POST", "/repos/globex/x").header("x-api-key", &writer.secret),
        )
        .unwrap();
    assert_eq!(denial(&o), (403, "insufficient_scope".into()));

    // Malformed and unknown keys: 401 (a mistyped checksum never reaches a lookup).
    let mut typo = reader.secret.clone();
    let last = typo.pop().unwrap_or('0');
    typo.push(if last == '0' { '1' } else { '0' });
    assert_eq!(
        denial(&get(&mut h, 0, "/repos/acme/x", &typo)),
        (401, "malformed_key".into())
    );
    let o = h.run_request_on(0, Request::get("/repos/acme/x")).unwrap();
    assert_eq!(denial(&o), (401, "missing_key".into()));
    assert_eq!(
        decision_count(&mut h, "keygate.decision.deny.insufficient_scope"),
        2
    );
    assert_eq!(
        decision_count(&mut h, "keygate.decision.deny.resource_not_allowed"),
        2
    );
}
