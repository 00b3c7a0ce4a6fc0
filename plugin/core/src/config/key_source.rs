//! Key sources: where a request's API key is read from (the `key_sources` section).

use super::ConfigError;
use super::check::{header_name, param_name};
use super::raw::RawKeySource;

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

/// The `key_sources` section: the default (`x-api-key`, then a bearer token) or the listed
/// sources, each checked.
pub(super) fn validate(
    key_sources: Option<Vec<RawKeySource>>,
) -> Result<Vec<KeySource>, ConfigError> {
    let key_sources = match key_sources {
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
    Ok(key_sources)
}
