//! Usage reporting: per-key request counts aggregated in memory and sent in batches.
//!
//! A batch takes the counts accumulated so far and gets a unique id. It keeps that id, and its
//! exact contents, until the control plane acknowledges it; counts that arrive meanwhile go into
//! the next batch. Since `POST /v1/usage` is idempotent per batch id, a retried batch counts once
//! and no count is ever sent in two different batches.

use rustc_hash::FxHashMap;
use serde::Serialize;

/// Most entries per batch (what the control plane accepts); the rest goes in the next batch,
/// sent as soon as this one is acknowledged.
pub const MAX_BATCH_ENTRIES: usize = keygate_protocol::usage::MAX_BATCH_ENTRIES;

/// Uses logged before a request folds them into the per-key counts itself (24 bytes each with a
/// [`keygate_protocol::KeyId`]). The timer (every 100 ms at most) folds them first unless a
/// worker serves more than 40,000 requests a second.
pub const LOG_CAPACITY: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tally {
    count: u64,
    last_used_at: u64,
    limited: u64,
    credits_exhausted: u64,
}

const NO_TALLY: Tally = Tally {
    count: 0,
    last_used_at: 0,
    limited: 0,
    credits_exhausted: 0,
};

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One entry of a usage report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageEntry {
    /// `key_<hex>`.
    pub key_id: String,
    /// Requests since the previous batch.
    pub count: u64,
    /// Unix seconds of the latest one (or of the latest refused by a rate limit).
    pub last_used_at: u64,
    /// Requests refused by a rate limit (`429 rate_limited`) since the previous batch; not
    /// written when 0, so a report without any is byte for byte what it was.
    #[serde(skip_serializing_if = "is_zero")]
    pub limited: u64,
    /// Requests refused because the key is out of credits (`429 credits_exhausted`) since the
    /// previous batch; not written when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub credits_exhausted: u64,
}

/// A usage report, the JSON body of `POST /v1/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageBatch {
    /// Unique per batch; reused on retries.
    pub batch_id: String,
    /// Per-key counts.
    pub entries: Vec<UsageEntry>,
}

/// Per-worker usage accounting. What it holds is bounded while the control plane is away: one
/// tally per key id (at most the keys that passed, all of them in the key set at the time), one
/// unacknowledged batch, and the log's [`LOG_CAPACITY`] entries.
#[derive(Debug)]
pub struct UsageTracker<K> {
    /// Each allowed request appends here (one write at the end of an array that stays in
    /// cache), and [`fold`](Self::fold) moves the entries into `counts`: a request does not
    /// probe a hash table whose lines a million-key lookup has pushed out of the cache.
    log: Vec<(K, u64)>,
    /// Per-key tallies: a fast hash (the keys are the ids of keys in the set, chosen by the
    /// control plane, not by clients).
    counts: FxHashMap<K, Tally>,
    /// The batch sent and not yet acknowledged, and its keys (in the order of its entries).
    pending: Option<(UsageBatch, Vec<K>)>,
    in_flight: bool,
    /// Most entries in the next batch: [`MAX_BATCH_ENTRIES`], halved by each `413`.
    batch_limit: usize,
    worker: u64,
    seq: u64,
}

impl<K: std::hash::Hash + Eq + Copy + std::fmt::Display> UsageTracker<K> {
    /// A tracker for the worker with this random id (it makes batch ids unique across workers and restarts).
    pub fn new(worker: u64) -> Self {
        Self {
            log: Vec::with_capacity(LOG_CAPACITY),
            counts: FxHashMap::default(),
            pending: None,
            in_flight: false,
            batch_limit: MAX_BATCH_ENTRIES,
            worker,
            seq: 0,
        }
    }

    /// Counts one allowed request by `key`: appended to the log, folded into the counts when
    /// the log is full or by the timer ([`fold`](Self::fold)).
    pub fn record(&mut self, key: K, now_secs: u64) {
        if self.log.len() >= LOG_CAPACITY {
            self.fold();
        }
        self.log.push((key, now_secs));
    }

    /// Counts one request of `key` refused by a rate limit (straight into the counts: the
    /// refused path is not the one kept fast).
    pub fn record_limited(&mut self, key: K, now_secs: u64) {
        self.refused(key, now_secs).limited += 1;
    }

