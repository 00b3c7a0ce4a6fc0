//! The filter's in-memory key set: compact sorted records, a bucket index and a small overlay.
//!
//! A million keys take about 62 bytes each. Keys are sorted by digest in one array of 60-byte
//! records (digest, key id, expiry, owner index, grant index). Owners and grants (scope list +
//! resource allow-list) are interned once in side tables. The index is one 64-byte cache line
//! per bucket of about 32 keys, the bucket chosen by the digest's first 4 bytes: where the
//! bucket's keys start in the array and a one-byte fingerprint of each (digest byte 4). A miss
//! usually reads that one line and nothing else; a hit reads it and then the one record whose
//! fingerprint matches, whose whole digest is compared in constant time. Two dependent memory
//! reads for a hit, one for most misses (2.0 MB of index for a million keys).
//!
//! Deltas do not move the big array: their upserts and removals go into a small sorted
//! *overlay* (records that replace or add keys, and tombstones that hide keys of the main
//! array), with a bucket index of its own, consulted before the main array. When the overlay
//! grows past `max(4096, n / 128)` records it is merged into the main array **in place** (one
//! pass forward that drops and replaces, one pass backward that inserts), so the amortized cost
//! of an upsert is `O(n / threshold)` record moves and memory never doubles, which matters in
//! wasm, where linear memory never shrinks. `FORMAT.md` explains the choice.
//!
//! Everything is plain safe Rust on `Vec`s and `HashMap`s: nothing wasm cannot do.

use std::collections::HashMap;
use std::sync::Arc;

use crate::digest::ct_eq_32;
use crate::scope;
use crate::swar;
use crate::wire::{
    self, DecodeError, EncodeError, Message, MessageKind, RawEntry, Tables, Validated,
};
use crate::{Digest, KeyId};

/// What the set knows about a key besides its digest (28 bytes).
#[derive(Clone, Copy)]
struct Meta {
    key_id: [u8; 16],
    /// Unix seconds; 0 = never.
    expiry: u32,
    owner: u32,
    /// Index into the grant table; [`TOMBSTONE`] marks an overlay record that hides a key.
    grant: u32,
}

/// A whole key (60 bytes): the overlay's records and the unit of merges.
#[derive(Clone, Copy)]
struct Record {
    digest: [u8; 32],
    meta: Meta,
}

const TOMBSTONE: u32 = u32::MAX;
const TOMBSTONE_META: Meta = Meta {
    key_id: [0; 16],
    expiry: 0,
    owner: 0,
    grant: TOMBSTONE,
};
const EMPTY_RECORD: Record = Record {
    digest: [0; 32],
    meta: TOMBSTONE_META,
};

/// The overlay is merged into the main array once it holds more than this many records…
const OVERLAY_MIN: usize = 4096;
/// …or more than `main.len() / OVERLAY_DIVISOR`, whichever is larger.
const OVERLAY_DIVISOR: usize = 128;
/// Fingerprints one bucket holds: a bucket is one 64-byte cache line.
const BUCKET_FINGERPRINTS: usize = 59;
/// Keys per bucket on average. The count is Poisson-distributed: more than
/// [`BUCKET_FINGERPRINTS`] in a bucket happens about once in 150,000 buckets, and such a
/// bucket's further keys are compared by their whole digest.
const KEYS_PER_BUCKET: usize = 32;

/// One bucket of the index: where its keys start in the main array, how many there are, and
/// a fingerprint (digest byte 4) of each of the first [`BUCKET_FINGERPRINTS`], in array order.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    start: u32,
    /// The bucket's key count, [`u8::MAX`] when it has that many or more (the next bucket's
    /// `start` then tells).
    len: u8,
    fingerprints: [u8; BUCKET_FINGERPRINTS],
}

