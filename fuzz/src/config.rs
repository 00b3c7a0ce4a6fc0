//! `plugin_config`: the plugin's configuration parser never panics; an accepted configuration
//! re-serializes to JSON that parses back to the same `Config`, and its values are the validated
//! ones; a rejected one names a field and never echoes the edge key.

use keygate_filter_core::config::{Config, FailureMode, KeySource, MAX_LONG_POLL_WAIT_S};
use serde_json::{Value, json};

/// Every field of a validated configuration, written out explicitly.
#[must_use]
pub fn to_json(c: &Config) -> Value {
    let sources: Vec<Value> = c
        .key_sources
        .iter()
        .map(|s| match s {
            KeySource::Header(h) => json!({ "header": h }),
            KeySource::Bearer => json!({ "bearer": true }),
            KeySource::Query(q) => json!({ "query": q }),
            KeySource::Cookie(k) => json!({ "cookie": k }),
        })
        .collect();
    let routes: Vec<Value> = c
        .routes
        .iter()
        .map(|r| {
            json!({
                "path_prefix": r.path_prefix,
                "methods": r.methods,
                "required_scopes": r.required_scopes,
                "resource_from_path_segment": r.resource_from_path_segment,
                "anonymous": r.anonymous,
            })
        })
        .collect();
    // The key itself when there is one (a key read from the environment is written out), else
    // the environment variable that was missing.
    let (key_field, key_value) = match (&c.edge_key, &c.edge_key_env) {
        (Some(k), _) => ("edge_key", k.clone()),
        (None, env) => ("edge_key_env", env.clone().unwrap_or_default()),
    };
    let mut doc = json!({
        "cluster": c.cluster,
        "authority": c.authority,
        "sync_interval_ms": c.sync_interval_ms,
        "long_poll_wait_s": c.long_poll_wait_s,
        "key_sources": sources,
        "accepted_prefixes": c.accepted_prefixes,
        "routes": routes,
        "identity_headers": {
            "key_id": c.identity_headers.key_id,
            "owner": c.identity_headers.owner,
            "scopes": c.identity_headers.scopes,
        },
        "hide_credentials": c.hide_credentials,
        "failure_mode": match c.failure_mode { FailureMode::Closed => "closed", FailureMode::Open => "open" },
        "max_staleness_s": c.max_staleness_s,
        "usage_report_interval_ms": c.usage_report_interval_ms,
        "usage_cluster": c.usage_cluster,
        "request_timeout_ms": c.request_timeout_ms,
    });
    doc[key_field] = json!(key_value);
    doc
}

fn is_header_name(h: &str) -> bool {
    !h.is_empty()
        && h.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

/// The fuzz target.
pub fn check(data: &[u8]) {
    match Config::from_json(data) {
        Ok(c) => check_accepted(&c),
        Err(e) => {
            assert!(!e.field.is_empty(), "an error without a field: {e:?}");
            assert!(!e.message.is_empty(), "an error without a message: {e:?}");
            let shown = e.to_string();
            assert!(shown.contains(&e.field));
            // The edge key is a secret: an error about another field never repeats it.
            if let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(data)
                && let Some(Value::String(key)) = doc.get("edge_key")
                && key.len() >= 8
                && e.field != "edge_key"
            {
                let elsewhere = String::from_utf8_lossy(data).matches(key.as_str()).count() > 1;
                assert!(
                    elsewhere || !shown.contains(key.as_str()),
                    "the error echoes the edge key: {shown}"
                );
            }
        }
    }
}

fn check_accepted(c: &Config) {
    assert!(!c.cluster.trim().is_empty() && !c.authority.trim().is_empty());
    // An edge key, when the configuration has one (a missing environment variable leaves none),
    // is printable ASCII without spaces.
    assert!(
        c.edge_key
            .as_deref()
            .is_none_or(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_graphic()))
    );
    assert!(c.sync_interval_ms >= 10);
    assert!(c.long_poll_wait_s <= MAX_LONG_POLL_WAIT_S);
    assert!(c.max_staleness_s >= 1);
    assert!(c.usage_report_interval_ms >= 100 && c.request_timeout_ms >= 100);
    assert!(!c.key_sources.is_empty());
    assert!(!c.usage_cluster.trim().is_empty());
    let ih = &c.identity_headers;
    for h in [&ih.key_id, &ih.owner, &ih.scopes] {
        assert!(
            is_header_name(h),
            "identity header {h:?} is not a lower-case token"
        );
    }
    assert!(ih.key_id != ih.owner && ih.key_id != ih.scopes && ih.owner != ih.scopes);
    for s in &c.key_sources {
        if let KeySource::Header(h) = s {
            assert!(
                is_header_name(h),
                "key header {h:?} is not a lower-case token"
            );
            assert!(h != "authorization" && !h.starts_with("x-keygate-"));
            assert!(![&ih.key_id, &ih.owner, &ih.scopes].contains(&h));
        }
    }
    if let Some(p) = &c.accepted_prefixes {
        assert!(!p.is_empty());
        assert!(
            p.iter()
                .all(|x| keygate_protocol::key::validate_prefix(x).is_ok())
        );
    }
    for r in &c.routes {
        assert!(r.path_prefix.starts_with('/'));
        if let Some(m) = &r.methods {
            assert!(
                !m.is_empty()
                    && m.iter()
                        .all(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_uppercase()))
            );
        }
        assert!(
            r.required_scopes
                .iter()
                .all(|s| keygate_protocol::scope::validate_scope(s).is_ok())
        );
        assert!(
            !r.anonymous
                || (r.required_scopes.is_empty() && r.resource_from_path_segment.is_none())
        );
    }
    assert!(c.tick_period_ms() >= 1);
    let _ = c.sync_timeout_ms();

    let text = to_json(c).to_string();
    let again = Config::from_json(text.as_bytes())
        .unwrap_or_else(|e| panic!("a re-serialized accepted config is rejected: {e}\n{text}"));
    let mut expected = c.clone();
    if expected.edge_key.is_some() {
        expected.edge_key_env = None;
    }
    assert_eq!(
        again, expected,
        "config → JSON → config is not the identity"
    );
}
