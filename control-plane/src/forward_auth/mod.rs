//! Forward-auth: the filter's decision as an HTTP service, for proxies that cannot load the
//! Wasm filter (Envoy's `ext_authz` HTTP service, nginx `auth_request`, Traefik `ForwardAuth`,
//! Caddy `forward_auth`) and as the remote baseline of the benchmarks.
//!
//! Every call is decided by the filter's own pure core (`keygate_filter_core::decision::decide` on
//! the filter's parsed configuration) against a [`KeyMirror`], the key set in memory, so the
//! answer is the filter's by construction and no call reads the database. The parts:
//! - [`settings`]: the flags and the filter's configuration, validated at start-up;
//! - [`original`]: which request a call is about (ext_authz path suffix, or the proxies'
//!   `X-Forwarded-*` / `X-Original-*` headers);
//! - [`answer`]: the decision as the answer each proxy understands;
//! - this module: the request as the filter would see it, and the decision under the mirror's
//!   read lock. The HTTP route and the proxy's authentication are in `api::forward_auth`.

pub mod answer;
pub mod original;
pub mod settings;

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::Arc;

use axum::http::request::Parts;
use axum::response::Response;
use keygate_filter_core::decision::{Decision, KeySetState, Reason, Request, decide};
use keygate_protocol::KeyId;

pub use settings::{ForwardAuthArgs, Settings, SettingsError};

use crate::error::ApiError;
use crate::mirror::{Freshness, KeyMirror, MirrorError};

/// The header in which the proxy presents its `edge` key. It is the proxy's, set on the
/// authorization call only (ext_authz `authorization_request.headers_to_add`, nginx
/// `proxy_set_header`, Caddy `header_up`); it is never a key source of the request, and the
/// decision never sees it.
pub const PROXY_KEY_HEADER: &str = "x-keygate-edge-key";

/// Why forward-auth could not start.
#[derive(Debug, thiserror::Error)]
pub enum ForwardAuthError {
    /// A flag or the configuration is wrong.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The first key set could not be loaded.
    #[error("forward-auth: loading the key set: {0}")]
    Load(#[from] MirrorError),
}

/// An enabled forward-auth endpoint: its settings and its key set.
#[derive(Debug)]
pub struct ForwardAuth {
    /// The validated settings.
    pub settings: Settings,
    /// The key set in memory.
    pub mirror: Arc<KeyMirror>,
}

/// One decided call.
#[derive(Debug)]
pub struct Decided {
    /// The answer to send.
    pub response: Response,
    /// Why.
    pub reason: Reason,
    /// The key that was allowed (for usage), as the filter counts it.
    pub key_id: Option<KeyId>,
}

impl ForwardAuth {
    /// An endpoint with `settings` and an empty mirror (load it with [`KeyMirror::refresh`]).
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            mirror: Arc::new(KeyMirror::new()),
        }
    }

    /// Decides the call `parts` at `now_secs` (Unix seconds): the original request is read
    /// ([`original::read`]), its headers are handed to the filter's decision as the filter
    /// would see them (without the proxy's [`PROXY_KEY_HEADER`]), and the decision becomes
    /// the answer ([`answer::answer`]).
    ///
    /// # Errors
    /// 400 when the original request cannot be told ([`original::read`]); 500 when the answer
    /// cannot be built.
    pub fn decide(&self, parts: &Parts, now_secs: u64) -> Result<Decided, ApiError> {
        let original = original::read(&parts.method, &parts.uri, &parts.headers)?;
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
        let config = &self.settings.filter;
        self.mirror.read(config.max_staleness_s, |set, freshness| {
            let keys = match freshness {
                Freshness::Unavailable => KeySetState::Unavailable,
                Freshness::Fresh => KeySetState::Fresh(set),
                Freshness::Stale => KeySetState::Stale(set),
            };
            let decision = decide(&req, keys, now_secs, config);
            let key_id = match &decision {
                Decision::Allow(a) if a.reason == Reason::Allowed => a.key_id(),
                _ => None,
            };
            answer::answer(&decision, &config.identity_headers, cookies).map(|response| Decided {
                response,
                reason: decision.reason(),
                key_id,
            })
        })
    }

    /// Appends the mirror's gauges to a Prometheus text body.
    pub fn render_metrics(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP keygate_forward_auth_keyset_revision Key-set revision the forward-auth mirror holds (-1 before the first load)."
        );
        let _ = writeln!(out, "# TYPE keygate_forward_auth_keyset_revision gauge");
        let _ = writeln!(
            out,
            "keygate_forward_auth_keyset_revision {}",
            self.mirror.revision().map_or(-1, |r| r as i64)
        );
        let _ = writeln!(
            out,
            "# HELP keygate_forward_auth_keyset_age_seconds Seconds since the database last confirmed the forward-auth mirror."
        );
        let _ = writeln!(out, "# TYPE keygate_forward_auth_keyset_age_seconds gauge");
        let _ = writeln!(
            out,
            "keygate_forward_auth_keyset_age_seconds {}",
            self.mirror.age_ms().map_or(-1.0, |ms| ms as f64 / 1000.0)
        );
    }
}
