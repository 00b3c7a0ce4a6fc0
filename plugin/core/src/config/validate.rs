//! Validation of the document: required fields, the edge key, timings and the bounds between
//! them, each section in turn, and the checks across sections.

use super::check::{key_prefix, nonempty};
use super::raw::RawConfig;
use super::{Config, ConfigError, KeySource, identity, key_source, route};

/// Longest long-poll wait the control plane honours.
pub const MAX_LONG_POLL_WAIT_S: u32 = 30;

/// The largest `rate_limit_fleet_size`.
pub const MAX_FLEET_SIZE: u32 = 10_000;

impl RawConfig {
    pub(super) fn validate(
        self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
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
        if !(1..=MAX_FLEET_SIZE).contains(&self.rate_limit_fleet_size) {
            return Err(ConfigError::new(
                "rate_limit_fleet_size",
                format!("must be 1 to {MAX_FLEET_SIZE}"),
            ));
        }
        if self.request_timeout_ms < 100 {
            return Err(ConfigError::new(
                "request_timeout_ms",
                "must be at least 100",
            ));
        }

        let key_sources = key_source::validate(self.key_sources)?;

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

        let routes = route::validate(self.routes)?;

        let identity_headers = identity::validate(self.identity_headers)?;
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
            rate_limit_headers: self.rate_limit_headers,
            rate_limit_fleet_size: self.rate_limit_fleet_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
