//! One forward-auth call decided: the original request as the filter would see it, handed to
//! the filter's own pure core (`keygate_filter_core::decision::decide` on the filter's parsed
//! configuration) under the mirror's read lock, so the answer is the filter's by construction
//! and no call reads the database.

use std::borrow::Cow;

use axum::http::request::Parts;
use axum::response::Response;
use keygate_filter_core::decision::{
    Decision, KeySetState, Reason, Request, decide as decide_request,
};
use keygate_filter_core::limits::{self, Outcome};
use keygate_protocol::KeyId;

use crate::forward_auth::mirror::Freshness;
use crate::forward_auth::{ForwardAuth, PROXY_KEY_HEADER};
use crate::http::error::ApiError;
use crate::runtime::metrics::LimitedBy;

/// One decided call.
#[derive(Debug)]
pub struct Decided {
    /// The answer to send.
    pub response: Response,
    /// Why.
    pub reason: Reason,
    /// The key that was allowed (for usage), as the filter counts it.
    pub key_id: Option<KeyId>,
    /// The key refused `429` and why: over a rate limit (`rate_limited`) or out of credits
    /// (`credits_exhausted`); `None` for any other answer.
    pub refused: Option<(KeyId, LimitedBy)>,
    /// The canary presented, on a canary's deny (for its hit), with the original path.
    pub canary: Option<(KeyId, String)>,
}