fn prefix_of(d: &[u8; 32]) -> u32 {
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// The bucket of a digest among `count` buckets: monotone in the digest, so keys sorted by
/// digest fill the buckets in order.
fn bucket_of(d: &[u8; 32], count: usize) -> usize {
    ((u64::from(prefix_of(d)) * count as u64) >> 32) as usize
}

const fn fingerprint(d: &[u8; 32]) -> u8 {
    d[4]
}

/// The high bit of byte `i` set for each of the first (up to 8) bytes of `bytes` that equals
/// `value`, eight at a time (the fingerprint scan of a lookup).
fn matching_bytes(bytes: &[u8], value: u8) -> u64 {
    let n = bytes.len().min(8);
    let mut word = [0; 8];
    word[..n].copy_from_slice(&bytes[..n]);
    let valid = if n == 8 { u64::MAX } else { (1 << (8 * n)) - 1 };
    swar::bytes_equal(u64::from_le_bytes(word), value) & valid
}

/// The bucket index over an array of records sorted by digest: `buckets.len() - 1` buckets and
/// a last one that only holds the array's length as its start. Empty for an empty array.
#[derive(Default)]
struct Index {
    buckets: Vec<Bucket>,
}

impl Index {
    fn build(records: &[Record]) -> Self {
        let n = records.len();
        if n == 0 {
            return Self::default();
        }
        let count = n.div_ceil(KEYS_PER_BUCKET);
        let mut buckets = Vec::with_capacity(count + 1);
        let mut pos = 0;
        for b in 0..count {
            // Sorted keys: those of earlier buckets are behind `pos`.
            let start = pos;
            while pos < n && bucket_of(&records[pos].digest, count) == b {
                pos += 1;
            }
            let mut fingerprints = [0; BUCKET_FINGERPRINTS];
            for (f, r) in fingerprints.iter_mut().zip(&records[start..pos]) {
                *f = fingerprint(&r.digest);
            }
            buckets.push(Bucket {
                start: start as u32,
                len: u8::try_from(pos - start).unwrap_or(u8::MAX),
                fingerprints,
            });
        }
        buckets.push(Bucket {
            start: n as u32,
            len: 0,
            fingerprints: [0; BUCKET_FINGERPRINTS],
        });
        Self { buckets }
    }

    /// The position of `d` in `records` (the array this index was built over).
    fn find(&self, records: &[Record], d: &[u8; 32]) -> Option<usize> {
        let count = self.buckets.len().checked_sub(1)?;
        let b = bucket_of(d, count);
        let bucket = &self.buckets[b];
        let start = bucket.start as usize;
        let len = match bucket.len {
            u8::MAX => self.buckets[b + 1].start as usize - start,
            len => usize::from(len),
        };
        // Only a record whose fingerprint matches is read (about one key in 256 besides the one
        // sought); keys past the fingerprints, in a rare overfull bucket, are all compared.
        let fp = fingerprint(d);
        let seen = len.min(BUCKET_FINGERPRINTS);
        let mut at = 0;
        while at < seen {
            let mut matches = matching_bytes(&bucket.fingerprints[at..seen], fp);
            while matches != 0 {
                let p = start + at + matches.trailing_zeros() as usize / 8;
                if ct_eq_32(&records[p].digest, d) {
                    return Some(p);
                }
                matches &= matches - 1;
            }
            at += 8;
        }
        (start + seen..start + len).find(|&p| ct_eq_32(&records[p].digest, d))
    }

    fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Bucket>()
    }
}

/// What a key may do: its scopes and its resource allow-list (shared by many keys).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Grant {
    scopes: Box<[Box<str>]>,
    resources: Box<[Box<str>]>,
    /// The scopes joined by single spaces, once per grant (the filter sends it upstream on every
    /// allowed request).
    scope_list: Box<str>,
}

/// Why a message could not be applied. The set is unchanged after any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The bytes are not a valid message.
    #[error("cannot decode the key-set message: {0}")]
    Decode(#[from] DecodeError),
    /// A delta whose base revision is not the set's current revision: fetch a snapshot.
    #[error("delta base revision {base} does not match the current revision {current:?}")]
    BaseMismatch {
        /// The set's revision (`None` before the first snapshot).
        current: Option<u64>,
        /// The delta's base revision.
        base: u64,
    },
    /// A snapshot older than the current revision, or a delta already applied.
    #[error("the message is not newer than the current revision")]
    NotNewer,
    /// A [`Message`] given to [`KeySet::apply_message`] that cannot be encoded.
    #[error("invalid message: {0}")]
    Encode(#[from] EncodeError),
}

impl ApplyError {
    /// A short, stable, machine-readable code.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Decode(e) => e.code(),
            Self::BaseMismatch { .. } => "base_mismatch",
            Self::NotNewer => "not_newer",
            Self::Encode(e) => e.code(),
        }
    }
}

