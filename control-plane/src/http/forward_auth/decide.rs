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
use keygate_protocol::KeyId;

use crate::forward_auth::mirror::Freshness;
use crate::forward_auth::{ForwardAuth, PROXY_KEY_HEADER};
use crate::http::error::ApiError;

/// One decided call.
#[derive(Debug)]
pub struct Decided {
    /// The answer to send.
    pub response: Response,
    /// Why.
    pub reason: Reason,
    /// The key that was allowed (for usage), as the filter counts it.
    pub key_id: Option<KeyId>,
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
        super::answer::answer(&decision, &config.identity_headers, cookies).map(|response| {
            Decided {
                response,
                reason: decision.reason(),
                key_id,
                canary,
            }
        })
    })
}