    /// Counts one request of `key` refused because it is out of credits (as
    /// [`record_limited`](Self::record_limited)).
    pub fn record_credits_exhausted(&mut self, key: K, now_secs: u64) {
        self.refused(key, now_secs).credits_exhausted += 1;
    }

    /// The tally of `key`, refused at `now_secs`.
    fn refused(&mut self, key: K, now_secs: u64) -> &mut Tally {
        let t = self.counts.entry(key).or_insert(NO_TALLY);
        t.last_used_at = t.last_used_at.max(now_secs);
        t
    }

    /// Moves the logged uses into the per-key counts (the timer calls this, off the request
    /// path; a batch is always taken after it).
    pub fn fold(&mut self) {
        for (key, at) in self.log.drain(..) {
            let t = self.counts.entry(key).or_insert(NO_TALLY);
            t.count += 1;
            t.last_used_at = t.last_used_at.max(at);
        }
    }

    /// Keys with counts not yet in any batch.
    pub fn unbatched_keys(&mut self) -> usize {
        self.fold();
        self.counts.len()
    }

    /// The batch to send now: the unacknowledged one again, or a new one from the counts.
    /// `None` when nothing is to be sent or a send is in flight.
    pub fn next_batch(&mut self) -> Option<&UsageBatch> {
        if self.in_flight {
            return None;
        }
        if self.pending.is_none() {
            self.fold();
            if self.counts.is_empty() {
                return None;
            }
            self.seq += 1;
            let batch_id = format!("{:016x}-{}", self.worker, self.seq);
            let take: Vec<K> = self.counts.keys().take(self.batch_limit).copied().collect();
            let mut entries = Vec::with_capacity(take.len());
            for k in &take {
                if let Some(t) = self.counts.remove(k) {
                    entries.push(UsageEntry {
                        key_id: k.to_string(),
                        count: t.count,
                        last_used_at: t.last_used_at,
                        limited: t.limited,
                        credits_exhausted: t.credits_exhausted,
                    });
                }
            }
            self.pending = Some((UsageBatch { batch_id, entries }, take));
        }
        self.in_flight = true;
        self.pending.as_ref().map(|(b, _)| b)
    }

    /// The send finished: `acknowledged` drops the batch, otherwise it is kept for a retry with the same id.
    pub fn finish(&mut self, acknowledged: bool) {
        self.in_flight = false;
        if acknowledged {
            self.pending = None;
        }
    }

    /// The control plane refused the batch as too large (`413`; it did not apply it): its
    /// entries go back into the counts and are sent again in batches of half its size, under
    /// new ids.
    pub fn split_pending(&mut self) {
        self.in_flight = false;
        let Some((batch, keys)) = self.pending.take() else {
            return;
        };
        self.batch_limit = (batch.entries.len() / 2).max(1);
        for (key, e) in keys.into_iter().zip(batch.entries) {
            let t = self.counts.entry(key).or_insert(NO_TALLY);
            t.count += e.count;
            t.limited += e.limited;
            t.credits_exhausted += e.credits_exhausted;
            t.last_used_at = t.last_used_at.max(e.last_used_at);
        }
    }

    /// The control plane refused the batch for good (a `400`: resending it cannot succeed):
    /// it is dropped, so that it never blocks the counts after it. Returns the requests it held.
    pub fn drop_pending(&mut self) -> u64 {
        self.in_flight = false;
        self.pending
            .take()
            .map_or(0, |(b, _)| b.entries.iter().map(|e| e.count).sum())
    }

    /// Whether counts are waiting for a batch (or a batch for its acknowledgement).
    pub fn has_backlog(&mut self) -> bool {
        self.fold();
        self.pending.is_some() || !self.counts.is_empty()
    }

