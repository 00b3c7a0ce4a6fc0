//! The key set as the request path sees it: what the sync thread last published, read
//! lock-free by every Envoy worker thread.
//!
//! The sync thread runs the core's [`Syncer`](keygate_filter_core::sync::Syncer), which keeps
//! its set behind an `Arc`; after each of its events the thread hands that `Arc` (and when the
//! control plane last answered) to [`PublishedSet::publish`]. A request [`load`s](PublishedSet::load)
//! it (an `arc-swap` read: no lock, no write to a shared cache line in the common case) and
//! judges it Fresh, Stale or Unavailable with the core's own rule
//! ([`keygate_filter_core::sync::state_of`]). The set is never copied to publish it: the next
//! change copies it on write in the syncer (its overlay; the main array only at a compaction,
//! as `KeySet`'s clone shares it), and the old one goes when its last reader does.

use std::sync::Arc;

use arc_swap::ArcSwap;
use arc_swap::Guard;
use keygate_filter_core::config::Config;
use keygate_filter_core::decision::KeySetState;
use keygate_filter_core::sync::state_of;
use keygate_protocol::keyset::KeySet;

/// One publication: the set (none before the first sync) and when the control plane last
/// answered successfully, as the set reflects it.
#[derive(Debug, Default)]
pub struct Published {
    set: Option<Arc<KeySet>>,
    fresh_at_ms: Option<u64>,
}

impl Published {
    /// The set's state for a decision at `now_ms` (the core's rule: none or never fresh,
    /// unavailable; older than `max_staleness_s`, stale; else fresh).
    pub fn state(&self, config: &Config, now_ms: u64) -> KeySetState<'_> {
        state_of(self.set.as_deref(), self.fresh_at_ms, config, now_ms)
    }

    /// The set, if any.
    pub fn set(&self) -> Option<&Arc<KeySet>> {
        self.set.as_ref()
    }

    /// When the control plane last answered successfully (ms since the epoch).
    pub fn fresh_at_ms(&self) -> Option<u64> {
        self.fresh_at_ms
    }
}

/// The latest [`Published`], swapped atomically.
#[derive(Debug)]
pub struct PublishedSet {
    current: ArcSwap<Published>,
}

impl Default for PublishedSet {
    fn default() -> Self {
        Self {
            current: ArcSwap::from_pointee(Published::default()),
        }
    }
}

impl PublishedSet {
    /// The current publication (lock-free; hold the guard for the length of one decision).
    pub fn load(&self) -> Guard<Arc<Published>> {
        self.current.load()
    }

    /// Publishes `set` fresh as of `fresh_at_ms`, unless that is what readers already see
    /// (the same set, the same time). Only the sync thread calls this. True if it published.
    pub fn publish(&self, set: Option<&Arc<KeySet>>, fresh_at_ms: Option<u64>) -> bool {
        let current = self.current.load();
        let same_set = match (current.set.as_ref(), set) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if same_set && current.fresh_at_ms == fresh_at_ms {
            return false;
        }
        drop(current);
        self.current.store(Arc::new(Published {
            set: set.cloned(),
            fresh_at_ms,
        }));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_staleness_s: u64) -> Config {
        let json = serde_json::json!({
            "cluster": "cp", "authority": "cp", "edge_key": "kg_edge_x",
            "max_staleness_s": max_staleness_s,
        });
        Config::from_json(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn unavailable_then_fresh_then_stale_as_the_core_says() {
        let p = PublishedSet::default();
        let c = config(2);
        assert!(matches!(p.load().state(&c, 0), KeySetState::Unavailable));
        let set = Arc::new(KeySet::new());
        assert!(p.publish(Some(&set), Some(10_000)));
        assert!(matches!(p.load().state(&c, 12_000), KeySetState::Fresh(_)));
        assert!(matches!(p.load().state(&c, 12_001), KeySetState::Stale(_)));
        assert!(
            !p.publish(Some(&set), Some(10_000)),
            "nothing new: no publication"
        );
        assert!(p.publish(Some(&set), Some(11_000)));
        assert!(matches!(p.load().state(&c, 12_001), KeySetState::Fresh(_)));
    }

    #[test]
    fn a_publication_shares_the_set_and_the_old_one_goes_with_its_readers() {
        let p = PublishedSet::default();
        let first = Arc::new(KeySet::new());
        p.publish(Some(&first), Some(1));
        assert_eq!(Arc::strong_count(&first), 2, "shared, not copied");
        let reader = p.load();
        let second = Arc::new(KeySet::new());
        p.publish(Some(&second), Some(2));
        assert!(Arc::ptr_eq(reader.set().unwrap(), &first));
        drop(reader);
        assert_eq!(Arc::strong_count(&first), 1, "released by the last reader");
    }
}