/// What an apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Snapshot or delta.
    pub kind: MessageKind,
    /// The set's revision now.
    pub revision: u64,
    /// Entries in the message (snapshot keys or delta upserts).
    pub upserts: usize,
    /// Removals in the message.
    pub removals: usize,
}

/// The set of valid key digests with what each key may do.
#[derive(Default)]
pub struct KeySet {
    revision: Option<u64>,
    /// The main array, sorted by digest, no duplicates.
    main: Vec<Record>,
    /// The bucket index over `main`, rebuilt when `main` changes (snapshot, merge).
    main_index: Index,
    /// Sorted by digest, no duplicates; tombstones always hide a key of the main array.
    overlay: Vec<Record>,
    /// The bucket index over `overlay`, rebuilt with every delta.
    overlay_index: Index,
    len: usize,
    owners: Vec<Arc<str>>,
    owner_ids: HashMap<Arc<str>, u32>,
    grants: Vec<Arc<Grant>>,
    grant_ids: HashMap<Arc<Grant>, u32>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("revision", &self.revision)
            .field("len", &self.len)
            .field("overlay_len", &self.overlay.len())
            .field("owners", &self.owners.len())
            .field("grants", &self.grants.len())
            .finish_non_exhaustive()
    }
}

/// A key found in a [`KeySet`].
#[derive(Clone, Copy)]
pub struct KeyRef<'a> {
    set: &'a KeySet,
    digest: [u8; 32],
    meta: &'a Meta,
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
}

impl std::fmt::Debug for KeyRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRef")
            .field("key_id", &self.key_id())
            .field("owner", &self.owner())
            .field("expires_at", &self.expires_at())
            .field("scopes", &self.grant().scopes)
            .field("resources", &self.grant().resources)
            .finish()
    }
}

impl KeySet {
    /// An empty set with no revision: it accepts only a snapshot.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The revision of the last applied message, `None` before the first snapshot.
    #[must_use]
    pub const fn revision(&self) -> Option<u64> {
        self.revision
    }

