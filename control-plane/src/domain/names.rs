//! Names the caller chooses, parsed once at the edge of the domain: a key's name, its owner
//! id and its workspace id. A value of these types has passed its rule; the rest of the code
//! never re-checks a `String`.

use keygate_protocol::scope;

use super::{MAX_NAME_LEN, RuleError};

/// Longest workspace id.
pub const MAX_WORKSPACE_LEN: usize = 64;

/// A key's name: not blank, at most [`MAX_NAME_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName(String);

impl KeyName {
    /// Parses a name.
    ///
    /// # Errors
    /// [`RuleError::Invalid`] when it is blank or too long.
    pub fn parse(name: String) -> Result<Self, RuleError> {
        if name.trim().is_empty() {
            return Err(RuleError::Invalid("name must not be empty".into()));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(RuleError::Invalid(format!(
                "name is at most {MAX_NAME_LEN} bytes"
            )));
        }
        Ok(Self(name))
    }

    /// The name.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// The owner of a key (the caller's user or service): 1 to `scope::MAX_OWNER_LEN` bytes, the
/// bound the filter's identity header and the wire format share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerId(String);

impl OwnerId {
    /// Parses an owner id.
    ///
    /// # Errors
    /// [`RuleError::Invalid`] when it is empty or too long.
    pub fn parse(owner: String) -> Result<Self, RuleError> {
        if owner.is_empty() || owner.len() > scope::MAX_OWNER_LEN {
            return Err(RuleError::Invalid(format!(
                "owner_id must be 1 to {} bytes",
                scope::MAX_OWNER_LEN
            )));
        }
        Ok(Self(owner))
    }

    /// The owner id.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// A workspace id: 1 to [`MAX_WORKSPACE_LEN`] characters of `[a-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceId(String);

impl WorkspaceId {
    /// Parses a workspace id.
    ///
    /// # Errors
    /// [`RuleError::Invalid`] when it is empty, too long or has another character.
    pub fn parse(id: String) -> Result<Self, RuleError> {
        let allowed =
            |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_';
        if id.is_empty() || id.len() > MAX_WORKSPACE_LEN || !id.bytes().all(allowed) {
            return Err(RuleError::Invalid(format!(
                "workspace_id must be 1 to {MAX_WORKSPACE_LEN} characters of [a-z0-9_-]"
            )));
        }
        Ok(Self(id))
    }

    /// The workspace id.
    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_not_blank_and_not_too_long() {
        assert_eq!(
            KeyName::parse("ok".into()).map(KeyName::into_string),
            Ok("ok".into())
        );
        assert!(KeyName::parse("  ".into()).is_err());
        assert!(KeyName::parse("x".repeat(MAX_NAME_LEN)).is_ok());
        assert!(KeyName::parse("x".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn an_owner_id_fits_the_identity_header_bound() {
        assert!(OwnerId::parse(String::new()).is_err());
        assert!(OwnerId::parse("x".repeat(scope::MAX_OWNER_LEN)).is_ok());
        assert!(OwnerId::parse("x".repeat(scope::MAX_OWNER_LEN + 1)).is_err());
    }

    #[test]
    fn a_workspace_id_is_lowercase_digits_dash_and_underscore() {
        for ok in ["default", "team-a_2", &"a".repeat(MAX_WORKSPACE_LEN)] {
            assert!(WorkspaceId::parse(ok.into()).is_ok(), "{ok}");
        }
        for bad in ["", "Team", "a b", "a/b", &"a".repeat(MAX_WORKSPACE_LEN + 1)] {
            let e = WorkspaceId::parse(bad.into()).expect_err(bad);
            assert!(
                e.to_string().contains("workspace_id must be 1 to 64"),
                "{e}"
            );
        }
    }
}
