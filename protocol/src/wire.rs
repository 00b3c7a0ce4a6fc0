//! The key-set wire format: a versioned, compact binary encoding of snapshots and deltas.
//!
//! A control plane answers `GET /v1/keyset` with one message ([`CONTENT_TYPE`]): a full
//! [`Snapshot`] of the key set at a revision, or a [`Delta`] from `base_revision` to `revision`.
//! Everything is little-endian. The layout is (see `FORMAT.md` for the byte tables):
//!
//! | part | size |
//! | --- | --- |
//! | header: magic `KGKS`, version `u16` (= 1), kind `u8`, flags `u8` (= 0), revision `u64`, base revision `u64`, then six `u32` counts | 48 |
//! | string table: `string_count` end offsets (`u32`), then `string_bytes` of UTF-8 | 4·S + B |
//! | grant table: `grant_count` × (`u16` scope count, `u16` resource count) | 4·G |
//! | grant items: `grant_item_count` string indices (`u32`): each grant's scopes, then its resources | 4·I |
//! | entries, sorted by digest: digest 32, key id 16, expiry `u32` (0 = none), owner string `u32`, grant `u32` | 60·E |
//! | removals (deltas only), sorted: 32-byte digests | 32·R |
//! | CRC32 (IEEE) of every byte before it | 4 |
//!
//! Owners, scopes and resources are interned in the string table; each distinct pair of
//! (scope list, resource list) is stored once as a *grant*. A million keys take about 60 MB.
//!
//! [`decode`] never panics and never allocates more than the input justifies: the declared
//! counts must add up to exactly the input length before anything is allocated, then the CRC is
//! checked, then every table, index, order and value. [`Snapshot::encode`] and
//! [`Delta::encode`] sort their entries, so any list of distinct digests encodes, and the same
//! content always encodes to the same bytes.

use std::collections::HashMap;

use crate::scope::{
    self, MAX_RESOURCES_PER_KEY, MAX_SCOPES_PER_KEY, ScopeError, validate_owner, validate_resource,
    validate_scope,
};
use crate::{Digest, KeyId};

/// The media type of an encoded message.
pub const CONTENT_TYPE: &str = "application/vnd.keygate.keyset";
/// The first four bytes of every message.
pub const MAGIC: [u8; 4] = *b"KGKS";
/// The format version this crate writes and the only one it reads.
pub const VERSION: u16 = 1;
/// The size of the fixed header.
pub const HEADER_LEN: usize = 48;
/// The size of one entry.
pub const ENTRY_LEN: usize = 60;
/// The size of one removal.
pub const REMOVAL_LEN: usize = 32;
/// The size of the CRC32 trailer.
pub const TRAILER_LEN: usize = 4;
/// The longest string the string table may hold (the longest resource), in bytes.
pub const MAX_STRING_LEN: usize = scope::MAX_RESOURCE_LEN;

/// One key in a snapshot or delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// SHA-256 of the whole key string.
    pub digest: Digest,
    /// The key's id.
    pub key_id: KeyId,
    /// The owner id (1 to 128 bytes).
    pub owner: String,
    /// When the key stops working, in Unix seconds (1 to `u32::MAX`); `None` for never.
    pub expires_at: Option<u64>,
    /// Scope names, in order (at most 64).
    pub scopes: Vec<String>,
    /// Resource allow-list, in order (at most 256; empty allows every resource).
    pub resources: Vec<String>,
}

/// The whole key set at `revision`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The revision this snapshot brings a reader to.
    pub revision: u64,
    /// Every key in the set (any order; the encoding is sorted by digest).
    pub entries: Vec<KeyEntry>,
}

/// The changes from `base_revision` to `revision`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delta {
    /// The revision a reader must be at to apply this delta.
    pub base_revision: u64,
    /// The revision this delta brings a reader to (greater than `base_revision`).
    pub revision: u64,
    /// Keys added or replaced.
    pub upserts: Vec<KeyEntry>,
    /// Digests removed (removing a digest that is not in the set is not an error).
    pub removals: Vec<Digest>,
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A full snapshot.
    Snapshot(Snapshot),
    /// A delta.
    Delta(Delta),
}

