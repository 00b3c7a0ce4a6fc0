//! Writing a message: the string and grant tables, `write_message`, and the `encode` methods.

use std::collections::HashMap;

use super::{
    Delta, EncodeError, Header, KeyEntry, MAGIC, MessageKind, NO_SCOPE, RawEntry, Snapshot,
    VERSION, VERSION_1, VERSION_2,
};
use crate::policy::Policy;
use crate::scope::{
    MAX_RESOURCES_PER_KEY, MAX_SCOPES_PER_KEY, validate_owner, validate_resource, validate_scope,
};

impl RawEntry {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.digest);
        out.extend_from_slice(&self.key_id);
        out.extend_from_slice(&self.expiry.to_le_bytes());
        out.extend_from_slice(&self.owner.to_le_bytes());
        out.extend_from_slice(&self.grant.to_le_bytes());
    }
}

/// The string and grant tables of a message being written, interned in first-use order.
pub(crate) struct Tables<'s> {
    string_ends: Vec<u32>,
    string_data: Vec<u8>,
    string_ids: HashMap<&'s str, u32>,
    /// Per grant: scope count, resource count, state byte, limit count.
    grant_counts: Vec<(u16, u16, u8, u8)>,
    /// Every grant's items, five per rate limit (version 3's layout; [`write_message`] leaves
    /// out each limit's scope item when the message is an older version).
    grant_items: Vec<u32>,
    grant_ids: HashMap<Vec<u32>, u32>,
    /// Whether a grant has a policy other than the default: the message needs version 2.
    any_policy: bool,
    /// Whether a grant has a scoped owner pool: the message needs version 3.
    any_scoped_pool: bool,
    /// Rate limits over all grants (the scope items an older version leaves out).
    limit_count: usize,
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
            any_policy: false,
            any_scoped_pool: false,
            limit_count: 0,
        }
    }

    /// The oldest version that holds every grant: 1 without policies, 2 without scoped pools.
    fn version(&self) -> u16 {
        if self.any_scoped_pool {
            VERSION
        } else if self.any_policy {
            VERSION_2
        } else {
            VERSION_1
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

    /// Interns a grant: its scope strings, then its resource strings, then each limit's name
    /// (and its pool's scope), then the grant itself.
    pub(crate) fn grant<S, R>(
        &mut self,
        scopes: S,
        resources: R,
        policy: &'s Policy,
    ) -> Result<u32, EncodeError>
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
        policy.validate().map_err(EncodeError::InvalidPolicy)?;
        let n_limits = policy.limits.len();
        let mut key = Vec::with_capacity(3 + n_scopes + n_resources + 5 * n_limits);
        // The counts and state first, so that ([a], [b]) and ([a, b], []) differ.
        key.push(n_scopes as u32);
        key.push(n_resources as u32);
        key.push(u32::from(policy.state.to_byte()));
        for s in scopes {
            validate_scope(s).map_err(EncodeError::InvalidValue)?;
            key.push(self.string(s)?);
        }
        for r in resources {
            validate_resource(r).map_err(EncodeError::InvalidValue)?;
            key.push(self.string(r)?);
        }
        for l in &policy.limits {
            // The name, then the scope: strings are interned in the order they are met.
            let name = self.string(&l.name)?;
            let scope = match l.pool.scope() {
                Some(scope) => self.string(scope)?,
                None => NO_SCOPE,
            };
            key.extend([name, l.limit, l.window_s, l.pool.to_wire(), scope]);
        }
        if let Some(&id) = self.grant_ids.get(&key) {
            return Ok(id);
        }
        let id = u32::try_from(self.grant_counts.len()).map_err(|_| EncodeError::TooLarge)?;
        self.grant_items.extend_from_slice(&key[3..]);
        if u32::try_from(self.grant_items.len()).is_err() {
            return Err(EncodeError::TooLarge);
        }
        // The counts were checked against limits that fit in u16 (scopes, resources) and u8.
        self.grant_counts.push((
            n_scopes as u16,
            n_resources as u16,
            policy.state.to_byte(),
            n_limits as u8,
        ));
        self.any_policy |= !policy.is_default();
        self.any_scoped_pool |= policy.has_scoped_pool();
        self.limit_count += n_limits;
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
    let version = tables.version();
    // Before version 3 a limit has no scope item: four items, not five.
    let item_count = if version == VERSION {
        tables.grant_items.len()
    } else {
        tables.grant_items.len() - tables.limit_count
    };
    let header = Header {
        kind,
        version,
        revision,
        base_revision: Some(base_revision),
        string_count: u32::try_from(tables.string_ends.len()).map_err(too_large)?,
        string_bytes: u32::try_from(tables.string_data.len()).map_err(too_large)?,
        grant_count: u32::try_from(tables.grant_counts.len()).map_err(too_large)?,
        grant_item_count: u32::try_from(item_count).map_err(too_large)?,
        entry_count: u32::try_from(entries.len()).map_err(too_large)?,
        removal_count: u32::try_from(removals.len()).map_err(too_large)?,
    };
    let len = usize::try_from(header.message_len()).map_err(|_| EncodeError::TooLarge)?;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
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
    for &(s, r, state, limits) in &tables.grant_counts {
        out.extend_from_slice(&s.to_le_bytes());
        out.extend_from_slice(&r.to_le_bytes());
        if version != VERSION_1 {
            out.extend_from_slice(&[state, limits, 0, 0]);
        }
    }
    let mut items = tables.grant_items.iter();
    for &(s, r, _, limits) in &tables.grant_counts {
        for item in items.by_ref().take(usize::from(s) + usize::from(r)) {
            out.extend_from_slice(&item.to_le_bytes());
        }
        for _ in 0..limits {
            // Name, limit, window, pool, scope: an older version leaves out the scope.
            for (k, item) in items.by_ref().take(5).enumerate() {
                if k < 4 || version == VERSION {
                    out.extend_from_slice(&item.to_le_bytes());
                }
            }
        }
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
    type GrantKey<'e> = (&'e [String], &'e [String], &'e Policy);
    let mut grant_ids: HashMap<GrantKey<'e>, u32> = HashMap::new();
    let mut grants: Vec<GrantKey<'e>> = Vec::new();
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
        let key = (&e.scopes[..], &e.resources[..], &e.policy);
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
            let (scopes, resources, policy) = grants[r.grant as usize];
            *g = tables.grant(
                scopes.iter().map(String::as_str),
                resources.iter().map(String::as_str),
                policy,
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
