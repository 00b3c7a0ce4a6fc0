//! Reading a message: `Validated`, which checks every byte and borrows the tables, and `decode`.

use super::{
    DecodeError, Delta, ENTRY_LEN, HEADER_LEN, Header, KeyEntry, MAX_STRING_LEN, Message, NO_SCOPE,
    REMOVAL_LEN, Snapshot, TRAILER_LEN, peek_header,
};
use crate::policy::{
    KeyState, LimitPool, MAX_LIMITS_PER_KEY, POOL_OWNER_IN, Policy, RateLimit, validate_limits,
    validate_pool_scope,
};
use crate::scope::{
    MAX_RESOURCES_PER_KEY, MAX_SCOPES_PER_KEY, ScopeError, validate_owner, validate_resource,
    validate_scope,
};
use crate::{Digest, KeyId};

pub(super) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn usize_of(n: u32) -> usize {
    // Lossless on every target this crate supports (32- and 64-bit).
    n as usize
}

/// One grant of a validated message: where its items start, how many of each kind, its state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawGrant {
    start: usize,
    scopes: usize,
    resources: usize,
    /// Rate limits: [`Header::limit_items`] items each (name, limit, window, pool, v3: scope).
    limits: usize,
    state: KeyState,
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

/// A message whose every byte has been checked; its tables are borrowed from the input.
pub(crate) struct Validated<'a> {
    pub(crate) header: Header,
    pub(crate) strings: Vec<&'a str>,
    grants: Vec<RawGrant>,
    /// Items per rate limit ([`Header::limit_items`]).
    limit_items: usize,
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
        let grant_counts = take(header.grant_len() * usize_of(header.grant_count));
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
        let grant_len = header.grant_len();
        let limit_items = header.limit_items();
        let mut grants = Vec::with_capacity(usize_of(header.grant_count));
        let mut next = 0usize;
        for g in grant_counts.chunks_exact(grant_len) {
            let scopes = usize::from(u16_at(g, 0));
            let resources = usize::from(u16_at(g, 2));
            let (state, limits) = if grant_len == 4 {
                (KeyState::Active, 0)
            } else {
                let state = KeyState::from_byte(g[4]).ok_or(DecodeError::BadPolicy)?;
                let limits = usize::from(g[5]);
                if limits > MAX_LIMITS_PER_KEY || u16_at(g, 6) != 0 {
                    return Err(DecodeError::BadPolicy);
                }
                (state, limits)
            };
            let strings_end = next + scopes + resources;
            if scopes > MAX_SCOPES_PER_KEY
                || resources > MAX_RESOURCES_PER_KEY
                || strings_end + limit_items * limits > item_count
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
            let grant = RawGrant {
                start: next,
                scopes,
                resources,
                limits,
                state,
            };
            let mut pools_ok = true;
            let mut names_ok = true;
            let raw: Vec<(&str, u32, u32)> = (0..limits)
                .map(|l| {
                    let at = strings_end + limit_items * l;
                    let item = |k: usize| u32_at(items, 4 * (at + k));
                    // Version 3's fifth item: a scope for a scoped pool, `NO_SCOPE` otherwise.
                    let scope = (limit_items == 5).then(|| item(4));
                    pools_ok &= match (item(3), scope) {
                        (POOL_OWNER_IN, Some(s)) => {
                            let found = strings.get(usize_of(s)).copied();
                            names_ok &= found.is_some();
                            found.is_none_or(|s| validate_pool_scope(s).is_ok())
                        }
                        (pool, None | Some(NO_SCOPE)) => LimitPool::from_wire(pool).is_some(),
                        _ => false,
                    };
                    let name = strings.get(usize_of(item(0))).copied();
                    names_ok &= name.is_some();
                    (name.unwrap_or(""), item(1), item(2))
                })
                .collect();
            if !names_ok {
                return Err(DecodeError::IndexOutOfRange);
            }
            if !pools_ok || validate_limits(raw.into_iter()).is_err() {
                return Err(DecodeError::BadPolicy);
            }
            grants.push(grant);
            next = strings_end + limit_items * limits;
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
            limit_items,
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

    /// The policy of grant `g` (state and rate limits).
    pub(crate) fn grant_policy(&self, g: usize) -> Policy {
        let grant = self.grants[g];
        let from = grant.start + grant.scopes + grant.resources;
        Policy {
            state: grant.state,
            limits: (0..grant.limits)
                .map(|l| {
                    let at = from + self.limit_items * l;
                    let word = |k: usize| u32_at(self.items, 4 * (at + k));
                    // Checked when the message was validated.
                    let pool = match word(3) {
                        POOL_OWNER_IN => LimitPool::OwnerIn(self.item(at + 4).to_owned()),
                        other => LimitPool::from_wire(other).unwrap_or_default(),
                    };
                    RateLimit {
                        name: self.item(at).to_owned(),
                        limit: word(1),
                        window_s: word(2),
                        pool,
                    }
                })
                .collect(),
        }
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
    let grants: Vec<(Vec<String>, Vec<String>, Policy)> = (0..v.grant_count())
        .map(|g| {
            (
                v.grant_scopes(g).map(str::to_owned).collect(),
                v.grant_resources(g).map(str::to_owned).collect(),
                v.grant_policy(g),
            )
        })
        .collect();
    let entries: Vec<KeyEntry> = (0..v.entry_count())
        .map(|i| {
            let e = v.entry(i);
            let (scopes, resources, policy) = &grants[usize_of(e.grant)];
            KeyEntry {
                digest: Digest::from_bytes(e.digest),
                key_id: KeyId::from_bytes(e.key_id),
                owner: v.strings[usize_of(e.owner)].to_owned(),
                expires_at: (e.expiry != 0).then_some(u64::from(e.expiry)),
                scopes: scopes.clone(),
                resources: resources.clone(),
                policy: policy.clone(),
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
