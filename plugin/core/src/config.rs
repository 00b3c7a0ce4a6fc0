//! Plugin configuration: the JSON from Envoy's plugin `configuration`, parsed and validated.
//!
//! Parsing is strict (unknown fields are rejected) and every error names the field at fault, so
//! `on_configure` can log one line that says exactly what is wrong.

use serde::Deserialize;

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

/// Where a request's API key is read from; sources are tried in order and the first present wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A request header holding the bare key (`x-api-key`); the name is stored lowercase.
    Header(String),
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// A query-string parameter (`?api_key=…`).
    Query(String),
    /// A cookie (`Cookie: name=…`).
    Cookie(String),
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

/// One route rule; the first rule whose prefix and method match a request applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Matches when the request path (without query) starts with this.
    pub path_prefix: String,
    /// Upper-case methods this rule applies to; `None` means every method.
    pub methods: Option<Vec<String>>,
    /// Scopes the key must hold (all of them).
    pub required_scopes: Vec<String>,
    /// Zero-based index of the path segment that names the resource checked against the key's allow-list.
    pub resource_from_path_segment: Option<usize>,
    /// No key needed (identity headers are still stripped).
    pub anonymous: bool,
}

impl Route {
    /// Whether this rule applies to `method` and `path` (the path without its query string).
    pub fn matches(&self, method: &str, path: &str) -> bool {
        path.starts_with(self.path_prefix.as_str())
            && self
                .methods
                .as_ref()
                .is_none_or(|m| m.iter().any(|x| x.eq_ignore_ascii_case(method)))
    }
}

/// Names of the headers that carry the caller's identity upstream (always lowercase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaders {
    /// Gets the key id, `key_<hex>`.
    pub key_id: String,
    /// Gets the key's owner.
    pub owner: String,
    /// Gets the key's scopes, space separated.
    pub scopes: String,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        Self {
            key_id: "x-keygate-key-id".into(),
            owner: "x-keygate-owner".into(),
            scopes: "x-keygate-scopes".into(),
        }
    }
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cluster: String,
    authority: String,
    #[serde(default)]
    edge_key: Option<String>,
    #[serde(default)]
    edge_key_env: Option<String>,
    #[serde(default = "default_sync_interval_ms")]
    sync_interval_ms: u64,
    #[serde(default)]
    long_poll_wait_s: u32,
    #[serde(default)]
    key_sources: Option<Vec<RawKeySource>>,
    #[serde(default)]
    accepted_prefixes: Option<Vec<String>>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    identity_headers: Option<RawIdentityHeaders>,
    #[serde(default = "default_true")]
    hide_credentials: bool,
    #[serde(default)]
    failure_mode: FailureMode,
    #[serde(default = "default_max_staleness_s")]
    max_staleness_s: u64,
    #[serde(default = "default_usage_report_interval_ms")]
    usage_report_interval_ms: u64,
    #[serde(default)]
    usage_cluster: Option<String>,
    #[serde(default = "default_request_timeout_ms")]
    request_timeout_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum RawKeySource {
    Header(String),
    Bearer(bool),
    Query(String),
    Cookie(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    path_prefix: String,
    #[serde(default)]
    methods: Option<Vec<String>>,
    #[serde(default)]
    required_scopes: Vec<String>,
    #[serde(default)]
    resource_from_path_segment: Option<usize>,
    #[serde(default)]
    anonymous: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentityHeaders {
    #[serde(default)]
    key_id: Option<String>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    scopes: Option<String>,
}

fn default_sync_interval_ms() -> u64 {
    500
}
fn default_true() -> bool {
    true
}
fn default_max_staleness_s() -> u64 {
    300
}
fn default_usage_report_interval_ms() -> u64 {
    10_000
}
fn default_request_timeout_ms() -> u64 {
    5000
}

/// Longest long-poll wait the control plane honours.
pub const MAX_LONG_POLL_WAIT_S: u32 = 30;

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

    /// Tick period of the per-worker timer, in milliseconds: frequent enough that followers
    /// pick up a published revision quickly, and that usage and sync deadlines are met.
    pub fn tick_period_ms(&self) -> u64 {
        let base = if self.long_poll_wait_s > 0 {
            50
        } else {
            (self.sync_interval_ms / 10).clamp(20, 100)
        };
        base.min(self.usage_report_interval_ms)
    }

    /// Why the filter cannot call the control plane, when the edge key is missing.
    pub fn missing_edge_key(&self) -> Option<String> {
        if self.edge_key.is_some() {
            return None;
        }
        let name = self.edge_key_env.as_deref().unwrap_or_default();
        Some(format!(
            "the edge key is missing: environment variable {name:?} is not set in the VM (Envoy: \
             list it in vm_config.environment_variables.host_env_keys and set it in Envoy's \
             environment); the key set cannot be fetched and every keyed request gets 503 \
             keyset_unavailable"
        ))
    }

    /// Timeout of one key-set call (the long-poll wait plus the request timeout).
    pub fn sync_timeout_ms(&self) -> u64 {
        u64::from(self.long_poll_wait_s) * 1000 + self.request_timeout_ms
    }
}

fn nonempty(field: &str, v: &str) -> Result<(), ConfigError> {
    if v.trim().is_empty() {
        Err(ConfigError::new(field, "must not be empty"))
    } else {
        Ok(())
    }
}

/// A valid HTTP header name (RFC 9110 token), lower-cased.
fn header_name(field: &str, v: &str) -> Result<String, ConfigError> {
    let ok = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(v.to_ascii_lowercase())
    } else {
        Err(ConfigError::new(
            field,
            format!("{v:?} is not a valid header name"),
        ))
    }
}

