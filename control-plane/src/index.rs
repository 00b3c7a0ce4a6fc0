//! In-process read side: a verification cache keyed by digest and tagged with the key-set
//! revision it was read at (any write anywhere bumps the revision, so a stale entry is never
//! served), the revision watch that wakes long-polls, and the usage buffer that turns
//! per-request `last_used_at` updates into periodic batched writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;
use uuid::Uuid;

use crate::db::{Db, KeyRecord};

/// Most cached digests before the cache is emptied.
const MAX_CACHED: usize = 200_000;

#[derive(Debug, Clone)]
struct Cached {
    revision: i64,
    found: Option<Arc<(KeyRecord, Option<i64>)>>,
}

/// The verification cache plus the revision watch.
#[derive(Debug)]
pub struct KeyIndex {
    revision: watch::Sender<i64>,
    /// Becomes true when the server starts shutting down: long-polls answer at once.
    draining: watch::Sender<bool>,
    cache: RwLock<HashMap<[u8; 32], Cached>>,
}

impl KeyIndex {
    /// A new index at `revision`.
    pub fn new(revision: i64) -> Self {
        Self {
            revision: watch::Sender::new(revision),
            draining: watch::Sender::new(false),
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The newest revision this process knows of.
    pub fn revision(&self) -> i64 {
        *self.revision.borrow()
    }

    /// Records that the key set reached `revision` (from a local write, a NOTIFY, or a poll);
    /// wakes long-polls when it moves forward.
    pub fn advance(&self, revision: i64) {
        self.revision.send_if_modified(|r| {
            if revision > *r {
                *r = revision;
                true
            } else {
                false
            }
        });
    }

    /// Marks the server as shutting down, ending every long-poll now (graceful shutdown waits
    /// for in-flight requests, and a long-poll would otherwise hold it for up to 30 s).
    pub fn drain(&self) {
        self.draining.send_replace(true);
    }

    /// A receiver that turns true when the server starts shutting down.
    pub fn draining(&self) -> watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// A receiver that sees revision changes.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.revision.subscribe()
    }

    /// Finds the key holding `digest` (current or rotated-out secret, with the grace end),
    /// from the cache when it was filled at the current revision, else from the database.
    pub async fn lookup(
        &self,
        db: &Db,
        digest: &[u8; 32],
    ) -> Result<Option<Arc<(KeyRecord, Option<i64>)>>, sqlx::Error> {
        let revision = self.revision();
        if let Ok(cache) = self.cache.read()
            && let Some(c) = cache.get(digest)
            && c.revision == revision
        {
            return Ok(c.found.clone());
        }
        let found = db.find_by_digest(digest).await?.map(Arc::new);
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(
                *digest,
                Cached {
                    revision,
                    found: found.clone(),
                },
            );
        }
        Ok(found)
    }
}

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
        if let Err(e) = db.add_usage(&batch).await {
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
