//! Usage counted in this process (verification, forward-auth), written to the database in
//! periodic batches instead of one write per request. Forward-auth's uses take their credits
//! at the flush (as the edges' reports do); verification took its credit exactly already
//! (`Db::verify_use`), so its uses are written without a charge.

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use crate::runtime::metrics::{LimitedBy, Metrics};
use crate::storage::Db;
use crate::storage::usage::UsageRow;

/// Usage counted in this process, written in batches.
#[derive(Debug, Default)]
pub struct UsageBuffer {
    pending: Mutex<HashMap<Uuid, Pending>>,
}

/// One key's pending counts.
#[derive(Debug, Clone, Copy, Default)]
struct Pending {
    count: i64,
    last: i64,
    charge: i64,
    /// Requests refused by a rate limit (`429 rate_limited`).
    limited: i64,
    /// Requests refused because the key's credits were used up.
    credits_exhausted: i64,
}

impl UsageBuffer {
    /// Counts one use of `key` at `now` whose credit is taken at the flush (forward-auth).
    pub fn record(&self, key: Uuid, now: i64) {
        self.add(key, now, 1);
    }

    /// Counts one use of `key` at `now` whose credit was already taken (verification).
    pub fn record_charged(&self, key: Uuid, now: i64) {
        self.add(key, now, 0);
    }

    /// Counts one request of `key` at `now` refused by a rate limit (forward-auth, verify):
    /// no use, no charge, reported as `limited` as the edges report theirs.
    pub fn record_limited(&self, key: Uuid, now: i64) {
        self.record_refused(key, LimitedBy::RateLimit, now);
    }

    /// Counts one request of `key` at `now` refused by `reason`: no use, no charge; kept per
    /// hour as `limited` (a rate limit) or `credits_exhausted`.
    pub fn record_refused(&self, key: Uuid, reason: LimitedBy, now: i64) {
        if let Ok(mut p) = self.pending.lock() {
            let e = p.entry(key).or_default();
            match reason {
                LimitedBy::RateLimit => e.limited += 1,
                LimitedBy::Credits => e.credits_exhausted += 1,
            }
            e.last = e.last.max(now);
        }
    }

    fn add(&self, key: Uuid, now: i64, charge: i64) {
        if let Ok(mut p) = self.pending.lock() {
            let e = p.entry(key).or_default();
            e.count += 1;
            e.last = e.last.max(now);
            e.charge += charge;
        }
    }

    /// Takes everything pending.
    pub fn drain(&self) -> Vec<UsageRow> {
        match self.pending.lock() {
            Ok(mut p) => p
                .drain()
                .map(|(key_id, e)| UsageRow {
                    key_id,
                    count: e.count,
                    last_used_at: e.last,
                    limited: e.limited,
                    credits_exhausted: e.credits_exhausted,
                    charge: e.charge,
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Writes pending usage; on failure the counts are put back for the next flush.
    pub async fn flush(&self, db: &Db, metrics: &Metrics) {
        let batch = self.drain();
        if batch.is_empty() {
            return;
        }
        match db
            .add_usage(&batch, crate::runtime::clock::unix_now())
            .await
        {
            Ok(done) => metrics.credits_exhausted(done.exhausted.len()),
            Err(e) => {
                tracing::warn!(error = %e, "usage flush failed; will retry");
                if let Ok(mut p) = self.pending.lock() {
                    for r in batch {
                        let e = p.entry(r.key_id).or_default();
                        e.count += r.count;
                        e.last = e.last.max(r.last_used_at);
                        e.charge += r.charge;
                        e.limited += r.limited;
                        e.credits_exhausted += r.credits_exhausted;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_by_a_rate_limit_are_drained_as_limited_without_a_use_or_a_charge() {
        let buffer = UsageBuffer::default();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        buffer.record(a, 100);
        buffer.record_limited(a, 105);
        buffer.record_limited(b, 103);
        buffer.record_limited(b, 101);
        buffer.record_refused(b, LimitedBy::Credits, 104);
        let mut rows = buffer.drain();
        rows.sort_by_key(|r| r.key_id);
        let got: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.count,
                    r.limited,
                    r.credits_exhausted,
                    r.charge,
                    r.last_used_at,
                )
            })
            .collect();
        assert_eq!(got, vec![(1, 1, 0, 1, 105), (0, 2, 1, 0, 104)]);
        assert!(buffer.drain().is_empty());
    }
}
