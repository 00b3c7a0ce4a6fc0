//! Forward-auth's runtime side: the filter's decision as an HTTP service (for proxies that
//! cannot load the Wasm filter: Envoy's `ext_authz` HTTP service, nginx `auth_request`, Traefik
//! `ForwardAuth`, Caddy `forward_auth`; and the remote baseline of the benchmarks) needs its
//! settings and a key set in memory. The parts:
//! - [`settings`]: the flags and the filter's configuration, validated at start-up;
//! - [`mirror`]: the key set in memory, following the store's revisions;
//! - this module: the enabled endpoint and its gauges.
//!
//! The HTTP side (which request a call is about, the decision, the answer each proxy
//! understands, the proxy's authentication) is `http::forward_auth`.

pub mod mirror;
pub mod settings;

use std::fmt::Write;
use std::sync::Arc;

pub use settings::{ForwardAuthArgs, Settings, SettingsError};

use keygate_filter_core::limits::AtomicCounters;
use mirror::{KeyMirror, MirrorError};

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
    /// This process's rate-limit counters (exact; the filter's own `limits::check`).
    pub limits: AtomicCounters,
}

impl ForwardAuth {
    /// An endpoint with `settings` and an empty mirror (load it with [`KeyMirror::refresh`]).
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            mirror: Arc::new(KeyMirror::new()),
            limits: AtomicCounters::default(),
        }
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
