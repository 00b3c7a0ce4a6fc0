//! Plugin configuration: the JSON from Envoy's plugin `configuration`, parsed and validated.
//!
//! Parsing is strict (unknown fields are rejected) and every error names the field at fault, so
//! `on_configure` can log one line that says exactly what is wrong.
//!
//! [`Config`], [`ConfigError`] and the parse are here; its parts are in `raw` (the JSON shape,
//! with the defaults of omitted fields), `validate` (the document: required fields, edge key,
//! timings, cross-checks), `key_source`, `route` and `identity` (those sections: their types and
//! validation), `check` (checks of single values) and `derived` (values computed from a valid
//! configuration: tick period, call timeout). Their public items are re-exported: every path is
//! `config::…`.

mod check;
mod derived;
mod identity;
mod key_source;
mod raw;
mod route;
mod validate;

use serde::Deserialize;

pub use identity::IdentityHeaders;
pub use key_source::KeySource;
use raw::RawConfig;
pub use route::Route;
pub use validate::{MAX_FLEET_SIZE, MAX_LONG_POLL_WAIT_S};

/// A configuration error; `field` is the JSON path of the value at fault (`routes[1].path_prefix`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid keygate configuration: {field}: {message}")]
pub struct ConfigError {
    /// JSON path of the offending value (`.` for the document itself).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What happens when the key set is older than `max_staleness_s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Deny keyed requests with 503 `keyset_stale`.
    #[default]
    Closed,
    /// Let requests through without identity headers.
    Open,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Envoy cluster of the control plane.
    pub cluster: String,
    /// `:authority` sent to the control plane.
    pub authority: String,
    /// The edge key presented to the control plane (never logged). `None` when `edge_key_env`
    /// names a variable the VM does not have (as under `envoy --mode validate`, or a deployment
    /// that forgot it): the configuration is accepted so that Envoy can validate and start, the
    /// filter never calls the control plane, says why in its log ([`Config::missing_edge_key`]),
    /// and every keyed request fails closed (503 `keyset_unavailable`).
    pub edge_key: Option<String>,
    /// The environment variable the edge key was to come from, if any.
    pub edge_key_env: Option<String>,
    /// Interval between key-set polls, in milliseconds.
    pub sync_interval_ms: u64,
    /// Long-poll wait in seconds (0 = plain polling).
    pub long_poll_wait_s: u32,
    /// Where keys are read from, in order.
    pub key_sources: Vec<KeySource>,
    /// If set, keys with another prefix are refused before any lookup.
    pub accepted_prefixes: Option<Vec<String>>,
    /// Ordered route rules.
    pub routes: Vec<Route>,
    /// Identity header names.
    pub identity_headers: IdentityHeaders,
    /// Remove the credential before forwarding.
    pub hide_credentials: bool,
    /// Behaviour once the key set is older than `max_staleness_s`.
    pub failure_mode: FailureMode,
    /// Maximum age of the key set, in seconds, before the failure mode applies.
    pub max_staleness_s: u64,
    /// Interval between usage reports, in milliseconds.
    pub usage_report_interval_ms: u64,
    /// Cluster for usage reports (defaults to `cluster`).
    pub usage_cluster: String,
    /// Timeout of one control-plane call, in milliseconds (a long poll adds its wait).
    pub request_timeout_ms: u64,
    /// Allowed requests of a key with rate limits carry `RateLimit` and `RateLimit-Policy` too
    /// (429s always do), where the shell can set response headers (`docs/rate-limits.md`).
    pub rate_limit_headers: bool,
    /// How many proxies share each rate limit: 1 (the default) enforces every limit per proxy;
    /// N enforces `ceil(limit / N)` on each, a fleet-wide limit for an evenly spread load.
    pub rate_limit_fleet_size: u32,
}