    /// The batch awaiting acknowledgement, if any.
    pub fn pending(&self) -> Option<&UsageBatch> {
        self.pending.as_ref().map(|(b, _)| b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(batches: &[UsageBatch], key: &str) -> u64 {
        batches
            .iter()
            .flat_map(|b| b.entries.iter())
            .filter(|e| e.key_id == key)
            .map(|e| e.count)
            .sum()
    }

    #[test]
    fn counts_are_aggregated_per_key() {
        let mut t = UsageTracker::<u32>::new(7);
        t.record(1, 100);
        t.record(1, 105);
        t.record(2, 101);
        let b = t.next_batch().unwrap().clone();
        assert_eq!(b.batch_id, "0000000000000007-1");
        let mut e = b.entries.clone();
        e.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        assert_eq!(
            e,
            vec![
                UsageEntry {
                    key_id: "1".into(),
                    count: 2,
                    last_used_at: 105,
                    limited: 0,
                    credits_exhausted: 0,
                },
                UsageEntry {
                    key_id: "2".into(),
                    count: 1,
                    last_used_at: 101,
                    limited: 0,
                    credits_exhausted: 0,
                },
            ]
        );
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(json["batch_id"], "0000000000000007-1");
        assert!(json["entries"][0]["count"].is_u64());
        // no `limited` or `credits_exhausted` member when nothing was refused: the report is
        // what it was
        let text = serde_json::to_string(&b).unwrap();
        assert!(!text.contains("limited") && !text.contains("credits_exhausted"));
    }

    #[test]
    fn requests_refused_by_a_rate_limit_are_reported_as_limited() {
        let mut t = UsageTracker::<u32>::new(7);
        t.record(1, 100);
        t.record_limited(1, 103);
        t.record_limited(2, 104);
        t.record_limited(2, 102);
        let b = t.next_batch().unwrap().clone();
        let mut e = b.entries.clone();
        e.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        assert_eq!((e[0].count, e[0].limited, e[0].last_used_at), (1, 1, 103));
        assert_eq!((e[1].count, e[1].limited, e[1].last_used_at), (0, 2, 104));
        let json = serde_json::to_value(&b).unwrap();
        assert!(
            json["entries"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["limited"].is_u64())
        );
        // a 413 puts them back and they are sent again (in halves)
        t.split_pending();
        let mut limited = 0;
        while let Some(again) = t.next_batch() {
            limited += again.entries.iter().map(|e| e.limited).sum::<u64>();
            t.finish(true);
        }
        assert_eq!(limited, 3);
    }

    #[test]
    fn requests_refused_for_credits_are_reported_apart_from_rate_limits() {
        let mut t = UsageTracker::<u32>::new(7);
        t.record(1, 100);
        t.record_credits_exhausted(1, 106);
        t.record_credits_exhausted(1, 105);
        t.record_limited(2, 104);
        let b = t.next_batch().unwrap().clone();
        let mut e = b.entries.clone();
        e.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        let counts = |e: &UsageEntry| (e.count, e.limited, e.credits_exhausted, e.last_used_at);
        assert_eq!(counts(&e[0]), (1, 0, 2, 106));
        assert_eq!(counts(&e[1]), (0, 1, 0, 104));
        let json = serde_json::to_value(&b).unwrap();
        let by_key = |id: &str| {
            json["entries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["key_id"] == id)
                .unwrap()
                .clone()
        };
        assert_eq!(by_key("1")["credits_exhausted"], 2);
        assert!(by_key("1").get("limited").is_none());
        assert!(by_key("2").get("credits_exhausted").is_none());
        // a 413 puts them back and they are sent again, under new ids
        t.split_pending();
        let mut spent = 0;
        while let Some(again) = t.next_batch() {
            spent += again
                .entries
                .iter()
                .map(|e| e.credits_exhausted)
                .sum::<u64>();
            t.finish(true);
        }
        assert_eq!(spent, 2);
    }

    #[test]
    fn uses_past_the_log_capacity_are_folded_not_lost() {
        let mut t = UsageTracker::<u32>::new(3);
        let n = 2 * LOG_CAPACITY as u64 + 7;
        for i in 0..n {
            t.record((i % 3) as u32, 1_000 + i);
        }
        assert!(
            t.log.len() <= LOG_CAPACITY,
            "the log never grows past its capacity"
        );
        let b = t.next_batch().unwrap().clone();
        assert_eq!(b.entries.iter().map(|e| e.count).sum::<u64>(), n);
        for k in 0..3u64 {
            let last = (0..n).filter(|i| i % 3 == k).max().unwrap();
            let e = b
                .entries
                .iter()
                .find(|e| e.key_id == k.to_string())
                .unwrap();
            assert_eq!(e.last_used_at, 1_000 + last);
        }
    }

    #[test]
    fn the_timer_fold_keeps_counts_for_the_next_batch() {
        let mut t = UsageTracker::<u32>::new(3);
        t.record(9, 50);
        t.fold();
        assert!(t.log.is_empty());
        t.record(9, 40);
        let b = t.next_batch().unwrap();
        assert_eq!(b.entries.len(), 1);
        assert_eq!((b.entries[0].count, b.entries[0].last_used_at), (2, 50));
    }

    #[test]
    fn nothing_to_send_means_no_batch() {
        let mut t = UsageTracker::<u32>::new(1);
        assert!(t.next_batch().is_none());
    }

    #[test]
    fn failed_batch_is_retried_with_same_id_and_never_double_counted() {
        let mut t = UsageTracker::<u32>::new(1);
        let mut acked: Vec<UsageBatch> = Vec::new();
        t.record(1, 10);
        t.record(1, 11);
        let first = t.next_batch().unwrap().clone();
        // in flight: no second batch
        assert!(t.next_batch().is_none());
        t.finish(false);
        // new traffic while the first batch is unacknowledged
        t.record(1, 12);
        let retry = t.next_batch().unwrap().clone();
        assert_eq!(retry, first, "the retry is the same batch, id and contents");
        t.finish(true);
        acked.push(retry);
        let second = t.next_batch().unwrap().clone();
        assert_ne!(second.batch_id, first.batch_id);
        t.finish(true);
        acked.push(second);
        assert!(t.next_batch().is_none());
        assert_eq!(total(&acked, "1"), 3);
    }

    #[test]
    fn batch_ids_differ_between_workers() {
        let mut a = UsageTracker::<u32>::new(1);
        let mut b = UsageTracker::<u32>::new(2);
        a.record(1, 1);
        b.record(1, 1);
        let ia = a.next_batch().unwrap().batch_id.clone();
        let ib = b.next_batch().unwrap().batch_id.clone();
        assert_ne!(ia, ib);
    }

    #[test]
    fn a_batch_refused_as_too_large_is_sent_again_in_halves_and_nothing_is_lost() {
        let mut t = UsageTracker::<u32>::new(1);
        for k in 0..100u32 {
            t.record(k, 5);
            t.record(k, 7);
        }
        let first = t.next_batch().unwrap().clone();
        assert_eq!(first.entries.len(), 100);
        t.split_pending();
        t.record(3, 9);
        let mut acked = Vec::new();
        while let Some(b) = t.next_batch().cloned() {
            assert!(b.entries.len() <= 50, "{} entries", b.entries.len());
            assert_ne!(
                b.batch_id, first.batch_id,
                "a refused batch's id is not reused"
            );
            t.finish(true);
            acked.push(b);
        }
        assert_eq!(acked.len(), 2);
        for k in 0..100u32 {
            let want = if k == 3 { 3 } else { 2 };
            assert_eq!(total(&acked, &k.to_string()), want, "key {k}");
        }
        let e3 = acked
            .iter()
            .flat_map(|b| &b.entries)
            .find(|e| e.key_id == "3")
            .unwrap();
        assert_eq!(e3.last_used_at, 9);
    }

    #[test]
    fn a_batch_refused_for_good_is_dropped_and_later_counts_go_out() {
        let mut t = UsageTracker::<u32>::new(1);
        t.record(1, 5);
        t.next_batch().unwrap();
        assert_eq!(t.drop_pending(), 1);
        assert!(!t.has_backlog());
        t.record(2, 6);
        let b = t.next_batch().unwrap();
        assert_eq!(b.entries.len(), 1);
        assert_eq!(b.entries[0].key_id, "2");
    }

    #[test]
    fn large_backlogs_are_split_into_bounded_batches() {
        let mut t = UsageTracker::<u32>::new(1);
        for k in 0..(MAX_BATCH_ENTRIES as u32 + 5) {
            t.record(k, 1);
        }
        let n = t.next_batch().unwrap().entries.len();
        assert_eq!(n, MAX_BATCH_ENTRIES);
        t.finish(true);
        assert_eq!(t.unbatched_keys(), 5);
        assert_eq!(t.next_batch().unwrap().entries.len(), 5);
    }
}