impl Message {
    /// The revision the message brings a reader to.
    #[must_use]
    pub const fn revision(&self) -> u64 {
        match self {
            Self::Snapshot(s) => s.revision,
            Self::Delta(d) => d.revision,
        }
    }

    /// Encodes the message.
    ///
    /// # Errors
    /// See [`Snapshot::encode`] and [`Delta::encode`].
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        match self {
            Self::Snapshot(s) => s.encode(),
            Self::Delta(d) => d.encode(),
        }
    }
}

/// Which kind of message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A full snapshot (kind byte 1).
    Snapshot,
    /// A delta (kind byte 2).
    Delta,
}

impl MessageKind {
    const fn to_byte(self) -> u8 {
        match self {
            Self::Snapshot => 1,
            Self::Delta => 2,
        }
    }
}

/// The fixed header of a message, as read by [`peek_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Snapshot or delta.
    pub kind: MessageKind,
    /// The format version (always [`VERSION`] once read).
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
    /// The total message length these counts imply, in bytes.
    #[must_use]
    pub fn message_len(&self) -> u64 {
        HEADER_LEN as u64
            + 4 * u64::from(self.string_count)
            + u64::from(self.string_bytes)
            + 4 * u64::from(self.grant_count)
            + 4 * u64::from(self.grant_item_count)
            + ENTRY_LEN as u64 * u64::from(self.entry_count)
            + REMOVAL_LEN as u64 * u64::from(self.removal_count)
            + TRAILER_LEN as u64
    }
}

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
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn usize_of(n: u32) -> usize {
    // Lossless on every target this crate supports (32- and 64-bit).
    n as usize
}

/// Reads and checks the header: magic, version, kind, flags, revisions, and that the declared
/// counts add up to exactly `bytes.len()`. It does not check the CRC or the contents, so it is
/// cheap; [`decode`] and [`KeySet::apply`](crate::keyset::KeySet::apply) check everything.
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
    if version != VERSION {
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

/// One grant of a validated message: where its items start and how many of each kind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawGrant {
    start: usize,
    scopes: usize,
    resources: usize,
}

/// One entry of a validated message, with indices into its tables.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawEntry {
    pub(crate) digest: [u8; 32],
    pub(crate) key_id: [u8; 16],
    pub(crate) expiry: u32,
    pub(crate) owner: u32,
    pub(crate) grant: u32,
}

impl RawEntry {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.digest);
        out.extend_from_slice(&self.key_id);
        out.extend_from_slice(&self.expiry.to_le_bytes());
        out.extend_from_slice(&self.owner.to_le_bytes());
        out.extend_from_slice(&self.grant.to_le_bytes());
    }
}

/// A message whose every byte has been checked; its tables are borrowed from the input.
pub(crate) struct Validated<'a> {
    pub(crate) header: Header,
    pub(crate) strings: Vec<&'a str>,
    grants: Vec<RawGrant>,
    items: &'a [u8],
    entries: &'a [u8],
    removals: &'a [u8],
}

