//! Usage counted in this process (verification, forward-auth), written to the database in
//! periodic batches instead of one write per request.

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use crate::storage::Db;

/// Usage counted in this process, written in batches.
#[derive(Debug, Default)]
pub struct UsageBuffer {
    pending: Mutex<HashMap<Uuid, (i64, i64)>>,
}

impl UsageBuffer {
    /// Counts one use of `key` at `now`.
    pub fn record(&self, key: Uuid, now: i64) {
        if let Ok(mut p) = self.pending.lock() {
            let e = p.entry(key).or_insert((0, now));
            e.0 += 1;
            e.1 = e.1.max(now);
        }
    }

    /// Takes everything pending.
    pub fn drain(&self) -> Vec<(Uuid, i64, i64)> {
        match self.pending.lock() {
            Ok(mut p) => p.drain().map(|(k, (c, t))| (k, c, t)).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Writes pending usage; on failure the counts are put back for the next flush.
    pub async fn flush(&self, db: &Db) {
        let batch = self.drain();
        if batch.is_empty() {
            return;
        }
        if let Err(e) = db
            .add_usage(&batch, crate::runtime::clock::unix_now())
            .await
        {
            tracing::warn!(error = %e, "usage flush failed; will retry");
            if let Ok(mut p) = self.pending.lock() {
                for (k, c, t) in batch {
                    let e = p.entry(k).or_insert((0, t));
                    e.0 += c;
                    e.1 = e.1.max(t);
                }
            }
        }
    }
}