    /// Number of keys.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the set holds no key.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Finds a key by digest. The search orders by digest bytes (SHA-256 outputs, not secrets);
    /// the final equality is constant-time.
    #[must_use]
    pub fn lookup(&self, digest: &Digest) -> Option<KeyRef<'_>> {
        let d = digest.as_bytes();
        if let Some(p) = self.overlay_index.find(&self.overlay, d) {
            let r = &self.overlay[p];
            return (r.meta.grant != TOMBSTONE).then_some(KeyRef {
                set: self,
                digest: r.digest,
                meta: &r.meta,
            });
        }
        self.find_main(d).map(|i| KeyRef {
            set: self,
            digest: *d,
            meta: &self.main[i].meta,
        })
    }

    /// The position of `d` in the main array.
    fn find_main(&self, d: &[u8; 32]) -> Option<usize> {
        self.main_index.find(&self.main, d)
    }

    /// Applies an encoded snapshot or delta, decoding straight into the compact form.
    ///
    /// A snapshot replaces the set unless its revision is lower than the current one; a delta
    /// applies only when its base revision equals the current revision. The whole message is
    /// checked before anything changes, so on any error the set is unchanged.
    ///
    /// # Errors
    /// [`ApplyError::Decode`] for invalid bytes, [`ApplyError::NotNewer`] for a snapshot older
    /// than the current revision or a delta that ends at or before it,
    /// [`ApplyError::BaseMismatch`] for a delta from another revision.
    pub fn apply(&mut self, bytes: &[u8]) -> Result<Applied, ApplyError> {
        let v = Validated::new(bytes)?;
        let h = v.header;
        match h.base_revision {
            None => {
                if self.revision.is_some_and(|cur| h.revision < cur) {
                    return Err(ApplyError::NotNewer);
                }
                self.load_snapshot(&v);
            }
            Some(base) => {
                if self.revision.is_some_and(|cur| h.revision <= cur) {
                    return Err(ApplyError::NotNewer);
                }
                if self.revision != Some(base) {
                    return Err(ApplyError::BaseMismatch {
                        current: self.revision,
                        base,
                    });
                }
                self.apply_delta(&v);
            }
        }
        self.revision = Some(h.revision);
        Ok(Applied {
            kind: h.kind,
            revision: h.revision,
            upserts: h.entry_count as usize,
            removals: h.removal_count as usize,
        })
    }

    /// Applies a decoded message (by encoding it and applying the bytes).
    ///
    /// # Errors
    /// As [`apply`](Self::apply), plus [`ApplyError::Encode`] for a message that cannot be encoded.
    pub fn apply_message(&mut self, message: Message) -> Result<Applied, ApplyError> {
        let bytes = message.encode()?;
        self.apply(&bytes)
    }

    fn intern_owner(&mut self, owner: &str) -> u32 {
        if let Some(&id) = self.owner_ids.get(owner) {
            return id;
        }
        let id = u32::try_from(self.owners.len()).expect("fewer than 2^32 owners");
        let owner: Arc<str> = Arc::from(owner);
        self.owners.push(Arc::clone(&owner));
        self.owner_ids.insert(owner, id);
        id
    }

    fn intern_grant(&mut self, v: &Validated<'_>, g: usize) -> u32 {
        let scopes: Box<[Box<str>]> = v.grant_scopes(g).map(Box::from).collect();
        let grant = Grant {
            scope_list: scopes.join(" ").into(),
            scopes,
            resources: v.grant_resources(g).map(Box::from).collect(),
        };
        if let Some(&id) = self.grant_ids.get(&grant) {
            return id;
        }
        let id = u32::try_from(self.grants.len()).expect("fewer than 2^32 grants");
        let grant = Arc::new(grant);
        self.grants.push(Arc::clone(&grant));
        self.grant_ids.insert(grant, id);
        id
    }

    /// Maps the message's owner strings and grants to this set's tables, interning new ones.
    fn translate(&mut self, v: &Validated<'_>) -> (Vec<u32>, Vec<u32>) {
        let mut owner_map = vec![u32::MAX; v.strings.len()];
        let grant_map: Vec<u32> = (0..v.grant_count())
            .map(|g| self.intern_grant(v, g))
            .collect();
        for i in 0..v.entry_count() {
            let o = v.entry(i).owner as usize;
            if owner_map[o] == u32::MAX {
                owner_map[o] = self.intern_owner(v.strings[o]);
            }
        }
        (owner_map, grant_map)
    }

    fn record(e: &RawEntry, owner_map: &[u32], grant_map: &[u32]) -> Record {
        Record {
            digest: e.digest,
            meta: Meta {
                key_id: e.key_id,
                expiry: e.expiry,
                owner: owner_map[e.owner as usize],
                grant: grant_map[e.grant as usize],
            },
        }
    }

    fn load_snapshot(&mut self, v: &Validated<'_>) {
        // Everything was checked: drop the old contents first so the peak is one set, not two.
        *self = Self {
            revision: self.revision,
            ..Self::default()
        };
        let (owner_map, grant_map) = self.translate(v);
        let n = v.entry_count();
        let mut main = Vec::with_capacity(n);
        for i in 0..n {
            main.push(Self::record(&v.entry(i), &owner_map, &grant_map));
        }
        self.main = main;
        self.len = n;
        self.main_index = Index::build(&self.main);
    }

    fn apply_delta(&mut self, v: &Validated<'_>) {
        let (owner_map, grant_map) = self.translate(v);
        // Upserts and removals, each sorted and disjoint, merged into one sorted op list.
        let mut ops: Vec<Record> = Vec::with_capacity(v.entry_count() + v.removals().len());
        let mut removals = v.removals().peekable();
        for i in 0..v.entry_count() {
            let rec = Self::record(&v.entry(i), &owner_map, &grant_map);
            while let Some(r) = removals.next_if(|r| *r < rec.digest) {
                ops.push(Record {
                    digest: r,
                    meta: TOMBSTONE_META,
                });
            }
            ops.push(rec);
        }
        ops.extend(removals.map(|r| Record {
            digest: r,
            meta: TOMBSTONE_META,
        }));

        let old = std::mem::take(&mut self.overlay);
        let mut merged = Vec::with_capacity(old.len() + ops.len());
        let mut old_iter = old.into_iter().peekable();
        for op in ops {
            while let Some(o) = old_iter.next_if(|o| o.digest < op.digest) {
                merged.push(o);
            }
            let shadowed = old_iter.next_if(|o| o.digest == op.digest);
            let in_main = self.find_main(&op.digest).is_some();
            let was_live = shadowed.map_or(in_main, |o| o.meta.grant != TOMBSTONE);
            let is_live = op.meta.grant != TOMBSTONE;
            match (was_live, is_live) {
                (false, true) => self.len += 1,
                (true, false) => self.len -= 1,
                _ => {}
            }
            // A tombstone is needed only to hide a record of the main array.
            if is_live || in_main {
                merged.push(op);
            }
        }
        merged.extend(old_iter);
        self.overlay = merged;
        if self.overlay.len() > OVERLAY_MIN.max(self.main.len() / OVERLAY_DIVISOR) {
            self.compact();
        }
        self.overlay_index = Index::build(&self.overlay);
    }

    /// Merges the overlay into the main array in place.
    fn compact(&mut self) {
        let overlay = std::mem::take(&mut self.overlay);
        self.overlay_index = Index::default();
        let mut inserts: Vec<Record> = Vec::new();
        let mut ov = overlay.iter().peekable();
        let n = self.main.len();
        let mut w = 0;
        for r in 0..n {
            let digest = self.main[r].digest;
            while let Some(o) = ov.next_if(|o| o.digest < digest) {
                inserts.push(*o);
            }
            match ov.next_if(|o| o.digest == digest) {
                Some(o) if o.meta.grant == TOMBSTONE => {}
                Some(o) => {
                    self.main[w] = *o;
                    w += 1;
                }
                None => {
                    // Until the first removal, keys stay where they are.
                    if w != r {
                        self.main[w] = self.main[r];
                    }
                    w += 1;
                }
            }
        }
        inserts.extend(ov.copied());
        debug_assert!(inserts.iter().all(|r| r.meta.grant != TOMBSTONE));
        self.main.truncate(w);
        let k = inserts.len();
        let total = w + k;
        if self.main.capacity() < total {
            // Some slack so that the next compactions do not reallocate (a reallocation may
            // copy, and wasm memory never shrinks).
            self.main.reserve_exact(k + total / 64);
        }
        self.main.resize(total, EMPTY_RECORD);
        // Merge from the back: main[..i] and inserts[..j] into main[..dst + 1].
        let (mut i, mut j) = (w, k);
        for dst in (0..total).rev() {
            if j == 0 {
                break;
            }
            let insert = &inserts[j - 1];
            if i > 0 && self.main[i - 1].digest > insert.digest {
                self.main[dst] = self.main[i - 1];
                i -= 1;
            } else {
                self.main[dst] = *insert;
                j -= 1;
            }
        }
        self.main_index = Index::build(&self.main);
    }

    /// Every live key in digest order (the main array merged with the overlay).
    fn live_records(&self) -> impl Iterator<Item = Record> + '_ {
        let mut main = self.main.iter().copied().peekable();
        let mut overlay = self.overlay.iter().copied().peekable();
        std::iter::from_fn(move || {
            loop {
                let take_main = match (main.peek(), overlay.peek()) {
                    (None, None) => return None,
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (Some(m), Some(o)) => {
                        if m.digest == o.digest {
                            // The overlay record replaces or hides the main one.
                            main.next();
                            false
                        } else {
                            m.digest < o.digest
                        }
                    }
                };
                let r = if take_main {
                    main.next()
                } else {
                    overlay.next()
                };
                if let Some(r) = r
                    && r.meta.grant != TOMBSTONE
                {
                    return Some(r);
                }
            }
        })
    }

    /// Re-encodes the current contents as a snapshot at the current revision (0 before the
    /// first snapshot). Equal contents give the same bytes as [`wire::Snapshot::encode`].
    #[must_use]
    pub fn encode_snapshot(&self) -> Vec<u8> {
        // Two passes over the records, so that nothing as large as the set is built beside the
        // message (in wasm, a transient copy grows the VM's memory for good): the first fills
        // the string and grant tables, the second writes the entries straight into the message.
        let mut tables = Tables::new();
        let mut owner_map = vec![u32::MAX; self.owners.len()];
        let mut grant_map = vec![u32::MAX; self.grants.len()];
        for r in self.live_records() {
            let owner = &mut owner_map[r.meta.owner as usize];
            if *owner == u32::MAX {
                *owner = tables
                    .owner(&self.owners[r.meta.owner as usize])
                    .expect("owners in the set were validated");
            }
            let grant = &mut grant_map[r.meta.grant as usize];
            if *grant == u32::MAX {
                let g = &self.grants[r.meta.grant as usize];
                *grant = tables
                    .grant(
                        g.scopes.iter().map(|s| &**s),
                        g.resources.iter().map(|s| &**s),
                    )
                    .expect("grants in the set were validated");
            }
        }
        let entries = ExactLen {
            inner: self.live_records().map(|r| RawEntry {
                digest: r.digest,
                key_id: r.meta.key_id,
                expiry: r.meta.expiry,
                owner: owner_map[r.meta.owner as usize],
                grant: grant_map[r.meta.grant as usize],
            }),
            remaining: self.len,
        };
        wire::write_message(
            MessageKind::Snapshot,
            self.revision.unwrap_or(0),
            0,
            &tables,
            entries,
            &[],
        )
        .expect("a valid set encodes")
    }

    /// Heap memory held by the set, in bytes: the capacity of every array, the interned
    /// strings, and an estimate of the hash tables (buckets of key + value + one control byte).
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        fn map_bytes<K, V>(m: &HashMap<K, V>) -> usize {
            // hashbrown keeps at least 8/7 as many buckets as capacity, rounded to a power of two.
            let buckets = (m.capacity() * 8 / 7).next_power_of_two();
            buckets * (size_of::<K>() + size_of::<V>() + 1)
        }
        let arc_header = 2 * size_of::<usize>();
        let records = (self.main.capacity() + self.overlay.capacity()) * size_of::<Record>();
        let index = self.main_index.heap_bytes() + self.overlay_index.heap_bytes();
        let owners = self.owners.capacity() * size_of::<Arc<str>>()
            + self
                .owners
                .iter()
                .map(|o| o.len() + arc_header)
                .sum::<usize>()
            + map_bytes(&self.owner_ids);
        let grants = self.grants.capacity() * size_of::<Arc<Grant>>()
            + self
                .grants
                .iter()
                .map(|g| {
                    arc_header
                        + size_of::<Grant>()
                        + (g.scopes.len() + g.resources.len()) * size_of::<Box<str>>()
                        + g.scopes.iter().map(|s| s.len()).sum::<usize>()
                        + g.resources.iter().map(|s| s.len()).sum::<usize>()
                        + g.scope_list.len()
                })
                .sum::<usize>()
            + map_bytes(&self.grant_ids);
        records + index + owners + grants
    }
}

