//! Counting in one process (the dynamic module, forward-auth): one atomic per bucket holding
//! `(window, count)`, shared by every thread. Exact: at most the quota passes in a window, and
//! a request is refused only when the quota is spent.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rustc_hash::FxHashMap;

use super::{Bucket, Counters, Take};

/// The process's counters, by bucket.
#[derive(Debug, Default)]
pub struct AtomicCounters {
    map: RwLock<FxHashMap<u64, AtomicU64>>,
}

/// `(window, count)` in one word: the window's low 32 bits (a window index of a second or more
/// since the epoch fits until 2106) and the count.
fn pack(window: u64, count: u32) -> u64 {
    ((window & 0xffff_ffff) << 32) | u64::from(count)
}

fn take_in(slot: &AtomicU64, quota: u32, window: u64) -> Take {
    let mut current = slot.load(Ordering::Relaxed);
    loop {
        let count = if current >> 32 == window & 0xffff_ffff {
            (current & 0xffff_ffff) as u32
        } else {
            0
        };
        if count >= quota {
            return Take {
                allowed: false,
                remaining: 0,
            };
        }
        match slot.compare_exchange_weak(
            current,
            pack(window, count + 1),
            Ordering::AcqRel,
            Ordering::Relaxed,
        ) {
            Ok(_) => {
                return Take {
                    allowed: true,
                    remaining: quota - count - 1,
                };
            }
            Err(now) => current = now,
        }
    }
}

impl AtomicCounters {
    /// How many buckets have a counter.
    pub fn len(&self) -> usize {
        self.map.read().map_or(0, |m| m.len())
    }

    /// Whether none has.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts one request (see [`Counters::take`]); through a shared reference, from any thread.
    pub fn take(&self, bucket: &Bucket<'_>, quota: u32, window: u64) -> Take {
        let id = bucket.id();
        // A poisoned lock (a panic elsewhere while it was held) still holds valid counters.
        {
            let map = self.map.read().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = map.get(&id) {
                return take_in(slot, quota, window);
            }
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let slot = map.entry(id).or_insert_with(|| AtomicU64::new(0));
        take_in(slot, quota, window)
    }
}

impl Counters for &AtomicCounters {
    fn take(&mut self, bucket: &Bucket<'_>, quota: u32, window: u64) -> Take {
        AtomicCounters::take(self, bucket, quota, window)
    }
}
