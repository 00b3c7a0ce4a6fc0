//! The filter configuration Envoy hands over once per `DynamicModuleFilter`: which filter
//! (`filter_name`), and for Keygate its `filter_config` (JSON) and where its key set comes
//! from.
//!
//! Keygate's `filter_config`:
//!
//! ```json
//! {"configuration": { …the proxy-wasm filter's plugin configuration, the same JSON… },
//!  "control_plane_url": "http://127.0.0.1:8080"}
//! ```
//!
//! - `configuration`: parsed by the core (`keygate_filter_core::config::Config`): routes, key
//!   sources, `edge_key`/`edge_key_env` (read from Envoy's own environment: the module runs in
//!   Envoy's process), `failure_mode`, `max_staleness_s`, the sync and usage settings.
//!   `cluster` names no Envoy cluster here (the module calls the control plane itself); it
//!   still namespaces the sync's state, and `authority` is unused (the client sends the URL's
//!   host).
//! - `control_plane_url`: the control plane's base URL, `http://host:port` or
//!   `https://host:port` (TLS by rustls; the server's certificate must chain to Mozilla's roots,
//!   compiled in, or with `ca_file` to the certificates of that PEM file, a private CA). The
//!   key set is synced from it by a background thread ([`crate::sync_thread`]) and usage
//!   reported to it.
//! - `ca_file` (with an `https://` URL only): a PEM file of the certificate authorities to
//!   trust instead of Mozilla's roots, read when Envoy loads the configuration.
//! - or `snapshot_file` instead: a key set in the protocol's wire format, read once and always
//!   fresh, with no sync and no usage reports (benchmarks, tests).

use std::sync::Arc;

use keygate_filter_core::config::Config;
use keygate_protocol::keyset::KeySet;
use serde::Deserialize;

use crate::host::LogFn;
use crate::http::Trust;
use crate::sync_thread::KeySync;

/// The `filter_name` of Keygate's filter.
pub const KEYGATE: &str = "keygate";
/// The `filter_name` of the filter that does nothing (the baseline).
pub const NOOP: &str = "noop";
/// The `filter_name` of the filter that makes the callbacks Keygate makes on an allowed request
/// and nothing else (the floor of this shell: what no trim of Keygate's own code goes below).
pub const HOST_CALLS: &str = "host-calls";
/// `filter_name` of the filter that decides as Keygate does, on Keygate's configuration and
/// key set, then makes [`crate::shell::host_calls_only`]'s callbacks instead of the decision's
/// (a baseline that tells the decision's own cost in Envoy from that of the edits it asks for).
pub const DECIDE_ONLY: &str = "decide-only";

/// A filter configuration: one per `DynamicModuleFilter` in Envoy's configuration, created on
/// the main thread and read by every worker thread.
#[derive(Debug)]
pub enum FilterConfig {
    /// `filter_name: noop`.
    Noop,
    /// `filter_name: host-calls`.
    HostCalls,
    /// `filter_name: keygate`.
    Keygate(Box<Keygate>),
    /// `filter_name: decide-only`, with Keygate's `filter_config`.
    DecideOnly(Box<Keygate>),
}

impl FilterConfig {
    /// The configuration of the filter named `filter_name`, from `filter_config` (the bytes of
    /// the `google.protobuf.StringValue` Envoy's configuration gives; see [`NativeConfig`]);
    /// a synced one logs through `log`.
    ///
    /// # Errors
    /// A message for Envoy's log: unknown filter name, bad configuration, unreadable snapshot.
    pub fn new(filter_name: &[u8], filter_config: &[u8], log: LogFn) -> Result<Self, String> {
        match filter_name {
            n if n == NOOP.as_bytes() => Ok(FilterConfig::Noop),
            n if n == HOST_CALLS.as_bytes() => Ok(FilterConfig::HostCalls),
            n if n == KEYGATE.as_bytes() => Ok(FilterConfig::Keygate(Box::new(Keygate::new(
                filter_config,
                log,
            )?))),
            n if n == DECIDE_ONLY.as_bytes() => Ok(FilterConfig::DecideOnly(Box::new(
                Keygate::new(filter_config, log)?,
            ))),
            n => Err(format!(
                "keygate-native-filter: unknown filter_name {:?} (expected {KEYGATE:?}, {NOOP:?}, {HOST_CALLS:?} or {DECIDE_ONLY:?})",
                String::from_utf8_lossy(n)
            )),
        }
    }

