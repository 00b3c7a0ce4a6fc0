//! Route rules: which rule applies to a request, and what it requires (the `routes` section).

use super::ConfigError;
use super::check::scope_name;
use super::raw::RawRoute;

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

/// The `routes` section: each rule checked, in order.
pub(super) fn validate(raw: Vec<RawRoute>) -> Result<Vec<Route>, ConfigError> {
    let mut routes = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
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
        if r.anonymous && (!r.required_scopes.is_empty() || r.resource_from_path_segment.is_some())
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
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
