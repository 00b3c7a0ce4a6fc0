//! Re-encoding the set as a snapshot: `KeySet::encode_snapshot`, written straight from the records.

use super::KeySet;
use crate::wire::{self, MessageKind, RawEntry, Tables};

impl KeySet {
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
                        &g.policy,
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
