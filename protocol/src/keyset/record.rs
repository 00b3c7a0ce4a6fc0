//! What the set stores: each key's 60-byte `Record`, the tombstones, and the interned `Grant`s.

use crate::policy::Policy;

/// What the set knows about a key besides its digest (28 bytes).
#[derive(Clone, Copy)]
pub(super) struct Meta {
    pub(super) key_id: [u8; 16],
    /// Unix seconds; 0 = never.
    pub(super) expiry: u32,
    pub(super) owner: u32,
    /// Index into the grant table; [`TOMBSTONE`] marks an overlay record that hides a key.
    pub(super) grant: u32,
}

/// A whole key (60 bytes): the overlay's records and the unit of merges.
#[derive(Clone, Copy)]
pub(super) struct Record {
    pub(super) digest: [u8; 32],
    pub(super) meta: Meta,
}

pub(super) const TOMBSTONE: u32 = u32::MAX;
pub(super) const TOMBSTONE_META: Meta = Meta {
    key_id: [0; 16],
    expiry: 0,
    owner: 0,
    grant: TOMBSTONE,
};
pub(super) const EMPTY_RECORD: Record = Record {
    digest: [0; 32],
    meta: TOMBSTONE_META,
};

/// What a key may do: its scopes, its resource allow-list and its policy (shared by many keys).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct Grant {
    pub(super) scopes: Box<[Box<str>]>,
    pub(super) resources: Box<[Box<str>]>,
    /// The scopes joined by single spaces, once per grant (the filter sends it upstream on every
    /// allowed request).
    pub(super) scope_list: Box<str>,
    /// State and rate limits.
    pub(super) policy: Policy,
}
