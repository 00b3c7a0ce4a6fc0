//! Why bytes are not a message (`DecodeError`) or a message cannot be written (`EncodeError`).

use crate::policy::PolicyError;
use crate::scope::ScopeError;

/// Why bytes are not a valid message. Nothing is applied when decoding fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is shorter than the header or than its declared counts require.
    #[error("the message is truncated")]
    Truncated,
    /// The input is longer than its declared counts allow.
    #[error("the message has bytes after its end")]
    TrailingBytes,
    /// The input does not start with `KGKS`.
    #[error("not a keyset message (bad magic)")]
    BadMagic,
    /// A format version this reader does not know.
    #[error("unsupported keyset format version {0}")]
    UnsupportedVersion(u16),
    /// An unknown message kind byte.
    #[error("unknown message kind {0}")]
    BadKind(u8),
    /// Reserved flag bits are set.
    #[error("reserved flags are set")]
    BadFlags,
    /// The CRC32 trailer does not match: the message is damaged.
    #[error("the message checksum does not match")]
    BadChecksum,
    /// A snapshot with a base revision, or a delta whose revision is not after its base.
    #[error("inconsistent revisions")]
    BadRevision,
    /// A snapshot that lists removals.
    #[error("a snapshot cannot hold removals")]
    RemovalsInSnapshot,
    /// String offsets that decrease or do not end at the string data's end, or an over-long string.
    #[error("malformed string table")]
    BadStringTable,
    /// A string that is not UTF-8.
    #[error("a string is not valid UTF-8")]
    InvalidUtf8,
    /// Grant counts that do not add up to the item count, or exceed the per-key limits.
    #[error("malformed grant table")]
    BadGrantTable,
    /// A string or grant index past the end of its table.
    #[error("an index is out of range")]
    IndexOutOfRange,
    /// Entries or removals not in ascending digest order.
    #[error("entries or removals are not sorted by digest")]
    Unsorted,
    /// The same digest twice (in entries, in removals, or in both).
    #[error("a digest appears twice")]
    DuplicateDigest,
    /// An owner, scope or resource that is not valid.
    #[error("invalid value: {0}")]
    InvalidValue(ScopeError),
    /// A grant's state, rate limits or reserved bytes that are not valid (version 2).
    #[error("a grant's policy is not valid")]
    BadPolicy,
}

impl DecodeError {
    /// A short, stable, machine-readable code.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::TrailingBytes => "trailing_bytes",
            Self::BadMagic => "bad_magic",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::BadKind(_) => "bad_kind",
            Self::BadFlags => "bad_flags",
            Self::BadChecksum => "bad_checksum",
            Self::BadRevision => "bad_revision",
            Self::RemovalsInSnapshot => "removals_in_snapshot",
            Self::BadStringTable => "bad_string_table",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::BadGrantTable => "bad_grant_table",
            Self::IndexOutOfRange => "index_out_of_range",
            Self::Unsorted => "unsorted",
            Self::DuplicateDigest => "duplicate_digest",
            Self::InvalidValue(ScopeError::BadOwner) => "invalid_owner",
            Self::InvalidValue(ScopeError::BadScope) => "invalid_scope",
            Self::InvalidValue(ScopeError::BadResource) => "invalid_resource",
            Self::BadPolicy => "bad_policy",
        }
    }
}

/// Why a message cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The same digest twice (among entries, among removals, or in both).
    #[error("a digest appears twice")]
    DuplicateDigest,
    /// An owner, scope or resource that is not valid.
    #[error("invalid value: {0}")]
    InvalidValue(ScopeError),
    /// More than 64 scopes on one key.
    #[error("a key has more than 64 scopes")]
    TooManyScopes,
    /// More than 256 resources on one key.
    #[error("a key has more than 256 resources")]
    TooManyResources,
    /// An expiry of 0 or past `u32::MAX` (the year 2106).
    #[error("an expiry is 0 or beyond u32::MAX seconds")]
    ExpiryOutOfRange,
    /// A delta whose revision is not greater than its base revision.
    #[error("a delta's revision must be greater than its base revision")]
    BadRevision,
    /// A table would exceed `u32::MAX` items or bytes.
    #[error("the message is too large for the format")]
    TooLarge,
    /// A key's policy that is not valid.
    #[error("invalid policy: {0}")]
    InvalidPolicy(PolicyError),
}

impl EncodeError {
    /// A short, stable, machine-readable code.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::DuplicateDigest => "duplicate_digest",
            Self::InvalidValue(ScopeError::BadOwner) => "invalid_owner",
            Self::InvalidValue(ScopeError::BadScope) => "invalid_scope",
            Self::InvalidValue(ScopeError::BadResource) => "invalid_resource",
            Self::TooManyScopes => "too_many_scopes",
            Self::TooManyResources => "too_many_resources",
            Self::ExpiryOutOfRange => "expiry_out_of_range",
            Self::BadRevision => "bad_revision",
            Self::TooLarge => "too_large",
            Self::InvalidPolicy(e) => e.code(),
        }
    }
}
