//! Identity headers: the names that carry the caller's identity upstream (the `identity_headers`
//! section).

use super::ConfigError;
use super::check::header_name;
use super::raw::RawIdentityHeaders;

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

/// The `identity_headers` section: the default names, or those given, checked.
pub(super) fn validate(
    identity_headers: Option<RawIdentityHeaders>,
) -> Result<IdentityHeaders, ConfigError> {
    let identity_headers = match identity_headers {
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
    Ok(identity_headers)
}
