//! A key found in the set: `KeyRef`, and what it tells (id, owner, expiry, scopes, resources,
//! state and rate limits).

use super::KeySet;
use super::record::{Grant, Meta};
use crate::policy::{KeyState, Policy, RateLimit};
use crate::scope;
use crate::{Digest, KeyId};

/// A key found in a [`KeySet`].
#[derive(Clone, Copy)]
pub struct KeyRef<'a> {
    pub(super) set: &'a KeySet,
    pub(super) digest: [u8; 32],
    pub(super) meta: &'a Meta,
}

impl<'a> KeyRef<'a> {
    /// The key's digest.
    #[must_use]
    pub fn digest(&self) -> Digest {
        Digest::from_bytes(self.digest)
    }

    /// The key's id.
    #[must_use]
    pub fn key_id(&self) -> KeyId {
        KeyId::from_bytes(self.meta.key_id)
    }

    /// The owner id.
    #[must_use]
    pub fn owner(&self) -> &'a str {
        &self.set.owners[self.meta.owner as usize]
    }

    /// When the key stops working (Unix seconds), or `None`.
    #[must_use]
    pub fn expires_at(&self) -> Option<u64> {
        (self.meta.expiry != 0).then_some(u64::from(self.meta.expiry))
    }

    /// Whether the key has expired at `now_unix_secs` (expired from its expiry second on).
    #[must_use]
    pub fn is_expired(&self, now_unix_secs: u64) -> bool {
        self.expires_at().is_some_and(|t| now_unix_secs >= t)
    }

    fn grant(&self) -> &'a Grant {
        &self.set.grants[self.meta.grant as usize]
    }

    /// The key's scopes.
    pub fn scopes(&self) -> impl ExactSizeIterator<Item = &'a str> + 'a {
        self.grant().scopes.iter().map(|s| &**s)
    }

    /// The key's scopes joined by single spaces, in their order (`""` for none).
    #[must_use]
    pub fn scope_list(&self) -> &'a str {
        &self.grant().scope_list
    }

    /// Whether the key has `scope` (exact match).
    #[must_use]
    pub fn has_scope(&self, scope: &str) -> bool {
        self.grant().scopes.iter().any(|s| &**s == scope)
    }

    /// The key's resource allow-list (empty allows every resource).
    pub fn resources(&self) -> impl ExactSizeIterator<Item = &'a str> + 'a {
        self.grant().resources.iter().map(|s| &**s)
    }

    /// Whether the allow-list allows `resource` (see [`scope::resource_allowed`]).
    #[must_use]
    pub fn allows_resource(&self, resource: &str) -> bool {
        scope::resource_allowed(&self.grant().resources, resource)
    }

    /// The key's state and rate limits.
    #[must_use]
    pub fn policy(&self) -> &'a Policy {
        &self.grant().policy
    }

    /// The key's state (active, canary, out of credits).
    #[must_use]
    pub fn state(&self) -> KeyState {
        self.grant().policy.state
    }

    /// The key's rate limits (empty for most keys).
    #[must_use]
    pub fn rate_limits(&self) -> &'a [RateLimit] {
        &self.grant().policy.limits
    }
}

impl std::fmt::Debug for KeyRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRef")
            .field("key_id", &self.key_id())
            .field("owner", &self.owner())
            .field("expires_at", &self.expires_at())
            .field("scopes", &self.grant().scopes)
            .field("resources", &self.grant().resources)
            .field("policy", &self.grant().policy)
            .finish()
    }
}
