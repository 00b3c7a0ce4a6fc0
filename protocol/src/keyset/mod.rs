//! The filter's in-memory key set: `KeySet`, the bucket index lookups go through, and `lookup`.
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
//!
//! The parts: `record.rs` (the 60-byte record of a key, tombstones, interned grants),
//! `key_ref.rs` (what a found key tells), `apply.rs` (applying a message, loading a snapshot),
//! `overlay.rs` (deltas, and the in-place merge), `encode.rs` (re-encoding the set as a
//! snapshot), `memory.rs` (heap accounting). The set itself, its bucket index and `lookup` (the
//! request path) are here.

mod apply;
mod encode;
mod key_ref;
mod memory;
mod overlay;
mod record;

pub use apply::{Applied, ApplyError};
pub use key_ref::KeyRef;

use std::collections::HashMap;
use std::sync::Arc;

use crate::Digest;
use crate::digest::ct_eq_32;
use record::{Grant, Record, TOMBSTONE};

/// The set of valid key digests with what each key may do.
///
/// `Clone` is cheap: the main array, its index and the owner and grant tables are shared
/// (`Arc`), only the overlay (bounded by compaction) is copied. A shell that serves requests
/// from one set while a sync thread changes it copies it on write: a delta copies the overlay,
/// a compaction the main array (`Arc::make_mut`); where nothing else holds the set (one
/// proxy-wasm VM) nothing is ever copied.
#[derive(Default, Clone)]
pub struct KeySet {
    revision: Option<u64>,
    /// The main array, sorted by digest, no duplicates.
    main: Arc<Vec<Record>>,
    /// The bucket index over `main`, rebuilt when `main` changes (snapshot, merge).
    main_index: Arc<Index>,
    /// Sorted by digest, no duplicates; tombstones always hide a key of the main array.
    overlay: Vec<Record>,
    /// The bucket index over `overlay`, rebuilt with every delta.
    overlay_index: Index,
    len: usize,
    owners: Arc<Vec<Arc<str>>>,
    owner_ids: Arc<HashMap<Arc<str>, u32>>,
    grants: Arc<Vec<Arc<Grant>>>,
    grant_ids: Arc<HashMap<Arc<Grant>, u32>>,
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
}

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
/// `value` (the fingerprint scan of a lookup).
fn matching_bytes(bytes: &[u8], value: u8) -> u64 {
    bytes
        .iter()
        .take(8)
        .enumerate()
        .filter(|&(_, &b)| b == value)
        .fold(0, |mask, (i, _)| mask | 1 << (8 * i + 7))
}

/// The bucket index over an array of records sorted by digest: `buckets.len() - 1` buckets and
/// a last one that only holds the array's length as its start. Empty for an empty array.
#[derive(Default, Clone)]
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

#[cfg(test)]
mod tests {
    use super::overlay::OVERLAY_MIN;
    use super::*;
    use crate::KeyId;
    use crate::wire::{Delta, KeyEntry, Snapshot};

    fn entry(i: u32, owner: &str) -> KeyEntry {
        KeyEntry {
            policy: Default::default(),
            digest: Digest::of(&format!("key-{i}")),
            key_id: KeyId::from_bytes([7; 16]),
            owner: owner.into(),
            expires_at: None,
            scopes: vec!["keys:read".into()],
            resources: vec![],
        }
    }

    #[test]
    fn a_clone_shares_the_main_array_until_a_compaction_and_each_side_keeps_its_own_changes() {
        let snapshot = Snapshot {
            revision: 1,
            entries: (0..1000).map(|i| entry(i, "a")).collect(),
        };
        let mut original = KeySet::new();
        original.apply(&snapshot.encode().unwrap()).unwrap();
        let mut copy = original.clone();
        assert!(Arc::ptr_eq(&original.main, &copy.main));
        assert!(Arc::ptr_eq(&original.owners, &copy.owners));

        // A small delta lands in the copy's overlay: the main array stays shared.
        let delta = Delta {
            base_revision: 1,
            revision: 2,
            upserts: vec![entry(5000, "new-owner")],
            removals: vec![Digest::of("key-3")],
        };
        copy.apply(&delta.encode().unwrap()).unwrap();
        assert!(
            Arc::ptr_eq(&original.main, &copy.main),
            "a delta copies only the overlay"
        );
        assert!(
            !Arc::ptr_eq(&original.owners, &copy.owners),
            "a new owner copies the table"
        );
        assert!(copy.lookup(&Digest::of("key-5000")).is_some());
        assert!(copy.lookup(&Digest::of("key-3")).is_none());
        assert!(original.lookup(&Digest::of("key-5000")).is_none());
        assert!(original.lookup(&Digest::of("key-3")).is_some());

        // Enough changes to compact: the copy gets its own main array, the original is intact.
        let upserts: Vec<KeyEntry> = (10_000..10_000 + OVERLAY_MIN as u32 + 1)
            .map(|i| entry(i, "bulk"))
            .collect();
        let big = Delta {
            base_revision: 2,
            revision: 3,
            upserts,
            removals: vec![],
        };
        copy.apply(&big.encode().unwrap()).unwrap();
        assert!(copy.overlay.is_empty(), "compacted");
        assert!(!Arc::ptr_eq(&original.main, &copy.main));
        assert_eq!(original.len(), 1000);
        assert_eq!(original.revision(), Some(1));
        assert_eq!(copy.len(), 1000 + OVERLAY_MIN + 1);
        assert!(copy.lookup(&Digest::of("key-10000")).is_some());
        assert!(original.lookup(&Digest::of("key-10000")).is_none());
        assert!(original.lookup(&Digest::of("key-3")).is_some());

        // With nothing else holding it, a compaction works in place.
        let before = Arc::as_ptr(&copy.main);
        let again = Delta {
            base_revision: 3,
            revision: 4,
            upserts: (20_000..20_000 + OVERLAY_MIN as u32 + 1)
                .map(|i| entry(i, "bulk"))
                .collect(),
            removals: vec![],
        };
        copy.apply(&again.encode().unwrap()).unwrap();
        assert!(copy.overlay.is_empty(), "compacted again");
        assert_eq!(Arc::as_ptr(&copy.main), before, "no copy when unshared");
    }

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
