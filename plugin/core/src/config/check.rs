//! Checks of single values: non-empty strings, header and parameter names, key prefixes, scopes.

use super::ConfigError;

pub(super) fn nonempty(field: &str, v: &str) -> Result<(), ConfigError> {
    if v.trim().is_empty() {
        Err(ConfigError::new(field, "must not be empty"))
    } else {
        Ok(())
    }
}

/// A valid HTTP header name (RFC 9110 token), lower-cased.
pub(super) fn header_name(field: &str, v: &str) -> Result<String, ConfigError> {
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
pub(super) fn param_name(field: &str, v: &str) -> Result<String, ConfigError> {
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

pub(super) fn key_prefix(field: &str, v: &str) -> Result<(), ConfigError> {
    keygate_protocol::key::validate_prefix(v).map_err(|_| {
        ConfigError::new(
            field,
            format!("{v:?} is not a valid key prefix ([a-z][a-z0-9]*(_[a-z0-9]+)*, at most 20 characters)"),
        )
    })
}

pub(super) fn scope_name(field: &str, v: &str) -> Result<(), ConfigError> {
    keygate_protocol::scope::validate_scope(v)
        .map_err(|e| ConfigError::new(field, format!("{v:?}: {e}")))
}
