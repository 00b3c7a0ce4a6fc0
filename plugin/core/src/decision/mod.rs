//! The per-request decision: request view + key set + clock + configuration → allow or deny.
//!
//! Pure and allocation-light: the key is borrowed from the request, parsed without allocating,
//! hashed on the stack and looked up in the [`KeySet`]; only the headers to set upstream (and a
//! deny's message) are allocated.
//!
//! [`decide`] is here; its parts are in `request` (the request view), `reason` (why),
//! `outcome` (the verdict), `policy` (the key's state: out of credits), `credential` (finding and hiding the key) and `path` (normal form,
//! route, resource segment). Their public items are re-exported: every path is `decision::…`.

mod credential;
mod outcome;
mod path;
mod policy;
mod reason;
mod request;

use keygate_protocol::key;
use keygate_protocol::keyset::KeySet;
use keygate_protocol::policy::KeyState;

pub use credential::cookies_without;
use credential::{find_key, hide};
pub use outcome::{
    Allow, CookieNames, Decision, Deny, DenyBodies, Identity, Removals, UNKNOWN_KEY_MESSAGE,
};
pub use path::is_normal_path;
use path::{path_segment, route_for};
pub use reason::Reason;
pub use request::{Request, SUBSTITUTE};

use crate::config::{Config, FailureMode};

/// The state of this worker's key set as the decision sees it.
#[derive(Debug, Clone, Copy)]
pub enum KeySetState<'a> {
    /// No successful sync yet: fail closed.
    Unavailable,
    /// Synced within `max_staleness_s`.
    Fresh(&'a KeySet),
    /// Older than `max_staleness_s`: the failure mode applies.
    Stale(&'a KeySet),
}

/// Client-sent headers that only the filter may set: every `x-keygate-*` and the identity headers.
fn spoofable<'a>(req: &Request<'a>, config: &Config, out: &mut Removals<'a>) {
    let ih = &config.identity_headers;
    for &(k, _) in &req.headers {
        let lower_prefix = k.len() >= 10 && k.as_bytes()[..10].eq_ignore_ascii_case(b"x-keygate-");
        let is_identity = k.eq_ignore_ascii_case(&ih.key_id)
            || k.eq_ignore_ascii_case(&ih.owner)
            || k.eq_ignore_ascii_case(&ih.scopes);
        if (lower_prefix || is_identity) && !out.contains(&k) {
            out.push(k);
        }
    }
}