impl Config {
    /// Parses and validates the plugin configuration JSON; an `edge_key_env` is read from the
    /// VM's environment (Envoy's `vm_config.environment_variables`).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::from_json_with_env(bytes, |name| std::env::var(name).ok())
    }

    /// As [`Config::from_json`], with the environment given as a lookup function.
    pub fn from_json_with_env(
        bytes: &[u8],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            // A member named "" gives an empty path; the error still names where it is.
            let path = match e.path().to_string() {
                p if p.is_empty() => ".".to_owned(),
                p => p,
            };
            let inner = e.into_inner();
            ConfigError::new(path, inner.to_string())
        })?;
        raw.validate(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str =
        r#"{"cluster":"keygate","authority":"keygate.internal","edge_key":"kg_edge_x"}"#;

    fn err(json: &str) -> ConfigError {
        match Config::from_json(json.as_bytes()) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let c = Config::from_json(MIN.as_bytes()).unwrap();
        assert_eq!(c.cluster, "keygate");
        assert_eq!(c.sync_interval_ms, 500);
        assert_eq!(c.long_poll_wait_s, 0);
        assert_eq!(
            c.key_sources,
            vec![KeySource::Header("x-api-key".into()), KeySource::Bearer]
        );
        assert_eq!(c.accepted_prefixes, None);
        assert!(c.routes.is_empty());
        assert_eq!(c.identity_headers, IdentityHeaders::default());
        assert_eq!(c.identity_headers.owner, "x-keygate-owner");
        assert!(c.hide_credentials);
        assert_eq!(c.failure_mode, FailureMode::Closed);
        assert_eq!(c.max_staleness_s, 300);
        assert_eq!(c.usage_report_interval_ms, 10_000);
        assert_eq!(c.usage_cluster, "keygate");
        assert!(!c.rate_limit_headers);
        assert_eq!(c.rate_limit_fleet_size, 1);
    }

    #[test]
    fn full_config_parses() {
        let json = r#"{
          "cluster": "cp", "authority": "cp.local", "edge_key": "kg_edge_abc",
          "sync_interval_ms": 500, "long_poll_wait_s": 30,
          "key_sources": [{"header":"X-Key"},{"bearer":true},{"query":"api_key"},{"cookie":"kg"}],
          "accepted_prefixes": ["kg_live","acme_test"],
          "routes": [
            {"path_prefix":"/health","anonymous":true},
            {"path_prefix":"/repos/","methods":["get","POST"],"required_scopes":["repo:read"],"resource_from_path_segment":1}
          ],
          "identity_headers": {"owner": "X-Owner"},
          "hide_credentials": false, "failure_mode": "open", "max_staleness_s": 60,
          "usage_report_interval_ms": 2000, "usage_cluster": "usage"
        }"#;
        let c = Config::from_json(json.as_bytes()).unwrap();
        assert_eq!(c.key_sources[0], KeySource::Header("x-key".into()));
        assert_eq!(c.key_sources[2], KeySource::Query("api_key".into()));
        assert_eq!(c.key_sources[3], KeySource::Cookie("kg".into()));
        assert_eq!(c.routes[1].methods, Some(vec!["GET".into(), "POST".into()]));
        assert_eq!(c.routes[1].resource_from_path_segment, Some(1));
        assert!(c.routes[0].anonymous);
        assert_eq!(c.identity_headers.owner, "x-owner");
        assert_eq!(c.identity_headers.key_id, "x-keygate-key-id");
        assert!(!c.hide_credentials);
        assert_eq!(c.failure_mode, FailureMode::Open);
        assert_eq!(c.usage_cluster, "usage");
        assert_eq!(c.tick_period_ms(), 50);
        assert_eq!(c.sync_timeout_ms(), 35_000);
    }

    #[test]
    fn every_error_names_its_field() {
        let cases: &[(&str, &str)] = &[
            (r#"{"authority":"a","edge_key":"k"}"#, "."),
            (
                r#"{"cluster":"","authority":"a","edge_key":"k"}"#,
                "cluster",
            ),
            (
                r#"{"cluster":"c","authority":"a","edge_key":"k","bogus":1}"#,
                "bogus",
            ),
            (
                r#"{"cluster":"c","authority":"a","edge_key":"k","sync_interval_ms":"fast"}"#,
                "sync_interval_ms",
            ),
            (
                r#"{"cluster":"c","authority":"a","edge_key":"k","rate_limit_fleet_size":0}"#,
                "rate_limit_fleet_size",
            ),
            (
                r#"{"cluster":"c","authority":"a","edge_key":"k","long_poll_wait_s":31}"#,
                "long_poll_wait_s",
            ),
            (
                r#"{"cluster":"c","authority":"a","edge_key":"k","key_sources":[]}"#,
                "key_sources",
            ),
            (
                r#"{"cluster":"c","authority":"a","edge_key":"k","key_sources":[{"header":"bad name"}]}"#,
                "key_sources[0].header",
            ),
            (
                r#"{"cluster":"c","authority":"a","edge_key":"k","key_sources":[{"bearer":false}]}"#,
                "key_sources[0].bearer",
            ),
            (
                r#"{"cluster":"c","authority":"a","edge_key":"k","key_sources":[{"smoke":"x"}]}"#,
                "key_sources[0]",
            ),
            (
                r#"{"cluster":"c","authority":"a","edge_key":"k","accepted_prefixes":["Bad"]}"#,
                "accepted_prefixes[0]",
            ),
            (
                r#"{"cluster":"c","authority":"a","edge_key":"k","routes":[{"path_prefix":"x"}]}"#,
                "routes[0].path_prefix",
            ),
            (
                r#"{"cluster":"c","authority":"a","edge_key":"k","routes":[{"path_prefix":"/","methods":["G T"]}]}"#,
                "routes[0].methods[0]",
            ),
            (
                r#"{"cluster":"c","authority":"a","edge_key":"k","routes":[{"path_prefix":"/","anonymous":true,"required_scopes":["a"]}]}"#,
                "routes[0].anonymous",
            ),
            (
                r#"{"cluster":"c","authority":"a","edge_key":"k","routes":[{"path_prefix":"/","required_scopes":["a b"]}]}"#,
                "routes[0].required_scopes[0]",
            ),
            (
                r#"{"cluster":"c","authority":"a","edge_key":"k","routes":[{"path_prefix":"/","resource_from_path_segment":-1}]}"#,
                "routes[0].resource_from_path_segment",
            ),
            (
                r#"{"cluster":"c","authority":"a","edge_key":"k","identity_headers":{"owner":"x-keygate-key-id"}}"#,
                "identity_headers",
            ),
            (
                r#"{"cluster":"c","authority":"a","edge_key":"k","failure_mode":"maybe"}"#,
                "failure_mode",
            ),
            (
                r#"{"cluster":"c","authority":"a","edge_key":"k","max_staleness_s":0}"#,
                "max_staleness_s",
            ),
            (
                r#"{"cluster":"c","authority":"a","edge_key":"k","usage_cluster":" "}"#,
                "usage_cluster",
            ),
            (
                r#"{"cluster":"c","authority":"a","edge_key":"has space"}"#,
                "edge_key",
            ),
            (
                r#"{"cluster":"c","authority":"a","edge_key":"k","key_sources":[{"header":"x-keygate-key"}]}"#,
                "key_sources",
            ),
        ];
        for (json, field) in cases {
            let e = err(json);
            assert_eq!(&e.field, field, "{json} -> {e}");
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn error_messages_mention_the_problem() {
        assert!(
            err(r#"{"cluster":"c","authority":"a","edge_key":"k","bogus":1}"#)
                .message
                .contains("bogus")
        );
        assert!(
            err(r#"{"authority":"a","edge_key":"k"}"#)
                .message
                .contains("cluster")
        );
        assert!(
            err("not json")
                .to_string()
                .starts_with("invalid keygate configuration")
        );
    }

    #[test]
    fn an_unknown_member_named_empty_still_names_a_field() {
        // Found by the plugin_config fuzz target: `{"":1}` gave an error with an empty field.
        let e = Config::from_json_with_env(br#"{"":1}"#, |_| None).unwrap_err();
        assert_eq!(e.field, ".");
        assert!(e.message.contains("unknown field"), "{e:?}");
    }
}