    /// The Keygate configuration, for the filters that have one.
    pub fn keygate(&self) -> Option<&Keygate> {
        match self {
            FilterConfig::Keygate(k) | FilterConfig::DecideOnly(k) => Some(k),
            FilterConfig::Noop | FilterConfig::HostCalls => None,
        }
    }
}

/// Keygate's `filter_config` (see the module docs).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NativeConfig {
    /// The plugin configuration, parsed by `keygate_filter_core::config::Config::from_json`.
    pub configuration: serde_json::Value,
    /// The control plane's base URL: the key set is synced from it.
    #[serde(default)]
    pub control_plane_url: Option<String>,
    /// The PEM file of the certificate authorities an `https://` control plane's certificate
    /// must chain to, instead of Mozilla's roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Or a fixed key set, read once.
    #[serde(default)]
    pub snapshot_file: Option<String>,
}

/// Where a configuration's keys come from.
#[derive(Debug)]
pub enum Keys {
    /// A snapshot file, read once: always fresh.
    Fixed(Arc<KeySet>),
    /// The process's sync of this configuration's source.
    Synced(Arc<KeySync>),
}

/// Keygate's filter configuration: the plugin's configuration and its keys (one set per
/// process and source, shared by Envoy's worker threads and by the configurations that name
/// the same source).
#[derive(Debug)]
pub struct Keygate {
    pub(crate) config: Config,
    pub(crate) keys: Keys,
}

impl Keygate {
    /// Parses `filter_config` ([`NativeConfig`]), then loads its snapshot or joins (or starts)
    /// the sync of its control plane.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn new(filter_config: &[u8], log: LogFn) -> Result<Self, String> {
        let native: NativeConfig = serde_json::from_slice(filter_config)
            .map_err(|e| format!("keygate-native-filter: filter_config: {e}"))?;
        let json = serde_json::to_vec(&native.configuration)
            .map_err(|e| format!("keygate-native-filter: configuration: {e}"))?;
        let config = Config::from_json(&json).map_err(|e| e.to_string())?;
        let keys = match (native.control_plane_url, native.snapshot_file) {
            (Some(url), None) => {
                let trust = trust(&url, native.ca_file.as_deref())?;
                Keys::Synced(KeySync::shared(
                    &config,
                    &url,
                    native.ca_file.as_deref(),
                    &trust,
                    log,
                )?)
            }
            (None, Some(path)) => Keys::Fixed(Arc::new(read_snapshot(&path)?)),
            _ => {
                return Err(
                    "keygate-native-filter: filter_config: give either control_plane_url or snapshot_file"
                        .to_owned(),
                );
            }
        };
        Ok(Self { config, keys })
    }

    /// The plugin configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where the keys come from.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }
}

/// Checks `url` (`http://` or `https://` and a host) and reads the trust its `ca_file` gives.
fn trust(url: &str, ca_file: Option<&str>) -> Result<Trust, String> {
    let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        (None, None) => {
            return Err(format!(
                "keygate-native-filter: control_plane_url {url:?}: give http://host:port or https://host:port"
            ));
        }
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!(
            "keygate-native-filter: control_plane_url {url:?}: no host"
        ));
    }
    match ca_file {
        None => Ok(Trust::WebPki),
        Some(_) if !tls => Err(format!(
            "keygate-native-filter: ca_file is for an https:// control_plane_url, not {url:?}"
        )),
        Some(path) => Trust::from_pem_file(path).map_err(|e| format!("keygate-native-filter: {e}")),
    }
}

fn read_snapshot(path: &str) -> Result<KeySet, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("keygate-native-filter: snapshot_file {path:?}: {e}"))?;
    let mut keys = KeySet::new();
    keys.apply(&bytes)
        .map_err(|e| format!("keygate-native-filter: snapshot_file {path:?}: {e}"))?;
    Ok(keys)
}
