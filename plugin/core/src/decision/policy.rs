//! What a key's policy state adds to the decision: a key whose credits are used up is refused
//! with `429 credits_exhausted` (its rate limits are counted by the shell, `crate::limits`, once
//! the decision allows).

use keygate_protocol::keyset::KeyRef;
use keygate_protocol::policy::KeyState;

use super::{Deny, Reason};

/// The deny a key's state calls for, `None` for an active key.
///
/// A canary is denied exactly as an unknown key here (issue 28 reports its hit on its own).
pub(super) fn state_deny(entry: &KeyRef<'_>) -> Option<Deny> {
    match entry.state() {
        KeyState::Active => None,
        KeyState::CreditsExhausted => Some(Deny::credits_exhausted(entry.key_id())),
        KeyState::Canary => Some(Deny::new(
            Reason::UnknownKey,
            "the API key is not valid (unknown, revoked or suspended)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use keygate_protocol::keyset::KeySet;
    use keygate_protocol::policy::{KeyState, LimitPool, Policy, RateLimit};

    use super::super::tests::{ROUTES, cfg};
    use super::super::{KeySetState, Reason, Request, decide};
    use crate::testutil::{headers, snapshot, test_key};

    #[test]
    fn a_key_out_of_credits_is_429_credits_exhausted_after_its_grant_is_checked() {
        let now = 1_763_900_000;
        let mut spent = test_key(9, "carol", &["repo:read"], &["acme"], None);
        spent.entry.policy = Policy {
            state: KeyState::CreditsExhausted,
            limits: Vec::new(),
        };
        let mut limited = test_key(10, "carol", &["repo:read"], &[], None);
        limited.entry.policy = Policy {
            state: KeyState::Active,
            limits: vec![RateLimit {
                name: "burst".into(),
                limit: 100,
                window_s: 10,
                pool: LimitPool::Owner,
            }],
        };
        let mut set = KeySet::new();
        set.apply(&snapshot(3, &[&spent, &limited])).unwrap();
        let c = cfg(ROUTES);
        let run = |secret: &str, path: &str| {
            let h = headers("GET", path, &[("x-api-key", secret)]);
            let req = Request::from_headers(&h);
            match decide(&req, KeySetState::Fresh(&set), now, &c) {
                super::super::Decision::Allow(a) => Ok(a.identity.map(|i| i.limits().to_vec())),
                super::super::Decision::Deny(d) => Err(d),
            }
        };
        let d = run(&spent.secret, "/repos/acme/w").unwrap_err();
        assert_eq!((d.status(), d.reason), (429, Reason::CreditsExhausted));
        assert_eq!(d.www_authenticate, None);
        let body: serde_json::Value = serde_json::from_str(&d.body()).unwrap();
        assert_eq!(body["error"]["code"], "credits_exhausted");
        // A request its grant refuses anyway is refused for that, and costs nothing.
        let d = run(&spent.secret, "/repos/other/w").unwrap_err();
        assert_eq!(d.reason, Reason::ResourceNotAllowed);
        // An active key with limits passes the decision and hands its limits to the shell.
        let limits = run(&limited.secret, "/repos/acme/w").unwrap().unwrap();
        assert_eq!(limits, limited.entry.policy.limits);
    }
}
