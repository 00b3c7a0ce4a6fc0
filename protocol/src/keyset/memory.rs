//! Memory accounting: `KeySet::heap_bytes`, the heap the set holds.

use std::collections::HashMap;
use std::sync::Arc;

use super::KeySet;
use super::record::{Grant, Record};
use crate::policy::RateLimit;

impl KeySet {
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
                        + g.policy.limits.capacity() * size_of::<RateLimit>()
                        + g.policy
                            .limits
                            .iter()
                            .map(|l| l.name.capacity())
                            .sum::<usize>()
                })
                .sum::<usize>()
            + map_bytes(&self.grant_ids);
        records + index + owners + grants
    }
}