impl<'a> Validated<'a> {
    /// Checks everything: header, length, CRC, tables, indices, order and values.
    pub(crate) fn new(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let header = peek_header(bytes)?;
        let body_end = bytes.len() - TRAILER_LEN;
        if crc32fast::hash(&bytes[..body_end]) != u32_at(bytes, body_end) {
            return Err(DecodeError::BadChecksum);
        }
        // The lengths below were checked by `peek_header` to add up to `bytes.len()`.
        let mut at = HEADER_LEN;
        let mut take = |len: usize| {
            let part = &bytes[at..at + len];
            at += len;
            part
        };
        let string_count = usize_of(header.string_count);
        let ends = take(4 * string_count);
        let data = take(usize_of(header.string_bytes));
        let grant_counts = take(4 * usize_of(header.grant_count));
        let items = take(4 * usize_of(header.grant_item_count));
        let entries = take(ENTRY_LEN * usize_of(header.entry_count));
        let removals = take(REMOVAL_LEN * usize_of(header.removal_count));

        let mut strings = Vec::with_capacity(string_count);
        let mut start = 0usize;
        for i in 0..string_count {
            let end = usize_of(u32_at(ends, 4 * i));
            if end < start || end > data.len() || end - start > MAX_STRING_LEN {
                return Err(DecodeError::BadStringTable);
            }
            let s = std::str::from_utf8(&data[start..end]).map_err(|_| DecodeError::InvalidUtf8)?;
            strings.push(s);
            start = end;
        }
        if start != data.len() {
            return Err(DecodeError::BadStringTable);
        }

        let item_count = usize_of(header.grant_item_count);
        let mut grants = Vec::with_capacity(usize_of(header.grant_count));
        let mut next = 0usize;
        for g in grant_counts.chunks_exact(4) {
            let scopes = usize::from(u16_at(g, 0));
            let resources = usize::from(u16_at(g, 2));
            if scopes > MAX_SCOPES_PER_KEY
                || resources > MAX_RESOURCES_PER_KEY
                || next + scopes + resources > item_count
            {
                return Err(DecodeError::BadGrantTable);
            }
            for k in 0..scopes + resources {
                let idx = usize_of(u32_at(items, 4 * (next + k)));
                let s = strings.get(idx).ok_or(DecodeError::IndexOutOfRange)?;
                let check = if k < scopes {
                    validate_scope(s)
                } else {
                    validate_resource(s)
                };
                check.map_err(DecodeError::InvalidValue)?;
            }
            grants.push(RawGrant {
                start: next,
                scopes,
                resources,
            });
            next += scopes + resources;
        }
        if next != item_count {
            return Err(DecodeError::BadGrantTable);
        }

        // Owners: check each distinct string once.
        let mut owner_ok: Vec<Option<bool>> = vec![None; string_count];
        let mut prev: Option<&[u8]> = None;
        for e in entries.chunks_exact(ENTRY_LEN) {
            let digest = &e[..32];
            if let Some(p) = prev {
                match p.cmp(digest) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => return Err(DecodeError::DuplicateDigest),
                    std::cmp::Ordering::Greater => return Err(DecodeError::Unsorted),
                }
            }
            prev = Some(digest);
            let owner = usize_of(u32_at(e, 52));
            let grant = usize_of(u32_at(e, 56));
            if grant >= grants.len() {
                return Err(DecodeError::IndexOutOfRange);
            }
            let ok = owner_ok
                .get_mut(owner)
                .ok_or(DecodeError::IndexOutOfRange)?;
            if !*ok.get_or_insert_with(|| validate_owner(strings[owner]).is_ok()) {
                return Err(DecodeError::InvalidValue(ScopeError::BadOwner));
            }
        }

        let mut prev: Option<&[u8]> = None;
        for r in removals.chunks_exact(REMOVAL_LEN) {
            if let Some(p) = prev {
                match p.cmp(r) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => return Err(DecodeError::DuplicateDigest),
                    std::cmp::Ordering::Greater => return Err(DecodeError::Unsorted),
                }
            }
            prev = Some(r);
        }
        // Upserts and removals are both sorted: one merge finds a digest in both.
        let (mut i, mut j) = (0, 0);
        let n_entries = usize_of(header.entry_count);
        let n_removals = usize_of(header.removal_count);
        while i < n_entries && j < n_removals {
            let a = &entries[i * ENTRY_LEN..i * ENTRY_LEN + 32];
            let b = &removals[j * REMOVAL_LEN..(j + 1) * REMOVAL_LEN];
            match a.cmp(b) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => return Err(DecodeError::DuplicateDigest),
            }
        }

        Ok(Self {
            header,
            strings,
            grants,
            items,
            entries,
            removals,
        })
    }

    pub(crate) fn entry_count(&self) -> usize {
        usize_of(self.header.entry_count)
    }

    pub(crate) fn entry(&self, i: usize) -> RawEntry {
        let e = &self.entries[i * ENTRY_LEN..(i + 1) * ENTRY_LEN];
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&e[..32]);
        let mut key_id = [0u8; 16];
        key_id.copy_from_slice(&e[32..48]);
        RawEntry {
            digest,
            key_id,
            expiry: u32_at(e, 48),
            owner: u32_at(e, 52),
            grant: u32_at(e, 56),
        }
    }

    pub(crate) fn grant_count(&self) -> usize {
        self.grants.len()
    }

    /// The scope strings of grant `g`.
    pub(crate) fn grant_scopes(&self, g: usize) -> impl ExactSizeIterator<Item = &'a str> + '_ {
        let grant = self.grants[g];
        (grant.start..grant.start + grant.scopes).map(move |k| self.item(k))
    }

    /// The resource strings of grant `g`.
    pub(crate) fn grant_resources(&self, g: usize) -> impl ExactSizeIterator<Item = &'a str> + '_ {
        let grant = self.grants[g];
        let from = grant.start + grant.scopes;
        (from..from + grant.resources).map(move |k| self.item(k))
    }

    fn item(&self, k: usize) -> &'a str {
        self.strings[usize_of(u32_at(self.items, 4 * k))]
    }

    pub(crate) fn removals(&self) -> impl ExactSizeIterator<Item = [u8; 32]> + '_ {
        self.removals.chunks_exact(REMOVAL_LEN).map(|r| {
            let mut d = [0u8; 32];
            d.copy_from_slice(r);
            d
        })
    }
}