/// An iterator of a length known in advance (the set's live records: `len` counts them).
struct ExactLen<I> {
    inner: I,
    remaining: usize,
}

impl<I: Iterator> Iterator for ExactLen<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        let item = self.inner.next()?;
        self.remaining = self.remaining.saturating_sub(1);
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<I: Iterator> ExactSizeIterator for ExactLen<I> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_bytes_marks_exactly_the_equal_bytes_among_the_first_eight() {
        for len in 0..=10usize {
            for value in [0u8, 1, 0x7f, 0x80, 0xfe, 0xff, 0x42] {
                // every subset of positions holding the value, the others its neighbours
                for set in 0u32..(1 << len.min(8)) {
                    let bytes: Vec<u8> = (0..len)
                        .map(|i| {
                            if i < 8 && set & (1 << i) != 0 {
                                value
                            } else {
                                value.wrapping_add(1 + (i as u8 % 2) * 0x7f)
                            }
                        })
                        .collect();
                    let expected: u64 = (0..len.min(8))
                        .filter(|&i| bytes[i] == value)
                        .map(|i| 0x80 << (8 * i))
                        .sum();
                    assert_eq!(matching_bytes(&bytes, value), expected, "{bytes:?} {value}");
                }
            }
        }
    }

    #[test]
    fn a_key_takes_60_bytes_and_a_bucket_one_cache_line() {
        assert_eq!(std::mem::size_of::<Record>(), 60);
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
        assert_eq!(std::mem::align_of::<Bucket>(), 64);
    }
}
