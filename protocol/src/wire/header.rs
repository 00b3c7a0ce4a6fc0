//! The fixed 48-byte header: `Header`, the message length its counts imply, and `peek_header`.

use super::decode::{u16_at, u32_at, u64_at};
use super::{
    DecodeError, ENTRY_LEN, HEADER_LEN, MAGIC, MessageKind, REMOVAL_LEN, TRAILER_LEN, VERSION,
    VERSION_1, VERSION_2,
};

/// The fixed header of a message, as read by [`peek_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Snapshot or delta.
    pub kind: MessageKind,
    /// The format version ([`VERSION_1`], [`VERSION_2`] or [`VERSION`]).
    pub version: u16,
    /// The revision the message brings a reader to.
    pub revision: u64,
    /// For a delta, the revision it applies to; `None` for a snapshot.
    pub base_revision: Option<u64>,
    /// Strings in the string table.
    pub string_count: u32,
    /// Bytes of string data.
    pub string_bytes: u32,
    /// Grants in the grant table.
    pub grant_count: u32,
    /// String indices in the grant item list.
    pub grant_item_count: u32,
    /// Entries (snapshot keys or delta upserts).
    pub entry_count: u32,
    /// Removed digests (always 0 in a snapshot).
    pub removal_count: u32,
}

impl Header {
    /// The size of one grant in the grant table: 4 bytes in version 1, 8 in version 2.
    #[must_use]
    pub const fn grant_len(&self) -> usize {
        if self.version == VERSION_1 { 4 } else { 8 }
    }

    /// The grant items one rate limit takes: name, limit, window, pool, and in version 3 the
    /// pool's scope.
    #[must_use]
    pub const fn limit_items(&self) -> usize {
        if self.version >= VERSION { 5 } else { 4 }
    }

    /// The total message length these counts imply, in bytes.
    #[must_use]
    pub fn message_len(&self) -> u64 {
        HEADER_LEN as u64
            + 4 * u64::from(self.string_count)
            + u64::from(self.string_bytes)
            + self.grant_len() as u64 * u64::from(self.grant_count)
            + 4 * u64::from(self.grant_item_count)
            + ENTRY_LEN as u64 * u64::from(self.entry_count)
            + REMOVAL_LEN as u64 * u64::from(self.removal_count)
            + TRAILER_LEN as u64
    }
}

/// Reads and checks the header: magic, version, kind, flags, revisions, and that the declared
/// counts add up to exactly `bytes.len()`. It does not check the CRC or the contents, so it is
/// cheap; [`decode`](fn@super::decode) and [`KeySet::apply`](crate::keyset::KeySet::apply)
/// check everything.
///
/// # Errors
/// The first header problem found.
pub fn peek_header(bytes: &[u8]) -> Result<Header, DecodeError> {
    if bytes.len() < 4 {
        return Err(DecodeError::Truncated);
    }
    if bytes[..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::Truncated);
    }
    let version = u16_at(bytes, 4);
    if !matches!(version, VERSION_1 | VERSION_2 | VERSION) {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let kind = match bytes[6] {
        1 => MessageKind::Snapshot,
        2 => MessageKind::Delta,
        other => return Err(DecodeError::BadKind(other)),
    };
    if bytes[7] != 0 {
        return Err(DecodeError::BadFlags);
    }
    let revision = u64_at(bytes, 8);
    let base = u64_at(bytes, 16);
    let base_revision = match kind {
        MessageKind::Snapshot if base != 0 => return Err(DecodeError::BadRevision),
        MessageKind::Snapshot => None,
        MessageKind::Delta if revision <= base => return Err(DecodeError::BadRevision),
        MessageKind::Delta => Some(base),
    };
    let header = Header {
        kind,
        version,
        revision,
        base_revision,
        string_count: u32_at(bytes, 24),
        string_bytes: u32_at(bytes, 28),
        grant_count: u32_at(bytes, 32),
        grant_item_count: u32_at(bytes, 36),
        entry_count: u32_at(bytes, 40),
        removal_count: u32_at(bytes, 44),
    };
    let expected = header.message_len();
    let actual = bytes.len() as u64;
    if actual < expected {
        return Err(DecodeError::Truncated);
    }
    if actual > expected {
        return Err(DecodeError::TrailingBytes);
    }
    if kind == MessageKind::Snapshot && header.removal_count != 0 {
        return Err(DecodeError::RemovalsInSnapshot);
    }
    Ok(header)
}