/// Decodes and fully checks a message.
///
/// # Errors
/// A [`DecodeError`] for anything but a well-formed message of a known version.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let v = Validated::new(bytes)?;
    let grants: Vec<(Vec<String>, Vec<String>)> = (0..v.grant_count())
        .map(|g| {
            (
                v.grant_scopes(g).map(str::to_owned).collect(),
                v.grant_resources(g).map(str::to_owned).collect(),
            )
        })
        .collect();
    let entries: Vec<KeyEntry> = (0..v.entry_count())
        .map(|i| {
            let e = v.entry(i);
            let (scopes, resources) = &grants[usize_of(e.grant)];
            KeyEntry {
                digest: Digest::from_bytes(e.digest),
                key_id: KeyId::from_bytes(e.key_id),
                owner: v.strings[usize_of(e.owner)].to_owned(),
                expires_at: (e.expiry != 0).then_some(u64::from(e.expiry)),
                scopes: scopes.clone(),
                resources: resources.clone(),
            }
        })
        .collect();
    Ok(match v.header.base_revision {
        None => Message::Snapshot(Snapshot {
            revision: v.header.revision,
            entries,
        }),
        Some(base_revision) => Message::Delta(Delta {
            base_revision,
            revision: v.header.revision,
            upserts: entries,
            removals: v.removals().map(Digest::from_bytes).collect(),
        }),
    })
}

// ---------------------------------------------------------------------------------------------
// Writing

/// The string and grant tables of a message being written, interned in first-use order.
pub(crate) struct Tables<'s> {
    string_ends: Vec<u32>,
    string_data: Vec<u8>,
    string_ids: HashMap<&'s str, u32>,
    grant_counts: Vec<(u16, u16)>,
    grant_items: Vec<u32>,
    grant_ids: HashMap<Vec<u32>, u32>,
}

impl<'s> Tables<'s> {
    pub(crate) fn new() -> Self {
        Self {
            string_ends: Vec::new(),
            string_data: Vec::new(),
            string_ids: HashMap::new(),
            grant_counts: Vec::new(),
            grant_items: Vec::new(),
            grant_ids: HashMap::new(),
        }
    }

    fn string(&mut self, s: &'s str) -> Result<u32, EncodeError> {
        if let Some(&id) = self.string_ids.get(s) {
            return Ok(id);
        }
        let id = u32::try_from(self.string_ends.len()).map_err(|_| EncodeError::TooLarge)?;
        self.string_data.extend_from_slice(s.as_bytes());
        let end = u32::try_from(self.string_data.len()).map_err(|_| EncodeError::TooLarge)?;
        self.string_ends.push(end);
        self.string_ids.insert(s, id);
        Ok(id)
    }

    /// Interns an owner string (checked with [`validate_owner`]).
    pub(crate) fn owner(&mut self, owner: &'s str) -> Result<u32, EncodeError> {
        validate_owner(owner).map_err(EncodeError::InvalidValue)?;
        self.string(owner)
    }

