//! Deltas: the sorted overlay they go into, its in-place merge into the main array, the live view.

use std::sync::Arc;

use super::record::{EMPTY_RECORD, Record, TOMBSTONE, TOMBSTONE_META};
use super::{Index, KeySet};
use crate::wire::Validated;

/// The overlay is merged into the main array once it holds more than this many records…
pub(super) const OVERLAY_MIN: usize = 4096;
/// …or more than `main.len() / OVERLAY_DIVISOR`, whichever is larger.
const OVERLAY_DIVISOR: usize = 128;

impl KeySet {
    pub(super) fn apply_delta(&mut self, v: &Validated<'_>) {
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

    /// Merges the overlay into the main array in place (after a copy when a clone of the set
    /// still shares it).
    fn compact(&mut self) {
        let overlay = std::mem::take(&mut self.overlay);
        self.overlay_index = Index::default();
        let main = Arc::make_mut(&mut self.main);
        let mut inserts: Vec<Record> = Vec::new();
        let mut ov = overlay.iter().peekable();
        let n = main.len();
        let mut w = 0;
        for r in 0..n {
            let digest = main[r].digest;
            while let Some(o) = ov.next_if(|o| o.digest < digest) {
                inserts.push(*o);
            }
            match ov.next_if(|o| o.digest == digest) {
                Some(o) if o.meta.grant == TOMBSTONE => {}
                Some(o) => {
                    main[w] = *o;
                    w += 1;
                }
                None => {
                    // Until the first removal, keys stay where they are.
                    if w != r {
                        main[w] = main[r];
                    }
                    w += 1;
                }
            }
        }
        inserts.extend(ov.copied());
        debug_assert!(inserts.iter().all(|r| r.meta.grant != TOMBSTONE));
        main.truncate(w);
        let k = inserts.len();
        let total = w + k;
        if main.capacity() < total {
            // Some slack so that the next compactions do not reallocate (a reallocation may
            // copy, and wasm memory never shrinks).
            main.reserve_exact(k + total / 64);
        }
        main.resize(total, EMPTY_RECORD);
        // Merge from the back: main[..i] and inserts[..j] into main[..dst + 1].
        let (mut i, mut j) = (w, k);
        for dst in (0..total).rev() {
            if j == 0 {
                break;
            }
            let insert = &inserts[j - 1];
            if i > 0 && main[i - 1].digest > insert.digest {
                main[dst] = main[i - 1];
                i -= 1;
            } else {
                main[dst] = *insert;
                j -= 1;
            }
        }
        self.main_index = Arc::new(Index::build(main));
    }

    /// Every live key in digest order (the main array merged with the overlay).
    pub(super) fn live_records(&self) -> impl Iterator<Item = Record> + '_ {
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
}