/// Decides the call `parts` at `now_secs` (Unix seconds): the original request is read
/// ([`super::original::read`]), its headers are handed to the filter's decision as the filter
/// would see them (without the proxy's [`PROXY_KEY_HEADER`]), and the decision becomes
/// the answer ([`super::answer::answer`]).
///
/// # Errors
/// 400 when the original request cannot be told ([`super::original::read`]); 500 when the answer
/// cannot be built.
pub fn decide(fa: &ForwardAuth, parts: &Parts, now_secs: u64) -> Result<Decided, ApiError> {
    let original = super::original::read(&parts.method, &parts.uri, &parts.headers)?;
    let values: Vec<(&str, Cow<'_, str>)> = parts
        .headers
        .iter()
        .filter(|(name, _)| name.as_str() != PROXY_KEY_HEADER)
        .map(|(name, v)| (name.as_str(), String::from_utf8_lossy(v.as_bytes())))
        .collect();
    let mut view: Vec<(&str, &str)> = Vec::with_capacity(values.len() + 2);
    view.push((":method", original.method.as_str()));
    view.push((":path", original.path.as_str()));
    view.extend(values.iter().map(|(k, v)| (*k, v.as_ref())));
    let req = Request::from_pairs(view);
    let cookies = parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .map(|v| v.as_bytes());
    let config = &fa.settings.filter;
    fa.mirror.read(config.max_staleness_s, |set, freshness| {
        let keys = match freshness {
            Freshness::Unavailable => KeySetState::Unavailable,
            Freshness::Fresh => KeySetState::Fresh(set),
            Freshness::Stale => KeySetState::Stale(set),
        };
        let decision = decide_request(&req, keys, now_secs, config);
        let key_id = match &decision {
            Decision::Allow(a) if a.reason == Reason::Allowed => a.key_id(),
            _ => None,
        };
        let canary = match &decision {
            Decision::Deny(d) => d.canary.map(|k| (k, req.path_only().to_owned())),
            Decision::Allow(_) => None,
        };
        // The filter's rate limits, counted in this process (the filter's `limits::check`).
        let outcome = match &decision {
            Decision::Allow(a) => a.identity.as_ref().map_or(Outcome::Unlimited, |id| {
                limits::check(
                    id.limits(),
                    id.key_id(),
                    id.owner(),
                    now_secs.saturating_mul(1000),
                    config.rate_limit_fleet_size,
                    &mut &fa.limits,
                )
            }),
            Decision::Deny(_) => Outcome::Unlimited,
        };
        match outcome {
            Outcome::Limited(status) => Ok(Decided {
                response: super::answer::deny_with(&limits::deny(), &status.limited_fields()),
                reason: Reason::RateLimited,
                key_id: None,
                refused: key_id.map(|k| (k, LimitedBy::RateLimit)),
                canary: None,
            }),
            Outcome::Within(status) => {
                super::answer::answer(&decision, &config.identity_headers, cookies).map(
                    |mut response| {
                        if config.rate_limit_headers {
                            super::answer::add_fields(&mut response, &status.allowed_fields());
                        }
                        Decided {
                            response,
                            reason: decision.reason(),
                            key_id,
                            refused: None,
                            canary: None,
                        }
                    },
                )
            }
            Outcome::Unlimited => {
                let exhausted = match &decision {
                    Decision::Deny(d) => d.exhausted,
                    Decision::Allow(_) => None,
                };
                super::answer::answer(&decision, &config.identity_headers, cookies).map(
                    |response| Decided {
                        response,
                        reason: decision.reason(),
                        key_id,
                        refused: exhausted.map(|k| (k, LimitedBy::Credits)),
                        canary,
                    },
                )
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use axum::http::Request as HttpRequest;
    use keygate_filter_core::config::Config;
    use keygate_protocol::keyset::KeySet;
    use keygate_protocol::policy::{KeyState, LimitPool, Policy, RateLimit};
    use keygate_protocol::wire::{KeyEntry, Snapshot};
    use keygate_protocol::{KeyId, key};

    use super::*;
    use crate::forward_auth::settings::Settings;

    fn endpoint(extra: &str) -> (ForwardAuth, String, String, String) {
        let json = format!(r#"{{"cluster":"c","authority":"a","edge_key":"k"{extra}}}"#);
        let fa = ForwardAuth::new(Settings {
            filter: Config::from_json(json.as_bytes()).unwrap(),
            open: true,
            path: PathBuf::new(),
            ignored: Vec::new(),
        });
        let make = |n: u8, policy: Policy| {
            let secret = key::generate("kg_live").unwrap();
            let entry = KeyEntry {
                digest: secret.digest(),
                key_id: KeyId::from_bytes([n; 16]),
                owner: "acme".into(),
                expires_at: None,
                scopes: Vec::new(),
                resources: Vec::new(),
                policy,
            };
            (entry, secret.expose_secret().to_owned())
        };
        let limits = vec![RateLimit {
            name: "burst".into(),
            limit: 3,
            window_s: 3600,
            pool: LimitPool::Key,
        }];
        let (limited, limited_secret) = make(
            1,
            Policy {
                state: KeyState::Active,
                limits,
            },
        );
        let (plain, plain_secret) = make(2, Policy::default());
        let (spent, spent_secret) = make(
            3,
            Policy {
                state: KeyState::CreditsExhausted,
                limits: Vec::new(),
            },
        );
        let mut entries = vec![limited, plain, spent];
        entries.sort_by(|a, b| a.digest.as_bytes().cmp(b.digest.as_bytes()));
        let mut set = KeySet::new();
        set.apply(
            &Snapshot {
                revision: 1,
                entries,
            }
            .encode()
            .unwrap(),
        )
        .unwrap();
        fa.mirror.hold(set);
        (fa, limited_secret, plain_secret, spent_secret)
    }

    fn call(fa: &ForwardAuth, secret: &str, now: u64) -> Decided {
        let (parts, ()) = HttpRequest::get("/v1/forward-auth/x")
            .header("x-api-key", secret)
            .body(())
            .unwrap()
            .into_parts();
        decide(fa, &parts, now).unwrap()
    }

    #[test]
    fn forward_auth_enforces_the_filters_rate_limits_and_credits_in_this_process() {
        let (fa, limited, plain, spent) = endpoint("");
        let now = 1_763_899_200; // an hour boundary
        for i in 0..3 {
            let d = call(&fa, &limited, now + 10);
            assert_eq!(d.reason, Reason::Allowed, "request {i}");
            // without rate_limit_headers an allowed answer carries no field
            assert!(d.response.headers().get("ratelimit").is_none());
        }
        let d = call(&fa, &limited, now + 10);
        assert_eq!(
            (d.reason, d.response.status().as_u16()),
            (Reason::RateLimited, 429)
        );
        assert_eq!(
            d.refused,
            Some((KeyId::from_bytes([1; 16]), LimitedBy::RateLimit))
        );
        assert_eq!(d.key_id, None);
        let h = d.response.headers();
        assert_eq!(h["retry-after"], "3590");
        assert_eq!(h["ratelimit-policy"], r#""burst";q=3;w=3600"#);
        assert_eq!(h["ratelimit"], r#""burst";r=0;t=3590"#);
        assert_eq!(h["content-type"], "application/json");
        // the next window passes again
        assert_eq!(call(&fa, &limited, now + 3600).reason, Reason::Allowed);
        // a key without limits: as before, no field
        for _ in 0..10 {
            let d = call(&fa, &plain, now);
            assert_eq!(d.reason, Reason::Allowed);
            assert!(d.response.headers().get("ratelimit-policy").is_none());
        }
        let d = call(&fa, &spent, now);
        assert_eq!(
            (d.reason, d.response.status().as_u16()),
            (Reason::CreditsExhausted, 429)
        );
        assert!(matches!(d.refused, Some((_, LimitedBy::Credits))), "{d:?}");
        // an allowed answer refuses nothing
        assert_eq!(call(&fa, &plain, now).refused, None);
    }

    #[test]
    fn with_rate_limit_headers_an_allowed_answer_carries_the_fields() {
        let (fa, limited, plain, _) = endpoint(r#","rate_limit_headers":true"#);
        let now = 1_763_899_200;
        let d = call(&fa, &limited, now + 600);
        assert_eq!(d.reason, Reason::Allowed);
        assert_eq!(d.response.headers()["ratelimit"], r#""burst";r=2;t=3000"#);
        assert_eq!(
            d.response.headers()["ratelimit-policy"],
            r#""burst";q=3;w=3600"#
        );
        let d = call(&fa, &plain, now);
        assert!(d.response.headers().get("ratelimit").is_none());
    }
}