    /// Interns a grant: its scope strings, then its resource strings, then the grant itself.
    pub(crate) fn grant<S, R>(&mut self, scopes: S, resources: R) -> Result<u32, EncodeError>
    where
        S: ExactSizeIterator<Item = &'s str>,
        R: ExactSizeIterator<Item = &'s str>,
    {
        let (n_scopes, n_resources) = (scopes.len(), resources.len());
        if n_scopes > MAX_SCOPES_PER_KEY {
            return Err(EncodeError::TooManyScopes);
        }
        if n_resources > MAX_RESOURCES_PER_KEY {
            return Err(EncodeError::TooManyResources);
        }
        let mut key = Vec::with_capacity(1 + n_scopes + n_resources);
        // The scope count first, so that ([a], [b]) and ([a, b], []) differ.
        key.push(n_scopes as u32);
        for s in scopes {
            validate_scope(s).map_err(EncodeError::InvalidValue)?;
            key.push(self.string(s)?);
        }
        for r in resources {
            validate_resource(r).map_err(EncodeError::InvalidValue)?;
            key.push(self.string(r)?);
        }
        if let Some(&id) = self.grant_ids.get(&key) {
            return Ok(id);
        }
        let id = u32::try_from(self.grant_counts.len()).map_err(|_| EncodeError::TooLarge)?;
        self.grant_items.extend_from_slice(&key[1..]);
        if u32::try_from(self.grant_items.len()).is_err() {
            return Err(EncodeError::TooLarge);
        }
        // Both counts were checked against limits that fit in u16.
        self.grant_counts
            .push((n_scopes as u16, n_resources as u16));
        self.grant_ids.insert(key, id);
        Ok(id)
    }
}

/// Writes a whole message: header, tables, `entries` (already sorted), `removals` (already
/// sorted), CRC.
pub(crate) fn write_message<I>(
    kind: MessageKind,
    revision: u64,
    base_revision: u64,
    tables: &Tables<'_>,
    entries: I,
    removals: &[[u8; 32]],
) -> Result<Vec<u8>, EncodeError>
where
    I: ExactSizeIterator<Item = RawEntry>,
{
    let too_large = |_| EncodeError::TooLarge;
    let header = Header {
        kind,
        version: VERSION,
        revision,
        base_revision: Some(base_revision),
        string_count: u32::try_from(tables.string_ends.len()).map_err(too_large)?,
        string_bytes: u32::try_from(tables.string_data.len()).map_err(too_large)?,
        grant_count: u32::try_from(tables.grant_counts.len()).map_err(too_large)?,
        grant_item_count: u32::try_from(tables.grant_items.len()).map_err(too_large)?,
        entry_count: u32::try_from(entries.len()).map_err(too_large)?,
        removal_count: u32::try_from(removals.len()).map_err(too_large)?,
    };
    let len = usize::try_from(header.message_len()).map_err(|_| EncodeError::TooLarge)?;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(kind.to_byte());
    out.push(0);
    out.extend_from_slice(&revision.to_le_bytes());
    out.extend_from_slice(&base_revision.to_le_bytes());
    for n in [
        header.string_count,
        header.string_bytes,
        header.grant_count,
        header.grant_item_count,
        header.entry_count,
        header.removal_count,
    ] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    for end in &tables.string_ends {
        out.extend_from_slice(&end.to_le_bytes());
    }
    out.extend_from_slice(&tables.string_data);
    for (s, r) in &tables.grant_counts {
        out.extend_from_slice(&s.to_le_bytes());
        out.extend_from_slice(&r.to_le_bytes());
    }
    for item in &tables.grant_items {
        out.extend_from_slice(&item.to_le_bytes());
    }
    for e in entries {
        e.write(&mut out);
    }
    for r in removals {
        out.extend_from_slice(r);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len(), len);
    Ok(out)
}

fn expiry_to_wire(expires_at: Option<u64>) -> Result<u32, EncodeError> {
    match expires_at {
        None => Ok(0),
        Some(0) => Err(EncodeError::ExpiryOutOfRange),
        Some(t) => u32::try_from(t).map_err(|_| EncodeError::ExpiryOutOfRange),
    }
}