/// Query parameter and cookie names: printable, no separators.
fn param_name(field: &str, v: &str) -> Result<String, ConfigError> {
    let ok = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && !b"=&;,#?\"".contains(&b));
    if ok {
        Ok(v.to_owned())
    } else {
        Err(ConfigError::new(
            field,
            format!("{v:?} is not a valid name"),
        ))
    }
}

fn key_prefix(field: &str, v: &str) -> Result<(), ConfigError> {
    keygate_protocol::key::validate_prefix(v).map_err(|_| {
        ConfigError::new(
            field,
            format!("{v:?} is not a valid key prefix ([a-z][a-z0-9]*(_[a-z0-9]+)*, at most 20 characters)"),
        )
    })
}

fn scope_name(field: &str, v: &str) -> Result<(), ConfigError> {
    keygate_protocol::scope::validate_scope(v)
        .map_err(|e| ConfigError::new(field, format!("{v:?}: {e}")))
}

impl RawConfig {
    fn validate(self, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        nonempty("cluster", &self.cluster)?;
        nonempty("authority", &self.authority)?;
        let (field, edge_key) = match (&self.edge_key, &self.edge_key_env) {
            (Some(key), None) => ("edge_key", Some(key.clone())),
            (None, Some(name)) => {
                nonempty("edge_key_env", name)?;
                ("edge_key_env", env(name))
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "edge_key",
                    "give either edge_key or edge_key_env, not both",
                ));
            }
            (None, None) => {
                return Err(ConfigError::new(
                    ".",
                    "missing field `edge_key` (or `edge_key_env`)",
                ));
            }
        };
        if let Some(edge_key) = &edge_key {
            nonempty(field, edge_key)?;
        }
        if edge_key
            .as_deref()
            .is_some_and(|k| k.bytes().any(|b| !b.is_ascii_graphic()))
        {
            return Err(ConfigError::new(
                field,
                "must be printable ASCII without spaces",
            ));
        }
        if self.sync_interval_ms < 10 {
            return Err(ConfigError::new("sync_interval_ms", "must be at least 10"));
        }
        if self.long_poll_wait_s > MAX_LONG_POLL_WAIT_S {
            return Err(ConfigError::new(
                "long_poll_wait_s",
                format!("must be at most {MAX_LONG_POLL_WAIT_S}"),
            ));
        }
        if self.max_staleness_s == 0 {
            return Err(ConfigError::new("max_staleness_s", "must be at least 1"));
        }
        // A healthy control plane with nothing to say answers a long poll only when its wait
        // ends: freshness advances once per wait, so the wait (and the answer's way back) must
        // end well inside the staleness bound, or an idle system turns stale by itself.
        let idle_gap_ms = u64::from(self.long_poll_wait_s) * 1000 + self.request_timeout_ms;
        if self.long_poll_wait_s > 0 && idle_gap_ms >= self.max_staleness_s * 1000 {
            return Err(ConfigError::new(
                "long_poll_wait_s",
                format!(
                    "{} s plus request_timeout_ms ({} ms) must be less than max_staleness_s ({} s): \
                     an idle control plane answers a long poll only when its wait ends, so the \
                     key set would turn stale between answers",
                    self.long_poll_wait_s, self.request_timeout_ms, self.max_staleness_s
                ),
            ));
        }
        if self.usage_report_interval_ms < 100 {
            return Err(ConfigError::new(
                "usage_report_interval_ms",
                "must be at least 100",
            ));
        }
        if self.request_timeout_ms < 100 {
            return Err(ConfigError::new(
                "request_timeout_ms",
                "must be at least 100",
            ));
        }

        let key_sources = match self.key_sources {
            None => vec![KeySource::Header("x-api-key".into()), KeySource::Bearer],
            Some(list) => {
                if list.is_empty() {
                    return Err(ConfigError::new(
                        "key_sources",
                        "must list at least one source",
                    ));
                }
                let mut out = Vec::with_capacity(list.len());
                for (i, s) in list.into_iter().enumerate() {
                    let f = format!("key_sources[{i}]");
                    out.push(match s {
                        RawKeySource::Header(h) => {
                            let h = header_name(&format!("{f}.header"), &h)?;
                            if h == "authorization" {
                                return Err(ConfigError::new(
                                    format!("{f}.header"),
                                    "use {\"bearer\": true} for the Authorization header",
                                ));
                            }
                            KeySource::Header(h)
                        }
                        RawKeySource::Bearer(true) => KeySource::Bearer,
                        RawKeySource::Bearer(false) => {
                            return Err(ConfigError::new(
                                format!("{f}.bearer"),
                                "must be true (leave the source out instead)",
                            ));
                        }
                        RawKeySource::Query(q) => {
                            KeySource::Query(param_name(&format!("{f}.query"), &q)?)
                        }
                        RawKeySource::Cookie(c) => {
                            KeySource::Cookie(param_name(&format!("{f}.cookie"), &c)?)
                        }
                    });
                }
                out
            }
        };

        if let Some(p) = &self.accepted_prefixes {
            if p.is_empty() {
                return Err(ConfigError::new(
                    "accepted_prefixes",
                    "must list at least one prefix (leave it out to accept any)",
                ));
            }
            for (i, x) in p.iter().enumerate() {
                key_prefix(&format!("accepted_prefixes[{i}]"), x)?;
            }
        }

        let mut routes = Vec::with_capacity(self.routes.len());
        for (i, r) in self.routes.into_iter().enumerate() {
            let f = format!("routes[{i}]");
            if !r.path_prefix.starts_with('/') {
                return Err(ConfigError::new(
                    format!("{f}.path_prefix"),
                    "must start with '/'",
                ));
            }
            let methods = match r.methods {
                None => None,
                Some(m) if m.is_empty() => {
                    return Err(ConfigError::new(
                        format!("{f}.methods"),
                        "must list at least one method (leave it out for every method)",
                    ));
                }
                Some(m) => {
                    let mut out = Vec::with_capacity(m.len());
                    for (j, x) in m.iter().enumerate() {
                        if x.is_empty() || !x.bytes().all(|b| b.is_ascii_alphabetic()) {
                            return Err(ConfigError::new(
                                format!("{f}.methods[{j}]"),
                                format!("{x:?} is not an HTTP method"),
                            ));
                        }
                        out.push(x.to_ascii_uppercase());
                    }
                    Some(out)
                }
            };
            for (j, s) in r.required_scopes.iter().enumerate() {
                scope_name(&format!("{f}.required_scopes[{j}]"), s)?;
            }
            if r.anonymous
                && (!r.required_scopes.is_empty() || r.resource_from_path_segment.is_some())
            {
                return Err(ConfigError::new(
                    format!("{f}.anonymous"),
                    "an anonymous route cannot require scopes or a resource",
                ));
            }
            routes.push(Route {
                path_prefix: r.path_prefix,
                methods,
                required_scopes: r.required_scopes,
                resource_from_path_segment: r.resource_from_path_segment,
                anonymous: r.anonymous,
            });
        }

        let identity_headers = match self.identity_headers {
            None => IdentityHeaders::default(),
            Some(h) => {
                let d = IdentityHeaders::default();
                let key_id = match h.key_id {
                    Some(v) => header_name("identity_headers.key_id", &v)?,
                    None => d.key_id,
                };
                let owner = match h.owner {
                    Some(v) => header_name("identity_headers.owner", &v)?,
                    None => d.owner,
                };
                let scopes = match h.scopes {
                    Some(v) => header_name("identity_headers.scopes", &v)?,
                    None => d.scopes,
                };
                if key_id == owner || key_id == scopes || owner == scopes {
                    return Err(ConfigError::new(
                        "identity_headers",
                        "the three names must differ",
                    ));
                }
                for (name, f) in [(&key_id, "key_id"), (&owner, "owner"), (&scopes, "scopes")] {
                    if name.starts_with(':')
                        || name == "authorization"
                        || name == "host"
                        || name == "cookie"
                    {
                        return Err(ConfigError::new(
                            format!("identity_headers.{f}"),
                            format!("{name:?} cannot be an identity header"),
                        ));
                    }
                }
                IdentityHeaders {
                    key_id,
                    owner,
                    scopes,
                }
            }
        };
        for s in &key_sources {
            if let KeySource::Header(h) = s
                && [
                    &identity_headers.key_id,
                    &identity_headers.owner,
                    &identity_headers.scopes,
                ]
                .contains(&h)
            {
                return Err(ConfigError::new(
                    "key_sources",
                    format!("header {h:?} is also an identity header"),
                ));
            }
            if let KeySource::Header(h) = s
                && h.starts_with("x-keygate-")
            {
                return Err(ConfigError::new(
                    "key_sources",
                    format!("header {h:?} is stripped from every request (x-keygate-*)"),
                ));
            }
        }

        let usage_cluster = match self.usage_cluster {
            Some(c) => {
                nonempty("usage_cluster", &c)?;
                c
            }
            None => self.cluster.clone(),
        };

        Ok(Config {
            cluster: self.cluster,
            authority: self.authority,
            edge_key,
            edge_key_env: self.edge_key_env,
            sync_interval_ms: self.sync_interval_ms,
            long_poll_wait_s: self.long_poll_wait_s,
            key_sources,
            accepted_prefixes: self.accepted_prefixes,
            routes,
            identity_headers,
            hide_credentials: self.hide_credentials,
            failure_mode: self.failure_mode,
            max_staleness_s: self.max_staleness_s,
            usage_report_interval_ms: self.usage_report_interval_ms,
            usage_cluster,
            request_timeout_ms: self.request_timeout_ms,
        })
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
    fn route_matching_uses_prefix_and_methods() {
        let r = Route {
            path_prefix: "/v1/".into(),
            methods: Some(vec!["GET".into()]),
            required_scopes: vec![],
            resource_from_path_segment: None,
            anonymous: false,
        };
        assert!(r.matches("GET", "/v1/x"));
        assert!(r.matches("get", "/v1/x"));
        assert!(!r.matches("POST", "/v1/x"));
        assert!(!r.matches("GET", "/v2/x"));
    }

    #[test]
    fn edge_key_from_the_vm_environment() {
        let env = |name: &str| (name == "KEYGATE_EDGE_KEY").then(|| "kg_edge_fromenv".to_string());
        let json = br#"{"cluster":"c","authority":"a","edge_key_env":"KEYGATE_EDGE_KEY"}"#;
        let c = Config::from_json_with_env(json, env).unwrap();
        assert_eq!(c.edge_key.as_deref(), Some("kg_edge_fromenv"));
        assert_eq!(c.missing_edge_key(), None);

        // Accepted (Envoy validates and starts), but the filter knows it cannot sync and says why.
        let unset = br#"{"cluster":"c","authority":"a","edge_key_env":"OTHER"}"#;
        let c = Config::from_json_with_env(unset, env).unwrap();
        assert_eq!(c.edge_key, None);
        let why = c.missing_edge_key().unwrap();
        assert!(
            why.contains("\"OTHER\"") && why.contains("host_env_keys"),
            "{why}"
        );

        let both =
            br#"{"cluster":"c","authority":"a","edge_key":"k","edge_key_env":"KEYGATE_EDGE_KEY"}"#;
        assert_eq!(
            Config::from_json_with_env(both, env).unwrap_err().field,
            "edge_key"
        );

        let neither = br#"{"cluster":"c","authority":"a"}"#;
        let err = Config::from_json_with_env(neither, env).unwrap_err();
        assert!(err.message.contains("edge_key"), "{err}");
    }

    #[test]
    fn a_long_poll_that_outlasts_the_staleness_bound_is_refused() {
        let base = r#""cluster":"c","authority":"a","edge_key":"k""#;
        let at = |wait: u32, stale: u64| {
            Config::from_json(
                format!(r#"{{{base},"long_poll_wait_s":{wait},"max_staleness_s":{stale}}}"#)
                    .as_bytes(),
            )
        };
        let err = at(20, 10).unwrap_err();
        assert_eq!(err.field, "long_poll_wait_s");
        assert!(err.message.contains("max_staleness_s (10 s)"), "{err}");
        // the request timeout (5 s by default) counts too
        assert!(at(20, 25).is_err());
        assert!(at(20, 26).is_ok());
        // plain polling is not bound by it
        assert!(at(0, 1).is_ok());
    }

    #[test]
    fn an_unknown_member_named_empty_still_names_a_field() {
        // Found by the plugin_config fuzz target: `{"":1}` gave an error with an empty field.
        let e = Config::from_json_with_env(br#"{"":1}"#, |_| None).unwrap_err();
        assert_eq!(e.field, ".");
        assert!(e.message.contains("unknown field"), "{e:?}");
    }
}