/// Decides one request. `now_secs` is Unix time in seconds.
pub fn decide<'a>(
    req: &Request<'a>,
    keys: KeySetState<'a>,
    now_secs: u64,
    config: &'a Config,
) -> Decision<'a> {
    let mut remove = Removals::new();
    spoofable(req, config, &mut remove);

    if !is_normal_path(req.path_only()) {
        return Decision::Deny(Deny::new(
            Reason::InvalidPath,
            "the path has dot segments, encoded separators or empty segments",
        ));
    }
    let route = route_for(config, req);
    if route.is_some_and(|r| r.anonymous) {
        // A key sent to an anonymous route is hidden as well: the upstream never sees one.
        let mut set = Vec::new();
        let strip_cookies = hide(config, req, &mut remove, &mut set);
        return Decision::Allow(Allow {
            reason: Reason::Anonymous,
            remove,
            set,
            strip_cookies,
            identity: None,
        });
    }

    let Some(raw) = find_key(req, config) else {
        return Decision::Deny(Deny::new(Reason::MissingKey, "an API key is required"));
    };
    let parsed = match key::parse(raw) {
        Ok(p) => p,
        Err(_) => {
            return Decision::Deny(Deny::new(
                Reason::MalformedKey,
                "the API key is malformed or its checksum does not match",
            ));
        }
    };
    if let Some(prefixes) = &config.accepted_prefixes
        && !prefixes.iter().any(|p| p == parsed.prefix())
    {
        return Decision::Deny(Deny::new(
            Reason::PrefixNotAccepted,
            "keys with this prefix are not accepted here",
        ));
    }

    let set = match keys {
        KeySetState::Unavailable => {
            return Decision::Deny(Deny::new(
                Reason::KeysetUnavailable,
                "the key set has not been loaded yet",
            ));
        }
        KeySetState::Stale(_) if config.failure_mode == FailureMode::Open => {
            let mut set = Vec::new();
            let strip_cookies = hide(config, req, &mut remove, &mut set);
            return Decision::Allow(Allow {
                reason: Reason::FailOpen,
                remove,
                set,
                strip_cookies,
                identity: None,
            });
        }
        KeySetState::Stale(_) => {
            return Decision::Deny(Deny::new(
                Reason::KeysetStale,
                "the key set is too old to be trusted",
            ));
        }
        KeySetState::Fresh(set) => set,
    };

    let digest = parsed.digest();
    let Some(entry) = set.lookup(&digest) else {
        return Decision::Deny(Deny::new(Reason::UnknownKey, UNKNOWN_KEY_MESSAGE));
    };
    if entry.state() == KeyState::Canary {
        return Decision::Deny(Deny::canary(entry.key_id()));
    }
    if entry.is_expired(now_secs) {
        return Decision::Deny(Deny::new(Reason::ExpiredKey, "the API key has expired"));
    }
    if let Some(route) = route {
        if let Some(missing) = route.required_scopes.iter().find(|s| !entry.has_scope(s)) {
            return Decision::Deny(Deny::new(
                Reason::InsufficientScope,
                format!("the API key lacks the scope {missing:?}"),
            ));
        }
        if let Some(index) = route.resource_from_path_segment {
            let allowed =
                path_segment(req.path_only(), index).is_some_and(|r| entry.allows_resource(r));
            if !allowed {
                return Decision::Deny(Deny::new(
                    Reason::ResourceNotAllowed,
                    "the API key is not allowed to access this resource",
                ));
            }
        }
    }

    if let Some(deny) = policy::state_deny(&entry) {
        return Decision::Deny(deny);
    }

    let mut set_headers = Vec::new();
    let strip_cookies = hide(config, req, &mut remove, &mut set_headers);
    let key_id = entry.key_id();
    let identity = Identity {
        names: &config.identity_headers,
        key_id,
        key_id_text: key_id.text(),
        owner: entry.owner(),
        scopes: entry.scope_list(),
        limits: entry.rate_limits(),
    };
    Decision::Allow(Allow {
        reason: Reason::Allowed,
        remove,
        set: set_headers,
        strip_cookies,
        identity: Some(identity),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Fixture, headers};

    pub(super) fn cfg(extra: &str) -> Config {
        let json = format!(
            r#"{{"cluster":"cp","authority":"cp.local","edge_key":"kg_edge_x"{}{extra}}}"#,
            if extra.is_empty() { "" } else { "," }
        );
        Config::from_json(json.as_bytes()).unwrap()
    }

    pub(super) const ROUTES: &str = r#""routes":[
        {"path_prefix":"/health","anonymous":true},
        {"path_prefix":"/repos/","methods":["GET"],"required_scopes":["repo:read"],"resource_from_path_segment":1},
        {"path_prefix":"/repos/","required_scopes":["repo:write"],"resource_from_path_segment":1},
        {"path_prefix":"/admin","required_scopes":["admin"]}
    ]"#;

    pub(super) fn run<'a>(
        f: &'a Fixture,
        c: &'a Config,
        h: &'a [(String, String)],
    ) -> Decision<'a> {
        decide(
            &Request::from_headers(h),
            KeySetState::Fresh(&f.set),
            f.now,
            c,
        )
    }

    pub(super) fn deny(d: Decision<'_>) -> Deny {
        match d {
            Decision::Deny(d) => d,
            Decision::Allow(a) => panic!("expected a deny, got {a:?}"),
        }
    }

    pub(super) fn allow(d: Decision<'_>) -> Allow<'_> {
        match d {
            Decision::Allow(a) => a,
            Decision::Deny(d) => panic!("expected an allow, got {d:?}"),
        }
    }

    /// Every header the decision sets or adds, name and value.
    pub(super) fn written<'a>(a: &'a Allow<'_>) -> impl Iterator<Item = (&'a str, &'a str)> {
        a.set
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain(a.identity.iter().flat_map(Identity::headers))
    }

    pub(super) fn set_value<'a>(a: &'a Allow<'_>, name: &str) -> Option<&'a str> {
        written(a).find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    #[test]
    fn valid_key_in_header_is_allowed_with_identity_and_hidden() {
        let f = Fixture::new();
        let c = cfg("");
        let h = headers("GET", "/x", &[("x-api-key", &f.reader.secret)]);
        let a = allow(run(&f, &c, &h));
        assert_eq!(a.reason, Reason::Allowed);
        assert_eq!(a.key_id(), Some(f.reader.id));
        assert!(a.remove.contains(&"x-api-key"));
        assert_eq!(
            set_value(&a, "x-keygate-key-id"),
            Some(f.reader.id.to_string().as_str())
        );
        assert_eq!(set_value(&a, "x-keygate-owner"), Some("alice"));
        assert_eq!(set_value(&a, "x-keygate-scopes"), Some("repo:read"));
        // no value the filter sets carries the secret
        assert!(written(&a).all(|(_, v)| !v.contains(&f.reader.secret)));
    }

    #[test]
    fn spoofed_identity_headers_are_always_stripped() {
        let f = Fixture::new();
        let c = cfg(ROUTES);
        let spoof = [
            ("x-keygate-key-id", "key_00000000000000000000000000000000"),
            ("X-Keygate-Owner", "mallory"),
            ("x-keygate-anything", "1"),
        ];
        // anonymous route
        let h = headers("GET", "/health", &spoof);
        let a = allow(run(&f, &c, &h));
        assert_eq!(a.reason, Reason::Anonymous);
        assert_eq!(a.remove.len(), 3);
        assert!(a.set.is_empty() && a.identity.is_none());
        // keyed route: removed, then set by the filter
        let mut hs = spoof.to_vec();
        hs.push(("x-api-key", &f.reader.secret));
        let h = headers("GET", "/x", &hs);
        let a = allow(run(&f, &c, &h));
        for (name, _) in &spoof {
            assert!(a.remove.contains(name), "{name} not stripped");
        }
        assert_eq!(set_value(&a, "x-keygate-owner"), Some("alice"));
        // The identity headers are added, not replaced: each one the client sent is removed
        // first (whatever its case), so none is left for an add to duplicate.
        let identity = a.identity.as_ref().map(Identity::headers);
        assert!(identity.is_some());
        for (name, _) in identity.into_iter().flatten() {
            let sent = hs.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
            let removed = a.remove.iter().any(|k| k.eq_ignore_ascii_case(name));
            assert!(!sent || removed, "{name} would be duplicated");
        }
        assert!(a.set.is_empty());
        // custom identity header names are stripped too
        let c = cfg(r#""identity_headers":{"owner":"x-owner"}"#);
        let h = headers(
            "GET",
            "/x",
            &[("x-owner", "mallory"), ("x-api-key", &f.reader.secret)],
        );
        let a = allow(run(&f, &c, &h));
        assert!(a.remove.contains(&"x-owner"));
        assert_eq!(set_value(&a, "x-owner"), Some("alice"));
    }

    #[test]
    fn missing_key_is_401_with_bare_challenge() {
        let f = Fixture::new();
        let c = cfg("");
        for h in [
            headers("GET", "/x", &[]),
            headers("GET", "/x", &[("x-api-key", "  ")]),
            headers("GET", "/x", &[("authorization", "Basic abc")]),
            headers("GET", "/x", &[("authorization", "Bearer ")]),
        ] {
            let d = deny(run(&f, &c, &h));
            assert_eq!((d.status(), d.reason), (401, Reason::MissingKey));
            assert_eq!(d.www_authenticate, Some(r#"Bearer realm="keygate""#));
        }
    }

    #[test]
    fn malformed_keys_are_401_without_lookup() {
        let f = Fixture::new();
        let c = cfg("");
        let mut bad_checksum = f.reader.secret.clone();
        let last = bad_checksum.pop().unwrap();
        bad_checksum.push(if last == 'A' { 'B' } else { 'A' });
        let long = "kg_live_".to_owned() + &"a".repeat(300);
        for k in [
            bad_checksum.as_str(),
            "nope",
            "kg_live_short",
            long.as_str(),
            "kg_live_!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
        ] {
            let h = headers("GET", "/x", &[("x-api-key", k)]);
            let d = deny(run(&f, &c, &h));
            assert_eq!((d.status(), d.reason), (401, Reason::MalformedKey), "{k}");
            assert!(
                d.www_authenticate
                    .unwrap()
                    .contains(r#"error="invalid_token""#)
            );
            assert!(!d.body().contains(k));
        }
        // no lookup: even with no key set at all, malformed is reported, not unavailable
        let h = headers("GET", "/x", &[("x-api-key", bad_checksum.as_str())]);
        let d = deny(decide(
            &Request::from_headers(&h),
            KeySetState::Unavailable,
            f.now,
            &c,
        ));
        assert_eq!(d.reason, Reason::MalformedKey);
    }

    #[test]
    fn prefixes_outside_the_accepted_list_are_refused() {
        let f = Fixture::new();
        let c = cfg(r#""accepted_prefixes":["kg_test"]"#);
        let h = headers("GET", "/x", &[("x-api-key", &f.reader.secret)]);
        let d = deny(run(&f, &c, &h));
        assert_eq!((d.status(), d.reason), (401, Reason::PrefixNotAccepted));
        let c = cfg(r#""accepted_prefixes":["kg_test","kg_live"]"#);
        assert!(matches!(run(&f, &c, &h), Decision::Allow(_)));
    }

    #[test]
    fn unknown_and_expired_keys_are_401() {
        let f = Fixture::new();
        let c = cfg("");
        let h = headers("GET", "/x", &[("x-api-key", &f.unknown)]);
        let d = deny(run(&f, &c, &h));
        assert_eq!((d.status(), d.reason), (401, Reason::UnknownKey));
        let h = headers("GET", "/x", &[("x-api-key", &f.expired.secret)]);
        let d = deny(run(&f, &c, &h));
        assert_eq!((d.status(), d.reason), (401, Reason::ExpiredKey));
        let body: serde_json::Value = serde_json::from_str(&d.body()).unwrap();
        assert_eq!(body["error"]["code"], "expired_key");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("expired")
        );
    }

    #[test]
    fn scopes_and_resources_are_403() {
        let f = Fixture::new();
        let c = cfg(ROUTES);
        // reader may GET acme repos
        let h = headers(
            "GET",
            "/repos/acme/widgets",
            &[("x-api-key", &f.reader.secret)],
        );
        assert!(matches!(run(&f, &c, &h), Decision::Allow(_)));
        // but not POST (needs repo:write)
        let h = headers(
            "POST",
            "/repos/acme/widgets",
            &[("x-api-key", &f.reader.secret)],
        );
        let d = deny(run(&f, &c, &h));
        assert_eq!((d.status(), d.reason), (403, Reason::InsufficientScope));
        assert!(d.message.contains("repo:write"));
        assert!(
            d.www_authenticate
                .unwrap()
                .contains(r#"error="insufficient_scope""#)
        );
        // nor another owner's repo
        let h = headers("GET", "/repos/globex/x", &[("x-api-key", &f.reader.secret)]);
        let d = deny(run(&f, &c, &h));
        assert_eq!((d.status(), d.reason), (403, Reason::ResourceNotAllowed));
        // a missing resource segment is not allowed either
        let h = headers("GET", "/repos/", &[("x-api-key", &f.reader.secret)]);
        assert_eq!(deny(run(&f, &c, &h)).reason, Reason::ResourceNotAllowed);
        // admin has no allow-list (everything) and the admin scope
        let h = headers(
            "DELETE",
            "/repos/globex/x",
            &[("x-api-key", &f.admin.secret)],
        );
        assert!(matches!(run(&f, &c, &h), Decision::Allow(_)));
        let h = headers("GET", "/admin/users", &[("x-api-key", &f.reader.secret)]);
        assert_eq!(deny(run(&f, &c, &h)).reason, Reason::InsufficientScope);
        let h = headers("GET", "/admin/users?x=1", &[("x-api-key", &f.admin.secret)]);
        let a = allow(run(&f, &c, &h));
        assert_eq!(
            set_value(&a, "x-keygate-scopes"),
            Some("admin repo:read repo:write")
        );
    }

    #[test]
    fn keyset_states_fail_closed_or_open() {
        let f = Fixture::new();
        let h = headers("GET", "/x", &[("x-api-key", &f.reader.secret)]);
        let req = Request::from_headers(&h);
        let closed = cfg("");
        let d = deny(decide(&req, KeySetState::Unavailable, f.now, &closed));
        assert_eq!(
            (d.status(), d.reason, d.www_authenticate),
            (503, Reason::KeysetUnavailable, None)
        );
        let d = deny(decide(&req, KeySetState::Stale(&f.set), f.now, &closed));
        assert_eq!((d.status(), d.reason), (503, Reason::KeysetStale));
        let open = cfg(r#""failure_mode":"open""#);
        // fail open applies only once stale; before the first sync it is still closed
        let d = deny(decide(&req, KeySetState::Unavailable, f.now, &open));
        assert_eq!(d.reason, Reason::KeysetUnavailable);
        let h2 = headers(
            "GET",
            "/x",
            &[("x-api-key", &f.reader.secret), ("x-keygate-owner", "m")],
        );
        let a = allow(decide(
            &Request::from_headers(&h2),
            KeySetState::Stale(&f.set),
            f.now,
            &open,
        ));
        assert_eq!(a.reason, Reason::FailOpen);
        // Spoofed identity stripped, and the key hidden like on any pass.
        assert_eq!(a.remove[..], ["x-keygate-owner", "x-api-key"]);
        assert!(a.set.is_empty() && a.identity.is_none());
        // anonymous routes pass without a key set
        let c = cfg(ROUTES);
        let h = headers("GET", "/health", &[]);
        assert_eq!(
            allow(decide(
                &Request::from_headers(&h),
                KeySetState::Unavailable,
                f.now,
                &c
            ))
            .reason,
            Reason::Anonymous
        );
    }
}