/// Validates, interns and sorts entries; returns them in digest order with wire indices.
///
/// Pass 1 walks the entries in input order (the order their strings were allocated in, so
/// memory is read mostly sequentially) and gives each distinct owner and grant a local number.
/// The compact 60-byte records are then sorted by digest, and pass 2 renumbers owners and
/// grants in first-use order, interning their strings: the bytes depend only on the content.
fn encode_entries<'e>(
    tables: &mut Tables<'e>,
    entries: &'e [KeyEntry],
) -> Result<Vec<RawEntry>, EncodeError> {
    let too_large = |_| EncodeError::TooLarge;
    let mut owner_ids: HashMap<&'e str, u32> = HashMap::new();
    let mut owners: Vec<&'e str> = Vec::new();
    let mut grant_ids: HashMap<(&'e [String], &'e [String]), u32> = HashMap::new();
    let mut grants: Vec<(&'e [String], &'e [String])> = Vec::new();
    let mut records = Vec::with_capacity(entries.len());
    for e in entries {
        let owner = match owner_ids.get(e.owner.as_str()) {
            Some(&o) => o,
            None => {
                validate_owner(&e.owner).map_err(EncodeError::InvalidValue)?;
                let o = u32::try_from(owners.len()).map_err(too_large)?;
                owners.push(&e.owner);
                owner_ids.insert(&e.owner, o);
                o
            }
        };
        let key = (&e.scopes[..], &e.resources[..]);
        let grant = match grant_ids.get(&key) {
            Some(&g) => g,
            None => {
                let g = u32::try_from(grants.len()).map_err(too_large)?;
                grants.push(key);
                grant_ids.insert(key, g);
                g
            }
        };
        records.push(RawEntry {
            digest: *e.digest.as_bytes(),
            key_id: *e.key_id.as_bytes(),
            expiry: expiry_to_wire(e.expires_at)?,
            owner,
            grant,
        });
    }
    records.sort_unstable_by_key(|r| r.digest);
    if records.windows(2).any(|w| w[0].digest == w[1].digest) {
        return Err(EncodeError::DuplicateDigest);
    }
    let mut owner_wire = vec![u32::MAX; owners.len()];
    let mut grant_wire = vec![u32::MAX; grants.len()];
    for r in &mut records {
        let o = &mut owner_wire[r.owner as usize];
        if *o == u32::MAX {
            *o = tables.owner(owners[r.owner as usize])?;
        }
        let g = &mut grant_wire[r.grant as usize];
        if *g == u32::MAX {
            let (scopes, resources) = grants[r.grant as usize];
            *g = tables.grant(
                scopes.iter().map(String::as_str),
                resources.iter().map(String::as_str),
            )?;
        }
        r.owner = *o;
        r.grant = *g;
    }
    Ok(records)
}

impl Snapshot {
    /// Encodes the snapshot (entries sorted by digest).
    ///
    /// # Errors
    /// [`EncodeError`] for a duplicated digest, an invalid owner, scope or resource, too many
    /// scopes or resources on a key, an expiry of 0 or past `u32::MAX`, or tables too large.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut tables = Tables::new();
        let entries = encode_entries(&mut tables, &self.entries)?;
        write_message(
            MessageKind::Snapshot,
            self.revision,
            0,
            &tables,
            entries.into_iter(),
            &[],
        )
    }
}

impl Delta {
    /// Encodes the delta (upserts and removals each sorted by digest).
    ///
    /// # Errors
    /// As [`Snapshot::encode`], plus [`EncodeError::BadRevision`] unless
    /// `revision > base_revision`, and [`EncodeError::DuplicateDigest`] for a digest both
    /// upserted and removed.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        if self.revision <= self.base_revision {
            return Err(EncodeError::BadRevision);
        }
        let mut tables = Tables::new();
        let entries = encode_entries(&mut tables, &self.upserts)?;
        let mut removals: Vec<[u8; 32]> = self.removals.iter().map(|d| *d.as_bytes()).collect();
        removals.sort_unstable();
        if removals.windows(2).any(|w| w[0] == w[1]) {
            return Err(EncodeError::DuplicateDigest);
        }
        let (mut i, mut j) = (0, 0);
        while i < entries.len() && j < removals.len() {
            match entries[i].digest.cmp(&removals[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => return Err(EncodeError::DuplicateDigest),
            }
        }
        write_message(
            MessageKind::Delta,
            self.revision,
            self.base_revision,
            &tables,
            entries.into_iter(),
            &removals,
        )
    }
}
