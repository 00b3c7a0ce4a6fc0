//! Scope names and resource allow-lists: what a key may do, and on which resources.

/// The most scopes one key may carry.
pub const MAX_SCOPES_PER_KEY: usize = 64;
/// The most resource allow-list entries one key may carry.
pub const MAX_RESOURCES_PER_KEY: usize = 256;
/// The longest owner id, in bytes.
pub const MAX_OWNER_LEN: usize = 128;
/// The longest scope name, in bytes.
pub const MAX_SCOPE_LEN: usize = 64;
/// The longest resource allow-list entry, in bytes.
pub const MAX_RESOURCE_LEN: usize = 256;

/// Why a scope, resource or owner is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ScopeError {
    /// A scope is empty, longer than 64 bytes, or not `segment(:segment)*` with each segment
    /// `[a-z][a-z0-9_.-]*`.
    #[error("invalid scope: 1 to 64 characters, `:`-separated segments of `[a-z][a-z0-9_.-]*`")]
    BadScope,
    /// A resource is empty, longer than 256 bytes, or holds whitespace, `,` or non-ASCII.
    #[error("invalid resource: 1 to 256 visible ASCII characters, no `,`")]
    BadResource,
    /// An owner id is empty or longer than 128 bytes.
    #[error("invalid owner: 1 to 128 bytes")]
    BadOwner,
}

impl ScopeError {
    /// A short, stable, machine-readable code: `bad_scope`, `bad_resource` or `bad_owner`.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::BadScope => "bad_scope",
            Self::BadResource => "bad_resource",
            Self::BadOwner => "bad_owner",
        }
    }
}

/// Checks a scope name such as `keys:read`, `github:tokens` or `graphs:execute`.
///
/// # Errors
/// [`ScopeError::BadScope`] unless it is 1 to 64 bytes of `:`-separated segments, each
/// `[a-z][a-z0-9_.-]*`.
pub fn validate_scope(scope: &str) -> Result<(), ScopeError> {
    if scope.is_empty() || scope.len() > MAX_SCOPE_LEN {
        return Err(ScopeError::BadScope);
    }
    for segment in scope.split(':') {
        let mut bytes = segment.bytes();
        match bytes.next() {
            Some(b'a'..=b'z') => {}
            _ => return Err(ScopeError::BadScope),
        }
        if !bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-')) {
            return Err(ScopeError::BadScope);
        }
    }
    Ok(())
}

/// Checks a resource allow-list entry (`acme/widgets`, `acme/*`).
///
/// # Errors
/// [`ScopeError::BadResource`] unless it is 1 to 256 bytes of visible ASCII (`!`..=`~`) other than `,`.
pub fn validate_resource(resource: &str) -> Result<(), ScopeError> {
    if resource.is_empty()
        || resource.len() > MAX_RESOURCE_LEN
        || !resource.bytes().all(|b| b.is_ascii_graphic() && b != b',')
    {
        return Err(ScopeError::BadResource);
    }
    Ok(())
}

/// Checks an owner id: 1 to 128 bytes.
///
/// # Errors
/// [`ScopeError::BadOwner`] otherwise.
pub const fn validate_owner(owner: &str) -> Result<(), ScopeError> {
    if owner.is_empty() || owner.len() > MAX_OWNER_LEN {
        return Err(ScopeError::BadOwner);
    }
    Ok(())
}

/// Whether `resource` is allowed by `allow_list`.
///
/// An **empty** allow-list allows everything. Otherwise an entry equal to `resource` matches,
/// and an entry ending in `*` matches every resource that starts with the part before the `*`
/// (`acme/*` allows `acme/widgets`; `*` alone allows everything).
#[must_use]
pub fn resource_allowed(allow_list: &[impl AsRef<str>], resource: &str) -> bool {
    allow_list.is_empty()
        || allow_list
            .iter()
            .any(|entry| entry_matches(entry.as_ref(), resource))
}

/// Whether one allow-list entry matches `resource` (exact, or prefix when it ends in `*`).
#[must_use]
pub fn entry_matches(entry: &str, resource: &str) -> bool {
    match entry.strip_suffix('*') {
        Some(prefix) => resource.starts_with(prefix),
        None => entry == resource,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        for ok in [
            "keys:read",
            "github:tokens",
            "graphs:execute",
            "a",
            "a.b-c_d:e9",
        ] {
            assert_eq!(validate_scope(ok), Ok(()), "{ok}");
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            ":",
            "keys:",
            ":read",
            "Keys:read",
            "keys::read",
            "9keys",
            "keys read",
            long.as_str(),
        ] {
            assert_eq!(validate_scope(bad), Err(ScopeError::BadScope), "{bad}");
        }
        assert_eq!(validate_scope(&"a".repeat(64)), Ok(()));
    }

    #[test]
    fn resources() {
        for ok in ["acme/widgets", "acme/*", "*", "a"] {
            assert_eq!(validate_resource(ok), Ok(()), "{ok}");
        }
        let long = "a".repeat(257);
        for bad in ["", "a b", "a,b", "a\tb", "é", long.as_str()] {
            assert_eq!(
                validate_resource(bad),
                Err(ScopeError::BadResource),
                "{bad}"
            );
        }
    }

    #[test]
    fn owners() {
        assert_eq!(validate_owner("org_1"), Ok(()));
        assert_eq!(validate_owner(""), Err(ScopeError::BadOwner));
        assert_eq!(validate_owner(&"o".repeat(129)), Err(ScopeError::BadOwner));
        assert_eq!(ScopeError::BadOwner.code(), "bad_owner");
    }

    #[test]
    fn allow_lists() {
        let none: [&str; 0] = [];
        assert!(resource_allowed(&none, "anything"));
        let list = ["acme/widgets", "other/*"];
        assert!(resource_allowed(&list, "acme/widgets"));
        assert!(!resource_allowed(&list, "acme/widgets2"));
        assert!(!resource_allowed(&list, "acme/gadgets"));
        assert!(resource_allowed(&list, "other/x"));
        assert!(resource_allowed(&list, "other/"));
        assert!(!resource_allowed(&list, "other"));
        assert!(resource_allowed(&["*"], "x"));
        let owned = vec![String::from("acme/*")];
        assert!(resource_allowed(&owned, "acme/a"));
    }
}
