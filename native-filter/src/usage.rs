//! Allowed requests counted for usage reports, cheaply on the request path: each Envoy worker
//! thread appends `(key id, second)` to a log of its own shard (an uncontended lock on a cache
//! line nobody else writes, except the sync thread taking the log once a tick), and the sync
//! thread hands the uses to the core's usage batching (`Worker::record_use`), which aggregates,
//! batches and reports them to `POST /v1/usage`.
//!
//! A shard's log holds at most [`LOG_CAPACITY`] uses; past that (a sync thread that stopped
//! taking them) they fold into per-key tallies in the shard, so memory stays bounded by the
//! keys in use and no count is lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use keygate_filter_core::decision::Reason;
use keygate_protocol::KeyId;

/// Shards: more than Envoy's usual worker count, so that workers rarely share one.
pub const SHARDS: usize = 16;
/// Uses a shard logs before folding them into tallies.
pub const LOG_CAPACITY: usize = 1 << 14;

/// One shard's uses: the log, and the tallies (count, latest second) of uses folded out of it.
#[derive(Debug, Default)]
struct Log {
    uses: Vec<(KeyId, u64)>,
    tallies: HashMap<KeyId, (u64, u64)>,
}

/// A shard, alone on its cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(Mutex<Log>);

impl Shard {
    fn lock(&self) -> MutexGuard<'_, Log> {
        // A panic while holding the lock leaves a log that is still consistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The uses of one sync's key set, sharded by worker thread.
#[derive(Debug)]
pub struct UsageShards {
    shards: Box<[Shard]>,
    /// Requests of a key refused by a rate limit (`429 rate_limited`) or for its credits
    /// (`429 credits_exhausted`), with the reason: rare, one lock for all threads.
    refused: Mutex<Vec<(KeyId, u64, Reason)>>,
}

impl Default for UsageShards {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            refused: Mutex::default(),
        }
    }
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard, handed out round-robin on its first use.
    static MY_SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

impl UsageShards {
    /// Counts one allowed request by `key` at `now_secs` (the request path).
    pub fn record(&self, key: KeyId, now_secs: u64) {
        let index = MY_SHARD.with(|s| *s);
        let Some(shard) = self.shards.get(index) else {
            return;
        };
        let mut log = shard.lock();
        if log.uses.len() >= LOG_CAPACITY {
            let Log { uses, tallies } = &mut *log;
            for (k, at) in uses.drain(..) {
                let t = tallies.entry(k).or_insert((0, 0));
                t.0 += 1;
                t.1 = t.1.max(at);
            }
        }
        log.uses.push((key, now_secs));
    }

    /// Counts one request by `key` refused at `now_secs` for `reason` (a rate limit or its
    /// credits; the sync thread's core keeps only those two).
    pub fn record_refused(&self, key: KeyId, now_secs: u64, reason: Reason) {
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((key, now_secs, reason));
    }

    /// Takes every refused request counted so far, calling `f(key, second, reason)` once each.
    pub fn drain_refused(&self, mut f: impl FnMut(KeyId, u64, Reason)) {
        let taken =
            std::mem::take(&mut *self.refused.lock().unwrap_or_else(PoisonError::into_inner));
        for (key, at, reason) in taken {
            f(key, at, reason);
        }
    }

    /// Takes every use counted so far, calling `f(key, second)` once per request (the sync
    /// thread). The locks are held only to swap each shard's log out.
    pub fn drain(&self, mut f: impl FnMut(KeyId, u64)) {
        for shard in self.shards.iter() {
            let taken = std::mem::take(&mut *shard.lock());
            for (key, at) in taken.uses {
                f(key, at);
            }
            for (key, (count, at)) in taken.tallies {
                for _ in 0..count {
                    f(key, at);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_use_from_every_thread_is_drained_once() {
        let u = std::sync::Arc::new(UsageShards::default());
        let threads: Vec<_> = (0..6u8)
            .map(|t| {
                let u = u.clone();
                std::thread::spawn(move || {
                    for i in 0..(LOG_CAPACITY as u64 + 100) {
                        u.record(KeyId::from_bytes([t % 3; 16]), i);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut counts: HashMap<KeyId, (u64, u64)> = HashMap::new();
        u.drain(|k, at| {
            let c = counts.entry(k).or_default();
            c.0 += 1;
            c.1 = c.1.max(at);
        });
        assert_eq!(counts.len(), 3);
        for (_, (n, last)) in counts {
            assert_eq!(n, 2 * (LOG_CAPACITY as u64 + 100));
            assert_eq!(last, LOG_CAPACITY as u64 + 99);
        }
        let mut again = 0;
        u.drain(|_, _| again += 1);
        assert_eq!(again, 0);
    }

    #[test]
    fn refusals_are_drained_once_with_their_reason() {
        let u = UsageShards::default();
        let key = KeyId::from_bytes([4; 16]);
        u.record_refused(key, 10, Reason::RateLimited);
        u.record_refused(key, 11, Reason::CreditsExhausted);
        let mut seen = Vec::new();
        u.drain_refused(|k, at, reason| seen.push((k, at, reason)));
        assert_eq!(
            seen,
            vec![
                (key, 10, Reason::RateLimited),
                (key, 11, Reason::CreditsExhausted)
            ]
        );
        u.drain_refused(|_, _, _| panic!("drained twice"));
    }
}
